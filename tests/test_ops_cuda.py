"""Tests of the compiled ops (csrc/ via latentedit.ops.cuda / build).

GPU parity tests (marked gpu; run with `pytest -m gpu tests/test_ops_cuda.py`) compare the CUDA
kernels and their first and second order gradients with the reference path in float64. The
unmarked tests run everywhere: the build fallback, the build lock, and the autograd wiring of
latentedit.ops.cuda over a stand-in module that computes what the kernels compute.
"""
import os
import types
import warnings

import pytest
import torch
import torch.nn.functional as F

from latentedit.ops import build, cuda
from latentedit.ops.bias_act import bias_act, bias_act_ref
from latentedit.ops.upfirdn2d import setup_filter, upfirdn2d, upfirdn2d_ref



def gpu_test(fn):
    """Marks a test `gpu` (kept out of the default run) and skips it without a CUDA device."""
    return pytest.mark.gpu(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")(fn))

ACTS = ["linear", "relu", "lrelu", "tanh", "sigmoid"]
# Max error allowed, relative to the largest reference value (at least 1).
TOL = {torch.float32: 2e-4, torch.float16: 2e-2, torch.bfloat16: 8e-2}


def value_and_grads(fn, inputs, seed):
    """[y, dL/dinputs..., dP/dinputs...] for L = <y, w> (w random) and the gradient penalty
    P = |dL/dinputs|^2, as R1 / path-length regularisation use it."""
    y = fn(*inputs)
    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(y)
    g1 = torch.autograd.grad((y * w).sum(), inputs, create_graph=True, allow_unused=True)
    pen = sum((g.float() ** 2).sum() for g in g1 if g is not None)
    g2 = torch.autograd.grad(pen, inputs, allow_unused=True) if pen.requires_grad else (None,) * len(inputs)
    return [y, *g1, *g2]


def assert_close(ours, ref, tol, what=""):
    for i, (a, r) in enumerate(zip(ours, ref)):
        if a is None or r is None:
            for t in (a, r):
                assert t is None or t.numel() == 0 or t.abs().max() == 0, f"{what} #{i}: one side is None"
            continue
        assert a.shape == r.shape, f"{what} #{i}: shape {tuple(a.shape)} vs {tuple(r.shape)}"
        if a.numel() == 0:
            continue
        err = (a.double().cpu() - r.double().cpu()).abs().max().item()
        scale = max(1.0, r.abs().max().item())
        assert err <= tol * scale, f"{what} #{i}: max error {err:.3g} > {tol:.1g} * {scale:.3g}"


def leaf(t):
    return t.detach().requires_grad_(True)


# ------------------------------------------------------------------------------------------------
# GPU parity


@pytest.fixture(scope="module")
def compiled():
    ops, reason = build._load()
    assert ops is not None, f"the CUDA ops did not build on a machine with a GPU: {reason}"
    return ops


def _layout(x, layout):
    if layout == "channels_last":
        return x.to(memory_format=torch.channels_last)
    if layout == "strided":  # a non-dense view: every other column of a wider tensor
        return torch.cat([x, x], dim=3)[..., ::2]
    if layout == "misaligned":  # dense but 2 bytes off 16-byte alignment: scalar kernel path
        buf = torch.empty(x.numel() + 1, dtype=x.dtype, device=x.device)
        return buf[1:].view(x.shape).copy_(x)
    return x.contiguous()


def _away_from_clamp(x, b, act, alpha, gain, clamp):
    """Moves inputs whose output lands within 2% of +-clamp to z = 0: there fp16 rounding decides
    between clamped and not, and the gradients jump."""
    if clamp is None:
        return x
    bb = 0 if b is None else b.double().reshape([-1] + [1] * (x.ndim - 2))
    v = bias_act_ref(x.double() + bb, None, act=act, alpha=alpha, gain=gain)
    near = (v.abs() - clamp).abs() < 0.02 * clamp
    return torch.where(near, (-bb if b is not None else 0) + 0 * x.double(), x.double()).to(x.dtype)


@gpu_test
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "misaligned"])
@pytest.mark.parametrize("clamp,gain,alpha", [(None, None, None), (0.9, None, None), (None, -0.7, -0.3)])
def test_bias_act_matches_reference(compiled, dtype, act, layout, clamp, gain, alpha):
    torch.manual_seed(0)
    x = torch.randn(3, 13, 7, 5, device="cuda").to(dtype)  # numel 1365: not a multiple of 8
    b = torch.randn(13, device="cuda").to(dtype)
    x = _layout(_away_from_clamp(x, b, act, alpha, gain, clamp), layout)
    kw = dict(act=act, alpha=alpha, gain=gain, clamp=clamp)
    ours = value_and_grads(lambda x, b: bias_act(x, b, impl="cuda", **kw), [leaf(x), leaf(b)], 1)
    ref = value_and_grads(lambda x, b: bias_act_ref(x, b, **kw), [leaf(x.double()), leaf(b.double())], 1)
    assert ours[0].dtype == dtype and ours[0].stride() == x.stride()
    assert_close(ours, ref, TOL[dtype], f"{act} {dtype} {layout}")


