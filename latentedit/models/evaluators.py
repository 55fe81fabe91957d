"""Evaluator networks for 64 px faces: attribute classifier, identity embedder, face parser.

Networks only (no file I/O, no training). Each takes images [N, 3, H, W] in [-1, 1] and is
built from a JSON-able config dict, so a bundle can record it (`kind` + `config`).
"""
from dataclasses import dataclass, field
from typing import Dict, List

import torch
from torch import nn
from torch.nn import functional as F

from latentedit.errors import InputError
from latentedit.models.config import DictConfig

# What the bundled attribute classifier predicts: head -> class names (argmax = the class).
# Binary heads of continuous world attributes use thresholds: smile > 0.5, age > 0.5, beard > 0.
ATTRIBUTE_HEADS = {
    "glasses": ["none", "frame", "sun"],
    "mask": ["none", "on"],
    "hat": ["none", "on"],
    "beard": ["none", "on"],
    "smile": ["no", "yes"],
    "age": ["young", "old"],
    "hair_color": ["black", "dark_brown", "brown", "light_brown", "blond", "auburn", "red"],
    "hair_style": ["short", "buzz", "bob", "long", "bald", "curly", "bangs"],
}
REGRESSION_HEADS = ["smile", "age", "beard"]   # the continuous amounts in [0, 1]


def _check_images(x, size=None):
    if x.ndim != 4 or x.shape[1] != 3 or (size and tuple(x.shape[2:]) != (size, size)):
        want = f"[N, 3, {size}, {size}]" if size else "[N, 3, H, W]"
        raise InputError(f"expected images {want}, got {list(x.shape)}")


def conv_bn(cin, cout, stride=1):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class Backbone(nn.Module):
    """Stages of (3x3 stride-2 conv, 3x3 conv): 64 -> 4 px; global average pool -> [N, C]."""

    def __init__(self, channels):
        super().__init__()
        stages, c = [], 3
        for c_out in channels:
            stages.append(nn.Sequential(conv_bn(c, c_out, 2), conv_bn(c_out, c_out)))
            c = c_out
        self.stages = nn.Sequential(*stages)
        self.out_channels = c

    def forward(self, x):  # [N, 3, H, W] -> [N, C]
        return self.stages(x).mean((2, 3))


@dataclass
class ClassifierConfig(DictConfig):
    image_size: int = 64
    channels: List[int] = field(default_factory=lambda: [32, 64, 128, 256])
    heads: Dict[str, List[str]] = field(default_factory=lambda: {k: list(v) for k, v in ATTRIBUTE_HEADS.items()})
    regression: List[str] = field(default_factory=lambda: list(REGRESSION_HEADS))


class AttributeClassifier(nn.Module):
    """Images -> {head: logits [N, classes]} and `regression` [N, R] in [0, 1];
    `features(x)` [N, C] is the embedding that world-FID / KID / precision-recall use."""

    def __init__(self, cfg: ClassifierConfig = None):
        super().__init__()
        self.cfg = cfg = cfg or ClassifierConfig()
        self.backbone = Backbone(cfg.channels)
        c = self.backbone.out_channels
        self.heads = nn.ModuleDict({name: nn.Linear(c, len(classes)) for name, classes in cfg.heads.items()})
        self.regression = nn.Linear(c, len(cfg.regression))

    @property
    def input_size(self):  # the loss protocol's name for it (latentedit.edit.losses)
        return self.cfg.image_size

    @property
    def feature_dim(self):
        return self.backbone.out_channels

    def features(self, x):
        _check_images(x, self.cfg.image_size)
        return self.backbone(x)

    def forward(self, x) -> Dict[str, torch.Tensor]:
        return self.classify(self.features(x))

    def classify(self, f) -> Dict[str, torch.Tensor]:
        """Features [N, C] -> {head: logits} and `regression`."""
        out = {name: head(f) for name, head in self.heads.items()}
        out["regression"] = torch.sigmoid(self.regression(f))
        return out

    @torch.no_grad()
    def predict(self, x):
        """{head: probabilities [N, classes]} and `regression` [N, R]."""
        out = self(x)
        return {k: (v if k == "regression" else v.softmax(1)) for k, v in out.items()}


@dataclass
class IdentityConfig(DictConfig):
    image_size: int = 64
    channels: List[int] = field(default_factory=lambda: [32, 64, 128, 256])
    embed_dim: int = 128
    identity_dim: int = 0   # > 0: an auxiliary head regressing the world's identity vector


class IdentityEmbedder(nn.Module):
    """Images -> unit embeddings [N, embed_dim]; cosine similarity = same-person score."""

    def __init__(self, cfg: IdentityConfig = None):
        super().__init__()
        self.cfg = cfg = cfg or IdentityConfig()
        self.backbone = Backbone(cfg.channels)
        c = self.backbone.out_channels
        self.project = nn.Sequential(nn.Linear(c, c), nn.ReLU(inplace=True), nn.Linear(c, cfg.embed_dim))
        self.identity_head = nn.Linear(c, cfg.identity_dim) if cfg.identity_dim else None

    @property
    def input_size(self):  # the loss protocol's name for it (latentedit.edit.losses)
        return self.cfg.image_size

    def forward(self, x, with_identity=False):
        _check_images(x, self.cfg.image_size)
        f = self.backbone(x)
        e = F.normalize(self.project(f), dim=1)
        if with_identity:
            return e, (self.identity_head(f) if self.identity_head is not None else None)
        return e


@dataclass
class ParserConfig(DictConfig):
    image_size: int = 64
    channels: List[int] = field(default_factory=lambda: [16, 32, 64, 128])
    num_classes: int = 20
    labels: List[str] = field(default_factory=list)   # class names (world.LABELS when trained on it)


class FaceParser(nn.Module):
    """A small U-Net: images [N, 3, H, W] -> label logits [N, num_classes, H, W]."""

    def __init__(self, cfg: ParserConfig = None):
        super().__init__()
        self.cfg = cfg = cfg or ParserConfig()
        ch = cfg.channels
        self.stem = conv_bn(3, ch[0])                                                        # full res
        self.down = nn.ModuleList(nn.Sequential(conv_bn(ch[i], ch[i + 1], 2), conv_bn(ch[i + 1], ch[i + 1]))
                                  for i in range(len(ch) - 1))
        self.up = nn.ModuleList(conv_bn(ch[i + 1] + ch[i], ch[i]) for i in reversed(range(len(ch) - 1)))
        self.head = nn.Conv2d(ch[0], cfg.num_classes, 1)

    def forward(self, x):
        _check_images(x)
        if x.shape[2] % 2 ** (len(self.cfg.channels) - 1) or x.shape[3] % 2 ** (len(self.cfg.channels) - 1):
            raise InputError(f"FaceParser needs sides divisible by {2 ** (len(self.cfg.channels) - 1)}")
        skips = [self.stem(x)]
        for down in self.down:
            skips.append(down(skips[-1]))
        h = skips.pop()
        for up in self.up:
            s = skips.pop()
            h = up(torch.cat([F.interpolate(h, size=s.shape[2:], mode="nearest"), s], 1))
        return self.head(h)

    @torch.no_grad()
    def parse(self, x):
        """Label maps [N, H, W] int64."""
        return self(x).argmax(1)
