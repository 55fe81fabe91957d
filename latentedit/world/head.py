"""The head as a star-shaped surface: radius as a function of direction, stored as textures.

In head-local coordinates (x to the person's left = image right when frontal, y up, z out of
the face) every surface layer (skin, hair, beard, mask, hat) is `r = R(d)` for unit directions
`d` from the head centre. R lives in an octahedral texture (the face is the texture centre,
the seam at the back of the head). The neutral head and its blend shapes are baked once per
texture size from an analytic signed-distance function (smooth unions of ellipsoids, capsules
and spheres); a face's texture is then `R0 + shape @ B` plus its hair / beard / mask / hat
layers, which costs a few passes over the texture instead of an SDF per ray step.
"""
from __future__ import annotations

import functools
import math
from typing import Dict, NamedTuple

import torch

from latentedit.world.params import HAIR_STYLES, SHAPE_NAMES

# Layer ids stored in the layer texture.
SKIN, HAIR, BEARD, MASK, HAT = 0, 1, 2, 3, 4


# ----------------------------------------------------------------------------- octahedral map
def dir_to_uv(x, y, z):
    """Directions (any length, z>0 = front) -> octahedral coordinates in [-1, 1]^2.

    Branch-free (torch.where is slow on CPU): `back` is 1 behind the head, 0 in front.
    """
    s = x.abs() + y.abs() + z.abs()
    u, v = x / s, y / s
    back = 0.5 - 0.5 * torch.sign(z)
    return (u + back * ((1 - v.abs()) * torch.sign(u) - u),
            v + back * ((1 - u.abs()) * torch.sign(v) - v))


def uv_to_dir(u, v):
    """Inverse of dir_to_uv: octahedral coordinates -> unit directions [..., 3]."""
    z = 1 - u.abs() - v.abs()
    back = z < 0
    x = torch.where(back, (1 - v.abs()) * torch.sign(u), u)
    y = torch.where(back, (1 - u.abs()) * torch.sign(v), v)
    d = torch.stack([x, y, z], -1)
    return d / d.norm(dim=-1, keepdim=True)


def texel_dirs(size: int) -> torch.Tensor:
    """[size, size, 3] unit directions at texel centres (row = v, column = u)."""
    c = (torch.arange(size, dtype=torch.float64) + 0.5) / size * 2 - 1
    v, u = torch.meshgrid(c, c, indexing="ij")
    return uv_to_dir(u, v)


class QuadTexture:
    """Textures [M, size, size] stored so that one gather fetches a texel's 2x2 neighbourhood.

    Each texel holds (t00, t01, t10, t11) as one complex128 element: a bilinear lookup is a
    single index_select (the fastest CPU gather) instead of four.
    """

    def __init__(self, tex: torch.Tensor):
        m, size, _ = tex.shape
        pad = torch.nn.functional.pad(tex[:, None], (0, 1, 0, 1), mode="replicate")[:, 0]
        quad = torch.stack([pad[:, :-1, :-1], pad[:, :-1, 1:], pad[:, 1:, :-1], pad[:, 1:, 1:]], -1)
        self.size = size
        self.data = quad.float().contiguous().view(torch.complex128).view(m * size * size)

    def index(self, base: torch.Tensor, u, v):
        """Flat texel index (int32) and fractional offsets of points (u, v) in texture `base`."""
        half = 0.5 * self.size
        fx = (u * half + (half - 0.5)).clamp(0, self.size - 1)
        fy = (v * half + (half - 0.5)).clamp(0, self.size - 1)
        ix, iy = fx.to(torch.int32), fy.to(torch.int32)
        return base + iy * self.size + ix, fx - ix, fy - iy

    def sample(self, base: torch.Tensor, u, v) -> torch.Tensor:
        """Bilinear values [P] at octahedral coords (u, v); `base` = texture id * size^2."""
        i, ax, ay = self.index(base, u, v)
        q = torch.view_as_real(self.data.index_select(0, i)).view(torch.float32).view(-1, 4)
        t00, t01, t10, t11 = q.unbind(1)
        top = t00 + ax * (t01 - t00)
        return top + ay * (t10 + ax * (t11 - t10) - top)