@gpu_test
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("shape,dim", [((64, 512), 1), ((2, 9, 512), 2), ((4, 32, 16, 16), 1), ((4, 6, 5, 3), -1)])
@pytest.mark.parametrize("with_b", [True, False])
@pytest.mark.parametrize("act", ["lrelu", "tanh"])
def test_bias_act_shapes_and_dims(compiled, dtype, shape, dim, with_b, act):
    torch.manual_seed(1)
    x = torch.randn(shape, device="cuda").to(dtype)
    b = torch.randn(shape[dim], device="cuda").to(dtype) if with_b else None
    inputs = [leaf(x)] + ([leaf(b)] if with_b else [])
    ref_inputs = [leaf(x.double())] + ([leaf(b.double())] if with_b else [])
    ours = value_and_grads(lambda x, b=None: bias_act(x, b, dim=dim, act=act, impl="cuda"), inputs, 2)
    ref = value_and_grads(lambda x, b=None: bias_act_ref(x, b, dim=dim % x.ndim, act=act), ref_inputs, 2)
    assert_close(ours, ref, TOL[dtype], f"{shape} dim={dim}")


@gpu_test
def test_bias_act_mixed_dtypes_and_stream(compiled):
    torch.manual_seed(2)
    x = torch.randn(2, 8, 4, 4, device="cuda", dtype=torch.float16)
    b = torch.randn(8, device="cuda")  # float32: promotes like x + b does
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        y = bias_act(x, b, act="lrelu", impl="cuda")
    stream.synchronize()
    assert y.dtype == torch.float32
    assert_close([y], [bias_act_ref(x.double(), b.double(), act="lrelu")], TOL[torch.float32])


def _filters():
    return {
        "2d_4tap": setup_filter([1, 3, 3, 1]),  # what StyleGAN2 builds: [4, 4]
        "sep_4tap": setup_filter([1, 3, 3, 1], separable=True),
        "sep_8tap": setup_filter([1, 4, 9, 13, 13, 9, 4, 1]),  # 8 taps: separable by default
        "2d_3x5": torch.randn(3, 5, generator=torch.Generator().manual_seed(0)),
        "none": torch.ones(1, 1),  # what upfirdn2d(x, None, padding=...) uses: pad / crop only
    }


# (up, down, padding, flip, gain): the StyleGAN2 ones (upsample2d, downsample2d, filter2d with the
# padding those helpers compute for a 4-tap filter, conv2d_resample's blur) and general ones.
UFD_CASES = [
    (2, 1, (2, 1, 2, 1), False, 4.0),
    (1, 2, (1, 1, 1, 1), False, 1.0),
    (1, 1, (2, 1, 2, 1), False, 1.0),
    (1, 1, (1, 1, 1, 1), False, 4.0),
    (1, 1, (2, 2, 2, 2), False, 1.0),
    (2, 1, (1, 1, 1, 1), True, 4.0),
    (1, 2, (2, 2, 2, 2), True, 1.0),
    ((3, 1), (1, 2), (0, 3, -1, 2), False, 1.5),
    ((1, 2), (3, 1), (4, -1, 2, 0), True, 0.5),
]


@gpu_test
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("fname", ["2d_4tap", "sep_4tap", "sep_8tap", "2d_3x5", "none"])
@pytest.mark.parametrize("case", range(len(UFD_CASES)))
@pytest.mark.parametrize("size,layout", [((8, 8), "contiguous"), ((40, 72), "contiguous"), ((40, 72), "channels_last"),
                                         ((33, 34), "strided"), ((64, 64), "contiguous")])
