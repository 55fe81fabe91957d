"""Per-CPU speed choices: the folded forms of the 2x up-conv (models/upconv.py: phase, subpixel), the same
maths as the transposed conv + FIR of the reference op sequence, and the table that picks them; huge pages for
large CPU tensors, kept in the heap once freed."""
import os
import subprocess
import sys

import pytest
import torch

from latentedit.models import upconv
from latentedit.models.layers import conv2d_resample
from latentedit.ops import setup_filter


@pytest.mark.parametrize("form", sorted(upconv.FOLDED_FORMS))
@pytest.mark.parametrize("taps", [(1, 3, 3, 1), (1, 2, 5, 1), "random 4x4"])
@pytest.mark.parametrize("channels_last", [True, False])
def test_folded_upconv_is_the_reference_upconv(form, taps, channels_last):
    g = torch.Generator().manual_seed(1)
    # a non-separable, asymmetric filter catches transposed or flipped taps that v (x) v cannot
    f = torch.rand(4, 4, generator=g) + 0.1 if taps == "random 4x4" else setup_filter(taps)
    w = torch.randn(6, 5, 3, 3, generator=g)
    x = torch.randn(2, 5, 7, 9, generator=g)  # not square: catches swapped row and column phases
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    bias = torch.randn(6, generator=g)
    folded = upconv.FOLDED_FORMS[form]
    k = folded.weight(w, f)
    assert k.shape == (4 * 6, 5, *[round(folded.taps ** 0.5)] * 2)
    ref = conv2d_resample(x, w, f=f, up=2, padding=1) + bias.reshape(1, -1, 1, 1)
    out = folded.run(x, k, f, bias, None)
    assert out.shape == ref.shape == (2, 6, 14, 18)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert (out - ref).abs().max() <= 1e-5 * ref.abs().max()
    # out_scale (demodulation) then bias, per sample: the shared-conv form of inference.
    scale = torch.rand(2, 6, 1, 1, generator=g) + 0.5
    ref2 = conv2d_resample(x, w, f=f, up=2, padding=1) * scale + bias.reshape(1, -1, 1, 1)
    for n in (1, 2):  # phase form, one sample: the bias goes into the conv; two: added after
        out2 = folded.run(x[:n], k, f, bias, scale[:n])
        assert (out2 - ref2[:n]).abs().max() <= 1e-5 * ref2.abs().max()


def test_subpixel_weight_places_each_tap_in_its_phase():
    """A kernel with one non-zero tap reaches only the output phase of that tap's parity, once."""
    for ky in range(3):
        for kx in range(3):
            w = torch.zeros(1, 1, 3, 3)
            w[0, 0, ky, kx] = 1.0
            k = upconv.subpixel_weight(w).reshape(2, 2, 2, 2)  # row phase, column phase, 2x2 taps
            assert k[ky % 2, kx % 2].sum() == 1 and k.sum() == 1, (ky, kx)


def test_the_table_folds_bf16_upconvs_on_amx_only(monkeypatch):
    monkeypatch.delenv("LATENTEDIT_UPCONV", raising=False)
    wide, narrow = upconv.SUBPIXEL_MIN_IN_CHANNELS, upconv.SUBPIXEL_MIN_IN_CHANNELS // 2
    for amx in (True, False):
        monkeypatch.setattr(upconv, "cpu_has_amx", lambda amx=amx: amx)
        assert upconv.upconv_form(torch.bfloat16, in_channels=wide) == ("subpixel" if amx else "transposed")
        assert upconv.upconv_form(torch.bfloat16, in_channels=narrow) == ("phase" if amx else "transposed")
        for args in [(torch.float32, "cpu", False, wide), (torch.bfloat16, "cuda", False, wide),
                     (torch.bfloat16, "cpu", True, wide)]:  # training: kernels rebuilt every step
            assert upconv.upconv_form(*args) == "transposed", args
    for choice in ("phase", "subpixel"):
        monkeypatch.setenv("LATENTEDIT_UPCONV", choice)
        assert upconv.upconv_form(torch.float32) == choice
        assert upconv.upconv_form(torch.float32, "cuda") == "transposed"
    monkeypatch.setenv("LATENTEDIT_UPCONV", "transposed")
    monkeypatch.setattr(upconv, "cpu_has_amx", lambda: True)
    assert upconv.upconv_form(torch.bfloat16, in_channels=wide) == "transposed"
    monkeypatch.setenv("LATENTEDIT_UPCONV", "fast")
    with pytest.raises(ValueError, match="LATENTEDIT_UPCONV"):
        upconv.upconv_form(torch.bfloat16)


def test_the_table_packs_weights_on_amx_only(monkeypatch):
    from latentedit.models import packedconv

    monkeypatch.delenv("LATENTEDIT_PACKED", raising=False)
    for amx in (True, False):
        monkeypatch.setattr(packedconv, "cpu_has_amx", lambda: amx)
        assert packedconv.use_packed_conv() is (amx and packedconv.packing_available())
        assert packedconv.use_packed_conv("cuda") is False
    monkeypatch.setenv("LATENTEDIT_PACKED", "on")
    assert packedconv.use_packed_conv() is packedconv.packing_available()
    monkeypatch.setattr(packedconv, "cpu_has_amx", lambda: True)
    monkeypatch.setenv("LATENTEDIT_PACKED", "off")
    assert packedconv.use_packed_conv() is False
    monkeypatch.setenv("LATENTEDIT_PACKED", "yes")
    with pytest.raises(ValueError, match="LATENTEDIT_PACKED"):
        packedconv.use_packed_conv()


