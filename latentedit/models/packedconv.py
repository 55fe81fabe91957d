"""Inference convolutions with their weights packed once into oneDNN's own layout.

A per-sample (fused) modulated conv builds new weights on every call, and oneDNN reorders every new
weight into its blocked layout before it convolves: at low resolutions, where the weights outnumber
the activations, that costs far more than the convolution (512 channels at 16 px, bf16, Intel AMX:
8.7 ms a call against 0.37 ms with a packed weight; benchmarks/RESULTS.md). Scaling the activations
instead (the styles on the input, the demodulation on the output: the same maths) lets one weight
serve every call, packed once per layer while the weight is unchanged (synthesis.py `_derived`).

`use_packed_conv` holds the table of where this was measured to win: CPUs with AMX tiles, fp32 and
bf16. Elsewhere (AMD Zen 4 and AVX2 machines) the per-sample form stays until measured there;
LATENTEDIT_PACKED=on|off overrides the table (benchmarks, tests).
"""
import functools
import os

import torch

from latentedit.models.upconv import cpu_has_amx

CHOICES = ("auto", "on", "off")


@functools.lru_cache(maxsize=None)  # asked on every layer call; the build does not change
def packing_available():
    ops = getattr(torch.ops, "mkldnn", None)
    try:
        return torch.backends.mkldnn.is_available() and ops is not None and \
            all(hasattr(ops, op) for op in ("_convolution_pointwise", "_reorder_convolution_weight",
                                            "_is_mkldnn_bf16_supported"))
    except (AttributeError, RuntimeError):
        return False


@functools.lru_cache(maxsize=None)
def _bf16_kernels():
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def use_packed_conv(device_type="cpu", dtype=torch.float32):
    """Whether an inference conv in `dtype` whose weights outnumber its input values runs on a packed
    weight. bf16 needs oneDNN's bf16 kernels (AVX-512 or newer), which its packed ops require."""
    choice = os.environ.get("LATENTEDIT_PACKED", "auto")
    if choice not in CHOICES:
        raise ValueError(f"LATENTEDIT_PACKED must be one of {CHOICES}, got {choice!r}")
    if device_type != "cpu" or choice == "off" or not packing_available():
        return False
    if dtype == torch.bfloat16 and not _bf16_kernels():
        return False
    return choice == "on" or cpu_has_amx()


def weights_outnumber_input(out_channels, taps, height, width):
    """Scale whichever is smaller: O I taps weights or I H W input values (I cancels). A tie scales the
    input, whose weights then stay cached and packed (subpixel up-conv 512 -> 256 ch at 64 px, bf16,
    AMX: 6.7 ms a conv packed, 7.4 with modulated weights)."""
    return out_channels * taps >= height * width


def pack_weight(w, input_shape, padding=1):
    """w [O, I, k, k] in the compute dtype -> an opaque oneDNN tensor for `packed_conv2d` on inputs of
    `input_shape` ([1, I, H, W])."""
    return torch.ops.mkldnn._reorder_convolution_weight(w.contiguous(), [padding] * 2, [1, 1], [1, 1], 1,
                                                        list(input_shape))


def packed_conv2d(x, packed, bias=None, padding=1):
    """conv2d(x, w, bias, padding) with w packed by `pack_weight`; x channels_last, no autograd."""
    return torch.ops.mkldnn._convolution_pointwise(x, packed, bias, [padding] * 2, [1, 1], [1, 1], 1, "none", [], "")
