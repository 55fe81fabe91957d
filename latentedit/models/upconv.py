"""The 2x up-sampling convolution of the synthesis layers as one ordinary convolution.

StyleGAN2's up-conv is a stride-2 transposed 3x3 convolution followed by the 4x4 FIR filter. Two
forms run it as one ordinary convolution of the low-resolution input with 4x the output channels
(one per output phase: even / odd row, even / odd column), then an interleave of the phases:

- phase: the FIR folded in too. Both are linear and shift-invariant on the up-sampled grid, so
  together they are one stride-2 transposed 6x6 convolution, each of whose phases is a 3x3
  convolution: 4x the FLOPs of the transposed conv, no FIR pass, no (2H + 1)^2 intermediate.
- subpixel: the transposed conv alone, each phase a 2x2 convolution (16 / 9 the FLOPs), then the
  FIR as its own depthwise pass.

Both are exact (same maths; float rounding only). Which form is fastest depends on the CPU and the
layer: where bf16 3x3 convolutions run 4-5x faster than transposed ones (Intel AMX: ~3,200 vs ~660
GFLOP/s) a folded form wins without autograd, the subpixel one from 256 input channels (the
convolution's FLOPs outweigh the FIR's pass) and the phase one below; elsewhere, in fp32 and under
autograd, the transposed form does (benchmarks/RESULTS.md, "AMX" and "subpixel"). `upconv_form`
holds that table; LATENTEDIT_UPCONV=phase|subpixel|transposed overrides it (benchmarks, tests).
"""
import functools
import os
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from latentedit.ops.cpu_kernels import interleave_phases_into
from latentedit.ops.upfirdn2d import fixed_depthwise

CHOICES = ("auto", "phase", "subpixel", "transposed")


