"""Which convolutions a piece of code runs, seen from the dispatcher: the tests check that a bf16
path really convolves in bf16, benchmarks/roofline.py times each distinct call alone."""
from typing import NamedTuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class ConvCall(NamedTuple):
    backward: bool
    input_shape: tuple
    dtype: torch.dtype           # of the input (forward) or of the output's gradient (backward)
    channels_last: bool
    weight_shape: tuple
    stride: tuple
    padding: tuple
    dilation: tuple
    transposed: bool
    output_padding: tuple
    groups: int
    bias: bool                   # whether the convolution adds a bias (forward and backward alike)
    packed: bool = False         # run on a oneDNN-packed weight (models/packedconv.py)
    output_mask: tuple = ()      # backward: which of (input, weight, bias) gradients it computes


# models/packedconv.py's convolution (its .default overload; .binary takes other arguments)
_PACKED_CONV = getattr(getattr(getattr(torch.ops, "mkldnn", None), "_convolution_pointwise", None), "default", None)


class ConvolutionRecorder(TorchDispatchMode):
    """Records every convolution run inside it, forward and backward, in order: `calls`."""

    def __enter__(self):
        self.calls = []
        return super().__enter__()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        backward = func.overloadpacket is torch.ops.aten.convolution_backward
        if backward or func.overloadpacket is torch.ops.aten.convolution:
            # convolution(x, w, bias, ...); convolution_backward(grad_out, x, w, bias_sizes, ...)
            dtype_of, x, w, bias, *rest = args if backward else (args[0], *args)
            stride, padding, dilation, transposed, output_padding, groups = rest[:6]
            mask = tuple(bool(m) for m in rest[6]) if backward else ()
            if backward:  # bias_sizes: None or [0] (not [C_out]) when the convolution has no bias
                bias = None if bias is None or list(bias) == [0] else bias
            packed = False
        elif func is _PACKED_CONV:
            # _convolution_pointwise(x, packed w, bias, padding, stride, dilation, groups, ...)
            x, w, bias, padding, stride, dilation, groups = args[:7]
            dtype_of, transposed, output_padding, packed, mask = x, False, (0, 0), True, ()
        else:
            return func(*args, **(kwargs or {}))
        self.calls.append(ConvCall(backward, tuple(x.shape), dtype_of.dtype,
                                   x.is_contiguous(memory_format=torch.channels_last), tuple(w.shape),
                                   tuple(stride), tuple(padding), tuple(dilation), bool(transposed),
                                   tuple(output_padding), int(groups), bias is not None, packed, mask))
        return func(*args, **(kwargs or {}))
