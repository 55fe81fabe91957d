"""Image -> W / W+ encoder of the pSp / e4e family (networks only; no file I/O, no training).

    enc = Encoder(EncoderConfig.small(num_ws=G.num_ws))
    enc.w_avg.copy_(G.w_avg)            # the trainer does this: codes start near the average face
    codes = enc(images)                 # [N, 3, R, R] in [-1, 1] -> [N, num_ws, w_dim]

Architecture (re-implemented from the pSp and e4e papers' descriptions):

- backbone: a 3x3 stem at full resolution, then `len(widths)` stages of IR-SE residual blocks
  (BN, 3x3 conv, PReLU, 3x3 conv with the stage's stride 2 in the first block, BN, squeeze-and-
  excitation; shortcut: 1x1 conv + BN when the width changes, else 1x1-subsampling);
- feature pyramid: the outputs of the last three stages (fine, medium, coarse from the finest to
  the coarsest map), each through a lateral 1x1 conv to `fpn_width`, merged top-down (coarse map
  upsampled and added to the medium lateral, that upsampled and added to the fine lateral);
- map-to-style heads: one per W+ layer, reading the pyramid level of its layer group (the first
  `coarse_layers` layers the coarse map, the next `medium_layers` the medium map, the rest the fine
  map; pSp's 3 / 4 / rest split, which is 4-8 / 16-32 / 64+ px synthesis layers at any size):
  stride-2 3x3 convs + LeakyReLU down to 1x1, then a linear layer to w_dim;
- output as e4e: head 0 gives the base code w0, head i > 0 the offset delta_i of layer i, and
  codes[:, i] = w_avg + w0 + delta_i (delta_0 = 0). Only the deltas of layers 1..progressive_stage
  are computed (e4e's progressive training), the others are 0; mode "w" has head 0 only, so every
  layer gets the same code.

The heads' last linear layers start small (`init_scale`), so an untrained encoder returns codes
near `w_avg` (a buffer the trainer sets from the generator's w_avg).
"""
import math
from dataclasses import dataclass, field
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from latentedit.errors import InputError
from latentedit.models.config import DictConfig

ENCODER_MODES = ("w+", "w")
_INT_LIMITS = {"resolution": 4096, "num_ws": 64, "w_dim": 8192, "stem_width": 4096, "fpn_width": 4096,
               "head_width": 4096, "coarse_layers": 64, "medium_layers": 64, "se_reduction": 1024}