def test_upfirdn2d_matches_reference(compiled, dtype, fname, case, size, layout):
    up, down, pad, flip, gain = UFD_CASES[case]
    f = _filters()[fname].cuda()
    torch.manual_seed(case)
    x = _layout(torch.randn(2, 3, *size, device="cuda").to(dtype), layout)
    kw = dict(up=up, down=down, padding=pad, flip_filter=flip, gain=gain)
    ours = value_and_grads(lambda x: upfirdn2d(x, f, impl="cuda", **kw), [leaf(x)], case)
    ref = value_and_grads(lambda x: upfirdn2d_ref(x, f.double(), **kw), [leaf(x.double())], case)
    assert ours[0].dtype == dtype
    if layout == "channels_last":
        assert ours[0].is_contiguous(memory_format=torch.channels_last)
    assert_close(ours, ref, TOL[dtype], f"{fname} {UFD_CASES[case]} {size} {layout}")


@gpu_test
def test_ops_on_second_device(compiled):
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices")
    x = torch.randn(2, 4, 32, 32, device="cuda:1")
    f = setup_filter([1, 3, 3, 1], device=x.device)
    assert_close([upfirdn2d(x, f, up=2, padding=(2, 1, 2, 1), gain=4, impl="cuda")],
                 [upfirdn2d_ref(x.double(), f.double(), up=2, padding=(2, 1, 2, 1), gain=4)], 2e-4)
    assert_close([bias_act(x, torch.ones(4, device=x.device), act="lrelu", impl="cuda")],
                 [bias_act_ref(x.double(), torch.ones(4, dtype=torch.float64, device=x.device), act="lrelu")], 2e-4)


# ------------------------------------------------------------------------------------------------
# Everywhere: build fallback and lock


def test_fallback_warns_once_or_raises(monkeypatch):
    monkeypatch.setattr(build, "_load", lambda: (None, "RuntimeError: no CUDA device is available"))
    build._warn_fallback.cache_clear()
    monkeypatch.setenv("LATENTEDIT_OPS", "auto")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert build.compiled_ops() is None
        assert build.compiled_ops() is None
    assert len([w for w in caught if "compiled CUDA ops are unavailable" in str(w.message)]) == 1
    monkeypatch.setenv("LATENTEDIT_OPS", "cuda")
    with pytest.raises(RuntimeError, match="LATENTEDIT_OPS=cuda"):
        build.compiled_ops()
    build._warn_fallback.cache_clear()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA fallback")
def test_no_cuda_means_reference_path(monkeypatch):
    monkeypatch.setenv("LATENTEDIT_OPS", "auto")
    ops, reason = build._load()
    assert ops is None and reason