def nearest(tex: torch.Tensor, size: int, base: torch.Tensor, u, v) -> torch.Tensor:
    """Nearest-texel values of flat textures `tex` [M*size*size] (index_select, int32 index)."""
    ix = (u * (0.5 * size) + 0.5 * size).clamp(0, size - 1).to(torch.int32)
    iy = (v * (0.5 * size) + 0.5 * size).clamp(0, size - 1).to(torch.int32)
    return tex.index_select(0, base + iy * size + ix)


# ----------------------------------------------------------------------------- analytic head
def _ellipsoid(p, c, r):
    q = (p - p.new_tensor(c)) / p.new_tensor(r)
    k0 = q.norm(dim=-1)
    k1 = (q / p.new_tensor(r)).norm(dim=-1)
    return k0 * (k0 - 1) / k1.clamp_min(1e-9)


def _capsule(p, a, b, ra, rb):
    a, b = p.new_tensor(a), p.new_tensor(b)
    pa, ba = p - a, b - a
    h = ((pa * ba).sum(-1) / (ba * ba).sum()).clamp(0, 1)
    return (pa - h[..., None] * ba).norm(dim=-1) - (ra + (rb - ra) * h)


def _smin(a, b, k):
    h = (0.5 + 0.5 * (b - a) / k).clamp(0, 1)
    return b + (a - b) * h - k * h * (1 - h)


def _smax(a, b, k):
    return -_smin(-a, -b, k)


# Anchor points of the neutral head (used by the SDF and, as directions, by the decals).
EYE = (0.30, 0.07, 0.86)       # eyeball front, person's left eye (x > 0)
MOUTH = (0.0, -0.47, 0.86)
NOSE_TIP = (0.0, -0.24, 1.12)


def head_sdf(p: torch.Tensor, s: Dict[str, float]) -> torch.Tensor:
    """Signed distance of the head with blend-shape values `s` (name -> coefficient)."""
    g = lambda name: s.get(name, 0.0)  # noqa: E731
    x = p[..., 0:1]
    # The jaw tapers toward the chin: scale x up below the cheekbones.
    taper = 1 + (0.10 + 0.08 * g("jaw")) * (-(p[..., 1:2] + 0.2)).clamp(0, 1)
    q = torch.cat([x * taper / (1 + 0.07 * g("width")), p[..., 1:]], -1)
    d = _ellipsoid(q, (0, 0.14, -0.08), (0.80, 0.97, 0.96))
    face_len = 0.78 * (1 + 0.06 * g("face_length"))
    d = _smin(d, _ellipsoid(q, (0, -0.25, 0.08), (0.70, face_len, 0.78)), 0.15)
    d = _smin(d, _ellipsoid(q, (0, -0.86 - 0.04 * g("face_length"), 0.46 + 0.04 * g("chin")),
                            (0.26, 0.15, 0.20)), 0.15)
    ck = 1 + 0.35 * g("cheeks")
    for sx in (-1, 1):
        d = _smin(d, _ellipsoid(p, (sx * 0.36, -0.15 + 0.05 * g("smile"), 0.52),
                                (0.24 * ck, 0.20 * ck, 0.24 * ck)), 0.2)
    d = _smin(d, _capsule(p, (-0.33, 0.25, 0.72), (0.33, 0.25, 0.72),
                          0.09 * (1 + 0.3 * g("brow_ridge")), 0.09 * (1 + 0.3 * g("brow_ridge"))),
              0.12)
    ex = EYE[0] * (1 + 0.08 * g("eye_spacing"))
    sock = 1 + 0.3 * g("eye_socket")
    for sx in (-1, 1):  # eye sockets carved out, then the eyeballs put back in
        d = _smax(d, -_ellipsoid(p, (sx * ex, EYE[1], 0.95), (0.15 * sock, 0.10 * sock, 0.11)),
                  0.05)
        d = _smin(d, (p - p.new_tensor((sx * ex, EYE[1], EYE[2] - 0.13))).norm(dim=-1) - 0.13,
                  0.02)
    tip_z = NOSE_TIP[2] + 0.06 * g("nose_tip")
    nw = 1 + 0.3 * g("nose_width")
    d = _smin(d, _capsule(p, (0, 0.18, 0.86), (0, NOSE_TIP[1], tip_z - 0.08),
                          0.045 * (1 + 0.4 * g("nose_bridge")), 0.075 * nw), 0.05)
    for sx in (-1, 1):
        d = _smin(d, (p - p.new_tensor((sx * 0.075 * nw, NOSE_TIP[1] - 0.04, 0.96))).norm(dim=-1)
                  - 0.06 * nw, 0.04)
    sm = g("smile")
    d = _smin(d, _ellipsoid(p, (0, MOUTH[1] + 0.01 * sm, MOUTH[2] - 0.06),
                            (0.20 + 0.03 * sm, 0.10, 0.10)), 0.06)
    er = 1 + 0.3 * g("ears")
    for sx in (-1, 1):
        d = _smin(d, _ellipsoid(p, (sx * 0.80, 0.0, -0.06), (0.08 * er, 0.21 * er, 0.13 * er)),
                  0.04)
    return d


