"""Parameters of the synthetic face world: names, palettes, `FaceParams`, and seeded sampling.

Every image is a pure function of its `FaceParams` row. Parameters fall in three groups:
identity (the person: head shape, colours, hair, facial features), attributes (smile, age,
beard and the discrete accessories with their colour / shape variants) and nuisance (pose,
camera translation, light, background, clothes). Sampling is counter-based: sample `i` of
seed `s` draws its uniforms from a hash of (s, i, slot), so it does not depend on the batch it
was drawn in, and a parameter keeps its slot when another one is overridden.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Sequence

import numpy as np
import torch

from latentedit.errors import InputError

# Semantic classes, fixed ids. "l_"/"r_" are the person's left / right (the person's left eye
# is on the image right in a frontal view).
LABELS = (
    "background", "skin", "nose", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear",
    "mouth", "u_lip", "l_lip", "hair", "neck", "cloth", "glasses_frame", "lens", "mask", "hat",
    "beard",
)
LABEL_ID = {name: i for i, name in enumerate(LABELS)}
LABEL_COLORS = torch.tensor([  # [len(LABELS), 3] uint8 palette for label maps
    (0, 0, 0), (204, 153, 120), (255, 170, 0), (0, 90, 255), (0, 200, 255), (120, 60, 0),
    (190, 110, 40), (150, 0, 150), (220, 80, 220), (255, 255, 255), (230, 0, 50), (150, 0, 30),
    (90, 50, 20), (170, 120, 90), (60, 120, 60), (255, 255, 0), (120, 255, 120), (0, 180, 180),
    (140, 0, 255), (110, 110, 110),
], dtype=torch.uint8)

# Geometry blend shapes of the head (coefficients in [-1, 1], 0 = the neutral head).
SHAPE_NAMES = ("width", "jaw", "face_length", "chin", "cheeks", "brow_ridge", "nose_bridge",
               "nose_tip", "nose_width", "eye_socket", "eye_spacing", "ears")
HAIR_STYLES = ("short", "buzz", "bob", "long", "bald", "curly", "bangs")
GLASSES = ("none", "frame", "sun")
# The attribute vector (`WorldBatch.attributes`); binary ones are 0/1.
ATTRIBUTES = ("smile", "age", "beard", "eyeglasses", "sunglasses", "mask", "hat")

IDENTITY_FIELDS = ("shape", "skin", "lip_color", "iris", "hair_color", "hair_style",
                   "hair_volume", "hairline", "eye_size", "brow_y", "brow_thick", "brow_arch",
                   "mouth_width", "lip_thick", "blush")
ATTRIBUTE_FIELDS = ("smile", "age", "beard", "glasses", "mask", "hat", "glasses_color",
                    "glasses_round", "glasses_size", "lens_color", "mask_color", "hat_color")
NUISANCE_FIELDS = ("yaw", "pitch", "roll", "tx", "ty", "tz", "light", "ambient", "diffuse",
                   "bg_a", "bg_b", "bg_angle", "bg_gradient", "cloth_color")
_INT_FIELDS = ("hair_style", "glasses", "mask", "hat")
_DISCRETE = {"glasses": GLASSES, "mask": ("none", "on"), "hat": ("none", "on"),
             "hair_style": HAIR_STYLES}

# Pose ranges (radians) from the issue: yaw +-35 deg, pitch +-20 deg, roll +-10 deg.
MAX_YAW, MAX_PITCH, MAX_ROLL = np.radians(35.0), np.radians(20.0), np.radians(10.0)

_SKIN = np.array([(0.97, 0.82, 0.72), (0.92, 0.73, 0.60), (0.82, 0.60, 0.46),
                  (0.72, 0.52, 0.37), (0.55, 0.37, 0.25), (0.36, 0.23, 0.15)])
_HAIR = np.array([(0.05, 0.04, 0.04), (0.17, 0.10, 0.06), (0.34, 0.21, 0.11),
                  (0.55, 0.40, 0.24), (0.86, 0.72, 0.46), (0.52, 0.20, 0.08),
                  (0.74, 0.38, 0.15)])
_HAIR_P = np.array([0.26, 0.24, 0.18, 0.11, 0.11, 0.05, 0.05])
_IRIS = np.array([(0.33, 0.19, 0.09), (0.14, 0.08, 0.05), (0.28, 0.48, 0.75),
                  (0.33, 0.50, 0.30), (0.50, 0.38, 0.18), (0.50, 0.56, 0.62)])
_FRAME = np.array([(0.04, 0.04, 0.05), (0.22, 0.12, 0.06), (0.08, 0.10, 0.25),
                   (0.12, 0.12, 0.12), (0.35, 0.06, 0.08)])
_LENS = np.array([(0.03, 0.03, 0.04), (0.16, 0.09, 0.04), (0.07, 0.11, 0.08),
                  (0.08, 0.16, 0.30)])
_MASK = np.array([(0.55, 0.76, 0.92), (0.93, 0.94, 0.96), (0.10, 0.10, 0.12),
                  (0.92, 0.70, 0.78), (0.55, 0.57, 0.60), (0.45, 0.80, 0.75)])
_STYLE_P = np.array([0.22, 0.10, 0.18, 0.22, 0.08, 0.08, 0.12])


@dataclasses.dataclass(frozen=True)
class FaceParams:
    """All parameters of a batch of faces; every field is a tensor with batch dimension N."""

    # identity
    shape: torch.Tensor        # [N, len(SHAPE_NAMES)] blend-shape coefficients in [-1, 1]
    skin: torch.Tensor         # [N, 3] skin albedo
    lip_color: torch.Tensor    # [N, 3]
    iris: torch.Tensor         # [N, 3]
    hair_color: torch.Tensor   # [N, 3] (before greying with age)
    hair_style: torch.Tensor   # [N] int64 index into HAIR_STYLES
    hair_volume: torch.Tensor  # [N] in [0, 1]
    hairline: torch.Tensor     # [N] in [-1, 1], + = receding
    eye_size: torch.Tensor     # [N] in [-1, 1]
    brow_y: torch.Tensor       # [N] in [-1, 1]
    brow_thick: torch.Tensor   # [N] in [0, 1]
    brow_arch: torch.Tensor    # [N] in [0, 1]
    mouth_width: torch.Tensor  # [N] in [-1, 1]
    lip_thick: torch.Tensor    # [N] in [0, 1]
    blush: torch.Tensor        # [N] in [0, 1]
    # attributes
    smile: torch.Tensor        # [N] in [0, 1]: 0 neutral, 1 broad open smile
    age: torch.Tensor          # [N] in [0, 1]: grey hair, skin lines
    beard: torch.Tensor        # [N] in [0, 1]: 0 none
    glasses: torch.Tensor      # [N] int64 index into GLASSES
    mask: torch.Tensor         # [N] int64 0/1 surgical mask
    hat: torch.Tensor          # [N] int64 0/1 beanie
    glasses_color: torch.Tensor  # [N, 3] frame colour
    glasses_round: torch.Tensor  # [N] in [0, 1]: 0 rectangular, 1 round lenses
    glasses_size: torch.Tensor   # [N] in [-1, 1]
    lens_color: torch.Tensor     # [N, 3] sunglasses lens colour
    mask_color: torch.Tensor     # [N, 3]
    hat_color: torch.Tensor      # [N, 3]
    # nuisance
    yaw: torch.Tensor          # [N] radians, + turns the face toward image right
    pitch: torch.Tensor        # [N] radians, + looks up
    roll: torch.Tensor         # [N] radians, + rotates counter-clockwise in the image
    tx: torch.Tensor           # [N] head translation (head units; the head is ~1.6 wide)
    ty: torch.Tensor           # [N]
    tz: torch.Tensor           # [N] + = toward the camera
    light: torch.Tensor        # [N, 3] unit vector toward the light (camera frame)
    ambient: torch.Tensor      # [N]
    diffuse: torch.Tensor      # [N]
    bg_a: torch.Tensor         # [N, 3] background colour at one end of the gradient
    bg_b: torch.Tensor         # [N, 3] ... and at the other
    bg_angle: torch.Tensor     # [N] gradient direction, radians
    bg_gradient: torch.Tensor  # [N] 0 = solid (bg_a), 1 = full gradient
    cloth_color: torch.Tensor  # [N, 3]

    def __len__(self) -> int:
        return self.yaw.shape[0]

    def replace(self, **values) -> "FaceParams":
        """A copy with fields set, e.g. `replace(glasses="sun", yaw=0.3, mask=1)`.

        Values may be a name of a discrete choice, a Python number (broadcast) or a tensor
        with the field's shape (or one row of it, broadcast).
        """
        new = {}
        for name, value in values.items():
            if name not in _FIELD_NAMES:
                raise InputError(f"unknown face parameter {name!r}")
            new[name] = _as_field(name, value, getattr(self, name))
        return dataclasses.replace(self, **new)

    def select(self, index) -> "FaceParams":
        """Rows `index` (a slice, an index tensor or a list)."""
        if isinstance(index, (list, tuple)):
            index = torch.as_tensor(index, dtype=torch.long)
        return FaceParams(**{f: getattr(self, f)[index] for f in _FIELD_NAMES})

    @staticmethod
    def cat(parts: Sequence["FaceParams"]) -> "FaceParams":
        return FaceParams(**{f: torch.cat([getattr(p, f) for p in parts]) for f in _FIELD_NAMES})

    def identity_vector(self) -> torch.Tensor:
        """[N, D] float: every identity parameter (hair style one-hot), names in IDENTITY_NAMES."""
        cols = []
        for f in IDENTITY_FIELDS:
            v = getattr(self, f)
            if f == "hair_style":
                v = torch.nn.functional.one_hot(v, len(HAIR_STYLES))
            cols.append(v.reshape(len(self), -1).float())
        return torch.cat(cols, dim=1)

    def attribute_vector(self) -> torch.Tensor:
        """[N, len(ATTRIBUTES)] float."""
        return torch.stack([self.smile, self.age, self.beard, (self.glasses == 1).float(),
                            (self.glasses == 2).float(), self.mask.float(), self.hat.float()], 1)

    def view_vector(self) -> torch.Tensor:
        """[N, 6]: yaw, pitch, roll (radians), tx, ty, tz."""
        return torch.stack([self.yaw, self.pitch, self.roll, self.tx, self.ty, self.tz], 1)

    def light_vector(self) -> torch.Tensor:
        """[N, 5]: ambient, diffuse, light direction x, y, z (toward the light)."""
        return torch.cat([self.ambient[:, None], self.diffuse[:, None], self.light], 1)


_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(FaceParams))
_SIZES = {"shape": len(SHAPE_NAMES), "skin": 3, "lip_color": 3, "iris": 3, "hair_color": 3,
          "glasses_color": 3, "lens_color": 3, "mask_color": 3, "hat_color": 3, "light": 3,
          "bg_a": 3, "bg_b": 3, "cloth_color": 3}
IDENTITY_NAMES = tuple(
    n for f in IDENTITY_FIELDS for n in (
        [f"shape.{s}" for s in SHAPE_NAMES] if f == "shape" else
        [f"hair_style.{s}" for s in HAIR_STYLES] if f == "hair_style" else
        [f"{f}.{c}" for c in "rgb"] if _SIZES.get(f) == 3 else [f]))


def _as_field(name: str, value, like: torch.Tensor) -> torch.Tensor:
    if isinstance(value, str):
        choices = _DISCRETE.get(name)
        if choices is None or value not in choices:
            raise InputError(f"{name} must be one of {choices or 'a number'}, not {value!r}")
        value = choices.index(value)
    t = torch.as_tensor(value, dtype=like.dtype)
    if t.dtype.is_floating_point and not torch.isfinite(t).all():
        raise InputError(f"{name} must be finite")
    try:
        return t.expand_as(like).clone()
    except RuntimeError:
        raise InputError(f"{name}: shape {tuple(t.shape)} does not fit {tuple(like.shape)}")


def _uniforms(seed: int, start: int, n: int, slots: int) -> np.ndarray:
    """[n, slots] float64 uniforms in [0, 1) from a splitmix64 hash of (seed, index, slot)."""
    def mix(z):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))
    golden = np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        s = mix(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64) * golden + golden)
        idx = np.arange(start, start + n, dtype=np.uint64)[:, None]
        k = np.arange(slots, dtype=np.uint64)[None, :]
        z = mix(mix(s + idx * golden) + (k + np.uint64(1)) * np.uint64(0xD1B54A32D192ED03))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


class _Slots:
    """Hands out columns of the uniform table in a fixed order (one slot set per parameter)."""

    def __init__(self, u: np.ndarray):
        self.u, self.k = u, 0

    def take(self, k: int = 1) -> np.ndarray:
        out = self.u[:, self.k:self.k + k]
        self.k += k
        return out[:, 0] if k == 1 else out


def _palette(pal: np.ndarray, u: np.ndarray, probs=None) -> np.ndarray:
    """Pick a palette row per sample (uniform u in [0,1))."""
    cdf = np.cumsum(probs if probs is not None else np.full(len(pal), 1.0 / len(pal)))
    return pal[np.minimum(np.searchsorted(cdf, u, side="right"), len(pal) - 1)]


PROBABILITIES = {"p_glasses": 0.2, "p_sunglasses": 0.15, "p_mask": 0.15, "p_hat": 0.1,
                 "p_beard": 0.15}
_NUM_SLOTS = 96


def sample_params(n: int, seed: int = 0, start: int = 0, **overrides) -> FaceParams:
    """Draw samples `start .. start+n-1` of `seed`.

    `overrides`: probabilities (`p_glasses` frame glasses, `p_sunglasses`, `p_mask`, `p_hat`,
    `p_beard`) or fixed values of any field (`glasses="frame"`, `yaw=0.0`, ...).
    """
    if not isinstance(n, int) or n < 1:
        raise InputError(f"n must be a positive integer, not {n!r}")
    probs = dict(PROBABILITIES)
    fixed = {}
    for key, value in overrides.items():
        if key in probs:
            if not 0.0 <= float(value) <= 1.0:
                raise InputError(f"{key} must be in [0, 1], not {value}")
            probs[key] = float(value)
        elif key in _FIELD_NAMES:
            fixed[key] = value
        else:
            raise InputError(f"unknown sampling override {key!r}")
    if probs["p_glasses"] + probs["p_sunglasses"] > 1.0:
        raise InputError("p_glasses + p_sunglasses must be <= 1")
    s = _Slots(_uniforms(seed, start, n, _NUM_SLOTS))
    sym = lambda u: 2.0 * u - 1.0  # noqa: E731  [0,1) -> [-1,1)
    v: Dict[str, np.ndarray] = {}
    # identity
    v["shape"] = sym(s.take(len(SHAPE_NAMES))) * 0.9
    tone = s.take() * (len(_SKIN) - 1)
    lo = np.floor(tone).astype(int)
    skin = _SKIN[lo] + (tone - lo)[:, None] * (_SKIN[np.minimum(lo + 1, len(_SKIN) - 1)] - _SKIN[lo])
    v["skin"] = np.clip(skin * (1 + 0.05 * sym(s.take(3))), 0, 1)
    lipu = s.take(2)
    v["lip_color"] = np.clip(v["skin"] * np.array([0.85, 0.52, 0.52]) * (0.8 + 0.3 * lipu[:, :1])
                             + np.array([0.06, 0.0, 0.02]) * lipu[:, 1:], 0, 1)
    v["iris"] = np.clip(_palette(_IRIS, s.take()) * (1 + 0.1 * sym(s.take(3))), 0, 1)
    v["hair_color"] = np.clip(_palette(_HAIR, s.take(), _HAIR_P) * (1 + 0.12 * sym(s.take(3))), 0, 1)
    v["hair_style"] = np.minimum(np.searchsorted(np.cumsum(_STYLE_P), s.take(), side="right"),
                                 len(HAIR_STYLES) - 1)
    v["hair_volume"] = s.take()
    v["hairline"] = sym(s.take())
    v["eye_size"] = sym(s.take())
    v["brow_y"] = sym(s.take())
    v["brow_thick"] = s.take()
    v["brow_arch"] = s.take()
    v["mouth_width"] = sym(s.take())
    v["lip_thick"] = s.take()
    v["blush"] = s.take()
    # attributes
    v["smile"] = np.where(s.take() < 0.4, 0.0, s.take())
    v["age"] = s.take() ** 1.3
    v["beard"] = np.where(s.take() < probs["p_beard"], 0.45 + 0.55 * s.take(), 0.0)
    ug = s.take()
    v["glasses"] = np.where(ug < probs["p_glasses"], 1,
                            np.where(ug < probs["p_glasses"] + probs["p_sunglasses"], 2, 0))
    v["mask"] = (s.take() < probs["p_mask"]).astype(np.int64)
    v["hat"] = (s.take() < probs["p_hat"]).astype(np.int64)
    v["glasses_color"] = _palette(_FRAME, s.take(), [0.5, 0.2, 0.1, 0.1, 0.1])
    v["glasses_round"] = s.take()
    v["glasses_size"] = sym(s.take())
    v["lens_color"] = _palette(_LENS, s.take(), [0.45, 0.25, 0.15, 0.15])
    v["mask_color"] = _palette(_MASK, s.take(), [0.45, 0.2, 0.15, 0.08, 0.07, 0.05])
    v["hat_color"] = 0.08 + 0.8 * s.take(3)
    # nuisance
    v["yaw"] = sym(s.take()) * MAX_YAW
    v["pitch"] = sym(s.take()) * MAX_PITCH
    v["roll"] = sym(s.take()) * MAX_ROLL
    v["tx"] = sym(s.take()) * 0.08
    v["ty"] = sym(s.take()) * 0.08
    v["tz"] = sym(s.take()) * 0.3
    az, el = sym(s.take()) * np.radians(60), sym(s.take()) * np.radians(45)
    v["light"] = np.stack([np.sin(az) * np.cos(el), np.sin(el), np.cos(az) * np.cos(el)], 1)
    v["ambient"] = 0.3 + 0.3 * s.take()
    v["diffuse"] = (1.05 - v["ambient"]) * (0.75 + 0.35 * s.take())
    bg = s.take(7)
    base = 0.15 + 0.75 * bg[:, :3]
    grey = bg[:, 3:4]  # pull some backgrounds toward grey, as photos often are
    v["bg_a"] = base * (1 - 0.6 * grey) + 0.6 * grey * base.mean(1, keepdims=True)
    v["bg_b"] = np.clip(v["bg_a"] * (0.45 + 0.8 * bg[:, 4:5]), 0, 1)
    v["bg_angle"] = bg[:, 5] * 2 * np.pi
    v["bg_gradient"] = np.where(bg[:, 6] < 0.35, 0.0, bg[:, 6])
    v["cloth_color"] = 0.05 + 0.85 * s.take(3)
    assert s.k <= _NUM_SLOTS
    out = {k: torch.from_numpy(np.ascontiguousarray(x)).to(
        torch.int64 if k in _INT_FIELDS else torch.float32) for k, x in v.items()}
    params = FaceParams(**out)
    return params.replace(**fixed) if fixed else params
