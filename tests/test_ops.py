"""Reference ops against their plain definitions, and gradients."""
import itertools

import pytest
import torch
import torch.nn.functional as F

from latentedit.ops import bias_act, setup_filter, upfirdn2d
from latentedit.ops.recording import ConvolutionRecorder
from latentedit.ops.upfirdn2d import downsample2d, filter2d, upsample2d


def upfirdn2d_by_definition(x, f, up, down, pad, flip, gain):
    """Zero-stuff, pad (negative crops), full 2-D convolution, subsample: the textbook way."""
    upx, upy = (up, up) if isinstance(up, int) else up
    dx, dy = (down, down) if isinstance(down, int) else down
    x0, x1, y0, y1 = pad
    N, C, H, W = x.shape
    u = torch.zeros(N, C, H * upy, W * upx, dtype=x.dtype)
    u[:, :, ::upy, ::upx] = x
    u = F.pad(u, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    u = u[:, :, max(-y0, 0):u.shape[2] - max(-y1, 0), max(-x0, 0):u.shape[3] - max(-x1, 0)]
    f2 = (f if f.ndim == 2 else f.ger(f)) * gain
    if not flip:
        f2 = f2.flip([0, 1])  # conv2d correlates; flip to convolve
    y = F.conv2d(u, f2[None, None].repeat(C, 1, 1, 1).to(x.dtype), groups=C)
    return y[:, :, ::dy, ::dx]


@pytest.mark.parametrize("taps,separable", [([1, 3, 3, 1], False), ([1, 3, 3, 1], True), ([1, 2, 1], False),
                                            ([1, 3, 5, 3, 1, 2], True)])
def test_upfirdn2d_matches_definition(taps, separable):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 7, 9, dtype=torch.float64)
    f = setup_filter(taps, separable=separable).double()
    combos = itertools.product([1, 2, (2, 1), 3], [1, 2, (1, 2)],
                               [(0, 0, 0, 0), (2, 1, 2, 1), (1, 2, -1, 3), (-1, -1, 2, 2), (3, 3, 3, 3)],
                               [False, True], [1, 4])
    for up, down, pad, flip, gain in combos:
        ours = upfirdn2d(x, f, up, down, pad, flip, gain)
        ref = upfirdn2d_by_definition(x, f, up, down, pad, flip, gain)
        assert ours.shape == ref.shape, (up, down, pad)
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12, msg=f"up={up} down={down} pad={pad}")


def test_resampling_helpers_keep_sizes():
    x = torch.randn(1, 2, 8, 8)
    f = setup_filter([1, 3, 3, 1])
    assert upsample2d(x, f).shape[-2:] == (16, 16)
    assert downsample2d(x, f).shape[-2:] == (4, 4)
    assert filter2d(x, f).shape[-2:] == (8, 8)
    # Upsampling a constant image keeps it constant away from the border (gain = up^2 is right).
    up = upsample2d(torch.ones(1, 1, 8, 8), f)
    torch.testing.assert_close(up[..., 3:-3, 3:-3], torch.ones_like(up[..., 3:-3, 3:-3]))


def test_upfirdn2d_gradients():
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    for f in (setup_filter([1, 3, 3, 1]).double(), setup_filter([1, 3, 3, 1], separable=True).double()):
        for up, down, pad in [(2, 1, (2, 1, 2, 1)), (1, 2, (1, 1, 1, 1)), (1, 1, (1, 2, 0, 1))]:
            fn = lambda t: upfirdn2d(t, f, up=up, down=down, padding=pad)  # noqa: E731
            assert torch.autograd.gradcheck(fn, (x,))
            assert torch.autograd.gradgradcheck(fn, (x,))


