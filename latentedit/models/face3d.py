"""The unsup3d 3D face encoder: depth, albedo, light and view networks, and the canonical maps.

Module and parameter names follow unsup3d's layout (`Encoder` and `EDDeconv`, each an
`nn.Sequential` called `network`), so the `netD` / `netA` / `netL` / `netV` state dicts of an
unsup3d `checkpoint030.pth` load by name (see `latentedit.formats.unsup3d`). Sizes are
configuration: unsup3d's own is `Face3DConfig.unsup3d()` (nf 64, zdim 256, encoders nf 32); the
bundled one trained on the world is smaller.

Conventions (unsup3d's): input images in [-1, 1], 64 px; depth maps [N, H, W]; normals
[N, H, W, 3] in unsup3d's camera frame, which is the world's camera frame (x right, y up,
z toward the viewer) with x negated: `world_normal = normal * (-1, 1, 1)`; the light direction
is (dx, dy, 1) normalised in that same frame. `Face3D.decode` turns raw network outputs into
depth / light / view with the configured ranges.
"""
import math
from dataclasses import dataclass, field
from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import nn

from latentedit.errors import InputError
from latentedit.models.config import DictConfig

EPS = 1e-7
MAP_NAMES = ("normal", "shading", "albedo")
SHADINGS = ("full", "diffuse")


class Encoder(nn.Module):
    """Image [N, cin, 64, 64] -> vector [N, cout] (unsup3d's light / view encoder)."""

    def __init__(self, cin, cout, nf=64, activation=True):
        super().__init__()
        layers = []
        c = cin
        for k, c_out in enumerate((nf, nf * 2, nf * 4, nf * 8)):   # 64 -> 32 -> 16 -> 8 -> 4
            layers += [nn.Conv2d(c, c_out, 4, stride=2, padding=1, bias=False), nn.ReLU(inplace=True)]
            c = c_out
        layers += [nn.Conv2d(c, nf * 8, 4, stride=1, padding=0, bias=False), nn.ReLU(inplace=True),  # 4 -> 1
                   nn.Conv2d(nf * 8, cout, 1, stride=1, padding=0, bias=False)]
        if activation:
            layers.append(nn.Tanh())
        self.network = nn.Sequential(*layers)

    def forward(self, x):
        return self.network(x).reshape(x.shape[0], -1)


class EDDeconv(nn.Module):
    """Image [N, cin, 64, 64] -> map [N, cout, 64, 64] (unsup3d's depth / albedo net)."""

    def __init__(self, cin, cout, zdim=128, nf=64, activation=True):
        super().__init__()
        if nf % 16:
            raise InputError(f"EDDeconv nf must be a multiple of 16 (GroupNorm groups), got {nf}")
        gn = lambda c: nn.GroupNorm(16 * c // nf, c)  # noqa: E731  16 groups per nf channels
        lrelu = lambda: nn.LeakyReLU(0.2, inplace=True)  # noqa: E731
        relu = lambda: nn.ReLU(inplace=True)  # noqa: E731
        down = [nn.Conv2d(cin, nf, 4, 2, 1, bias=False), gn(nf), lrelu(),              # 64 -> 32
                nn.Conv2d(nf, nf * 2, 4, 2, 1, bias=False), gn(nf * 2), lrelu(),       # 32 -> 16
                nn.Conv2d(nf * 2, nf * 4, 4, 2, 1, bias=False), gn(nf * 4), lrelu(),   # 16 -> 8
                nn.Conv2d(nf * 4, nf * 8, 4, 2, 1, bias=False), lrelu(),               # 8 -> 4
                nn.Conv2d(nf * 8, zdim, 4, 1, 0, bias=False), relu()]                  # 4 -> 1
        up = [nn.ConvTranspose2d(zdim, nf * 8, 4, 1, 0, bias=False), relu(),           # 1 -> 4
              nn.Conv2d(nf * 8, nf * 8, 3, 1, 1, bias=False), relu()]
        c = nf * 8
        for c_out in (nf * 4, nf * 2, nf):                                             # 4 -> 32
            up += [nn.ConvTranspose2d(c, c_out, 4, 2, 1, bias=False), gn(c_out), relu(),
                   nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), gn(c_out), relu()]
            c = c_out
        up += [nn.Upsample(scale_factor=2, mode="nearest"),                            # 32 -> 64
               nn.Conv2d(nf, nf, 3, 1, 1, bias=False), gn(nf), relu(),
               nn.Conv2d(nf, nf, 5, 1, 2, bias=False), gn(nf), relu(),
               nn.Conv2d(nf, cout, 5, 1, 2, bias=False)]
        if activation:
            up.append(nn.Tanh())
        self.network = nn.Sequential(*down, *up)

    def forward(self, x):
        return self.network(x)