def test_build_lock_excludes_and_breaks_stale(tmp_path):
    path = tmp_path / "x.lock"
    with build.BuildLock(path):
        assert path.exists()
        with pytest.raises(TimeoutError):
            with build.BuildLock(path, timeout=0.3, poll=0.05):
                pass
    assert not path.exists()
    # A lock left by a process that no longer exists (same host) is broken.
    path.write_text('{"pid": 999999999, "host": "%s", "time": 0}' % __import__("socket").gethostname())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with build.BuildLock(path, timeout=2, poll=0.05):
            pass
    # So is one older than stale_after, whoever holds it.
    path.write_text('{"pid": 1, "host": "elsewhere", "time": 0}')
    os.utime(path, (0, 0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with build.BuildLock(path, timeout=2, stale_after=60, poll=0.05):
            pass
    assert not path.exists()


# ------------------------------------------------------------------------------------------------
# Everywhere: the autograd wiring of latentedit.ops.cuda over a stand-in for the compiled module.
# The stand-in computes, in PyTorch on the CPU, what each kernel mode computes (csrc/*.h), and
# checks the calling conventions the C++ side enforces.


def _fake_bias_act(x, ref, b, dim, act, mode, alpha, gain, clamp, stream):
    assert cuda._is_dense(x) and (mode == 0 or (ref.shape == x.shape and ref.stride() == x.stride()))
    assert not (mode == 1 and act > 3) and not (mode == 3 and act < 4)
    shape = [-1 if i == dim else 1 for i in range(x.ndim)]
    bb = 0 if (b is None or mode == 1) else b.float().reshape(shape)
    fwd = {1: lambda z: z, 2: F.relu, 3: lambda z: F.leaky_relu(z, alpha), 4: torch.tanh, 5: torch.sigmoid}[act]
    if mode == 0:
        v = fwd(x.float() + bb) * gain
        out = v.clamp(-clamp, clamp) if clamp >= 0 else v
    elif mode == 1:
        r = ref.float()
        d = torch.ones_like(r) if act == 1 else torch.where(r > 0, 1.0, alpha if act == 3 else 0.0)
        out = torch.where(r.abs() < clamp, x.float() * gain * d, 0.0) if clamp >= 0 else x.float() * gain * d
    else:
        z = ref.float() + bb
        s = torch.tanh(z) if act == 4 else torch.sigmoid(z)
        if act == 4:
            d = 1 - s * s if mode == 2 else -2 * s * (1 - s * s)
        elif act == 5:
            d = s * (1 - s) if mode == 2 else s * (1 - s) * (1 - 2 * s)
        else:
            d = torch.ones_like(z) if act == 1 else torch.where(z > 0, 1.0, alpha if act == 3 else 0.0)
        keep = (fwd(z) * gain).abs() <= clamp if clamp >= 0 else torch.ones_like(z, dtype=torch.bool)
        out = torch.where(keep, x.float() * gain * d, 0.0)
    return torch.empty_like(x).copy_(out)


def _fake_upfirdn2d(x, f, fw, fh, upx, upy, downx, downy, x0, x1, y0, y1, flip, gain, stream):
    assert f.dtype == torch.float32 and f.is_contiguous() and f.numel() == fw * fh
    n, c, h, w = x.shape
    u = x.new_zeros(n, c, h * upy, w * upx)
    u[:, :, ::upy, ::upx] = x
    u = F.pad(u, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    u = u[:, :, max(-y0, 0): u.shape[2] - max(-y1, 0), max(-x0, 0): u.shape[3] - max(-x1, 0)]
    taps = f.reshape(fh, fw).to(x.dtype)
    taps = taps if flip else taps.flip([0, 1])  # conv2d correlates
    y = F.conv2d(u.reshape(n * c, 1, *u.shape[2:]), taps[None, None] * gain, stride=(downy, downx))
    fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous() \
        else torch.contiguous_format
    return y.reshape(n, c, *y.shape[2:]).contiguous(memory_format=fmt)


@pytest.fixture
def stand_in(monkeypatch):
    fake = types.SimpleNamespace(bias_act=types.SimpleNamespace(bias_act=_fake_bias_act),
                                 upfirdn2d=types.SimpleNamespace(upfirdn2d=_fake_upfirdn2d))
    monkeypatch.setattr(build, "compiled_ops", lambda: fake)
    monkeypatch.setattr(cuda, "_stream", lambda x: 0)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("clamp,gain,alpha", [(None, None, None), (0.7, None, None), (0.7, -1.3, -0.1)])
@pytest.mark.parametrize("layout,dim", [("contiguous", 1), ("channels_last", 1), ("2d", 1), ("contiguous", -1)])
def test_cuda_autograd_wiring_bias_act(stand_in, act, clamp, gain, alpha, layout, dim):
    torch.manual_seed(3)
    x = torch.randn(7, 5) if layout == "2d" else torch.randn(2, 5, 3, 4)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    b = torch.randn(x.shape[dim])
    kw = dict(act=act, alpha=alpha, gain=gain, clamp=clamp)
    ours = value_and_grads(lambda x, b: cuda.bias_act(x, b, dim=dim, **kw), [leaf(x), leaf(b)], 3)
    ref = value_and_grads(lambda x, b: bias_act_ref(x, b, dim=dim % x.ndim, **kw), [leaf(x), leaf(b)], 3)
    assert ours[0].stride() == x.stride()
    assert_close(ours, ref, 1e-5)


@pytest.mark.parametrize("fname", ["2d_4tap", "sep_8tap", "2d_3x5", "none"])
@pytest.mark.parametrize("case", range(len(UFD_CASES)))
@pytest.mark.parametrize("channels_last", [False, True])
def test_cuda_autograd_wiring_upfirdn2d(stand_in, fname, case, channels_last):
    up, down, pad, flip, gain = UFD_CASES[case]
    f = _filters()[fname]
    x = torch.randn(2, 3, 9, 7, generator=torch.Generator().manual_seed(case))
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    kw = dict(up=up, down=down, padding=pad, flip_filter=flip, gain=gain)
    ours = value_and_grads(lambda x: cuda.upfirdn2d(x, f, **kw), [leaf(x)], case)
    ref = value_and_grads(lambda x: upfirdn2d_ref(x.double(), f.double(), **kw), [leaf(x.double())], case)
    assert_close(ours, ref, 1e-5)
