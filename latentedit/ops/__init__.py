"""Low-level ops with one signature each: a pure-PyTorch reference path that runs everywhere and a
compiled CUDA path (csrc/), chosen per call by `select_impl` (env LATENTEDIT_OPS=ref|cuda|auto)."""
from latentedit.ops.bias_act import ACTIVATIONS, bias_act
from latentedit.ops.dispatch import select_impl
from latentedit.ops.upfirdn2d import downsample2d, filter2d, setup_filter, upfirdn2d, upsample2d

__all__ = [
    "ACTIVATIONS", "bias_act", "select_impl", "setup_filter", "upfirdn2d", "upsample2d",
    "downsample2d", "filter2d",
]
