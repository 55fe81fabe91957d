"""benchmarks/kind_mix.py: the attribute mix of each accessory kind's faces, and the per-kind FID
at the world's mix (importance weights over the cells of the other attributes' labels)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from latentedit.formats import Networks, save_networks
from latentedit.models.stylegan2 import Generator, GeneratorConfig
from latentedit.runtime import seeded

from conftest import load_benchmark

ROOT = Path(__file__).resolve().parents[1]
NAMES = {"glasses": ["none", "frame", "sun"], "mask": ["none", "on"], "hair_style": ["short", "long"]}


def test_mix_weights_give_each_cell_the_target_share():
    mix = load_benchmark("kind_mix")
    drawn = torch.tensor([0] * 70 + [1] * 30)
    target = torch.tensor([0] * 30 + [1] * 60 + [2] * 10)  # cell 2: never drawn
    w, unreached = mix.mix_weights(drawn, target)
    assert abs(unreached - 0.10) < 1e-9
    share = torch.stack([w[drawn == c].sum() for c in (0, 1)]) / w.sum()
    assert torch.allclose(share, torch.tensor([1 / 3, 2 / 3], dtype=torch.float64))  # 30 : 60 of the reachable
    w, _ = mix.mix_weights(torch.tensor([0, 0, 3, 3]), torch.tensor([0, 0, 1]))  # cell 3: the target has none
    assert w.tolist() == [2 / 3 / 0.5] * 2 + [0.0, 0.0]
    assert abs(mix.effective_n(torch.tensor([1.0, 1.0, 2.0, 2.0], dtype=torch.float64)) - 3.6) < 1e-12
    # no generated face in any of the world's cells: no denominator, not a crash
    assert mix._overall_at_world_mix(torch.randn(8, 2), torch.randn(8, 2), torch.zeros(8, dtype=torch.float64),
                                     4, 4.0, repeats=2) is None


def _population(n, p_long_in_sun, g):
    """Fake classifier outputs: labels of three heads and 8-d features in which long hair and
    sunglasses each move one axis; the classifier is exact, so the truth is its labels."""
    glasses = torch.multinomial(torch.tensor([0.6, 0.2, 0.2]), n, replacement=True, generator=g)
    mask = (torch.rand(n, generator=g) < 0.15).long()
    p_long = torch.where(glasses == 2, p_long_in_sun, 0.5)
    hair = (torch.rand(n, generator=g) < p_long).long()
    f = torch.randn(n, 8, generator=g)
    f[:, 0] += 3.0 * hair
    f[:, 1] += 2.0 * (glasses == 2)
    f[:, 2] += 2.0 * mask
    labels = {"glasses": glasses, "mask": mask, "hair_style": hair}
    truth = {"frame_glasses": glasses == 1, "sunglasses": glasses == 2, "mask": mask == 1}
    return f, labels, truth


def test_a_learnt_correlation_is_told_apart_from_the_drawing():
    """Generated sunglasses on long hair 85% of the time (the world: 50%, as on every face): the
    sunglasses' FID is large as drawn, near the floor at the world's mix; the other kinds, whose
    mix is the world's, barely move; the hair's total variation is 0.35 within the kind."""
    mix = load_benchmark("kind_mix")
    g = torch.Generator().manual_seed(0)
    f_gen, l_gen, _ = _population(8000, 0.85, g)
    f_real, l_real, truth = _population(8000, 0.5, g)
    report = mix.kind_mix((f_gen, l_gen), (f_real, l_real), truth, NAMES, ["hair_style"])
    sun, frame = report["kinds"]["sunglasses"], report["kinds"]["frame_glasses"]
    assert abs(sun["heads"]["hair_style"]["tv"] - 0.35) < 0.05
    assert report["all_faces_tv"]["hair_style"] < 0.5 * sun["heads"]["hair_style"]["tv"]
    assert sun["kind_fid"] > 10 * sun["kind_fid_world_mix"]
    # drawn like the world's once the mix is the world's: about 1x the overall FID at the world's mix
    # (its denominator corrects the overall mix too: against the overall FID as drawn it read 0.4x)
    assert 0.5 < sun["ratio_world_mix"] < 2.5 and sun["ratio_matched"] > 3 * sun["ratio_world_mix"]
    assert abs(frame["kind_fid_world_mix"] - frame["kind_fid"]) < 0.5 * frame["kind_fid"] + 0.02
    assert frame["heads"]["hair_style"]["tv"] < 0.06 and frame["world_share_unreached"] == 0.0


def test_runs_on_a_generator_and_rejects_bad_input(tmp_path):
    mix = load_benchmark("kind_mix")
    with seeded(0):
        G = Generator(GeneratorConfig(resolution=64, channel_base=256, channel_max=32))
    save_networks(Networks("training-run", "random", G=G), tmp_path / "random", provenance={"kimg": 0.0})
    report = tmp_path / "mix.json"
    run = [sys.executable, str(ROOT / "benchmarks" / "kind_mix.py"), "--n", "200", "--threads", "1"]
    r = subprocess.run(run + ["--models", str(tmp_path / "random"), "--json", str(report)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    kinds = json.loads(report.read_text())["reports"][str(tmp_path / "random")]["kinds"]
    assert set(kinds) == {"frame_glasses", "sunglasses", "mask"}
    for kind in kinds.values():  # a random generator seldom draws a kind: too few faces, or weights not trusted
        if "kind_fid" in kind and kind["kind_fid_world_mix"] is None:
            assert kind["effective_n"] < mix.MIN_EFFECTIVE_N or kind["world_share_unreached"] > mix.MAX_UNREACHED
    for bad, says in ((["--models", str(tmp_path / "none")], "no such"),
                      (["--models", str(tmp_path / "random"), "--mix-heads", "hair"], "unknown head hair"),
                      (["--models", str(tmp_path / "random"), "--json", str(report / "x.json")], "cannot write")):
        r = subprocess.run(run + bad, capture_output=True, text=True, cwd=ROOT)
        assert r.returncode == 2 and r.stderr.startswith("error:") and says in r.stderr
        assert "Traceback" not in r.stderr


def test_replot_draws_a_saved_report(tmp_path):
    """--replot draws the bars from a saved --json report without measuring anything."""
    pytest.importorskip("matplotlib")
    mix = load_benchmark("kind_mix")
    g = torch.Generator().manual_seed(0)
    f_gen, l_gen, _ = _population(2000, 0.85, g)
    f_real, l_real, truth = _population(2000, 0.5, g)
    saved = {"n": 2000, "mix_heads": ["hair_style"],
             "reports": {"fake": mix.kind_mix((f_gen, l_gen), (f_real, l_real), truth, NAMES, ["hair_style"])}}
    (tmp_path / "mix.json").write_text(json.dumps(saved))
    assert mix.main(["--replot", str(tmp_path / "mix.json"), "--plot", str(tmp_path / "mix.png")]) == 0
    assert (tmp_path / "mix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert mix.main(["--replot", str(tmp_path / "mix.json")]) == 2  # nothing to draw to
