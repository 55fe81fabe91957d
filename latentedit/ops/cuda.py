"""Autograd Functions over the compiled ops of csrc/ (built by latentedit.ops.build).

Same signatures and semantics as the reference paths in bias_act.py and upfirdn2d.py; first and
second order gradients run on the kernels too. Each launch gets the caller's current CUDA
stream of x's device as an integer handle (csrc/README.md says why). Inputs the kernels do not
cover (float64, a filter that needs a gradient) go to the reference path.
"""
from typing import NamedTuple

import torch

from latentedit.ops import build
from latentedit.ops.bias_act import bias_act_ref, resolve_args
from latentedit.ops.upfirdn2d import _pair, parse_padding, upfirdn2d_ref

KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# bias_act kernel modes, as in csrc/bias_act.h.
_FORWARD, _GRAD_FROM_Y, _GRAD_FROM_X, _GRAD2_FROM_X = 0, 1, 2, 3


def _ops():
    ops = build.compiled_ops()
    if ops is None:
        raise RuntimeError("latentedit.ops.cuda needs the compiled CUDA ops, which are unavailable")
    return ops


def _stream(x):
    return torch.cuda.current_stream(x.device).cuda_stream


def _is_dense(t):
    """True when t fills its memory exactly, in some dim order (contiguous, channels_last, ...)."""
    expected = 1
    for stride, size in sorted((st, s) for s, st in zip(t.shape, t.stride()) if s != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def _like(t, ref):
    """t in ref's (dense) memory layout: the kernels walk all their operands in one memory order."""
    if t.stride() == ref.stride():
        return t
    return torch.empty_like(ref).copy_(t)


# ------------------------------------------------------------------------------------------------
# bias_act


class _BiasActCfg(NamedTuple):
    dim: int
    act: str
    act_id: int
    alpha: float
    gain: float
    clamp: float
    from_y: bool  # the gradient is read off the output y, so x need not be kept


def bias_act(x, b=None, dim=1, act="linear", alpha=None, gain=None, clamp=None):
    """See latentedit.ops.bias_act.bias_act."""
    spec, alpha, gain, clamp = resolve_args(act, alpha, gain, clamp)
    if b is not None:
        dtype = torch.result_type(x, b)  # the promotion the reference's x + b does
        x, b = x.to(dtype), b.to(dtype).contiguous()
    if x.dtype not in KERNEL_DTYPES or x.ndim == 0:
        return bias_act_ref(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)
    if not _is_dense(x):
        x = x.contiguous()
    # For linear / relu / lrelu the sign of y and |y| vs clamp decide the gradient exactly.
    from_y = act == "linear" or (act in ("relu", "lrelu") and gain > 0 and (act == "relu" or alpha >= 0))
    cfg = _BiasActCfg(dim % x.ndim, act, spec.cuda_index, alpha, gain, clamp, from_y)
    return _BiasAct.apply(x, b, cfg)


def _bias_act_launch(x, ref, b, cfg, mode):
    return _ops().bias_act.bias_act(x, ref, b, cfg.dim, cfg.act_id, mode, cfg.alpha, cfg.gain, cfg.clamp,
                                    _stream(x))


def _sum_to_bias(t, dim):
    """Reduces t to [t.shape[dim]]: the gradient of a bias broadcast along dim."""
    return t.sum([i for i in range(t.ndim) if i != dim]) if t.ndim > 1 else t


class _BiasAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, cfg):
        y = _bias_act_launch(x, None, b, cfg, _FORWARD)
        ctx.cfg = cfg
        if cfg.act == "linear" and cfg.clamp < 0:
            ctx.save_for_backward()
        elif cfg.from_y:
            ctx.save_for_backward(y, None)
        else:
            ctx.save_for_backward(x, b)
        return y

    @staticmethod
    def backward(ctx, dy):
        cfg = ctx.cfg
        if cfg.act == "linear" and cfg.clamp < 0:
            dz = dy * cfg.gain if cfg.gain != 1 else dy
        else:
            ref, b = ctx.saved_tensors
            dz = _BiasActGrad.apply(dy, ref, b, cfg)
        dx = dz if ctx.needs_input_grad[0] else None
        db = _sum_to_bias(dz, cfg.dim) if ctx.needs_input_grad[1] else None
        return dx, db, None


