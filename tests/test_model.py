"""The model object (`le.load_model`): parts from the bundle, checked against the generator once,
clear errors for parts a foreign file lacks; NVlabs' calling convention on the generator."""
import shutil

import pytest
import torch

import latentedit as le
from latentedit.errors import InputError
from latentedit.formats import DEFAULT_BUNDLE, Networks, save_networks
from latentedit.formats.directions import generator_hash

from conftest import randomize

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model():
    return le.load_model()


def test_default_model_parts(model):
    assert model.parts == DEFAULT_BUNDLE and model.D is not None
    assert "smile" in model.direction_names() and model.has("encoder") and model.has("mask")
    smile = model.direction("smile")
    assert smile.generator == model.generator_hash == generator_hash(model.G)
    assert model.direction("smile") is smile  # cached, not re-read and re-checked
    assert model.encoder() is model.encoder()
    assert set(model.evaluators()) == {"attributes", "identity", "parser", "face3d"}


def test_hash_is_computed_once(model, monkeypatch):
    model.generator_hash  # noqa: B018  computed here at the latest
    calls = []
    import latentedit.formats.directions as directions

    monkeypatch.setattr(directions, "generator_hash", lambda G: calls.append(G) or "x")
    model.direction("age")
    model.synthesizer("mask")
    assert calls == []


def test_direction_of_another_generator_refused_at_load(tmp_path, model):
    G = randomize(le.Generator(model.G.cfg)).eval()  # same architecture, other weights
    path = save_networks(Networks("random", "random", G=G), tmp_path / "other")
    shutil.copytree(DEFAULT_BUNDLE / "boundaries", path / "boundaries")
    other = le.load_model(path)
    with pytest.raises(InputError, match="another generator"):
        other.direction("smile")
    with pytest.raises(InputError, match="another generator"):
        le.load_model(path, parts=DEFAULT_BUNDLE).synthesizer("glasses", normal=True)


def test_foreign_generator_alone_is_a_model(tmp_path, tiny_G):
    pt = save_networks(Networks("random", "random", G=tiny_G), tmp_path / "g.pt")
    m = le.load_model(pt)
    assert m.parts is None and not m.has("encoder")
    w = m.G.sample_w(2, seed=0)
    assert torch.equal(m.G.synthesize(w), tiny_G.synthesize(w))
    for ask, what in [(lambda: m.direction("smile"), "directions"), (m.encoder, "encoder"),
                      (lambda: m.evaluator("parser"), "parser"), (lambda: m.synthesizer("mask"), "offset network")]:
        with pytest.raises(InputError, match=what):
            ask()
    with pytest.raises(InputError, match="bundle folder"):
        le.load_model(pt, parts=tmp_path)


def test_nvlabs_calling_convention(tiny_G, tiny_D):
    z = torch.randn(3, tiny_G.z_dim)
    assert tiny_G.c_dim == 0 and tiny_G.img_channels == 3
    ws = tiny_G.mapping(z, None, truncation_psi=0.5)
    assert torch.equal(ws, tiny_G.mapping(z, torch.zeros(3, 0), truncation_psi=0.5))
    assert torch.allclose(ws[:, 0], tiny_G.w_avg.lerp(tiny_G.mapping(z)[:, 0], 0.5))
    img = tiny_G(z, None, truncation_psi=0.5, noise_mode="const")
    assert torch.equal(img, tiny_G.synthesis(ws, noise_mode="const"))
    with pytest.raises(InputError, match="truncation_psi= by name"):
        tiny_G.mapping(z, 0.7)
    with pytest.raises(InputError, match="unconditional"):
        tiny_G(z, torch.zeros(3, 10))
    with pytest.raises(TypeError):
        tiny_G.synthesize(ws, "const")  # options are keyword-only
    assert torch.equal(tiny_D(img, None), tiny_D(img)) and torch.equal(tiny_D(img, torch.zeros(3, 0)), tiny_D(img))


def test_block_hooks_fire_on_every_path(tiny_G):
    """A forward hook on a synthesis block sees the block run on the fast path (fused and not,
    fp32 and bf16), the reference path and projection's noise path, with the same output."""
    from latentedit.edit.inversion import synthesize_with_noise

    seen = []
    handle = tiny_G.synthesis.b8.register_forward_hook(lambda module, args, output: seen.append(output[0].float()))
    ws = tiny_G.broadcast_w(tiny_G.sample_w(2, seed=1))
    outputs = []
    try:
        with torch.no_grad():
            for run in [lambda: tiny_G.synthesize(ws, fast=False), lambda: tiny_G.synthesize(ws),
                        lambda: tiny_G.synthesize(ws, fused_modconv=True),
                        lambda: tiny_G.synthesize(ws, fused_modconv=False),
                        lambda: tiny_G.synthesize(ws, compute_dtype=torch.bfloat16),
                        lambda: synthesize_with_noise(tiny_G, ws)]:
                seen.clear()
                run()
                assert seen, "the hook did not fire"
                outputs.append(torch.cat(seen))  # the fused path runs the block once per sample
    finally:
        handle.remove()
    for out in outputs[1:4] + outputs[5:]:
        assert torch.allclose(out, outputs[0], atol=1e-4)
    assert torch.allclose(outputs[4], outputs[0], atol=0.1 * outputs[0].abs().max())  # bf16


def test_edit_package_exports_resolve():
    import latentedit.edit as edit

    assert {"train_boundary", "sefa", "ganspace", "edit_mask", "region_edit", "transfer_component",
            "project"} <= set(edit.__all__)
    for name in edit.__all__:
        assert callable(getattr(edit, name)), name
    with pytest.raises(AttributeError):
        edit.no_such_thing  # noqa: B018
