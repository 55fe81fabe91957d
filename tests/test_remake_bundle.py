"""benchmarks/remake_bundle.py: a new generator gets its own boundaries, encoder and offset
networks, warm-started from the bundled default's, and a second call finds nothing left to do."""
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from latentedit.formats import DEFAULT_BUNDLE, Networks, bundle, load_generator, save_networks
from latentedit.formats.directions import generator_hash
from latentedit.formats.sdgan import read_offset_network
from latentedit.models.discriminator import Discriminator
from latentedit.models.stylegan2 import DiscriminatorConfig, Generator, GeneratorConfig
from latentedit.runtime import seeded

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("mask", "frame_glasses", "sunglasses")


@pytest.mark.slow
def test_remake_makes_every_generator_bound_part_and_resumes(tmp_path):
    with seeded(0):  # a small random generator of the bundle's resolution and W+ size
        G = Generator(GeneratorConfig(resolution=64, channel_base=256, channel_max=32))
        D = Discriminator(DiscriminatorConfig(resolution=64, channel_base=256, channel_max=32))
    save_networks(Networks("training-run", "new", G=G, D=D), tmp_path / "new", provenance={"kimg": 1.0})
    out, runs = tmp_path / "bundle", tmp_path / "runs"
    command = [sys.executable, str(ROOT / "benchmarks" / "remake_bundle.py"), "--generator", str(tmp_path / "new"),
               "--out", str(out), "--runs", str(runs), "--n-boundary", "2000", "--encoder-steps", "2",
               "--encoder-identity-steps", "2", "--offset-steps", "2", "--only", "assemble,boundaries,encoder,offsets"]
    first = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr

    manifest = bundle.read_manifest(out)
    held = set(manifest["networks"])
    assert {"G", "D", "attributes", "identity", "parser", "face3d", "encoder"} | {f"offset_{k}" for k in KINDS} <= held
    assert {f"evaluator.{name}" for name in ("attributes", "identity", "parser", "face3d")} <= set(manifest["figures"])
    encoder = manifest["provenance"]["encoder"]["config"]  # the second run's, from the first run's export
    assert encoder["w_identity"] == 1 and encoder["init_from"] == out.name
    _, stored = bundle.read_network(out, "G")  # the new generator, not the default's
    assert all(torch.allclose(stored[k], v.half().float()) for k, v in G.state_dict().items() if k in stored)
    new_hash = generator_hash(load_generator(out))
    for kind in KINDS:  # each tied to the new generator, warm-started from the default's network
        _, settings = read_offset_network(out, kind)
        assert settings["generator"] == new_hash
        config = json.loads((runs / f"offset_{kind}" / "config.json").read_text())
        assert (ROOT / config["init_from"]).resolve() == DEFAULT_BUNDLE.resolve()
    boundary = json.loads((out / "boundaries" / "mask.json").read_text())
    assert boundary["generator"] == new_hash and boundary["provenance"]["samples"] == 2000
    for made in [out / "bundle.json", *(out / "boundaries").glob("*.json")]:  # provenance: no machine paths
        assert str(tmp_path) not in made.read_text() and "tmp/" not in made.read_text(), made

    second = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert second.returncode == 0 and "$ " not in second.stdout, second.stdout + second.stderr


def test_measure_redoes_a_report_of_another_sample_count(tmp_path, monkeypatch):
    from conftest import load_benchmark

    remake = load_benchmark("remake_bundle")
    runs = tmp_path / "runs"
    runs.mkdir()
    for name in ("encoder_world.json", "synthesize_samples.png", "default_samples.png"):
        (runs / name).write_text("{}")
    (runs / "synthesize_world.json").write_text(json.dumps({"n": 400}))
    commands = []
    monkeypatch.setattr(remake, "_run", lambda command, threads: commands.append(command))
    args = SimpleNamespace(runs=str(runs), sheets=None, out="bundle", threads=1)
    remake.measure(SimpleNamespace(**vars(args), n_measure=400))
    assert commands == []  # the report at this count is kept
    remake.measure(SimpleNamespace(**vars(args), n_measure=1000))
    assert len(commands) == 1 and "benchmarks/synthesize_world.py" in commands[0] and 1000 in commands[0]


def test_offsets_of_a_labelled_generator_train_frames_along_its_label(tmp_path, monkeypatch):
    """The bundled generator was trained with world labels: its frame-glasses and mask runs take the
    label prior and the labelled realism term (both composited, frames with the share term, the mask
    run without the sunglasses condition), its sunglasses run that term alone; an unconditional
    generator's runs take neither."""
    from conftest import load_benchmark

    remake = load_benchmark("remake_bundle")
    commands = []
    monkeypatch.setattr(remake, "_run", lambda command, threads: commands.append(list(map(str, command))))
    monkeypatch.setattr(remake, "_held", lambda out: set())
    with seeded(0):
        G = Generator(GeneratorConfig(resolution=64, channel_base=256, channel_max=32))
    save_networks(Networks("training-run", "new", G=G), tmp_path / "plain")
    for out, labelled in ((DEFAULT_BUNDLE, True), (tmp_path / "plain", False)):
        commands.clear()
        remake.offsets(SimpleNamespace(out=str(out), old=str(DEFAULT_BUNDLE), runs=str(tmp_path / "runs"),
                                       threads=1, offset_steps=2, parallel=False))
        by_kind = {c[c.index("--kind") + 1]: c for c in commands}
        assert set(by_kind) == set(KINDS)
        for kind in KINDS:
            assert ("--realism-label" in by_kind[kind]) == labelled
        for kind in ("frame_glasses", "mask"):
            assert ("label" in by_kind[kind]) == labelled
        assert ("--composite" in by_kind["mask"]) == labelled and ("sunglasses" in by_kind["mask"]) != labelled
        frames = " ".join(by_kind["frame_glasses"])
        assert (" ".join(remake.FRAMES_COMPOSITED) in frames) == labelled == ("--composite" in by_kind["frame_glasses"])
        assert "--prior" not in by_kind["sunglasses"] and "--composite" not in by_kind["sunglasses"]
        assert "see_through=24" in by_kind["frame_glasses"] and "identity=3" in by_kind["sunglasses"]