def radial(sdf, dirs: torch.Tensor, r_max=1.7, r_min=0.3, coarse=56, fine=10) -> torch.Tensor:
    """Outermost radius along each direction [..., 3] where `sdf` changes sign."""
    rs = torch.linspace(r_max, r_min, coarse, dtype=dirs.dtype)
    vals = sdf(dirs[..., None, :] * rs[:, None])                       # [..., coarse]
    first = (vals < 0).float().argmax(-1).clamp_min(1)
    hi, lo = rs[first - 1], rs[first]                                  # outside, inside
    for _ in range(fine):
        mid = 0.5 * (hi + lo)
        inside = sdf(dirs * mid[..., None]) < 0
        lo, hi = torch.where(inside, mid, lo), torch.where(inside, hi, mid)
    return 0.5 * (hi + lo)


# ----------------------------------------------------------------------------- fixed layers
def _smoothstep(e0, e1, x):
    t = ((x - e0) / (e1 - e0)).clamp(0, 1)
    return t * t * (3 - 2 * t)


def _noise(d: torch.Tensor, freq: float, seed: int) -> torch.Tensor:
    """Smooth fixed noise on the sphere: a sum of random plane waves."""
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(12, 3, generator=g, dtype=d.dtype) * freq
    ph = torch.rand(12, generator=g, dtype=d.dtype) * 2 * math.pi
    return torch.sin(d @ k.T + ph).mean(-1) * math.sqrt(2 / 12) * 2


