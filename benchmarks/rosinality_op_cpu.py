"""A CPU stand-in for rosinality's `op` package, for benchmarks only.

SD-GAN's generator (`pytorch_stylegan2/stylegan2_model.py`) does `from op import FusedLeakyReLU,
fused_leaky_relu, upfirdn2d`, and that package compiles CUDA extensions when imported (it fails
where CUDA_HOME is unset). `install()` puts this module into sys.modules as `op` first, so their
generator imports and runs on CPU with our ops (latentedit.ops) under the same names and
signatures:

- fused_leaky_relu(input, bias, negative_slope=0.2, scale=sqrt 2) = leaky_relu(input + bias) * scale,
  bias along dim 1;
- FusedLeakyReLU(channel, negative_slope, scale): a module holding that bias (`bias`, [channel]);
- upfirdn2d(input, kernel, up=1, down=1, pad=(p0, p1)): zero-stuff by `up`, pad both axes by
  (p0, p1) (negative crops), convolve with the 2-D kernel as given (no normalisation), keep every
  `down`-th sample.
"""
import sys

import torch
from torch import nn

from latentedit.ops.bias_act import bias_act
from latentedit.ops.upfirdn2d import upfirdn2d as our_upfirdn2d


def fused_leaky_relu(input, bias, negative_slope=0.2, scale=2 ** 0.5):
    return bias_act(input, bias, dim=1, act="lrelu", alpha=negative_slope, gain=scale)


class FusedLeakyReLU(nn.Module):
    def __init__(self, channel, negative_slope=0.2, scale=2 ** 0.5):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channel))
        self.negative_slope, self.scale = negative_slope, scale

    def forward(self, input):
        return fused_leaky_relu(input, self.bias, self.negative_slope, self.scale)


def upfirdn2d(input, kernel, up=1, down=1, pad=(0, 0)):
    p0, p1 = pad
    return our_upfirdn2d(input, kernel, up=up, down=down, padding=(p0, p1, p0, p1))


def install():
    """Makes `import op` resolve to this module (their generator imports only from `op`)."""
    sys.modules["op"] = sys.modules[__name__]
