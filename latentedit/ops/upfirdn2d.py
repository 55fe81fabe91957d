"""upfirdn2d: upsample (zero insertion), pad, FIR filter, downsample; in one call.

Semantics (the ones StyleGAN2 checkpoints were trained with): for x [N, C, H, W] and filter f,
  1. insert up-1 zeros after every sample,  2. pad by (x0, x1, y0, y1) (negative crops),
  3. convolve with f (true convolution; correlation when flip_filter), scaled so that the
     filter sums to `gain` (separable 1-D filters get sqrt(gain) per pass),
  4. keep every down-th sample.
The reference path never materialises the zero-stuffed tensor: up-sampling is a depthwise
transposed convolution, down-sampling a strided depthwise convolution, and 1-D filters run as
two separable passes.
"""
import torch
import torch.nn.functional as F

from latentedit.ops.dispatch import select_impl


def _pair(v, name):
    if isinstance(v, int):
        return v, v
    if len(v) == 2:
        return int(v[0]), int(v[1])
    raise ValueError(f"{name} must be an int or a pair, got {v!r}")


def parse_padding(padding):
    """int | (px, py) | (x0, x1, y0, y1) -> (x0, x1, y0, y1)."""
    if isinstance(padding, int):
        return padding, padding, padding, padding
    padding = [int(p) for p in padding]
    if len(padding) == 2:
        px, py = padding
        return px, px, py, py
    if len(padding) == 4:
        return tuple(padding)
    raise ValueError(f"padding must be an int, a pair or 4 values, got {padding!r}")


def setup_filter(f, device=torch.device("cpu"), normalize=True, flip_filter=False, gain=1, separable=None):
    """Builds a float32 FIR filter from taps. 1-D taps give a separable filter ([K]) when
    `separable` is not False, else their outer product ([K, K]); normalised to sum to 1, times gain."""
    if f is None:
        f = 1
    f = torch.as_tensor(f, dtype=torch.float32)
    if f.ndim == 0:
        f = f[None]
    if f.ndim not in (1, 2):
        raise ValueError(f"filter must be 1-D or 2-D, got shape {tuple(f.shape)}")
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = f.ger(f)
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(device=device)


def filter_size(f):
    """(width, height) of a filter; None means the identity filter [1]."""
    if f is None:
        return 1, 1
    if f.ndim == 1:
        return f.shape[0], f.shape[0]
    return f.shape[1], f.shape[0]


def upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1, impl=None):
    """x: [N, C, H, W]; f: [fh, fw] or separable [fw] or None; up/down: int or (x, y);
    padding: int | (px, py) | (x0, x1, y0, y1). Returns [N, C, H', W'] with
    H' = (H * up_y + y0 + y1 - fh + down_y) // down_y."""
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects x of shape [N, C, H, W], got {tuple(x.shape)}")
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    if f.ndim not in (1, 2) or not f.is_floating_point():
        raise ValueError(f"filter must be a floating-point tensor of 1 or 2 dims, got {f.dtype} {tuple(f.shape)}")
    if select_impl(x, impl) == "cuda":
        from latentedit.ops import cuda

        return cuda.upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)
    return upfirdn2d_ref(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)


def _fir_1d(x, g, axis, up, down, pad0, pad1):
    """One pass of the op along one spatial axis (axis 2 = H, 3 = W) with 1-D taps g (the true
    convolution kernel). Depthwise: every channel gets the same taps."""
    C, k = x.shape[1], g.shape[0]
    shape = [C, 1, k, 1] if axis == 2 else [C, 1, 1, k]
    w = g.to(x.dtype).reshape(shape[1:]).expand(shape)
    return _fir(x, w, axis_pads=((pad0, pad1) if axis == 2 else None, (pad0, pad1) if axis == 3 else None),
                up=(up if axis == 2 else 1, up if axis == 3 else 1),
                down=(down if axis == 2 else 1, down if axis == 3 else 1))


def _fir(x, w, axis_pads, up, down):
    """Depthwise up/pad/convolve/down with kernel w [C, 1, kh, kw] (true convolution taps).
    axis_pads: ((y0, y1) or None, (x0, x1) or None); up, down: (y, x)."""
    if down != (1, 1) and x.device.type == "cpu" and (x.dtype == torch.bfloat16 or torch.is_autocast_enabled("cpu")):
        # oneDNN's bf16 backward of a strided depthwise conv runs 5-20x slower than fp32's (torch
        # 2.13, AVX-512 Zen 4; benchmarks/RESULTS.md): an fp32 island costs less than that.
        with torch.autocast("cpu", enabled=False):
            return _fir(x.float(), w.float(), axis_pads, up, down).to(x.dtype)
    kh, kw = w.shape[2], w.shape[3]
    (y0, y1), (x0, x1) = (p if p is not None else (0, 0) for p in axis_pads)
    upy, upx = up
    if upy > 1 or upx > 1:
        # Transposed conv = zero insertion + full convolution with w, covering output positions
        # [-(k-1), H*up) of the padded/filtered signal; crop or pad to the requested window.
        x = fixed_depthwise(x, w, stride=(upy, upx), padding=(0, 0), transposed=True)
        x = F.pad(x, [x0 - kw + 1, upx + x1 - kw, y0 - kh + 1, upy + y1 - kh])
        if down != (1, 1):
            x = x[:, :, :: down[0], :: down[1]]
        return x
    # conv2d correlates, so flip the taps to convolve. Symmetric non-negative padding goes into
    # the conv itself (no padded copy of x).
    if x0 == x1 and y0 == y1 and x0 >= 0 and y0 >= 0:
        return fixed_depthwise(x, w.flip([2, 3]), stride=down, padding=(y0, x0))
    x = F.pad(x, [x0, x1, y0, y1])
    return fixed_depthwise(x, w.flip([2, 3]), stride=down, padding=(0, 0))