@pytest.mark.parametrize("act", ["linear", "relu", "lrelu", "tanh", "sigmoid"])
def test_bias_act_matches_definition(act):
    torch.manual_seed(0)
    x = torch.randn(3, 5, 4, 4, dtype=torch.float64)
    b = torch.randn(5, dtype=torch.float64)
    plain = {"linear": lambda v: v, "relu": torch.relu, "lrelu": lambda v: torch.where(v >= 0, v, 0.2 * v),
             "tanh": torch.tanh, "sigmoid": torch.sigmoid}[act]
    default_gain = 2 ** 0.5 if act in ("relu", "lrelu") else 1.0
    ref = plain(x + b.reshape(1, 5, 1, 1)) * default_gain
    torch.testing.assert_close(bias_act(x, b, act=act), ref)
    torch.testing.assert_close(bias_act(x, b, act=act, gain=3.0, clamp=0.5), (plain(x + b.reshape(1, 5, 1, 1)) * 3)
                               .clamp(-0.5, 0.5))
    # bias along another dim, also counted from the end
    b2 = torch.randn(4, dtype=torch.float64)
    torch.testing.assert_close(bias_act(x, b2, dim=2, act=act, gain=1), plain(x + b2.reshape(1, 1, 4, 1)))
    torch.testing.assert_close(bias_act(x, b2, dim=-1, act=act, gain=1), plain(x + b2.reshape(1, 1, 1, 4)))


def test_bias_act_first_and_second_order_gradients():
    x = torch.randn(2, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    for act in ("tanh", "sigmoid", "lrelu"):
        fn = lambda t, bb: bias_act(t, bb, act=act, clamp=1.5)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (x, b))
        assert torch.autograd.gradgradcheck(fn, (x, b))


def test_bias_act_rejects_wrong_bias_shape():
    with pytest.raises(ValueError, match="bias shape"):
        bias_act(torch.randn(2, 3, 4), torch.randn(4))
    with pytest.raises(ValueError, match="unknown activation"):
        bias_act(torch.randn(2, 3), act="gelu2")


def test_impl_override(monkeypatch):
    monkeypatch.setenv("LATENTEDIT_OPS", "nonsense")
    with pytest.raises(ValueError, match="LATENTEDIT_OPS"):
        bias_act(torch.randn(2, 3))
    monkeypatch.setenv("LATENTEDIT_OPS", "cuda")  # CPU tensors always take the reference path
    torch.testing.assert_close(bias_act(torch.ones(2, 3), act="relu", gain=1), torch.ones(2, 3))


