"""Image -> W / W+ encoder of the pSp / e4e family (networks only; no file I/O, no training).

    enc = Encoder(EncoderConfig.small(num_ws=G.num_ws))
    enc.w_avg.copy_(G.w_avg)            # the trainer does this: codes start near the average face
    codes = enc(images)                 # [N, 3, R, R] in [-1, 1] -> [N, num_ws, w_dim]

Architecture (re-implemented from the pSp and e4e papers' descriptions):

- backbone: models/irse.py's trunk: a 3x3 stem at full resolution, then `len(widths)` stages of
  IR-SE residual blocks (stride 2 in each stage's first block);
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
  layer gets the same code; mode "w+independent" is pSp's: codes[:, i] = w_avg + head_i.

The released pSp / e4e / ReStyle checkpoints load into this class (formats/psp.py): their layout
is expressible with the config's input_channels, style_slope, fpn_align_corners, coarse_lateral.

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
from latentedit.models.irse import irse_trunk

ENCODER_MODES = ("w+", "w", "w+independent")
_INT_LIMITS = {"resolution": 4096, "num_ws": 64, "w_dim": 8192, "stem_width": 4096, "fpn_width": 4096,
               "head_width": 4096, "coarse_layers": 64, "medium_layers": 64, "se_reduction": 1024, "input_channels": 64}


@dataclass
class EncoderConfig(DictConfig):
    resolution: int = 256                  # input image size (pSp resizes 1024 px faces to 256)
    num_ws: int = 18                       # W+ layers of the generator the codes are for
    w_dim: int = 512
    mode: str = "w+"                       # "w+": base code + per-layer deltas (e4e); "w": one code;
    #                                        "w+independent": one code per layer, no shared base (pSp)
    stem_width: int = 64
    widths: List[int] = field(default_factory=lambda: [64, 128, 256, 512])   # per stage (stride 2 each)
    blocks: List[int] = field(default_factory=lambda: [3, 4, 14, 3])         # IR-SE blocks per stage
    se_reduction: int = 16
    fpn_width: int = 512                   # channels of the three pyramid levels
    head_width: int = 512                  # channels of the map-to-style convs
    coarse_layers: int = 3                 # W+ layers read from the coarse level
    medium_layers: int = 4                 # then from the medium level; the rest from the fine level
    init_scale: float = 0.05               # initial scale of the heads' last linear layers
    # The released pSp / e4e / ReStyle layouts differ from ours in these (their values in brackets):
    input_channels: int = 3                # [ReStyle: 6, the image and the current reconstruction]
    style_slope: float = 0.2               # LeakyReLU slope of the map-to-style convs [0.01]
    fpn_align_corners: bool = False        # bilinear upsampling of the pyramid's top-down path [True]
    coarse_lateral: bool = True            # coarse level = 1x1 conv of the last stage [False: the map itself]

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
        if not isinstance(self.style_slope, (int, float)) or not 0 <= self.style_slope <= 1:
            raise InputError(f"EncoderConfig.style_slope must be in [0, 1], got {self.style_slope!r}")
        for name in ("fpn_align_corners", "coarse_lateral"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"EncoderConfig.{name} must be true or false, got {getattr(self, name)!r}")
        if not self.coarse_lateral and self.fpn_width != self.widths[-1]:
            raise InputError(f"EncoderConfig without a coarse lateral needs fpn_width == widths[-1] "
                             f"({self.widths[-1]}), got {self.fpn_width}")

    @classmethod
    def small(cls, num_ws=10, w_dim=512, resolution=64, mode="w+", width=1.0):
        """For the bundled 64 px generator (10 W+ layers): pyramid 16 / 8 / 4 px, 4.3 M parameters;
        `width` multiplies every channel count (2: 16 M parameters)."""
        if not isinstance(width, (int, float)) or not 0.25 <= width <= 8:
            raise InputError(f"encoder width must be in [0.25, 8], got {width!r}")
        c = lambda n: int(round(n * width))  # noqa: E731
        return cls(resolution=resolution, num_ws=num_ws, w_dim=w_dim, mode=mode, stem_width=c(32),
                   widths=[c(32), c(64), c(128), c(192)], blocks=[1, 2, 2, 1], se_reduction=8,
                   fpn_width=c(96), head_width=c(96))

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
# Heads and pyramid (the backbone is models/irse.py's IR-SE trunk)


class MapToStyle(nn.Module):
    """[N, C, s, s] -> [N, w_dim]: log2(s) stride-2 3x3 convs with LeakyReLU to 1x1, then linear."""

    def __init__(self, cin, width, size, w_dim, init_scale, slope=0.2):
        super().__init__()
        convs, c = [], cin
        for _ in range(int(math.log2(size))):
            convs += [nn.Conv2d(c, width, 3, 2, 1), nn.LeakyReLU(slope)]
            c = width
        self.convs = nn.Sequential(*convs)
        self.linear = nn.Linear(c, w_dim)
        with torch.no_grad():
            self.linear.weight.normal_(0, init_scale / math.sqrt(c))
            self.linear.bias.zero_()

    def forward(self, x):
        return self.linear(self.convs(x).flatten(1))


def _upsample(x, like, align_corners):  # top-down path of the pyramid: x to the spatial size of `like`
    return F.interpolate(x, size=like.shape[2:], mode="bilinear", align_corners=align_corners)


class Encoder(nn.Module):
    def __init__(self, cfg: EncoderConfig = None):
        super().__init__()
        self.cfg = cfg = cfg or EncoderConfig()
        self.stem, self.stages = irse_trunk(cfg.input_channels, cfg.stem_width, cfg.widths, cfg.blocks,
                                            cfg.se_reduction)
        self.levels = cfg.layer_levels()
        # Lateral 1x1 convs of the (fine, medium, coarse) levels: the last three stages' outputs. A
        # level no layer reads (nor a finer one) has none (Identity: no weights), so ReStyle's
        # coarse-only layout loads; the coarse level may be the last stage's map itself (pSp / e4e).
        finest = min(self.levels)
        self.laterals = nn.ModuleList(
            nn.Conv2d(w, cfg.fpn_width, 1) if k >= finest and (k < 2 or cfg.coarse_lateral) else nn.Identity()
            for k, w in enumerate(cfg.widths[-3:]))
        num_heads = 1 if cfg.mode == "w" else cfg.num_ws
        sizes = cfg.level_sizes
        self.heads = nn.ModuleList(MapToStyle(cfg.fpn_width, cfg.head_width, sizes[self.levels[i]], cfg.w_dim,
                                              cfg.init_scale, cfg.style_slope) for i in range(num_heads))
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
        R, C = self.cfg.resolution, self.cfg.input_channels
        if not torch.is_tensor(images) or images.ndim != 4 or tuple(images.shape[1:]) != (C, R, R):
            shape = list(images.shape) if torch.is_tensor(images) else type(images).__name__
            raise InputError(f"encoder input must be images [N, {C}, {R}, {R}] in [-1, 1], got {shape}")
        if not torch.isfinite(images).all():
            raise InputError("encoder input images contain NaN or infinite values")

    def pyramid(self, x, levels=3) -> List[torch.Tensor]:
        """Images [N, C, R, R] -> [fine, medium, coarse] maps [N, fpn_width, s, s]; with levels < 3
        only the coarsest `levels` are computed (earlier entries None)."""
        feats = []
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        c1, c2, c3 = feats[-3:]
        coarse = self.laterals[2](c3)
        medium = fine = None
        align = self.cfg.fpn_align_corners
        if levels >= 2:
            medium = _upsample(coarse, c2, align) + self.laterals[1](c2)
        if levels >= 3:
            fine = _upsample(medium, c1, align) + self.laterals[0](c1)
        return [fine, medium, coarse]

    def encode(self, images) -> Tuple[torch.Tensor, torch.Tensor]:
        """Images [N, C, R, R] -> (w0 [N, w_dim], deltas [N, num_ws, w_dim]) relative to w_avg;
        deltas[:, 0] and those beyond progressive_stage (all of them in mode "w") are 0. Mode
        "w+independent": w0 is 0 and deltas[:, i] is layer i's code (progressive_stage unused)."""
        self.check_images(images)
        if self.cfg.mode == "w+independent":
            maps = self.pyramid(images.float(), levels=3 - min(self.levels))
            codes = torch.stack([head(maps[level]) for head, level in zip(self.heads, self.levels)], dim=1)
            return torch.zeros_like(codes[:, 0]), codes
        active = list(range(1, self.progressive_stage + 1)) if self.cfg.mode == "w+" else []
        needed = {self.levels[i] for i in [0] + active}
        maps = self.pyramid(images.float(), levels=3 - min(needed))
        w0 = self.heads[0](maps[self.levels[0]])                                   # [N, w_dim]
        rows = [torch.zeros_like(w0)] + [self.heads[i](maps[self.levels[i]]) for i in active]
        rows += [torch.zeros_like(w0)] * (self.cfg.num_ws - len(rows))
        return w0, torch.stack(rows, dim=1)                                          # [N, num_ws, w_dim]

    def offsets(self, images):
        """Images -> codes relative to w_avg [N, num_ws, w_dim] = w0 + delta_i (ReStyle adds them to
        its previous codes)."""
        w0, deltas = self.encode(images)
        return w0[:, None] + deltas

    def forward(self, images):
        """Images [N, C, R, R] in [-1, 1] -> W+ codes [N, num_ws, w_dim] = w_avg + w0 + delta_i."""
        return self.w_avg + self.offsets(images)
