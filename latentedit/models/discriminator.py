"""StyleGAN2 residual discriminator (config-f maths, NVlabs' module and parameter names)."""
import math

import torch
from torch import nn

from latentedit.models.layers import Conv2dLayer, FullyConnectedLayer
from latentedit.models.stylegan2 import DiscriminatorConfig, check_label
from latentedit.ops import setup_filter

# ---------------------------------------------------------------------------------------------
# Discriminator


class MinibatchStdLayer(nn.Module):
    """Appends the mean standard deviation over groups of samples as extra feature maps."""

    def __init__(self, group_size, num_channels=1):
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x):
        N, C, H, W = x.shape
        G = min(self.group_size, N) if self.group_size else N
        Fc = self.num_channels
        y = x.reshape(G, -1, Fc, C // Fc, H, W)
        y = (y - y.mean(dim=0)).square().mean(dim=0)
        y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4])  # [N/G, F]
        y = y.reshape(-1, Fc, 1, 1).repeat(G, 1, H, W)
        return torch.cat([x, y], dim=1)


class DiscriminatorBlock(nn.Module):
    """Residual block: (fromRGB) -> conv -> 2x down-conv, plus a 1x1 down-sampled skip."""

    def __init__(self, in_channels, tmp_channels, out_channels, img_channels, resample_filter, conv_clamp):
        super().__init__()
        self.in_channels = in_channels
        self.register_buffer("resample_filter", setup_filter(resample_filter))  # kept for the NVlabs layout
        if in_channels == 0:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, 1, activation="lrelu", conv_clamp=conv_clamp)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, activation="lrelu", conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, activation="lrelu", down=2,
                                 resample_filter=resample_filter, conv_clamp=conv_clamp)
        self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, down=2, resample_filter=resample_filter)

    def forward(self, x, img, fast=None):
        if self.in_channels == 0:
            x = self.fromrgb(img, fast=fast)
        y = self.skip(x, gain=math.sqrt(0.5), fast=fast)
        x = self.conv1(self.conv0(x, fast=fast), gain=math.sqrt(0.5), fast=fast)
        return y + x


class DiscriminatorEpilogue(nn.Module):
    def __init__(self, in_channels, img_channels, mbstd_group_size, mbstd_num_channels, conv_clamp, resolution=4):
        super().__init__()
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, 3, activation="lrelu",
                                conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * resolution ** 2, in_channels, activation="lrelu")
        self.out = FullyConnectedLayer(in_channels, 1)

    def features(self, x, fast=None):
        """The last features [N, C], which the logit and a label's projection read."""
        if self.mbstd is not None:
            x = self.mbstd(x)
        return self.fc(self.conv(x, fast=fast).flatten(1))

    def forward(self, x, fast=None, cmap=None):
        """cmap: the label's projection [N, C] (conditional D): adds <cmap, features> / sqrt(C)."""
        h = self.features(x, fast=fast)
        if cmap is None:
            return self.out(h)
        return self.out(h) + (h * cmap).sum(dim=1, keepdim=True) / math.sqrt(h.shape[1])


class Discriminator(nn.Module):
    """StyleGAN2 residual discriminator: images [N, C, R, R] -> realness logits [N, 1] (minibatch
    standard deviation over groups of `mbstd_group_size`). `D(img)` or NVlabs' `D(img, c)`.
    Conditional (c_dim > 0): the unconditional logit plus the projection of the label onto the last
    features (Miyato & Koyama's projection discriminator), `project` zero-initialised so that a
    trained unconditional D warm-starts unchanged and learns to use the label. Without a label a
    conditional D gives its unconditional term alone: realness whatever the label (what losses on
    edited faces use)."""

    def __init__(self, cfg: DiscriminatorConfig = None):
        super().__init__()
        self.cfg = cfg = cfg or DiscriminatorConfig()
        log2 = int(math.log2(cfg.resolution))
        self.block_resolutions = [2 ** i for i in range(log2, 2, -1)]
        for res in self.block_resolutions:
            in_ch = cfg.channels(res) if res < cfg.resolution else 0
            block = DiscriminatorBlock(in_ch, cfg.channels(res), cfg.channels(res // 2), cfg.img_channels,
                                       cfg.resample_filter, cfg.conv_clamp)
            setattr(self, f"b{res}", block)
        self.b4 = DiscriminatorEpilogue(cfg.channels(4), cfg.img_channels, cfg.mbstd_group_size,
                                        cfg.mbstd_num_channels, cfg.conv_clamp)
        if cfg.c_dim:  # lr multiplier sqrt(c_dim): each class's row learns at Adam's own rate (as G's W offsets)
            self.project = FullyConnectedLayer(cfg.c_dim, cfg.channels(4), bias=False, lr_multiplier=math.sqrt(cfg.c_dim))
            nn.init.zeros_(self.project.weight)

    def forward(self, img, c=None, fast=None):
        """img [N, C, R, R] and NVlabs' label c ([N, c_dim]; unconditional: None or [N, 0]; None on a
        conditional D: its unconditional term) -> logits [N, 1]. fast (default: on for CPU tensors):
        channels_last and the Conv2dLayer fast path; False: the reference ops."""
        check_label(c, len(img), self.cfg.c_dim, drawn=True)
        cmap = self.project(c.to(torch.float32)) if self.cfg.c_dim and c is not None else None
        fast = img.device.type == "cpu" if fast is None else fast
        return self.b4(self._blocks(img, fast), fast=fast, cmap=cmap)

    def features(self, img, fast=None):
        """The last features [N, C] (before the logit), which a label's projection is dotted with."""
        fast = img.device.type == "cpu" if fast is None else fast
        return self.b4.features(self._blocks(img, fast), fast=fast)

    def _blocks(self, img, fast):
        if fast:
            img = img.contiguous(memory_format=torch.channels_last)  # measured: ~25% faster on CPU
        x = None
        for res in self.block_resolutions:
            x = getattr(self, f"b{res}")(x, img, fast=fast)
        return x
