"""bias_act: add a bias, apply an activation, multiply by a gain, clamp; in one call.

Reference path here; the fused CUDA kernel (csrc/bias_act.cu) is chosen by `select_impl`.
"""
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from latentedit.ops.dispatch import select_impl


@dataclass(frozen=True)
class Activation:
    func: Callable  # (x, alpha) -> y
    default_alpha: float
    default_gain: float
    cuda_index: int  # the activation's id in csrc/bias_act.h


ACTIVATIONS = {
    "linear": Activation(lambda x, a: x, 0.0, 1.0, 1),
    "relu": Activation(lambda x, a: F.relu(x), 0.0, math.sqrt(2), 2),
    "lrelu": Activation(lambda x, a: F.leaky_relu(x, a), 0.2, math.sqrt(2), 3),
    "tanh": Activation(lambda x, a: torch.tanh(x), 0.0, 1.0, 4),
    "sigmoid": Activation(lambda x, a: torch.sigmoid(x), 0.0, 1.0, 5),
}


def resolve_args(act, alpha, gain, clamp):
    """Fills in the activation's defaults; clamp < 0 means no clamping."""
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; expected one of {sorted(ACTIVATIONS)}")
    spec = ACTIVATIONS[act]
    alpha = float(spec.default_alpha if alpha is None else alpha)
    gain = float(spec.default_gain if gain is None else gain)
    clamp = float(-1 if clamp is None else clamp)
    return spec, alpha, gain, clamp


def bias_act(x, b=None, dim=1, act="linear", alpha=None, gain=None, clamp=None, impl=None):
    """y = clamp(act(x + b, alpha) * gain, -clamp, clamp), with b broadcast along `dim` of x.

    x: any shape; b: [x.shape[dim]] or None; gain defaults to the activation's (sqrt 2 for
    relu/lrelu); clamp None disables clamping. Supports first and second order gradients.
    """
    dim = dim % x.ndim if x.ndim else 0
    if b is not None and (b.ndim != 1 or b.shape[0] != x.shape[dim]):
        raise ValueError(f"bias shape {tuple(b.shape)} does not match x.shape[{dim}] = {x.shape[dim]}")
    if select_impl(x, impl) == "cuda":
        from latentedit.ops import cuda

        return cuda.bias_act(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)
    return bias_act_ref(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)


def bias_act_ref(x, b=None, dim=1, act="linear", alpha=None, gain=None, clamp=None):
    spec, alpha, gain, clamp = resolve_args(act, alpha, gain, clamp)
    if b is not None:
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    x = spec.func(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x