@dataclass
class Face3DConfig(DictConfig):
    """Sizes of the four nets and the ranges their outputs are decoded to."""
    nf: int = 64                # depth / albedo nets
    zdim: int = 256
    nf_encoder: int = 32        # light / view nets
    image_size: int = 64
    min_depth: float = 0.9
    max_depth: float = 1.1
    center_depth: bool = True   # unsup3d: subtract each map's mean before tanh
    border_depth: float = None  # unsup3d: clamp a 2-px side border to this depth (None: off)
    tan_half_fov: float = math.tan(math.radians(5.0))  # between the centres of the edge pixels
    min_amb_light: float = 0.0
    max_amb_light: float = 1.0
    min_diff_light: float = 0.0
    max_diff_light: float = 1.0
    light_xy_scale: float = 1.0  # light direction (dx * s, dy * s, 1)
    view_scale: List[float] = field(default_factory=lambda: [math.radians(60)] * 3 + [0.1, 0.1, 0.1])
    view_names: List[str] = field(default_factory=lambda: ["rx", "ry", "rz", "tx", "ty", "tz"])
    # How the canonical maps are handed on (the fusion network's 9-channel input):
    shading: str = "full"       # "full": ambient + diffuse * max(0, n.l); "diffuse": max(0, n.l) alone
    output_size: int = None     # maps resized (bilinear) to this size, normals renormalised (None: as computed)
    maps_order: List[str] = field(default_factory=lambda: list(MAP_NAMES))
    maps_bgr: bool = False      # each 3-channel map in B, G, R order (as cv2-style uint8 images hold them)
    maps_uint8: bool = False    # quantise each map, as np.uint8(x * 255) of its [0, 1] image does

    def __post_init__(self):
        if self.shading not in SHADINGS:
            raise InputError(f"Face3DConfig.shading must be one of {SHADINGS}, got {self.shading!r}")
        if sorted(self.maps_order) != sorted(MAP_NAMES):
            raise InputError(f"Face3DConfig.maps_order must order {list(MAP_NAMES)}, got {self.maps_order}")
        if self.output_size is not None and self.output_size < 2:
            raise InputError(f"Face3DConfig.output_size must be >= 2 or None, got {self.output_size}")

    @classmethod
    def unsup3d(cls):
        """unsup3d's celeba / synface configuration (what `checkpoint030.pth` holds)."""
        return cls(border_depth=0.7 * 1.1 + 0.3 * 0.9)

    @classmethod
    def sdgan_demo(cls):
        """unsup3d as SD-GAN runs it (`unsup3d_main.py`, `Demo.run` + `out_results`): border depth
        1.05, no z translation, diffuse shading max(0, n.l) without the light factors, maps resized
        to 128 px (bilinear, normals renormalised), handed on as `out_results` returns them (uint8,
        B, G, R). The 9-channel order normal | shading | albedo is `out_results`' order; SD-GAN's
        data loader that built the input was never released, so it is our choice (a stored setting)."""
        return cls(border_depth=1.05, view_scale=[math.radians(60)] * 3 + [0.1, 0.1, 0.0], shading="diffuse",
                   output_size=128, maps_bgr=True, maps_uint8=True)


