"""The plain-C CPU kernels of csrc/ (latentedit/ops/cpu_kernels.py): the synthesis layers' noise add,
leaky ReLU and clamp in one pass, and the folded up-convs' interleaving copy, against PyTorch's ops; where
a kernel declines a tensor or cannot be built, callers keep PyTorch's ops."""
import os

import pytest
import torch
import torch.nn.functional as F

from latentedit.ops import cpu_kernels

# Skipped only where nothing can build them; a compiler that fails on csrc/ fails these tests.
_NO_KERNEL = cpu_kernels.unavailable_reason()
needs_kernel = pytest.mark.skipif(
    _NO_KERNEL is not None and ("no C compiler" in _NO_KERNEL or "only on Linux" in _NO_KERNEL),
    reason=f"no CPU kernels here: {_NO_KERNEL}")


@pytest.fixture
def two_threads():
    """The kernels split large tensors over threads: two at least, whatever the machine's default."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def activations(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = (torch.randn(shape, generator=g) * 3).to(dtype).contiguous(memory_format=torch.channels_last)
    special = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0], dtype=dtype)
    y[0, :, 0, 0] = special.repeat(shape[1])[:shape[1]]
    return y


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("noise_kind", [None, "shared", "per sample"])
@pytest.mark.parametrize("clamp", [None, 0.7])
# 5 channels: no vector step; 40: vector steps and a remainder in each pixel, and enough values per sample
# (163,840) for the kernel to split them over threads
@pytest.mark.parametrize("shape", [(2, 5, 3, 7), (2, 40, 64, 64)])
def test_layer_tail_is_noise_lrelu_clamp(dtype, noise_kind, clamp, shape, two_threads):
    N, C, H, W = shape
    y = activations(shape, dtype)
    g = torch.Generator().manual_seed(1)
    noise = None if noise_kind is None else \
        torch.randn(N if noise_kind == "per sample" else 1, 1, H, W, generator=g).to(dtype)
    # fp32 arithmetic, rounded once: fp32 is then PyTorch's own sequence of ops, bit for bit
    ref = y.float() if noise is None else y.float() + noise.float()
    ref = F.leaky_relu(ref, 0.2)
    ref = (ref if clamp is None else ref.clamp(-clamp, clamp)).to(dtype)
    out = y.clone()
    assert cpu_kernels.layer_tail_(out, noise, 0.2, clamp) is True
    assert torch.equal(out.isnan(), ref.isnan())
    assert torch.equal(torch.nan_to_num(out), torch.nan_to_num(ref))
    assert out.is_contiguous(memory_format=torch.channels_last)
    if dtype == torch.bfloat16 and noise is not None:  # PyTorch's bf16 ops round twice; the kernel once
        twice = F.leaky_relu(y + noise, 0.2)
        twice = twice if clamp is None else twice.clamp(-clamp, clamp)
        assert (torch.nan_to_num(twice) != torch.nan_to_num(out)).any()


@needs_kernel
def test_layer_tail_declines_what_it_cannot_take():
    y = activations((1, 4, 5, 6), torch.float32)
    noise = torch.randn(1, 1, 5, 6)
    for bad_y, bad_noise in [(y.contiguous(), noise),  # NCHW memory: the kernel walks channels_last
                             (y.clone().requires_grad_(), noise),
                             (y.double(), noise.double()),
                             (y, noise.to(torch.bfloat16)),
                             (y, torch.randn(1, 1, 5, 5)),
                             (y, torch.randn(3, 1, 5, 6)),
                             (y, noise.clone().requires_grad_())]:
        before = bad_y.detach().clone()
        assert cpu_kernels.layer_tail_(bad_y, bad_noise, 0.2) is False
        assert torch.equal(bad_y.detach().nan_to_num(), before.nan_to_num())


@needs_kernel
def test_the_generator_gives_the_same_images_with_the_kernel(monkeypatch):
    from latentedit.models.stylegan2 import Generator, GeneratorConfig

    torch.manual_seed(0)
    G = Generator(GeneratorConfig(resolution=32, channel_base=512, channel_max=32, conv_clamp=0.5)).eval()
    with torch.no_grad():
        for name, p in G.named_parameters():  # noise and clamp must matter
            if name.endswith("noise_strength"):
                p.fill_(0.7)
    ws = torch.randn(2, G.num_ws, G.w_dim, generator=torch.Generator().manual_seed(2))
    images = {}
    for choice in ("off", "auto"):
        monkeypatch.setenv("LATENTEDIT_CPU_KERNELS", choice)
        with torch.no_grad():
            images[choice] = [G.synthesis(ws, noise_mode="const", compute_dtype=dt)
                              for dt in (torch.float32, torch.bfloat16)]
    assert torch.equal(images["off"][0], images["auto"][0])
    diff = images["off"][1] - images["auto"][1]
    assert 0 < diff.abs().max() <= 0.05 * images["off"][1].abs().max()  # bf16 rounded once, not twice


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("scale_kind", [None, "shared", "per sample"])
@pytest.mark.parametrize("into", ["dense", "bordered view"])  # phase form / subpixel form's buffer
# 48 channels: vector steps only; 40: a remainder too, and enough values (163,840) to split over threads
@pytest.mark.parametrize("size", [(2, 48, 5, 7), (1, 40, 32, 32)])
def test_interleave_phases_is_the_strided_copy(dtype, scale_kind, into, size, two_threads):
    N, C, H, W = size
    y = activations((N, 4 * C, H, W), dtype)
    g = torch.Generator().manual_seed(3)
    scale = None if scale_kind is None else torch.rand(N if scale_kind == "per sample" else 1, C, generator=g) + 0.5
    phases = y.float().permute(0, 2, 3, 1).reshape(N, H, W, 2, 2, C).permute(0, 1, 3, 2, 4, 5)
    ref = (phases if scale is None else phases * scale.reshape(-1, 1, 1, 1, 1, C)).to(dtype)  # rounded once
    if into == "dense":
        out = torch.full((N, H, 2, W, 2, C), 7.0, dtype=dtype)
    else:
        buf = torch.full((N, 2 * H + 1, 2 * W + 1, C), 7.0, dtype=dtype)
        out = buf[:, 1:, 1:].view(N, H, 2, W, 2, C)
    assert cpu_kernels.interleave_phases_into(out, y, scale) is True
    assert torch.equal(out.isnan(), ref.isnan()) and torch.equal(out.nan_to_num(), ref.nan_to_num())
    if into != "dense":  # the border is left alone
        assert (buf[:, 0] == 7).all() and (buf[:, :, 0] == 7).all()


@needs_kernel
def test_interleave_phases_declines_what_it_cannot_take():
    y = activations((1, 8, 3, 3), torch.float32)
    good = torch.empty(1, 3, 2, 3, 2, 2)
    for bad_y, out, scale in [(y.contiguous(), good, None), (y.clone().requires_grad_(), good, None),
                              (y, torch.empty(1, 3, 2, 3, 2, 2, dtype=torch.bfloat16), None),
                              (y, torch.empty(1, 3, 2, 3, 2, 4)[..., ::2], None),  # channels not contiguous
                              (y, torch.empty(1, 3, 3, 2, 2, 2), None), (y, good, torch.ones(1, 3))]:
        assert cpu_kernels.interleave_phases_into(out, bad_y, scale) is False


def test_a_missing_compiler_leaves_pytorchs_ops(monkeypatch):
    monkeypatch.setenv("CC", "no-such-compiler-here")
    reason = cpu_kernels.unavailable_reason()
    assert reason is not None and "no-such-compiler-here" in reason
    y = activations((1, 3, 4, 4), torch.float32)
    before = y.clone()
    assert cpu_kernels.layer_tail_(y, None, 0.2) is False
    assert torch.equal(y.nan_to_num(), before.nan_to_num())


@needs_kernel
def test_the_library_is_built_once_into_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("LATENTEDIT_CACHE", str(tmp_path))
    cc = os.environ.get("CC", "cc")
    cpu_kernels._build(cc)
    built = sorted((tmp_path / "cpu").iterdir())
    assert len(built) == 1 and built[0].suffix == ".so"  # no temporary file left beside it
    stamp = built[0].stat().st_mtime_ns
    cpu_kernels._build(cc)
    assert sorted((tmp_path / "cpu").iterdir()) == built and built[0].stat().st_mtime_ns == stamp


@needs_kernel
def test_a_flag_set_the_compiler_rejects_falls_to_the_next_once(monkeypatch, tmp_path):
    monkeypatch.setenv("LATENTEDIT_CACHE", str(tmp_path))
    monkeypatch.setattr(cpu_kernels, "_FLAGS", [["-O3", "--no-such-flag-here"], ["-O2"]])
    cc = os.environ.get("CC", "cc")
    assert cpu_kernels._build(cc).layer_tail is not None
    built = sorted((tmp_path / "cpu").iterdir())
    assert len(built) == 1  # the second set's library; nothing left of the failed first
    runs = []
    real_run = cpu_kernels.subprocess.run
    monkeypatch.setattr(cpu_kernels.subprocess, "run", lambda cmd, **kw: runs.append(cmd) or real_run(cmd, **kw))
    cpu_kernels._build(cc)
    assert all("--version" in cmd for cmd in runs)  # the next process compiles nothing


def test_an_unknown_setting_is_refused(monkeypatch):
    monkeypatch.setenv("LATENTEDIT_CPU_KERNELS", "fast")
    with pytest.raises(ValueError, match="LATENTEDIT_CPU_KERNELS"):
        cpu_kernels.enabled()