class _FixedDepthwise(torch.autograd.Function):
    """A depthwise convolution (or transposed convolution) by a kernel that takes no gradient.
    Its backward is the adjoint op, built from this Function again, so a second backward (path
    length, R1) is one more depthwise op. Through autograd's convolution it is not: the double
    backward of a grouped convolution loops over the groups, one small convolution per channel
    (fp32, 8 x 128 ch at 17 px: 14 -> 3 ms; benchmarks/RESULTS.md)."""

    @staticmethod
    def forward(ctx, x, w, bias, stride, padding, transposed, output_padding):
        ctx.params = w, stride, padding, transposed, tuple(x.shape[2:])
        if transposed:
            return F.conv_transpose2d(x, w, bias, stride=stride, padding=padding, output_padding=output_padding,
                                      groups=x.shape[1])
        return F.conv2d(x, w, bias, stride=stride, padding=padding, groups=x.shape[1])

    @staticmethod
    def backward(ctx, grad):
        w, stride, padding, transposed, in_size = ctx.params
        # In grad's dtype, as autograd's own backward kernels run, whatever autocast the caller is in.
        w = w.to(grad.dtype)
        if transposed:  # the adjoint of a transposed convolution is the convolution
            extra = (0, 0)
        else:  # the transposed convolution back to x's size: rows a stride skipped are output padding
            extra = tuple(in_size[i] - ((grad.shape[2 + i] - 1) * stride[i] - 2 * padding[i] + w.shape[2 + i])
                          for i in range(2))
        with torch.autocast(grad.device.type, enabled=False):
            grad_x = _FixedDepthwise.apply(grad, w, None, stride, padding, not transposed, extra)
        grad_bias = grad.sum((0, 2, 3)) if ctx.needs_input_grad[2] else None
        return grad_x, None, grad_bias, None, None, None, None


def fixed_depthwise(x, w, stride, padding, transposed=False, bias=None):
    """Depthwise conv2d (or conv_transpose2d) of x [N, C, H, W] by w [C, 1, kh, kw], groups C,
    + bias [C]; under autograd through _FixedDepthwise (same values, cheap double backward) unless
    w needs a gradient itself."""
    stride, padding = _pair(stride, "stride"), _pair(padding, "padding")
    if torch.is_grad_enabled() and x.requires_grad and not w.requires_grad:
        return _FixedDepthwise.apply(x, w, bias, stride, padding, transposed, (0, 0))
    if transposed:
        return F.conv_transpose2d(x, w, bias, stride=stride, padding=padding, groups=x.shape[1])
    return F.conv2d(x, w, bias, stride=stride, padding=padding, groups=x.shape[1])


def upfirdn2d_ref(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1):
    upx, upy = _pair(up, "up")
    downx, downy = _pair(down, "down")
    x0, x1, y0, y1 = parse_padding(padding)
    g = f.flip(list(range(f.ndim))) if flip_filter else f  # the true convolution taps
    g = g * (gain ** (g.ndim / 2))
    if g.ndim == 1:
        x = _fir_1d(x, g, axis=3, up=upx, down=downx, pad0=x0, pad1=x1)
        return _fir_1d(x, g, axis=2, up=upy, down=downy, pad0=y0, pad1=y1)
    C = x.shape[1]
    w = g.to(x.dtype)[None, None].expand([C, 1, *g.shape])
    return _fir(x, w, axis_pads=((y0, y1), (x0, x1)), up=(upy, upx), down=(downy, downx))


def filter2d(x, f, padding=0, flip_filter=False, gain=1, impl=None):
    """FIR filter that keeps the size of x (plus `padding`)."""
    fw, fh = filter_size(f)
    x0, x1, y0, y1 = parse_padding(padding)
    pad = [x0 + fw // 2, x1 + (fw - 1) // 2, y0 + fh // 2, y1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=pad, flip_filter=flip_filter, gain=gain, impl=impl)


def upsample2d(x, f, up=2, padding=0, flip_filter=False, gain=1, impl=None):
    """Upsample by `up` with FIR interpolation; output size H * up (plus `padding`)."""
    upx, upy = _pair(up, "up")
    fw, fh = filter_size(f)
    x0, x1, y0, y1 = parse_padding(padding)
    pad = [x0 + (fw + upx - 1) // 2, x1 + (fw - upx) // 2, y0 + (fh + upy - 1) // 2, y1 + (fh - upy) // 2]
    return upfirdn2d(x, f, up=up, padding=pad, flip_filter=flip_filter, gain=gain * upx * upy, impl=impl)


def downsample2d(x, f, down=2, padding=0, flip_filter=False, gain=1, impl=None):
    """FIR anti-aliased downsample by `down`; output size H // down (plus `padding`)."""
    downx, downy = _pair(down, "down")
    fw, fh = filter_size(f)
    x0, x1, y0, y1 = parse_padding(padding)
    pad = [x0 + (fw - downx + 1) // 2, x1 + (fw - downx) // 2, y0 + (fh - downy + 1) // 2, y1 + (fh - downy) // 2]
    return upfirdn2d(x, f, down=down, padding=pad, flip_filter=flip_filter, gain=gain, impl=impl)
