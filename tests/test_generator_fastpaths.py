"""The CPU fast paths (models/stylegan2.py, models/layers.py) agree with the reference path."""
import math

import pytest
import torch

from latentedit.models.discriminator import Discriminator
from latentedit.models.packedconv import packing_available
from latentedit.models.synthesis import _DERIVED
from latentedit.models.stylegan2 import DiscriminatorConfig, Generator, GeneratorConfig


@pytest.fixture(scope="module")
def G():
    torch.manual_seed(0)
    G = Generator(GeneratorConfig(resolution=32, channel_base=1024, channel_max=64)).eval()
    with torch.no_grad():  # make noise and biases matter
        for name, p in G.named_parameters():
            if name.endswith("noise_strength") or name.endswith(".bias"):
                p.copy_(torch.randn_like(p) * 0.5)
    return G


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("fused", [None, True, False])
# each CPU kind's up-conv form (models/upconv.py)
@pytest.mark.parametrize("upconv", ["transposed", "phase", "subpixel"])
@pytest.mark.parametrize("packed", ["off", "on"])  # per-sample weights or packed ones (models/packedconv.py)
def test_fast_matches_reference(G, batch, fused, upconv, packed, monkeypatch):
    monkeypatch.setenv("LATENTEDIT_UPCONV", upconv)
    monkeypatch.setenv("LATENTEDIT_PACKED", packed)
    _DERIVED.clear()
    ws = torch.randn(batch, G.num_ws, 512, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        ref = G.synthesis(ws, noise_mode="const", fast=False)
        out = G.synthesis(ws, noise_mode="const", fused_modconv=fused)
    assert out.shape == ref.shape and out.dtype == torch.float32
    assert (out - ref).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item())
    # the low resolutions (weights outnumber the input) ran on cached weights exactly when asked to
    cached = {kind.split("-")[0] for layer in G.modules() for kind in _DERIVED.get(layer, {})} & {"packed", "transposed"}
    assert bool(cached) == (packed == "on" and fused is not False and packing_available())


def test_packed_weights_stay_out_of_autograd(G, monkeypatch):
    """With packing forced on, a batch-1 forward that needs gradients keeps per-sample weights: the
    same gradients as with packing off, and nothing packed."""
    grads = []
    for packed in ("on", "off"):
        monkeypatch.setenv("LATENTEDIT_PACKED", packed)
        _DERIVED.clear()
        ws = torch.randn(1, G.num_ws, 512, generator=torch.Generator().manual_seed(7)).requires_grad_(True)
        G.synthesis(ws, noise_mode="const").square().mean().backward()
        grads.append(ws.grad)
        assert not any(kind.startswith(("packed", "phase-packed", "transposed"))
                       for layer in G.modules() for kind in _DERIVED.get(layer, {}))
    assert torch.equal(grads[0], grads[1])


def test_fast_random_noise_matches_reference_with_generator(G):
    ws = torch.randn(2, G.num_ws, 512)
    with torch.no_grad():
        a = G.synthesis(ws, noise_mode="random", generator=torch.Generator().manual_seed(3))
        b = G.synthesis(ws, noise_mode="random", generator=torch.Generator().manual_seed(3), fast=False)
    assert (a - b).abs().max().item() <= 1e-5 * max(1.0, b.abs().max().item())


