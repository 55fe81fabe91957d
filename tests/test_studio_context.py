"""The studio's RecipeContext is a thin layer on a Model: the generator hash, the directions, the
offset networks and the part components come from the model (loaded and checked once), and a
model without parts says per direction / accessory what is missing."""
import pytest
import torch

import latentedit as le
from latentedit.errors import InputError
from latentedit.model import Model
from latentedit.studio import RecipeContext, run_recipe
from latentedit.studio.server import Studio

torch.set_num_threads(1)
SEED = {"seed": 3, "truncation": 0.7}


@pytest.fixture(scope="module")
def model():
    return le.load_model()


def test_context_takes_everything_from_the_model(model, monkeypatch):
    import latentedit.formats.directions as directions

    calls = []
    real = directions.generator_hash
    monkeypatch.setattr(directions, "generator_hash", lambda G: calls.append(G) or real(G))
    fresh = Model(model.G, parts=model.parts, source=model.source)
    ctx = RecipeContext(fresh)
    recipe = {"start": SEED, "directions": [{"name": "age", "strength": 1.0, "keep": ["smile"]}],
              "accessory": "mask"}
    res = run_recipe(recipe, ctx.G, ctx.bundle, ctx)
    assert len(calls) == 1  # one hash for G, not one per direction or network checked
    assert ctx.generator_hash == fresh.generator_hash == res.recipe["model"]["generator"]
    assert res.recipe["model"]["path"] == "default"
    assert ctx.synthesizer("mask") is fresh.synthesizer("mask")  # the model's, loaded once
    assert ctx.direction("smile").generator == fresh.generator_hash
    assert set(ctx.directions()) == set(fresh.direction_names())


def test_accessory_stage_renders_the_composited_edit(model):
    """An accessory in a recipe looks as `synthesize` delivers it: the edit composited into the face
    (the origin's pixels outside the mask's region), not G of the edited codes; layers add their
    residuals on top of it."""
    ctx = RecipeContext(model)
    start = {"start": SEED, "directions": [{"name": "smile", "strength": 1.0}]}
    res = run_recipe({**start, "accessory": "mask"}, ctx.G, ctx.bundle, ctx)
    face = run_recipe(start, ctx.G, ctx.bundle, ctx)
    out = model.synthesizer("mask")(face.latents)
    assert torch.equal(res.latents, out.latents) and torch.equal(res.image, out.image)
    outside = out.region == 0
    assert float((res.image - face.image).abs().amax(1, keepdim=True)[outside].max()) < 1e-3
    raw = ctx.image(res.latents)  # G of the edited codes changes the face outside the region too
    assert float((raw - face.image).abs().amax(1, keepdim=True)[outside].mean()) > 0.01
    layered = run_recipe({**start, "accessory": "mask", "layers": {"strengths": {"beard": 0.0}}},
                         ctx.G, ctx.bundle, ctx)
    assert float((layered.image - res.image).abs().max()) < 1e-4  # a layer at strength 0 adds nothing


def test_context_of_a_model_without_parts_says_what_is_missing(model):
    bare = Model(model.G)  # a generator alone, as a foreign file gives
    ctx = RecipeContext(bare)
    assert ctx.directions() == {}
    with pytest.raises(InputError, match="unknown direction 'smile'"):
        ctx.normalize({"start": SEED, "directions": {"smile": 1.0}})
    for a in ctx.accessories():
        assert not a["available"] and "parts=BUNDLE" in a["reason"]
    with pytest.raises(InputError, match="parser"):
        ctx.components()
    assert run_recipe({"start": SEED}, ctx.G, None, ctx).image.shape == (1, 3, 64, 64)


def test_studio_accepts_a_model(model):
    studio = Studio(model, warm=False)
    assert studio.model is model and studio.G is model.G and studio.ctx.model is model
    assert studio.info()["model"]["generator"] == model.generator_hash
