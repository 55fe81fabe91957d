"""Generators loaded and run under torch.inference_mode, no_grad or neither, in any combination;
the demodulation cache (models/stylegan2.py `_weight_energy`) stays correct when weights change."""
import contextlib

import pytest
import torch

from latentedit.formats import Networks, load_generator, save_networks
from latentedit.models.stylegan2 import Generator, GeneratorConfig

from conftest import TINY, randomize

MODES = {"plain": contextlib.nullcontext, "no_grad": torch.no_grad, "inference_mode": torch.inference_mode}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny generator's bundle folder, and its reference images for fixed codes."""
    torch.manual_seed(0)
    G = randomize(Generator(GeneratorConfig(**TINY))).eval()
    path = save_networks(Networks("bundle", "", G=G), tmp_path_factory.mktemp("g") / "tiny")
    ws = G.mapping(torch.randn(2, G.cfg.z_dim, generator=torch.Generator().manual_seed(1)))
    with torch.no_grad():
        ref = G.synthesis(ws, noise_mode="const", fast=False)
    return path, ws, ref


@pytest.mark.parametrize("load_mode", MODES)
@pytest.mark.parametrize("run_mode", MODES)
def test_load_and_run_under_any_mode(saved, load_mode, run_mode):
    path, ws, ref = saved
    with MODES[load_mode]():
        G = load_generator(path).eval()
    assert not any(p.is_inference() for p in G.parameters())
    for _ in range(2):  # the second run reads the demodulation cache the first one filled
        with MODES[run_mode]():
            out = G.synthesis(ws.detach(), noise_mode="const")
        assert (out - ref).abs().max().item() <= 1e-5 * ref.abs().max().item()
    # A cache entry filled under inference_mode must not break a later differentiable run.
    w = ws.detach().clone().requires_grad_(True)
    G.requires_grad_(False)
    G.synthesis(w, noise_mode="const").square().mean().backward()
    assert w.grad is not None and w.grad.isfinite().all() and w.grad.abs().sum() > 0


def test_generator_built_under_inference_mode_runs_and_never_serves_stale_weights():
    """Its weights are inference tensors (no version counter): nothing derived from them is cached,
    so changing a weight in place (allowed inside inference_mode) shows in the next image."""
    with torch.inference_mode():
        torch.manual_seed(0)
        G = randomize(Generator(GeneratorConfig(**TINY))).eval()
        ws = G.sample_w(2, seed=1).unsqueeze(1).expand(2, G.num_ws, -1)
        first = G.synthesis(ws, noise_mode="const")
        layer = G.synthesis.b8.conv0
        layer.weight[:, :1].mul_(3.0)  # not a uniform scale, which demodulation would undo
        second = G.synthesis(ws, noise_mode="const")
        ref = G.synthesis(ws, noise_mode="const", fast=False)
    with torch.no_grad():
        third = G.synthesis(ws, noise_mode="const")
    assert (second - first).abs().max().item() > 1e-3
    assert (second - ref).abs().max().item() <= 1e-5 * ref.abs().max().item()
    assert torch.equal(third, second)


def test_energy_cache_follows_weight_changes_across_modes(saved):
    """Filled under inference_mode, then the weights change outside it (an optimiser step) and
    again by load_state_dict: each next image matches the reference path."""
    path, ws, _ = saved
    G = load_generator(path).eval()
    with torch.inference_mode():
        G.synthesis(ws.detach(), noise_mode="const")
    from latentedit.models.synthesis import _DERIVED

    assert any(m in _DERIVED for m in G.modules())
    opt = torch.optim.SGD(G.synthesis.parameters(), lr=0.5)
    G.synthesis(ws.detach(), noise_mode="const", fast=False).square().mean().backward()
    opt.step()
    for change in ("optimiser step", "load_state_dict"):
        if change == "load_state_dict":
            G.load_state_dict(load_generator(path).state_dict())
        with torch.no_grad():
            ref = G.synthesis(ws.detach(), noise_mode="const", fast=False)
        with torch.inference_mode():
            out = G.synthesis(ws.detach(), noise_mode="const")
        assert (out - ref).abs().max().item() <= 1e-5 * ref.abs().max().item(), change