def test_only_the_stylegan_case_folds():
    f4, f6 = setup_filter([1, 3, 3, 1]), setup_filter([1, 2, 3, 3, 2, 1])
    assert upconv.foldable(f4, 2) and upconv.foldable(setup_filter([1, 3, 3, 1], separable=True), 2)
    assert not upconv.foldable(f4, 1) and not upconv.foldable(f6, 2) and not upconv.foldable(None, 2)


def test_training_keeps_the_transposed_form(monkeypatch):
    """The folded forms are for inference: with autograd on, forcing one changes no bit of the gradients."""
    from latentedit.models.stylegan2 import Generator, GeneratorConfig

    torch.manual_seed(0)
    G = Generator(GeneratorConfig(resolution=16, channel_base=256, channel_max=32)).train()
    ws = torch.randn(2, G.num_ws, 512)
    grads = []
    for choice in ("transposed", *upconv.FOLDED_FORMS):
        monkeypatch.setenv("LATENTEDIT_UPCONV", choice)
        G.zero_grad(set_to_none=True)
        G.synthesis(ws, noise_mode="const").square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in G.synthesis.parameters() if p.grad is not None]))
    assert all(torch.equal(grads[0], g) for g in grads[1:])


@pytest.mark.parametrize("preset", [None, "0"])
def test_importing_latentedit_asks_for_huge_pages_unless_told_not_to(preset):
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if preset is not None:
        env["THP_MEM_ALLOC_ENABLE"] = preset
    code = "import os, latentedit; print(os.environ['THP_MEM_ALLOC_ENABLE'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == (preset or "1")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's heap settings")
@pytest.mark.parametrize("keep", [None, "0"])
def test_importing_latentedit_keeps_large_blocks_in_the_heap_unless_told_not_to(keep):
    """A 64 MB tensor made after the import comes from the heap, not from its own mmap (glibc counts
    mmapped blocks in mallinfo2().hblks)."""
    from latentedit.heap import glibc

    if glibc() is None or not hasattr(glibc(), "mallinfo2"):
        pytest.skip("not glibc >= 2.33")
    env = {k: v for k, v in os.environ.items() if k != "LATENTEDIT_KEEP_HEAP"}
    if keep is not None:
        env["LATENTEDIT_KEEP_HEAP"] = keep
    code = """import ctypes, latentedit, torch
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
before = libc.mallinfo2().hblks
t = torch.empty(64 << 20, dtype=torch.uint8)
print(libc.mallinfo2().hblks - before)"""
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert int(out) == (1 if keep == "0" else 0)


@pytest.mark.parametrize("form", sorted(upconv.FOLDED_FORMS))
@pytest.mark.parametrize("packed", ["off", "on"])
@pytest.mark.parametrize("fused", [True, False])
def test_both_modulation_sides_match_the_reference_path(fused, packed, form, monkeypatch):
    """Few channels at high resolution put the modulation on the folded weights (fused: per-sample
    weights); otherwise, and in shared convs, it goes on the activations: both give the reference path's image, with and without
    autocast around them (the trainer's D step runs the generator so), and what they cache does not
    depend on autocast."""
    from latentedit.models.packedconv import packing_available
    from latentedit.models.stylegan2 import Generator, GeneratorConfig
    from latentedit.models.synthesis import _DERIVED

    if packed == "on" and not packing_available():
        pytest.skip("this torch build has no oneDNN packed convolutions")
    monkeypatch.setenv("LATENTEDIT_UPCONV", form)
    monkeypatch.setenv("LATENTEDIT_PACKED", packed)
    _DERIVED.clear()
    torch.manual_seed(0)
    G = Generator(GeneratorConfig(resolution=64, channel_base=256, channel_max=8)).eval()
    with torch.no_grad():
        for name, p in G.named_parameters():  # make noise and biases matter
            if name.endswith("noise_strength") or name.endswith(".bias"):
                p.copy_(torch.randn_like(p) * 0.5)
    ws = torch.randn(2, G.num_ws, 512, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = G.synthesis(ws, noise_mode="const", fast=False)
        # autocast first: it fills the cache, which the fp32 run after it must not see rounded
        for autocast in (True, False):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                out = G.synthesis(ws, noise_mode="const", fused_modconv=fused).float()
            if autocast:  # bf16 convolutions: bf16's accuracy (the fast-path tests' 40 dB)
                psnr = 10 * torch.log10((ref.max() - ref.min()) ** 2 / (out - ref).square().mean())
                assert psnr >= 40
            else:
                assert (out - ref).abs().max() <= 1e-5 * ref.abs().max()
    for layer in (b.conv0 for b in G.synthesis.blocks() if b.in_channels):
        for kind, (_, value) in _DERIVED.get(layer, {}).items():
            assert value.dtype == torch.float32, kind
            if kind == form:
                expect = upconv.FOLDED_FORMS[form].weight(layer.weight.detach(), layer.resample_filter)
                assert torch.equal(value, expect.contiguous(memory_format=torch.channels_last))
    kinds = {kind for layer in G.modules() for kind in _DERIVED.get(layer, {})}
    assert (form in kinds) == fused
    # packed: the activation-side up-convs of one sample (weights outnumber the input) run packed
    activation_side = f"{form}-packed-" if packed == "on" and fused else f"{form}-torch.float32"
    assert any(k.startswith(activation_side) for k in kinds)
