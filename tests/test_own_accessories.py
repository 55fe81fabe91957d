"""benchmarks/own_accessories.py: the edit judges on a generator's own accessories, beside world
renders wearing the kind (which the judges must pass: their reference)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from latentedit.formats import Networks, save_networks
from latentedit.models.stylegan2 import Generator, GeneratorConfig
from latentedit.runtime import seeded

from conftest import load_benchmark

ROOT = Path(__file__).resolve().parents[1]


def test_bordered_marks_pass_green_and_fail_red():
    own = load_benchmark("own_accessories")
    faces = torch.zeros(2, 3, 6, 6)
    tiles = own.bordered(faces, torch.tensor([True, False]))
    assert tiles.shape == (2, 10, 10, 3)
    assert tuple(tiles[0, 0, 0]) == (0, 255, 0) and tuple(tiles[1, 9, 9]) == (255, 0, 0)
    assert (tiles[:, 2:-2, 2:-2] == 128).all()  # the face itself untouched


def test_world_references_are_kept_per_resolution():
    """A judge's world reference is measured once per evaluator set *and* resolution: a second
    resolution measures its own instead of reusing the first's."""
    world = load_benchmark("synthesize_world")
    ev, calls = {"parser": lambda x: x}, []

    def measure(resolution):
        return world._world_reference(ev, "edge", resolution, lambda labeller: calls.append(resolution) or resolution)

    assert [measure(64), measure(64), measure(128), measure(64)] == [64, 64, 128, 64]
    assert calls == [64, 128]


@pytest.mark.slow
def test_world_renders_pass_and_a_random_generator_is_reported(tmp_path):
    with seeded(0):  # a random generator at the evaluators' size: its faces rarely read as the kind
        G = Generator(GeneratorConfig(resolution=64, channel_base=256, channel_max=32))
    save_networks(Networks("training-run", "random", G=G), tmp_path / "random", provenance={"kimg": 0.0})
    report, sheet = tmp_path / "own.json", tmp_path / "own.png"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "own_accessories.py"), "--models",
                        str(tmp_path / "random"), "--kinds", "mask", "--n", "8", "--json", str(report),
                        "--sheet", str(sheet)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    results = json.loads(report.read_text())["results"]["mask"]
    world = results["world renders"]
    assert world["faces"] == 8 and world["all_judges"] >= 0.6  # the world's masks pass (91% on 200)
    assert world["eyes_visible"] >= 0.75  # the mask judges include the eyes judge (world: 100% on 200)
    assert results[str(tmp_path / "random")]["codes_drawn"] >= 100  # drawn in batches of 100 until 8 found
    assert np.asarray(Image.open(sheet)).shape[0] == 2 * (2 * 68 + 2) + 2  # world row, model row (blank if none)