def hair_fields(d: torch.Tensor):
    """Per style: (signed distance past the hairline, thickness) on texel directions [..., 3]."""
    x, y, z = d.unbind(-1)
    az = torch.atan2(x, z).abs()            # 0 = front, pi = back
    el = torch.asin(y.clamp(-1, 1))
    deg = math.pi / 180
    # Hairline elevation by azimuth: high on the forehead, down to the ears, lower at the back.
    line = torch.where(az < 60 * deg, 34 * deg - 6 * deg * (az / (60 * deg)) ** 2,
                       28 * deg - 38 * deg * ((az - 60 * deg) / (120 * deg)).clamp(0, 1) ** 0.7)
    line = torch.where((az > 75 * deg) & (az < 105 * deg), line - 10 * deg * torch.sin(
        (az - 75 * deg) / (30 * deg) * math.pi), line)    # sideburns in front of the ears
    scalp = el - line
    face = (az < 62 * deg) & (el < 30 * deg)               # where long styles must stay out
    out = []
    for style in HAIR_STYLES:
        if style == "short":
            out.append((scalp, 0.06 + 0.04 * _smoothstep(0, 0.6, scalp)))
        elif style == "buzz":
            out.append((scalp, torch.full_like(scalp, 0.018)))
        elif style == "curly":
            out.append((scalp, 0.10 + 0.12 * _smoothstep(0, 0.5, scalp)
                        + 0.03 * _noise(d, 14.0, 7)))
        elif style == "bald":  # a horseshoe fringe at the sides and back
            band = torch.minimum(scalp + 0.05, 20 * deg - el) * (az > 75 * deg)
            out.append((torch.where(az > 75 * deg, band, torch.full_like(band, -1.0)),
                        torch.full_like(band, 0.03)))
        else:  # bob, long, bangs: hair falls beside the face
            low = {"bob": -40, "long": -80, "bangs": -80}[style] * deg
            hang = torch.where(face, -1.0 + 0 * el, el - low) if style != "bangs" else el - low
            fall = 0.07 + (0.12 if style == "bob" else 0.22) * _smoothstep(10 * deg, low, el)
            fall = fall * _smoothstep(25 * deg, 70 * deg, az) + 0.08 * (1 - _smoothstep(
                25 * deg, 70 * deg, az))
            region = torch.maximum(scalp, torch.where(face, scalp, hang))
            if style == "bangs":  # a fringe down to the brows across the forehead
                fringe = torch.where((az < 62 * deg) & (el > 16 * deg), el - 16 * deg, scalp)
                region = torch.maximum(torch.where(face & (el < 16 * deg), scalp, region), fringe)
            out.append((region, fall))
    return out


class Assets(NamedTuple):
    """Fixed textures for one texture size (flat [size*size] rows, except `basis`)."""
    size: int
    r0: torch.Tensor          # [S] neutral head radius
    basis: torch.Tensor       # [K+1, S] blend shapes (SHAPE_NAMES + smile)
    tent0: torch.Tensor       # [S] smoothed head radius (where a mask's cloth lies)
    tent_basis: torch.Tensor  # [K+1, S]
    hair_dist: torch.Tensor   # [styles, S] signed distance past the hairline (radians)
    hair_thick: torch.Tensor  # [styles, S]
    beard: torch.Tensor       # [S] beard thickness profile in [0, 1]
    mask_region: torch.Tensor  # [S] 1 inside the surgical mask's cloth
    mask_pleats: torch.Tensor  # [S] small radial ripple of the cloth
    strap: torch.Tensor        # [S] 1 on the mask's ear straps
    hat_region: torch.Tensor   # [S] 1 under a beanie
    hat_cuff: torch.Tensor     # [S] extra thickness of the beanie's folded cuff
    noise: torch.Tensor        # [S] fixed fine noise (hair strands, skin)
    dirs: torch.Tensor         # [S, 3] texel directions


def _blur(t: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """Gaussian blur of flat textures [M, size*size] (texels), edges replicated."""
    r = int(3 * sigma)
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=t.dtype) / sigma) ** 2)
    k = (k / k.sum()).view(1, 1, -1)
    img = t.view(-1, 1, size, size)
    img = torch.nn.functional.conv2d(torch.nn.functional.pad(img, (r, r, 0, 0), mode="replicate"),
                                     k[:, :, None, :])
    img = torch.nn.functional.conv2d(torch.nn.functional.pad(img, (0, 0, r, r), mode="replicate"),
                                     k[:, :, :, None])
    return img.reshape(t.shape)


_GEO_SIZE = 64  # the analytic SDF is converted to radii at this size, then upsampled


