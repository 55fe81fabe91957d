"""benchmarks/rosinality_op_cpu.py: the CPU stand-in for rosinality's `op` package that lets
SD-GAN's generator run in benchmarks/sdgan_speed.py, checked against direct formulas."""
import math
import sys

import pytest
import torch
import torch.nn.functional as F

from conftest import load_benchmark

op = load_benchmark("rosinality_op_cpu")


def direct_upfirdn2d(x, kernel, up, down, pad):
    """Zero-stuff, pad (negative = crop) both axes by pad, true convolution, then stride."""
    n, c, h, w = x.shape
    z = x.new_zeros(n, c, h * up, w * up)
    z[:, :, ::up, ::up] = x
    p0, p1 = pad
    z = F.pad(z, [max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)])
    z = z[:, :, max(-p0, 0):z.shape[2] - max(-p1, 0), max(-p0, 0):z.shape[3] - max(-p1, 0)]
    taps = kernel.flip([0, 1])[None, None]  # conv2d correlates
    out = F.conv2d(z.reshape(n * c, 1, *z.shape[2:]), taps)
    out = out[:, :, ::down, ::down]
    return out.reshape(n, c, *out.shape[2:])


@pytest.mark.parametrize("up,down,pad", [(2, 1, (2, 1)), (1, 2, (1, 1)), (1, 1, (2, 1)), (1, 1, (1, 2)),
                                         (2, 1, (1, -1)), (1, 2, (-1, 0)), (2, 2, (1, 2))])
def test_upfirdn2d_matches_zero_stuff_conv_stride(up, down, pad):
    g = torch.Generator().manual_seed(up * 10 + down)
    x = torch.randn(2, 3, 9, 9, generator=g)
    kernel = torch.rand(4, 4, generator=g)  # asymmetric: a flipped or transposed kernel fails
    got = op.upfirdn2d(x, kernel, up=up, down=down, pad=pad)
    want = direct_upfirdn2d(x, kernel, up, down, pad)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape", [(2, 5), (2, 5, 3, 4)])
def test_fused_leaky_relu_is_scaled_leaky_relu_of_biased_input(shape):
    g = torch.Generator().manual_seed(len(shape))
    x, bias = torch.randn(shape, generator=g), torch.randn(shape[1], generator=g)
    view = bias.reshape(1, -1, *[1] * (len(shape) - 2))
    want = F.leaky_relu(x + view, 0.2) * math.sqrt(2)
    torch.testing.assert_close(op.fused_leaky_relu(x, bias), want)
    act = op.FusedLeakyReLU(shape[1])
    assert act.bias.shape == (shape[1],)
    with torch.no_grad():
        act.bias.copy_(bias)
    torch.testing.assert_close(act(x), want)
    torch.testing.assert_close(op.fused_leaky_relu(x, bias, 0.1, 1.0), F.leaky_relu(x + view, 0.1))


def test_install_makes_op_importable():
    previous = sys.modules.get("op")
    try:
        op.install()
        from op import FusedLeakyReLU, fused_leaky_relu, upfirdn2d  # noqa: F401  their generator's import
        assert upfirdn2d is op.upfirdn2d
    finally:
        if previous is None:
            sys.modules.pop("op", None)
        else:
            sys.modules["op"] = previous
