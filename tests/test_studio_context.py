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
