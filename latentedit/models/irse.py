"""The IR-SE residual network (ArcFace's "improved residual" units with squeeze-and-excitation):
one definition for the trunk of our image -> W+ encoder (models/encoder.py) and for the ArcFace
IR-SE-50 identity network that pSp / e4e use for their identity loss.

    trunk = irse_trunk(3, 64, [64, 128, 256, 512], [3, 4, 14, 3], se_reduction=16)   # IR-SE-50
    arc = ArcFace()                      # IR-SE-50 at 112 px -> 512-d unit embeddings
    e = arc(faces)                       # faces [N, 3, H, W] in [-1, 1], FFHQ-aligned, any size

Maths (re-implemented from the ArcFace / pSp papers and the layouts of their released weights):
- unit: residual = BN, 3x3 conv, PReLU, 3x3 conv (the unit's stride), BN, SE; shortcut = 1x1 conv
  (stride) + BN when the width changes, else a subsampling by the stride (a 1x1 max-pool);
- SE: global average, 1x1 conv to C // r, ReLU, 1x1 conv back, sigmoid, times the input;
- stem: 3x3 conv, BN, PReLU at full resolution; each stage halves the size in its first unit;
- ArcFace output: BN2d, dropout, flatten, linear (C * 7 * 7 -> 512), BN1d, L2 normalisation.
ArcFace's input is the pSp / e4e identity-loss crop: faces at 256 px, rows 35:223 and columns
32:220 (188 px), adaptively average-pooled to 112 px (faces of another size are first pooled to
256 px, as pSp pools its 1024 px generator outputs).
"""
from dataclasses import dataclass, field
from typing import List

import torch
import torch.nn.functional as F
from torch import nn

from latentedit.errors import InputError
from latentedit.models.config import DictConfig


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


def irse_trunk(in_channels, stem_width, widths, blocks, se_reduction):
    """(stem, stages): the stem at full resolution and one stage of IR-SE blocks per width, each
    halving the size in its first block. IR-SE-50: stem 64, widths 64/128/256/512, blocks 3/4/14/3."""
    stem = nn.Sequential(nn.Conv2d(in_channels, stem_width, 3, 1, 1, bias=False), nn.BatchNorm2d(stem_width),
                         nn.PReLU(stem_width))
    stages, c = [], stem_width
    for width, count in zip(widths, blocks):
        stages.append(nn.Sequential(*[IRSEBlock(c if i == 0 else width, width, 2 if i == 0 else 1, se_reduction)
                                      for i in range(count)]))
        c = width
    return stem, nn.ModuleList(stages)


# pSp / e4e's identity-loss crop of a 256 px FFHQ-aligned face, pooled to ArcFace's 112 px.
ID_FACE_SIZE = 256
ID_CROP_ROWS, ID_CROP_COLS = (35, 223), (32, 220)


@dataclass
class ArcFaceConfig(DictConfig):
    input_size: int = 112                  # ArcFace's input; 4 stride-2 stages -> 7 x 7
    stem_width: int = 64
    widths: List[int] = field(default_factory=lambda: [64, 128, 256, 512])
    blocks: List[int] = field(default_factory=lambda: [3, 4, 14, 3])
    se_reduction: int = 16
    embedding_dim: int = 512
    affine_output: bool = True             # the last BN1d has weight / bias (pSp's IDLoss: yes)

    def __post_init__(self):
        self.widths, self.blocks = [int(c) for c in self.widths], [int(b) for b in self.blocks]
        if len(self.widths) != len(self.blocks) or not self.widths:
            raise InputError(f"ArcFaceConfig needs one block count per width, got {self.widths} / {self.blocks}")
        if self.input_size % 2 ** len(self.widths) or self.input_size < 2 ** len(self.widths):
            raise InputError(f"ArcFaceConfig.input_size {self.input_size} must be a multiple of "
                             f"2^stages ({2 ** len(self.widths)})")

    @property
    def final_size(self):
        return self.input_size // 2 ** len(self.widths)


class ArcFace(nn.Module):
    """IR-SE ArcFace: forward(faces in [-1, 1], any square size) -> unit embeddings [N, embedding_dim],
    through pSp / e4e's crop; `embed(x)` takes ArcFace's own input [N, 3, 112, 112]. Kept in eval mode
    by its loader (BatchNorm running statistics, no dropout)."""

    def __init__(self, cfg: ArcFaceConfig = None):
        super().__init__()
        self.cfg = cfg = cfg or ArcFaceConfig()
        self.stem, self.stages = irse_trunk(3, cfg.stem_width, cfg.widths, cfg.blocks, cfg.se_reduction)
        c, s = cfg.widths[-1], cfg.final_size
        self.output_bn = nn.BatchNorm2d(c)
        self.dropout = nn.Dropout(0.4)
        self.linear = nn.Linear(c * s * s, cfg.embedding_dim)
        self.embedding_bn = nn.BatchNorm1d(cfg.embedding_dim, affine=cfg.affine_output)

    def embed(self, x):
        """[N, 3, input_size, input_size] -> unit embeddings [N, embedding_dim]."""
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        x = self.embedding_bn(self.linear(self.dropout(self.output_bn(x)).flatten(1)))
        return x / x.norm(dim=1, keepdim=True)

    def crop(self, images):
        """Faces [N, 3, R, R] -> ArcFace input: at 256 px (other sizes adaptively average-pooled first,
        pSp's face_pool), the crop pSp / e4e take, average-pooled to input_size."""
        square = torch.is_tensor(images) and images.ndim == 4 and images.shape[2] == images.shape[3]
        if not square or images.shape[1] != 3:
            shape = list(images.shape) if torch.is_tensor(images) else type(images).__name__
            raise InputError(f"ArcFace input must be faces [N, 3, R, R] in [-1, 1], got {shape}")
        if images.shape[-1] != ID_FACE_SIZE:
            images = F.adaptive_avg_pool2d(images, ID_FACE_SIZE)
        (r0, r1), (c0, c1) = ID_CROP_ROWS, ID_CROP_COLS
        return F.adaptive_avg_pool2d(images[:, :, r0:r1, c0:c1], self.cfg.input_size)

    def forward(self, images):
        return self.embed(self.crop(images))
