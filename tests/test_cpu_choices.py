"""Per-CPU speed choices: the phase form of the 2x up-conv (models/upconv.py), the same maths as the
transposed conv + FIR of the reference op sequence, and the table that picks it; huge pages for
large CPU tensors."""
import os
import subprocess
import sys

import pytest
import torch

from latentedit.models import upconv
from latentedit.models.layers import conv2d_resample
from latentedit.ops import setup_filter


@pytest.mark.parametrize("taps", [(1, 3, 3, 1), (1, 2, 5, 1), "random 4x4"])
@pytest.mark.parametrize("channels_last", [True, False])
def test_phase_upconv_is_the_reference_upconv(taps, channels_last):
    g = torch.Generator().manual_seed(1)
    # a non-separable, asymmetric filter catches transposed or flipped taps that v (x) v cannot
    f = torch.rand(4, 4, generator=g) + 0.1 if taps == "random 4x4" else setup_filter(taps)
    w = torch.randn(6, 5, 3, 3, generator=g)
    x = torch.randn(2, 5, 7, 9, generator=g)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    bias = torch.randn(6, generator=g)
    ref = conv2d_resample(x, w, f=f, up=2, padding=1) + bias.reshape(1, -1, 1, 1)
    out = upconv.phase_upconv(x, upconv.phase_weight(w, f), bias)
    assert out.shape == ref.shape == (2, 6, 14, 18)
    assert (out - ref).abs().max() <= 1e-5 * ref.abs().max()
    # out_scale (demodulation) then bias, per sample: the shared-conv form of inference.
    scale = torch.rand(2, 6, 1, 1, generator=g) + 0.5
    ref2 = conv2d_resample(x, w, f=f, up=2, padding=1) * scale + bias.reshape(1, -1, 1, 1)
    for n in (1, 2):  # one sample: the bias goes into the conv; two: added after
        out2 = upconv.phase_upconv(x[:n], upconv.phase_weight(w, f), bias, out_scale=scale[:n])
        assert (out2 - ref2[:n]).abs().max() <= 1e-5 * ref2.abs().max()


def test_the_table_picks_phase_for_bf16_on_amx_only(monkeypatch):
    monkeypatch.delenv("LATENTEDIT_UPCONV", raising=False)
    for amx in (True, False):
        monkeypatch.setattr(upconv, "cpu_has_amx", lambda amx=amx: amx)
        assert upconv.use_phase_upconv(torch.bfloat16) is amx
        assert upconv.use_phase_upconv(torch.float32) is False
        assert upconv.use_phase_upconv(torch.bfloat16, "cuda") is False
        assert upconv.use_phase_upconv(torch.bfloat16, training=True) is False  # weights refolded every step
    monkeypatch.setenv("LATENTEDIT_UPCONV", "phase")
    assert upconv.use_phase_upconv(torch.float32) is True
    monkeypatch.setenv("LATENTEDIT_UPCONV", "transposed")
    monkeypatch.setattr(upconv, "cpu_has_amx", lambda: True)
    assert upconv.use_phase_upconv(torch.bfloat16) is False
    monkeypatch.setenv("LATENTEDIT_UPCONV", "fast")
    with pytest.raises(ValueError, match="LATENTEDIT_UPCONV"):
        upconv.use_phase_upconv(torch.bfloat16)


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
    assert upconv.phase_foldable(f4, 2) and upconv.phase_foldable(setup_filter([1, 3, 3, 1], separable=True), 2)
    assert not upconv.phase_foldable(f4, 1) and not upconv.phase_foldable(f6, 2) and not upconv.phase_foldable(None, 2)


def test_training_keeps_the_transposed_form(monkeypatch):
    """The phase form is for inference: with autograd on, forcing it changes no bit of the gradients."""
    from latentedit.models.stylegan2 import Generator, GeneratorConfig

    torch.manual_seed(0)
    G = Generator(GeneratorConfig(resolution=16, channel_base=256, channel_max=32)).train()
    ws = torch.randn(2, G.num_ws, 512)
    grads = []
    for choice in ("transposed", "phase"):
        monkeypatch.setenv("LATENTEDIT_UPCONV", choice)
        G.zero_grad(set_to_none=True)
        G.synthesis(ws, noise_mode="const").square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in G.synthesis.parameters() if p.grad is not None]))
    assert torch.equal(grads[0], grads[1])


@pytest.mark.parametrize("preset", [None, "0"])
def test_importing_latentedit_asks_for_huge_pages_unless_told_not_to(preset):
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if preset is not None:
        env["THP_MEM_ALLOC_ENABLE"] = preset
    code = "import os, latentedit; print(os.environ['THP_MEM_ALLOC_ENABLE'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == (preset or "1")


@pytest.mark.parametrize("packed", ["off", "on"])
@pytest.mark.parametrize("fused", [True, False])
def test_both_modulation_sides_match_the_reference_path(fused, packed, monkeypatch):
    """Few channels at high resolution put the modulation on the phase weights (fused: per-sample
    weights); otherwise, and in shared convs, it goes on the activations: both give the reference path's image, with and without
    autocast around them (the trainer's D step runs the generator so), and what they cache does not
    depend on autocast."""
    from latentedit.models.packedconv import packing_available
    from latentedit.models.stylegan2 import Generator, GeneratorConfig
    from latentedit.models.synthesis import _DERIVED

    if packed == "on" and not packing_available():
        pytest.skip("this torch build has no oneDNN packed convolutions")
    monkeypatch.setenv("LATENTEDIT_UPCONV", "phase")
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
            if kind == "phase":
                expect = upconv.phase_weight(layer.weight.detach(), layer.resample_filter)
                assert torch.equal(value, expect.contiguous(memory_format=torch.channels_last))
    kinds = {kind for layer in G.modules() for kind in _DERIVED.get(layer, {})}
    assert ("phase" in kinds) == fused
    # packed: the activation-side up-convs of one sample (weights outnumber the input) run packed
    activation_side = "phase-packed-" if packed == "on" and fused else "phase-torch.float32"
    assert any(k.startswith(activation_side) for k in kinds)