@functools.lru_cache(maxsize=None)
def cpu_has_amx():
    """AMX tiles (Intel Sapphire Rapids and later), as torch's CPU runtime reports them."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    try:
        return bool(probe()) if probe is not None else False
    except RuntimeError:
        return False


SUBPIXEL_MIN_IN_CHANNELS = 256


def upconv_form(dtype, device_type="cpu", training=False, in_channels=None):
    """The form ("phase", "subpixel" or "transposed") an up-conv without autograd in `dtype` from
    `in_channels` runs in on this machine. training (a module in training mode, e.g. the GAN trainer's
    forward for its D step): its weights change every step, so the folded kernels would be rebuilt every
    call, which costs more than the form saves (64 px, batch 16, AMX, bf16: phase 62-66 ms a forward
    against 56 transposed)."""
    choice = os.environ.get("LATENTEDIT_UPCONV", "auto")
    if choice not in CHOICES:
        raise ValueError(f"LATENTEDIT_UPCONV must be one of {CHOICES}, got {choice!r}")
    if device_type != "cpu":
        return "transposed"
    if choice != "auto":
        return choice
    if dtype != torch.bfloat16 or not cpu_has_amx() or training:
        return "transposed"
    return "subpixel" if (in_channels or 0) >= SUBPIXEL_MIN_IN_CHANNELS else "phase"


def foldable(f, up):
    """The folded forms (phase, subpixel) cover the StyleGAN2 case: 2x up-sampling with a 4x4 (or separable
    4-tap) FIR."""
    return up == 2 and f is not None and f.shape[-1] == 4 and (f.ndim == 1 or f.shape[0] == 4)


@functools.lru_cache(maxsize=8)
def _fold_matrix(taps):
    """[9, 36] float64: the 3x3 kernel's taps (row-major) -> the four phase kernels' taps, phase-major
    (row phase, column phase), each 3x3 row-major; `taps` the 4x4 FIR as nested tuples."""
    # The transposed conv then the FIR (true convolution with taps * 4, padded 1 each side) put
    # kernel tap k of input pixel j at output 2j + m through FIR tap t where m = k - t + 1, i.e.
    # combined index p = m + 2 in [0, 6); phase a takes p = 4 + a, 2 + a, a for its 3 taps.
    fir = torch.tensor(taps, dtype=torch.float64).flip([0, 1]) * 4
    order = ((4, 2, 0), (5, 3, 1))
    T = torch.zeros(3, 3, 2, 2, 3, 3, dtype=torch.float64)
    for ky in range(3):
        for kx in range(3):
            for ay in range(2):
                for ax in range(2):
                    for ey, py in enumerate(order[ay]):
                        for ex, px in enumerate(order[ax]):
                            ty, tx = ky + 3 - py, kx + 3 - px
                            if 0 <= ty < 4 and 0 <= tx < 4:
                                T[ky, kx, ay, ax, ey, ex] = fir[ty, tx]
    return T.reshape(9, 36)


def phase_weight(w, f):
    """w [O, I, 3, 3] (float32 or float64; fold before rounding to bf16) -> [4 O, I, 3, 3], the
    phase kernels stacked phase-major, for `phase_upconv`."""
    f2 = f if f.ndim == 2 else f.ger(f)
    T = _fold_matrix(tuple(tuple(float(v) for v in row) for row in f2.tolist())).to(w.device, w.dtype)
    O, I = w.shape[:2]
    k = w.reshape(O * I, 9) @ T  # [O I, 36]
    return k.reshape(O, I, 4, 3, 3).permute(2, 0, 1, 3, 4).reshape(4 * O, I, 3, 3)


def phase_upconv(x, k, bias=None, out_scale=None):
    """x [N, I, H, W], k from `phase_weight` (or packed by packedconv.pack_weight) -> [N, O, 2H, 2W]
    channels_last: conv2d_resample(x, w, f, up=2, padding=1) (* out_scale [N, O, 1, 1]) + bias. The
    scale rides on the pixel shuffle's copy; the bias goes into the conv as bias / out_scale (exact
    in maths for finite non-zero scales: demodulation coefficients are rsqrt of a positive sum)."""
    if bias is not None:
        b = bias.reshape(1, -1) if out_scale is None else bias.reshape(1, -1) / out_scale.reshape(out_scale.shape[0], -1)
        if b.shape[0] != 1:  # a per-sample bias cannot go into a conv shared by the batch
            return phase_upconv(x, k, None, out_scale).add_(bias.reshape(1, -1, 1, 1))
        bias = b.reshape(-1).repeat(4).to(x.dtype)
    if k.is_mkldnn:
        from latentedit.models.packedconv import packed_conv2d  # here: packedconv imports this module

        y = packed_conv2d(x, k, bias)  # [N, 4 O, H, W]
    else:
        y = F.conv2d(x, k, bias, padding=1)
    N, C4, H, W = y.shape
    out = torch.empty([N, H, 2, W, 2, C4 // 4], dtype=y.dtype, device=y.device)
    interleave_phases(y, out, out_scale)
    return out.reshape(N, 2 * H, 2 * W, C4 // 4).permute(0, 3, 1, 2)


def interleave_phases(y, out, out_scale=None):
    """y [N, 4 O, H, W] channels_last, phase-major channels -> out [N, H, 2, W, 2, O] (row phase, column
    phase), times out_scale [N, O, 1, 1] when given, in one copy: channels_last memory is [N, H, W, (row
    phase, column phase, O)], so this interleaves rows and columns. csrc/'s kernel where it can (the scale
    in fp32, rounded once), else PyTorch's strided copy (the scale rounded to y's dtype first)."""
    N, C4, H, W = y.shape
    O = C4 // 4
    if interleave_phases_into(out, y, out_scale):  # one pass in csrc/, the scale in fp32
        return
    phases = y.permute(0, 2, 3, 1).reshape(N, H, W, 2, 2, O).permute(0, 1, 3, 2, 4, 5)
    if out_scale is None:
        out.copy_(phases)
    else:
        torch.mul(phases, out_scale.to(y.dtype).reshape(N, 1, 1, 1, 1, O), out=out)


def subpixel_weight(w):
    """w [O, I, 3, 3] (the conv weight; the transposed conv runs w.transpose(0, 1)) -> [4 O, I, 2, 2],
    phase-major (row phase, column phase, O), for `subpixel_upconv`. Output row 2m + a of the stride-2
    transposed conv takes kernel rows ky = a (mod 2) from input row m - (ky - a) / 2: a 2x2 window
    over rows m - 1, m of the input padded by 1 (zero taps where a phase has fewer than 4; 16 / 9 the
    transposed conv's FLOPs, against the phase form's 4x)."""
    O, I = w.shape[:2]
    k = w.new_zeros(2, 2, O, I, 2, 2)
    for ky in range(3):
        for kx in range(3):
            k[ky % 2, kx % 2, :, :, 1 - ky // 2, 1 - kx // 2] = w[:, :, ky, kx]
    return k.reshape(4 * O, I, 2, 2)


def fir_taps(f, up, channels, dtype):
    """The FIR f (1-D separable or 2-D) after an up-sampling by `up`, as depthwise conv weights
    [channels, 1, k, k] (flipped for conv2d's correlation, gain up^2)."""
    f2 = f if f.ndim == 2 else f.ger(f)
    return (f2.flip([0, 1]) * up ** 2).to(dtype).expand(channels, 1, *f2.shape)


def subpixel_upconv(x, k, f, bias=None, out_scale=None):
    """x [N, I, H, W], k from `subpixel_weight` (or packed by packedconv.pack_weight with padding 1) ->
    [N, O, 2H, 2W] channels_last: conv2d_resample(x, w, f, up=2, padding=1) (* out_scale [N, O, 1, 1])
    + bias. The transposed conv's output is interleaved from the four phases (the scale riding on that
    copy) into a buffer whose zero first row and column, with the phases' own zero last row and column,
    are the FIR's padding; the FIR then runs unpadded, with the bias."""
    if k.is_mkldnn:
        from latentedit.models.packedconv import packed_conv2d  # here: packedconv imports this module

        y = packed_conv2d(x, k)  # [N, 4 O, H + 1, W + 1]
    else:
        y = F.conv2d(x, k, padding=1)
    N, C4, H1, W1 = y.shape
    O = C4 // 4
    buf = torch.empty([N, 2 * H1 + 1, 2 * W1 + 1, O], dtype=y.dtype, device=y.device)
    buf[:, 0].zero_()
    buf[:, :, 0].zero_()
    interleave_phases(y, buf[:, 1:, 1:].view(N, H1, 2, W1, 2, O), out_scale)
    z = buf.permute(0, 3, 1, 2)
    return fixed_depthwise(z, fir_taps(f, 2, O, y.dtype), stride=1, padding=0,
                           bias=None if bias is None else bias.to(y.dtype))


@dataclass(frozen=True)
class FoldedForm:
    """An up-conv form run as one ordinary convolution with 4 O outputs at the input's resolution."""
    taps: int  # of each of the 4 O x I kernels
    weight: Callable  # (w [O, I, 3, 3] float32 or float64, FIR f) -> [4 O, I, k, k]
    run: Callable  # (x [N, I, H, W], kernels (or packed), f, bias [O] or None, out_scale [N, O, 1, 1] or None)


FOLDED_FORMS = {
    "phase": FoldedForm(9, phase_weight, lambda x, k, f, bias, out_scale: phase_upconv(x, k, bias, out_scale)),
    "subpixel": FoldedForm(4, lambda w, f: subpixel_weight(w), subpixel_upconv),
}
