"""Facial features painted on the skin: eyes, brows, nose, lips, ears, age lines.

They are evaluated once per visible skin point (not per ray step), in "face coordinates"
`(fx, fy)` = the x and y of the unit direction from the head centre to the point, so they
stick to the 3D surface and move and foreshorten with pose. Each feature returns a label id
and an albedo; sizes are in those direction units (the face is about 1.2 units wide).
"""
from __future__ import annotations

from typing import Dict

import torch

from latentedit.world.head import EYE, MOUTH, NOSE_TIP
from latentedit.world.params import LABEL_ID, SHAPE_NAMES

_EYE_DIR = torch.tensor(EYE) / torch.tensor(EYE).norm()
_MOUTH_Y = MOUTH[1] / (MOUTH[1] ** 2 + MOUTH[2] ** 2) ** 0.5
_TIP_Y = NOSE_TIP[1] / (NOSE_TIP[1] ** 2 + NOSE_TIP[2] ** 2) ** 0.5
_SPACING = SHAPE_NAMES.index("eye_spacing")
_NOSE_W = SHAPE_NAMES.index("nose_width")


def _bump(d2):
    """Smooth bump of a squared distance: 1 at 0, 0 from 1 on. Exact arithmetic only:
    transcendental kernels may round differently in the SIMD tail, i.e. per batch size."""
    w = (1 - d2).clamp_min(0)
    return w * w


def _mix(a, b, w):
    """a + (b - a) * w with a, b [P, 3] (or broadcastable) and w [P]."""
    return a + (b - a) * w[:, None]