def backward_twice(y, x):
    """x.grad of sum((d sum(y^2) / dx)^2): a second-order backward, as path length and R1 take."""
    (g,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
    g.square().sum().backward()


@pytest.mark.parametrize("up,down", [(1, 1), (2, 1), (1, 2)])
def test_fir_second_order_gradients_stay_depthwise(up, down):
    """Path length and R1 differentiate through the FIR twice. Autograd's double backward of a
    grouped convolution loops over the groups (one single-channel convolution per channel); ours
    runs the adjoint depthwise op, so every convolution of both passes has one group per channel.
    The values are gradgradcheck's (test_upfirdn2d_gradients)."""
    C = 16
    f = setup_filter([1, 3, 3, 1])
    x = torch.randn(4, C, 12, 12).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    with ConvolutionRecorder() as convs:
        y = upfirdn2d(x, f, up=up, down=down, padding=(2, 1, 2, 1))
        backward_twice(y, x)
    assert len(convs.calls) >= 3, convs.calls  # forward, its adjoint, the adjoint's adjoint
    assert all(c.groups == C and c.weight_shape[:2] == (C, 1) for c in convs.calls), convs.calls
    x64 = x.detach().double().requires_grad_(True)
    ref = upfirdn2d_by_definition(x64, f.double(), up, down, (2, 1, 2, 1), False, 1)
    backward_twice(ref, x64)
    torch.testing.assert_close(x.grad, x64.grad.float(), rtol=1e-4, atol=1e-4)


def test_up_conv_fir_second_order_gradients_stay_depthwise():
    """The same for the FIR after the generator's transposed up-conv (its own depthwise call, bias
    folded in), against the plain grouped convolution it replaces."""
    from latentedit.models.synthesis import fir_after_transposed

    C = 16
    f, bias = setup_filter([1, 3, 3, 1]), torch.randn(C)
    y = torch.randn(4, C, 17, 17).contiguous(memory_format=torch.channels_last)
    grads = []
    for ours in (True, False):
        x = y.clone().requires_grad_(True)
        with ConvolutionRecorder() as convs:
            if ours:
                out = fir_after_transposed(x, f, 2, bias)
            else:
                taps = (f.flip([0, 1]) * 4).expand(C, 1, 4, 4)
                out = F.conv2d(x, taps, bias, padding=1, groups=C)
            backward_twice(out, x)
        grads.append(x.grad)
        assert out.shape[-2:] == (16, 16)
        if ours:
            assert all(c.groups == C for c in convs.calls), convs.calls
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("autocast", [False, True])
def test_fir_under_autograd_keeps_the_inference_bits(autocast):
    """Under autograd the FIR runs through its own Function: its output (bias included, added by the
    convolution) has the bits and dtype of the plain call without autograd, in bf16 and under
    autocast too, and its gradients reach x and the bias."""
    from latentedit.ops.upfirdn2d import fixed_depthwise

    C = 6
    taps = (setup_filter([1, 3, 3, 1]) * 4).expand(C, 1, 4, 4)
    x = torch.randn(2, C, 17, 17).contiguous(memory_format=torch.channels_last)
    bias = torch.randn(C)
    if not autocast:
        x, taps, bias = x.bfloat16(), taps.bfloat16(), bias.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        with torch.no_grad():
            want = fixed_depthwise(x, taps, stride=1, padding=1, bias=bias)
        xg, bg = x.clone().requires_grad_(True), bias.clone().requires_grad_(True)
        got = fixed_depthwise(xg, taps, stride=1, padding=1, bias=bg)
    assert got.dtype == want.dtype == torch.bfloat16 and torch.equal(got, want)
    got.float().sum().backward()
    assert xg.grad.dtype == x.dtype and bg.grad.dtype == bias.dtype
    torch.testing.assert_close(bg.grad.float(), torch.full([C], 2.0 * 16 * 16), rtol=2 ** -7, atol=0)


@pytest.mark.parametrize("autocast", [False, True])
def test_strided_fir_in_bf16_runs_as_an_fp32_island(autocast):
    """bf16 (or autocast) strided FIR: computed in fp32 (oneDNN's bf16 backward of a strided depthwise
    conv is 5-20x slower), so its output and input gradient equal the fp32 op's on the same bf16 input
    up to the output's rounding, and its dtype is the input's."""
    f = setup_filter([1, 3, 3, 1])
    x = torch.randn(4, 8, 16, 16).to(torch.bfloat16).to(memory_format=torch.channels_last)
    x32 = x.float().requires_grad_(True)
    want = downsample2d(x32, f)
    want.backward(torch.ones_like(want))
    xin = (x.float() if autocast else x).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast), ConvolutionRecorder() as convs:
        got = downsample2d(xin, f)
        got.float().backward(torch.ones_like(want))
    assert got.dtype == xin.dtype and got.shape == want.shape
    assert convs.calls and all(c.dtype == torch.float32 for c in convs.calls), convs.calls
    # bf16 keeps 8 mantissa bits: the rounding of the output (and nothing more) separates them.
    assert (got.float() - want).abs().max() <= 2 ** -8 * want.abs().max()
    assert torch.allclose(xin.grad.float(), x32.grad, rtol=2 ** -7, atol=1e-6)


def test_convolution_recorder_records_what_ran():
    """Forward and backward calls in order, with their shapes, dtype, layout, whether a bias is added
    (a bias-less convolution's backward gets bias sizes [0] from autograd, not None) and which
    gradients a backward computes."""
    x = torch.randn(2, 3, 8, 8).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    convs = [torch.nn.Conv2d(3, 4, 3, padding=1, bias=bias) for bias in (True, False)]
    with ConvolutionRecorder() as rec:
        sum(conv(x).sum() for conv in convs).backward()
    forward, backward = [c for c in rec.calls if not c.backward], [c for c in rec.calls if c.backward]
    assert [c.bias for c in forward] == [True, False] and sorted(c.bias for c in backward) == [False, True]
    # the gradients each backward computes: x's and the weight's, and the bias's where there is one
    assert all(c.output_mask == () for c in forward) and all(c.output_mask == (True, True, c.bias) for c in backward)
    for c in rec.calls:
        assert c.weight_shape == (4, 3, 3, 3) and c.input_shape == (2, 3, 8, 8) and c.dtype == torch.float32
        assert c.channels_last and c.padding == (1, 1) and c.groups == 1 and not c.transposed