def depth_to_points(depth, tan_half_fov):
    """Depth [N, H, W] -> camera points [N, H, W, 3] (unsup3d frame: x right, y down, z depth)."""
    n, h, w = depth.shape
    ys = torch.linspace(-1, 1, h, dtype=depth.dtype, device=depth.device) * tan_half_fov
    xs = torch.linspace(-1, 1, w, dtype=depth.dtype, device=depth.device) * tan_half_fov * (w - 1) / (h - 1)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx.expand(n, h, w), yy.expand(n, h, w), torch.ones_like(depth)], -1) * depth[..., None]


def normal_from_depth(depth, tan_half_fov):
    """Depth [N, H, W] -> unit normals [N, H, W, 3], unsup3d's way: the cross product of the
    central differences of the back-projected points along x and y; (0, 0, 1) on the border."""
    p = depth_to_points(depth, tan_half_fov)
    n, h, w, _ = p.shape
    tu = p[:, 1:-1, 2:] - p[:, 1:-1, :-2]
    tv = p[:, 2:, 1:-1] - p[:, :-2, 1:-1]
    inner = torch.cross(tu, tv, dim=3)
    out = torch.zeros(n, h, w, 3, dtype=depth.dtype, device=depth.device)
    out[..., 2] = 1
    out[:, 1:-1, 1:-1] = inner
    return out / (out.pow(2).sum(3, keepdim=True).sqrt() + EPS)


def light_direction(dxy, scale=1.0):
    """[N, 2] -> unit light directions [N, 3] = normalise(dx * scale, dy * scale, 1)."""
    d = torch.cat([dxy * scale, torch.ones_like(dxy[:, :1])], 1)
    return d / d.pow(2).sum(1, keepdim=True).sqrt()


def shading_from_normal(normal, ambient, diffuse, light_dir):
    """Normals [N, H, W, 3], ambient / diffuse [N], direction [N, 3] -> shading [N, 1, H, W]:
    ambient + diffuse * max(0, n . l) (unsup3d's canonical shading)."""
    ndl = (normal * light_dir[:, None, None, :]).sum(3).clamp(min=0)[:, None]
    return ambient.view(-1, 1, 1, 1) + diffuse.view(-1, 1, 1, 1) * ndl


def canonical_maps(normal, shading, albedo, order=MAP_NAMES, bgr=False, uint8=False):
    """The 9-channel canonical map [N, 9, H, W] in [-1, 1]: normal (3), shading (3 equal channels,
    0..1 -> -1..1) and albedo (3), in `order`; `bgr` reverses each map's channels, `uint8`
    quantises each map's [0, 1] image x to floor(255 x) / 255 first (what np.uint8(x * 255) keeps)."""
    unit = {"normal": normal.permute(0, 3, 1, 2) / 2 + 0.5, "shading": shading.expand(-1, 3, -1, -1),
            "albedo": albedo / 2 + 0.5}                       # each [N, 3, H, W] in [0, 1]
    if not uint8 and not bgr and tuple(order) == MAP_NAMES:  # the exact maps, no round trip through [0, 1]
        return torch.cat([normal.permute(0, 3, 1, 2), (shading * 2 - 1).expand(-1, 3, -1, -1), albedo], 1)
    parts = []
    for name in order:
        x = unit[name].flip(1) if bgr else unit[name]
        if uint8:
            x = torch.floor(x * 255).clamp(0, 255) / 255
        parts.append(x * 2 - 1)
    return torch.cat(parts, 1)