@dataclass
class EncoderConfig(DictConfig):
    resolution: int = 256                  # input image size (pSp resizes 1024 px faces to 256)
    num_ws: int = 18                       # W+ layers of the generator the codes are for
    w_dim: int = 512
    mode: str = "w+"                       # "w+": base code + per-layer deltas; "w": one code
    stem_width: int = 64
    widths: List[int] = field(default_factory=lambda: [64, 128, 256, 512])   # per stage (stride 2 each)
    blocks: List[int] = field(default_factory=lambda: [3, 4, 14, 3])         # IR-SE blocks per stage
    se_reduction: int = 16
    fpn_width: int = 512                   # channels of the three pyramid levels
    head_width: int = 512                  # channels of the map-to-style convs
    coarse_layers: int = 3                 # W+ layers read from the coarse level
    medium_layers: int = 4                 # then from the medium level; the rest from the fine level
    init_scale: float = 0.05               # initial scale of the heads' last linear layers

    def __post_init__(self):
        self.widths, self.blocks = [int(c) for c in self.widths], [int(b) for b in self.blocks]
        for name, limit in _INT_LIMITS.items():
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= limit:
                raise InputError(f"EncoderConfig.{name} must be an integer in [1, {limit}], got {v!r}")
        if self.mode not in ENCODER_MODES:
            raise InputError(f"EncoderConfig.mode must be one of {ENCODER_MODES}, got {self.mode!r}")
        if len(self.widths) < 3 or len(self.widths) != len(self.blocks):
            raise InputError(f"EncoderConfig needs >= 3 stages and one block count per width, got widths "
                             f"{self.widths} and blocks {self.blocks}")
        if not all(1 <= c <= 4096 for c in self.widths) or not all(1 <= b <= 64 for b in self.blocks):
            raise InputError("EncoderConfig widths must be in [1, 4096] and blocks in [1, 64]")
        log2 = math.log2(self.resolution)
        if log2 != int(log2) or self.resolution < 2 ** len(self.widths):
            raise InputError(f"EncoderConfig.resolution must be a power of two >= 2^stages "
                             f"({2 ** len(self.widths)}), got {self.resolution}")
        if not isinstance(self.init_scale, (int, float)) or not 0 <= self.init_scale <= 10:
            raise InputError(f"EncoderConfig.init_scale must be in [0, 10], got {self.init_scale!r}")

    @classmethod
    def small(cls, num_ws=10, w_dim=512, resolution=64, mode="w+"):
        """For the bundled 64 px generator (10 W+ layers): pyramid 16 / 8 / 4 px, 4.3 M parameters."""
        return cls(resolution=resolution, num_ws=num_ws, w_dim=w_dim, mode=mode, stem_width=32,
                   widths=[32, 64, 128, 192], blocks=[1, 2, 2, 1], se_reduction=8, fpn_width=96, head_width=96)

    @property
    def level_sizes(self):
        """Spatial sizes of the (fine, medium, coarse) pyramid levels."""
        n = len(self.widths)
        return tuple(self.resolution // 2 ** k for k in (n - 2, n - 1, n))

    def layer_levels(self):
        """Pyramid level of each W+ layer: 2 coarse, 1 medium, 0 fine."""
        c = min(self.coarse_layers, self.num_ws)
        m = min(self.medium_layers, self.num_ws - c)
        return [2] * c + [1] * m + [0] * (self.num_ws - c - m)


# ---------------------------------------------------------------------------------------------
# Backbone


class SqueezeExcite(nn.Module):
    def __init__(self, channels, reduction):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=False)

    def forward(self, x):  # [N, C, H, W]
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3), keepdim=True)))))
        return x * s


class IRSEBlock(nn.Module):
    """ArcFace-style improved residual block with squeeze-and-excitation; stride on the 2nd conv."""

    def __init__(self, cin, cout, stride, se_reduction):
        super().__init__()
        self.stride = stride
        self.residual = nn.Sequential(
            nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.PReLU(cout),
            nn.Conv2d(cout, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), SqueezeExcite(cout, se_reduction))
        self.shortcut = None if cin == cout else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                                               nn.BatchNorm2d(cout))

    def forward(self, x):
        if self.shortcut is not None:
            skip = self.shortcut(x)
        else:
            skip = x[:, :, ::self.stride, ::self.stride] if self.stride > 1 else x
        return self.residual(x) + skip


class MapToStyle(nn.Module):
    """[N, C, s, s] -> [N, w_dim]: log2(s) stride-2 3x3 convs with LeakyReLU to 1x1, then linear."""

    def __init__(self, cin, width, size, w_dim, init_scale):
        super().__init__()
        convs, c = [], cin
        for _ in range(int(math.log2(size))):
            convs += [nn.Conv2d(c, width, 3, 2, 1), nn.LeakyReLU(0.2)]
            c = width
        self.convs = nn.Sequential(*convs)
        self.linear = nn.Linear(c, w_dim)
        with torch.no_grad():
            self.linear.weight.normal_(0, init_scale / math.sqrt(c))
            self.linear.bias.zero_()

    def forward(self, x):
        return self.linear(self.convs(x).flatten(1))


def _upsample(x, like):  # top-down path of the pyramid: x to the spatial size of `like`
    return F.interpolate(x, size=like.shape[2:], mode="bilinear", align_corners=False)