class _BiasActGrad(torch.autograd.Function):
    """dz = dy * gain * act'(z) * [not clamped], z = x + b, from ref = y (cfg.from_y) or x."""

    @staticmethod
    def forward(ctx, dy, ref, b, cfg):
        ctx.cfg = cfg
        ctx.save_for_backward(dy if cfg.act in ("tanh", "sigmoid") else None, ref, b)  # dy: for act''
        mode = _GRAD_FROM_Y if cfg.from_y else _GRAD_FROM_X
        return _bias_act_launch(_like(dy, ref), ref, None if cfg.from_y else b, cfg, mode)

    @staticmethod
    def backward(ctx, ddz):
        cfg = ctx.cfg
        dy, ref, b = ctx.saved_tensors
        d_dy = d_ref = d_b = None
        if ctx.needs_input_grad[0]:  # dz is linear in dy
            d_dy = _BiasActGrad.apply(ddz, ref, b, cfg)
        # act'' is zero for linear / relu / lrelu (and their from_y case), so only tanh and
        # sigmoid send gradient into x and b. That term is computed without a graph of its own:
        # third-order gradients of tanh / sigmoid are not supported.
        if cfg.act in ("tanh", "sigmoid") and (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]):
            g = _like(_like(ddz, ref) * _like(dy, ref), ref)
            d_ref = _bias_act_launch(g, ref, b, cfg, _GRAD2_FROM_X)
            if b is not None and ctx.needs_input_grad[2]:
                d_b = _sum_to_bias(d_ref, cfg.dim)
        return d_dy, d_ref, d_b, None


# ------------------------------------------------------------------------------------------------
# upfirdn2d


def upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1):
    """See latentedit.ops.upfirdn2d.upfirdn2d."""
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    if x.dtype not in KERNEL_DTYPES or f.requires_grad:
        return upfirdn2d_ref(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)
    up, down, pad = _pair(up, "up"), _pair(down, "down"), parse_padding(padding)
    f = f.to(device=x.device, dtype=torch.float32).contiguous()
    return _Upfirdn2d.apply(x, f, up, down, pad, bool(flip_filter), float(gain))


def _upfirdn2d_launch(x, f, up, down, pad, flip, gain):
    (upx, upy), (downx, downy), (x0, x1, y0, y1) = up, down, pad
    op, stream = _ops().upfirdn2d.upfirdn2d, _stream(x)
    if f.ndim == 1:  # separable: along W with taps [1, k], then along H with taps [k, 1]
        k, g = f.shape[0], gain ** 0.5
        t = op(x, f, k, 1, upx, 1, downx, 1, x0, x1, 0, 0, flip, g, stream)
        return op(t, f, 1, k, 1, upy, 1, downy, 0, 0, y0, y1, flip, g, stream)
    return op(x, f, f.shape[1], f.shape[0], upx, upy, downx, downy, x0, x1, y0, y1, flip, gain, stream)


class _Upfirdn2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, f, up, down, pad, flip, gain):
        ctx.save_for_backward(f)
        ctx.cfg = (up, down, pad, flip, gain, x.shape[2], x.shape[3])
        return _upfirdn2d_launch(x, f, up, down, pad, flip, gain)

    @staticmethod
    def backward(ctx, dy):
        # The adjoint of "insert zeros, pad, correlate with c, subsample" is "insert zeros (by
        # down), pad, correlate with c rotated by 180 degrees, subsample (by up)": the same op
        # with up and down swapped, the flip toggled and the padding mirrored around the filter.
        if not ctx.needs_input_grad[0]:
            return (None,) * 7
        (f,) = ctx.saved_tensors
        (upx, upy), (downx, downy), (x0, x1, y0, y1), flip, gain, h, w = ctx.cfg
        fw, fh = (f.shape[0], f.shape[0]) if f.ndim == 1 else (f.shape[1], f.shape[0])
        pad = (fw - 1 - x0, (w - 1) * upx - dy.shape[3] * downx + x0 + 1,
               fh - 1 - y0, (h - 1) * upy - dy.shape[2] * downy + y0 + 1)
        dx = _Upfirdn2d.apply(dy, f, (downx, downy), (upx, upy), pad, not flip, gain)
        return dx, None, None, None, None, None, None