def resize_maps(size, depth, normal, shading, albedo):
    """Canonical maps to size x size, bilinear (align_corners=False); normals renormalised."""
    def up(x):
        return F.interpolate(x, (size, size), mode="bilinear", align_corners=False)

    normal = up(normal.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    normal = normal / normal.pow(2).sum(3, keepdim=True).sqrt()
    return up(depth[:, None])[:, 0], normal, up(shading), up(albedo)


def world_to_unsup3d(vec):
    """Normals [..., 3] or light directions between the world's camera frame and unsup3d's
    (x negated; the map is its own inverse)."""
    return vec * torch.tensor([-1.0, 1.0, 1.0], dtype=vec.dtype, device=vec.device)


class Face3D(nn.Module):
    """The four unsup3d nets with their decoding; `forward(image)` -> dict of canonical maps."""

    def __init__(self, cfg: Face3DConfig = None):
        super().__init__()
        self.cfg = cfg = cfg or Face3DConfig()
        self.netD = EDDeconv(3, 1, zdim=cfg.zdim, nf=cfg.nf, activation=False)
        self.netA = EDDeconv(3, 3, zdim=cfg.zdim, nf=cfg.nf)
        self.netL = Encoder(3, 4, nf=cfg.nf_encoder)
        self.netV = Encoder(3, 6, nf=cfg.nf_encoder)

    def decode_depth(self, raw):
        """netD output [N, 1, H, W] -> canonical depth [N, H, W] in [min_depth, max_depth]."""
        c = self.cfg
        d = raw[:, 0]
        if c.center_depth:
            d = d - d.mean((1, 2), keepdim=True)
        d = d.tanh()
        d = (1 + d) / 2 * c.max_depth + (1 - d) / 2 * c.min_depth
        if c.border_depth is not None:
            border = torch.ones_like(d[:1])
            border[:, :, 2:-2] = 0
            d = d * (1 - border) + border * c.border_depth
        return d

    def decode_light(self, raw):
        """netL output [N, 4] -> ambient [N], diffuse [N], unit direction [N, 3] (unsup3d frame)."""
        c = self.cfg
        amb = (1 + raw[:, 0]) / 2 * c.max_amb_light + (1 - raw[:, 0]) / 2 * c.min_amb_light
        dif = (1 + raw[:, 1]) / 2 * c.max_diff_light + (1 - raw[:, 1]) / 2 * c.min_diff_light
        return amb, dif, light_direction(raw[:, 2:4], c.light_xy_scale)

    def decode_view(self, raw):
        """netV output [N, 6] -> view [N, 6] (names in cfg.view_names)."""
        return raw * torch.tensor(self.cfg.view_scale, dtype=raw.dtype, device=raw.device)

    def forward(self, image) -> Dict[str, torch.Tensor]:
        """image [N, 3, 64, 64] in [-1, 1] -> canonical depth [N, H, W], normal [N, H, W, 3],
        shading [N, 1, H, W], albedo [N, 3, H, W] in [-1, 1], light [N, 5] (ambient, diffuse,
        direction), view [N, 6], `maps` [N, 9, H, W] (see `canonical_maps`; the maps at
        cfg.output_size when set), and the raw
        netL / netV outputs `light_raw` [N, 4], `view_raw` [N, 6]."""
        s = self.cfg.image_size
        if image.ndim != 4 or image.shape[1] != 3 or image.shape[2:] != (s, s):
            raise InputError(f"Face3D expects images [N, 3, {s}, {s}], got {list(image.shape)}")
        depth = self.decode_depth(self.netD(image))
        albedo = self.netA(image)
        light_raw, view_raw = self.netL(image), self.netV(image)
        amb, dif, ldir = self.decode_light(light_raw)
        c = self.cfg
        normal = normal_from_depth(depth, c.tan_half_fov)
        if c.shading == "diffuse":
            shading = shading_from_normal(normal, torch.zeros_like(amb), torch.ones_like(dif), ldir)
        else:
            shading = shading_from_normal(normal, amb, dif, ldir)
        if c.output_size is not None and c.output_size != s:
            depth, normal, shading, albedo = resize_maps(c.output_size, depth, normal, shading, albedo)
        return {"depth": depth, "normal": normal, "shading": shading, "albedo": albedo,
                "light": torch.cat([amb[:, None], dif[:, None], ldir], 1),
                "view": self.decode_view(view_raw), "light_raw": light_raw, "view_raw": view_raw,
                "maps": canonical_maps(normal, shading, albedo, c.maps_order, c.maps_bgr, c.maps_uint8)}