class Encoder(nn.Module):
    def __init__(self, cfg: EncoderConfig = None):
        super().__init__()
        self.cfg = cfg = cfg or EncoderConfig()
        self.stem = nn.Sequential(nn.Conv2d(3, cfg.stem_width, 3, 1, 1, bias=False), nn.BatchNorm2d(cfg.stem_width),
                                  nn.PReLU(cfg.stem_width))
        stages, c = [], cfg.stem_width
        for width, count in zip(cfg.widths, cfg.blocks):
            stages.append(nn.Sequential(*[IRSEBlock(c if i == 0 else width, width, 2 if i == 0 else 1,
                                                    cfg.se_reduction) for i in range(count)]))
            c = width
        self.stages = nn.ModuleList(stages)
        # Lateral 1x1 convs of the (fine, medium, coarse) levels: the last three stages' outputs.
        self.laterals = nn.ModuleList(nn.Conv2d(w, cfg.fpn_width, 1) for w in cfg.widths[-3:])
        self.levels = cfg.layer_levels()
        num_heads = cfg.num_ws if cfg.mode == "w+" else 1
        sizes = cfg.level_sizes
        self.heads = nn.ModuleList(MapToStyle(cfg.fpn_width, cfg.head_width, sizes[self.levels[i]], cfg.w_dim,
                                              cfg.init_scale) for i in range(num_heads))
        self.register_buffer("w_avg", torch.zeros([cfg.w_dim]))
        # How many deltas are active (layers 1..stage); saved with the weights, so an encoder
        # exported mid-way through progressive training keeps its untrained heads off.
        self.register_buffer("stage", torch.tensor(cfg.num_ws - 1, dtype=torch.int64))

    @property
    def num_ws(self):
        return self.cfg.num_ws

    @property
    def progressive_stage(self) -> int:
        """Deltas of layers 1..progressive_stage are active; the rest are 0 (0: W codes only)."""
        return int(self.stage)

    @progressive_stage.setter
    def progressive_stage(self, value):
        value = int(value)
        if not 0 <= value <= self.cfg.num_ws - 1:
            raise InputError(f"progressive_stage must be in [0, {self.cfg.num_ws - 1}], got {value}")
        self.stage.fill_(value)

    def check_images(self, images):
        R = self.cfg.resolution
        if not torch.is_tensor(images) or images.ndim != 4 or tuple(images.shape[1:]) != (3, R, R):
            shape = list(images.shape) if torch.is_tensor(images) else type(images).__name__
            raise InputError(f"encoder input must be images [N, 3, {R}, {R}] in [-1, 1], got {shape}")
        if not torch.isfinite(images).all():
            raise InputError("encoder input images contain NaN or infinite values")

    def pyramid(self, x, levels=3) -> List[torch.Tensor]:
        """Images [N, 3, R, R] -> [fine, medium, coarse] maps [N, fpn_width, s, s]; with levels < 3
        only the coarsest `levels` are computed (earlier entries None)."""
        feats = []
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        c1, c2, c3 = feats[-3:]
        coarse = self.laterals[2](c3)
        medium = fine = None
        if levels >= 2:
            medium = _upsample(coarse, c2) + self.laterals[1](c2)
        if levels >= 3:
            fine = _upsample(medium, c1) + self.laterals[0](c1)
        return [fine, medium, coarse]

    def encode(self, images) -> Tuple[torch.Tensor, torch.Tensor]:
        """Images [N, 3, R, R] -> (w0 [N, w_dim], deltas [N, num_ws, w_dim]) relative to w_avg;
        deltas[:, 0] and those beyond progressive_stage (all of them in mode "w") are 0."""
        self.check_images(images)
        active = list(range(1, self.progressive_stage + 1)) if self.cfg.mode == "w+" else []
        needed = {self.levels[i] for i in [0] + active}
        maps = self.pyramid(images.float(), levels=3 - min(needed))
        w0 = self.heads[0](maps[self.levels[0]])                                   # [N, w_dim]
        rows = [torch.zeros_like(w0)] + [self.heads[i](maps[self.levels[i]]) for i in active]
        rows += [torch.zeros_like(w0)] * (self.cfg.num_ws - len(rows))
        return w0, torch.stack(rows, dim=1)                                          # [N, num_ws, w_dim]

    def forward(self, images):
        """Images [N, 3, R, R] in [-1, 1] -> W+ codes [N, num_ws, w_dim] = w_avg + w0 + delta_i."""
        w0, deltas = self.encode(images)
        return self.w_avg + w0[:, None] + deltas