@pytest.mark.parametrize("upconv", ["transposed", "phase", "subpixel"])
@pytest.mark.parametrize("packed", ["off", "on"])
def test_bf16_psnr(G, upconv, packed, monkeypatch):
    monkeypatch.setenv("LATENTEDIT_UPCONV", upconv)
    monkeypatch.setenv("LATENTEDIT_PACKED", packed)
    ws = torch.randn(2, G.num_ws, 512, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = G.synthesis(ws, noise_mode="const")
        bf = G.synthesis(ws, noise_mode="const", compute_dtype=torch.bfloat16)
    assert bf.dtype == torch.float32
    mse = (bf - ref).double().square().mean().item()
    peak = (ref.max() - ref.min()).item()
    assert 10 * math.log10(peak ** 2 / mse) >= 40


def test_fast_training_gradients_match_reference(G):
    G.train()
    try:
        ws = torch.randn(4, G.num_ws, 512, requires_grad=True)
        grads = []
        for fast in (True, False):
            ws.grad = None
            G.zero_grad(set_to_none=True)
            G.synthesis(ws, noise_mode="const", fast=fast).square().mean().backward()
            grads.append([ws.grad.clone()] + [p.grad.clone() for p in G.synthesis.parameters() if p.grad is not None])
        for a, b in zip(*grads):
            assert (a - b).abs().max().item() <= 1e-4 * max(1e-3, b.abs().max().item())
    finally:
        G.eval()


def test_discriminator_fast_matches_reference():
    torch.manual_seed(0)
    D = Discriminator(DiscriminatorConfig(resolution=32, channel_base=1024, channel_max=64))
    img = torch.randn(4, 3, 32, 32, requires_grad=True)
    outs = []
    for fast in (True, False):
        img.grad = None
        y = D(img, fast=fast)
        y.sum().backward()
        outs.append((y.detach(), img.grad.clone()))
    assert (outs[0][0] - outs[1][0]).abs().max().item() <= 1e-5 * max(1.0, outs[1][0].abs().max().item())
    assert (outs[0][1] - outs[1][1]).abs().max().item() <= 1e-4 * outs[1][1].abs().max().item()


def test_partly_frozen_layers_train_on_the_fast_path(G):
    """Frozen convolution weights with trainable biases, styles and noise strengths (a fine-tuning
    pattern): the fast path must not take its in-place inference branches; gradients as the
    reference path's."""
    frozen = [p for n, p in G.synthesis.named_parameters() if n.endswith(".const") or (n.endswith(".weight") and p.ndim == 4)]
    try:
        for p in frozen:
            p.requires_grad_(False)
        ws = torch.randn(2, G.num_ws, 512, generator=torch.Generator().manual_seed(7))
        grads = []
        for fast in (True, False):
            G.zero_grad(set_to_none=True)
            G.synthesis(ws, noise_mode="const", fast=fast).square().mean().backward()
            grads.append(torch.cat([p.grad.flatten() for p in G.synthesis.parameters() if p.grad is not None]))
        assert grads[0].numel() == grads[1].numel() > 0
        assert (grads[0] - grads[1]).abs().max() <= 1e-4 * grads[1].abs().max()
    finally:
        for p in frozen:
            p.requires_grad_(True)
        G.zero_grad(set_to_none=True)


def test_bf16_channel_scales_keep_the_fp32_scale():
    """scaled_channels gives the bits of the mixed-dtype product (bf16 activations times fp32 per-channel
    scales, rounded once) without its slow path, a bias included; rounding the scale to bf16 first would not."""
    from latentedit.models.synthesis import scaled_channels

    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 64, 32, 32, generator=g).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    scale = torch.rand(1, 64, generator=g) * 2 + 0.5
    mixed = torch.mul(x, scale[:, :, None, None], out=torch.empty_like(x))
    y = scaled_channels(x, scale)
    assert y.dtype == torch.bfloat16 and y.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y, mixed)
    assert torch.equal(scaled_channels(x.clone(), scale[0], inplace=True), mixed)  # a [C] scale, as packed convs call it
    assert not torch.equal(x * scale.to(torch.bfloat16)[:, :, None, None], mixed)
    assert torch.equal(scaled_channels(x.float(), scale), x.float() * scale[:, :, None, None])
    # per sample [N, C, 1, 1], as the transposed up-conv's demodulation comes
    xs, scales = torch.cat([x, -x]), torch.cat([scale, scale.flip(1)])[:, :, None, None]
    assert torch.equal(scaled_channels(xs, scales), torch.mul(xs, scales, out=torch.empty_like(xs)))
    # + a per-channel bias, as packed convs demodulate: x * scale + bias rounded once (an fp32 fused
    # multiply-add may differ from the rounded fp32 sum by one ulp of fp32, so one bf16 ulp at ties)
    bias = torch.randn(64, generator=g)
    once = (x.float() * scale[:, :, None, None] + bias[:, None, None]).to(torch.bfloat16)
    y = scaled_channels(x, scale[0], bias)
    assert y.dtype == torch.bfloat16 and y.is_contiguous(memory_format=torch.channels_last)
    ulps = (y.float() - once.float()).abs() / (once.float().abs() * 2 ** -7 + 1e-30)
    assert ulps.max() <= 1 and (ulps > 0).float().mean() < 1e-3
    twice = mixed + bias.to(torch.bfloat16)[:, None, None]  # rounding the product first: off far more often
    assert (twice != once).float().mean() > 0.05