def paint_skin(fx, fy, fz, p: Dict[str, torch.Tensor]):
    """Label [P] int64 and albedo [P, 3] of skin points; `p` holds per-point parameter rows."""
    skin = p["skin"]
    age, smile = p["age"], p["smile"]
    label = torch.full_like(fx, LABEL_ID["skin"], dtype=torch.int64)
    # Age: slightly paler and less saturated skin.
    grey = skin.mean(1, keepdim=True)
    alb = _mix(skin, grey * torch.tensor([1.02, 1.0, 0.96]), 0.25 * age)
    # Blush on the cheeks.
    ax = fx.abs()
    cheek = _bump(((ax - 0.33) ** 2 + (fy + 0.17) ** 2) / 0.03) * p["blush"] * 0.5
    alb = _mix(alb, alb * torch.tensor([1.05, 0.8, 0.8]), cheek)
    # Eye sockets are a little darker (and more so with age): reads well at 64 px.
    ex = _EYE_DIR[0] * (1 + 0.08 * p["shape"][:, _SPACING])
    ey = _EYE_DIR[1]
    dx = ax - ex
    socket = _bump(dx ** 2 / 0.03 + (fy - ey + 0.01) ** 2 / 0.01)
    alb = alb * (1 - (0.10 + 0.15 * age) * socket)[:, None]
    # Age lines: nasolabial folds (deepened by a smile) and forehead lines.
    mw = 0.17 * (1 + 0.1 * p["mouth_width"] + 0.2 * smile)
    t = ((fy - (_TIP_Y - 0.06)) / (_MOUTH_Y - _TIP_Y + 0.06)).clamp(0, 1)
    fold_x = 0.13 + (mw + 0.03 - 0.13) * t
    fold = ((ax - fold_x).abs() < 0.012) & (fy < _TIP_Y - 0.04) & (fy > _MOUTH_Y - 0.01)
    alb = alb * (1 - fold.float() * (0.35 * age + 0.2 * smile))[:, None]
    fh = ((torch.remainder(fy - 0.30, 0.055) < 0.012) & (fy > 0.28) & (fy < 0.45) & (ax < 0.3))
    alb = alb * (1 - fh.float() * 0.22 * age ** 2)[:, None]
    # Ears: a darker inner ear.
    ear = (fx.abs() > 0.80) & (fy.abs() < 0.24) & ((fz + 0.075).abs() < 0.17)
    label = torch.where(ear, torch.where(fx > 0, LABEL_ID["l_ear"], LABEL_ID["r_ear"]), label)
    inner = ear & ((fy / 0.13) ** 2 + ((fz + 0.075) / 0.08) ** 2 < 1)
    alb = alb * (1 - 0.25 * inner.float())[:, None]
    # Nose: label region and dark nostrils.
    nw = 1 + 0.3 * p["shape"][:, _NOSE_W]
    top, bot = ey - 0.01, _TIP_Y - 0.075
    s = ((top - fy) / (top - bot)).clamp(0, 1)
    nose = (fy < top) & (fy > bot) & (ax < (0.035 + 0.085 * s ** 2) * nw)
    label = torch.where(nose, LABEL_ID["nose"], label)
    nostril = ((ax - 0.04 * nw) / 0.024) ** 2 + ((fy - (_TIP_Y - 0.055)) / 0.013) ** 2 < 1
    alb = alb * (1 - 0.6 * nostril.float())[:, None]
    # Brows: a tapering arched band above each eye, dark hair colour.
    s = (ax - (ex - 0.13)) / 0.24
    sc = s.clamp(0, 1)
    yline = ey + 0.115 + 0.02 * p["brow_y"] + (0.015 + 0.03 * p["brow_arch"]) * 4 * sc * (
        1.2 - sc) / 1.44
    th = (0.026 + 0.022 * p["brow_thick"]) * (1 - 0.4 * s)
    brow = (s > 0) & (s < 1) & ((fy - yline).abs() < th)
    browc = _mix(p["hair_color"] * 0.75, torch.tensor([0.55, 0.55, 0.55]), 0.6 * age ** 2)
    alb = torch.where(brow[:, None], _mix(alb, browc, torch.full_like(fx, 0.85)), alb)
    label = torch.where(brow, torch.where(fx > 0, LABEL_ID["l_brow"], LABEL_ID["r_brow"]), label)
    # Eyes: almond of sclera, iris, pupil, dark upper lid / lashes.
    a = 0.098 * (1 + 0.1 * p["eye_size"])
    b = 0.046 * (1 + 0.12 * p["eye_size"]) * (1 - 0.2 * smile)
    qx, qy = dx / a, (fy - ey) / b
    lid = 1 - qx ** 2
    eye = (qx.abs() < 1) & (qy.abs() < lid)
    r = torch.sqrt(dx ** 2 + (fy - ey) ** 2)
    ecol = torch.tensor([0.92, 0.89, 0.86]).expand_as(alb)
    ecol = torch.where((r < 0.038)[:, None], p["iris"], ecol)
    ecol = torch.where((r < 0.017)[:, None], torch.tensor([0.03, 0.02, 0.02]), ecol)
    ecol = torch.where((qy > lid - 0.45)[:, None], torch.tensor([0.06, 0.04, 0.04]), ecol)
    alb = torch.where(eye[:, None], ecol, alb)
    label = torch.where(eye, torch.where(fx > 0, LABEL_ID["l_eye"], LABEL_ID["r_eye"]), label)
    # Mouth: lip outlines around a line that curves up with the smile; opens for big smiles.
    q = fx / mw
    inside = q.abs() < 1
    q2 = (1 - q ** 2).clamp_min(0)
    yl = _MOUTH_Y + 0.012 * smile + 0.045 * smile * (q ** 2 - 0.35)
    gap = 0.026 * ((smile - 0.5) / 0.5).clamp(0, 1) * q2.sqrt()
    up = (0.034 + 0.012 * p["lip_thick"]) * q2.sqrt() - 0.006 * _bump((q / 0.3) ** 2)
    lo = (0.04 + 0.016 * p["lip_thick"]) * q2.sqrt()
    h = fy - yl
    ulip = inside & (h > gap / 2) & (h < gap / 2 + up)
    llip = inside & (h < -gap / 2) & (h > -gap / 2 - lo)
    mouth = inside & (h.abs() <= gap / 2) & (gap > 0)
    alb = torch.where((ulip | llip)[:, None], p["lip_color"], alb)
    teeth = torch.where((h > -gap * 0.1)[:, None], torch.tensor([0.93, 0.9, 0.84]),
                        torch.tensor([0.3, 0.07, 0.07]))
    alb = torch.where(mouth[:, None], teeth, alb)
    # A dark line where closed lips meet.
    seam = inside & (h.abs() < 0.004) & (gap <= 0.004) & (q.abs() < 0.97)
    alb = torch.where(seam[:, None], p["lip_color"] * 0.45, alb)
    label = torch.where(ulip, LABEL_ID["u_lip"], label)
    label = torch.where(llip, LABEL_ID["l_lip"], label)
    label = torch.where(mouth | seam, LABEL_ID["mouth"], label)
    return label, alb