def _geometry(size: int):
    """Neutral radius [size, size] and blend shapes [K+1, size, size] (SHAPE_NAMES + smile)."""
    d = texel_dirs(_GEO_SIZE).float()
    r0 = radial(lambda p: head_sdf(p, {}), d, r_max=1.35, r_min=0.6, coarse=28, fine=9)
    shapes = []
    for name in SHAPE_NAMES + ("smile",):  # Newton steps from the neutral surface
        r, eps = r0.clone(), 1e-3
        for _ in range(3):
            f = head_sdf(d * r[..., None], {name: 1.0})
            df = (head_sdf(d * (r + eps)[..., None], {name: 1.0}) - f) / eps
            r = r - f / df.clamp_min(0.2)
        shapes.append(r - r0)
    geo = torch.cat([r0[None], torch.stack(shapes)])[:, None]
    geo = torch.nn.functional.interpolate(geo, size=(size, size), mode="bicubic",
                                          align_corners=False)[:, 0]
    return geo[0], geo[1:]


@functools.lru_cache(maxsize=4)
def assets(size: int) -> Assets:
    """Bake the fixed textures (cached per process and texture size; treat as read-only)."""
    d = texel_dirs(size)                                       # [size, size, 3] float64
    flat = lambda t: t.reshape(*t.shape[:-2], size * size)  # noqa: E731
    r0, basis = _geometry(size)
    r0, basis = flat(r0).double(), flat(basis).double()
    sigma = 0.09 * size / 2  # ~0.09 rad of cloth stretch
    tent0 = _blur(r0[None], size, sigma)[0]
    tent_basis = _blur(basis, size, sigma)
    x, y, z = d.unbind(-1)
    az, el = torch.atan2(x, z), torch.asin(y.clamp(-1, 1))
    deg = math.pi / 180
    hf = hair_fields(d)
    hair_dist = torch.stack([flat(a) for a, _ in hf])
    hair_thick = torch.stack([flat(b) for _, b in hf])
    # Beard: jaw, chin and moustache; the lips stay bare.
    lips = ((az / (16 * deg)) ** 2 + ((el + 27.5 * deg) / (6 * deg)) ** 2) < 1
    beard = _smoothstep(-5 * deg, -22 * deg, el) * (1 - _smoothstep(70 * deg, 85 * deg, az.abs()))
    mous = ((az / (20 * deg)) ** 2 + ((el + 19 * deg) / (5 * deg)) ** 2) < 1
    beard = torch.where(lips, 0.0, torch.maximum(beard, mous.double() * 0.8))
    beard = beard * (1 - _smoothstep(-35 * deg, -12 * deg, el) * (az.abs() < 45 * deg) *
                     _smoothstep(35 * deg, 15 * deg, az.abs()) * (el > -20 * deg))
    # Surgical mask: from the nose bridge to under the chin, cheek to cheek.
    top = -4 * deg - 14 * deg * (az.abs() / (60 * deg)) ** 2
    mask_region = ((el < top) & (el > -78 * deg) & (az.abs() < 62 * deg) & (z > 0)).double()
    mask_pleats = 0.006 * torch.sin((el - top) / (9 * deg) * math.pi).abs()
    strap = torch.zeros_like(el)
    for e0 in (-10 * deg, -50 * deg):  # two straps from the mask corners to the ear
        t = ((az.abs() - 62 * deg) / (26 * deg)).clamp(0, 1)
        curve = e0 + (0.0 - e0) * t ** 0.7
        strap = torch.maximum(strap, ((el - curve).abs() < 2.2 * deg).double()
                              * (az.abs() > 60 * deg) * (az.abs() < 90 * deg))
    # Beanie: over the scalp down to the upper forehead and the back of the neck.
    hat_line = 36 * deg - 44 * deg * ((az.abs() - 40 * deg) / (140 * deg)).clamp(0, 1)
    hat_region = (el > hat_line).double()
    hat_cuff = 0.025 * (el < hat_line + 10 * deg).double()
    noise = _noise(d, 60.0, 11)
    return Assets(size, r0.float(), basis.float(), tent0.float(), tent_basis.float(),
                  hair_dist.float(), hair_thick.float(), flat(beard).float(),
                  flat(mask_region).float(), flat(mask_pleats).float(), flat(strap).float(),
                  flat(hat_region).float(), flat(hat_cuff).float(), flat(noise).float(),
                  d.reshape(-1, 3).float())
