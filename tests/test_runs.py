"""latentedit.runs: resumable batch runs (a resumed run writes the bytes of an uninterrupted one,
other settings are one error naming the setting) and their split over torchrun processes (two
processes write exactly the files of one)."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from latentedit.cli import main
from latentedit.errors import InputError
from latentedit.formats import Networks, save_networks
from latentedit.runs import ResumableRun, check_settings, generate_images

from conftest import error_line, run

RANDOM = ["--random-weights", "--resolution", "16", "--channel-base", "512", "--channel-max", "32"]



def _folder_bytes(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _interrupted_rerun_matches(args, whole, resumed, lost):
    """Runs `args` into both folders, deletes `lost` from `resumed`, re-runs: every file equal."""
    assert run(*args, whole).exit_code == 0
    assert run(*args, resumed).exit_code == 0
    for name in lost:
        (resumed / name).unlink()
    r = run(*args, resumed)
    assert r.exit_code == 0, r.output
    expected, got = _folder_bytes(whole), _folder_bytes(resumed)
    assert set(got) == set(expected)
    assert [name for name in expected if got[name] != expected[name]] == []
    return r


def test_batches_resume_whole_and_split_over_ranks(tmp_path):
    names = [f"{i}" for i in range(7)]
    one = ResumableRun(tmp_path, names, 3, done=lambda i: i in (0, 2, 3, 4, 5))
    assert one.batches == [[0, 1, 2], [3, 4, 5], [6]]
    assert one.todo() == [[0, 1, 2], [6]] and one.missing([0, 1, 2]) == [1]  # whole batches, one item written
    ranks = []
    for rank in range(2):
        shard = ResumableRun(tmp_path, names, 2, sharded=False)
        shard.rank, shard.world = rank, 2
        ranks.append(shard.todo())
    assert ranks == [[[0, 1], [4, 5]], [[2, 3], [6]]]  # batch b on rank b % 2: every item once
    with pytest.raises(InputError, match="batch-size"):
        ResumableRun(tmp_path, names, 0)


def test_other_settings_are_one_error_naming_the_setting(tmp_path):
    check_settings(tmp_path, {"truncation": 0.5, "seed": 1})
    check_settings(tmp_path, {"truncation": 0.5, "seed": 1})  # the same run resumes
    with pytest.raises(InputError, match=r"other settings: truncation was 0\.5, now 1\.0 "):
        check_settings(tmp_path, {"truncation": 1.0, "seed": 1})
    with pytest.raises(InputError, match="noise_mode was 'unset', now 'const'"):
        check_settings(tmp_path, {"truncation": 0.5, "seed": 1, "noise_mode": "const"})
    out = tmp_path / "g"
    assert run("generate", *RANDOM, "--seeds", "0-1", "--out", out).exit_code == 0
    r = CliRunner().invoke(main, [str(a) for a in ("generate", *RANDOM, "--seeds", "0-1", "--noise-mode", "random",
                                                   "--out", out)])
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert r.exit_code == 2 and len(errors) == 1 and "noise_mode was 'const', now 'random'" in errors[0], r.output


def test_resumed_generate_is_bit_identical(tmp_path):
    # batch 3: seed 1 shares its batch with 0 and 2, which the resumed run does not rewrite
    args = ["generate", *RANDOM, "--seeds", "0-6", "--truncation", "0.7", "--batch-size", "3", "--out"]
    r = _interrupted_rerun_matches(args, tmp_path / "whole", tmp_path / "resumed", ["seed0001.png", "seed0006.png"])
    assert "generating 2 images" in r.output


def test_resumed_invert_is_bit_identical(tmp_path):
    faces = tmp_path / "faces"
    faces.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(faces / f"f{i}.png")
    args = ["invert", *RANDOM, faces, "--steps", "3", "--batch-size", "2", "--out"]
    lost = ["f1.npy", "f1.json", "f1_rec.png"]  # f1 shares its batch with f0
    r = _interrupted_rerun_matches(args, tmp_path / "whole", tmp_path / "resumed", lost)
    assert "2 of 3 images already inverted" in r.output


def test_generate_images_from_python(tmp_path, tiny_G):
    ws = tiny_G.sample_w(3, seed=0)
    written, grid = generate_images(tiny_G, ws, tmp_path / "o", batch_size=2, settings={"from": "python"})
    assert written == 3 and grid == tmp_path / "o" / "grid.png"
    assert sorted(p.name for p in (tmp_path / "o").glob("0*.png")) == ["0000.png", "0001.png", "0002.png"]
    (tmp_path / "o" / "0002.png").unlink()
    assert generate_images(tiny_G, ws, tmp_path / "o", batch_size=2, settings={"from": "python"})[0] == 1
    with pytest.raises(InputError, match="other settings"):
        generate_images(tiny_G, ws, tmp_path / "o", settings={"from": "elsewhere"})


def _torchrun(tmp_path, args, nproc):
    script = tmp_path / "cli.py"
    script.write_text(textwrap.dedent("""
        import sys, torch
        torch.set_num_threads(1)
        from latentedit.cli import main
        main(sys.argv[1:])
    """))
    if nproc == 1:
        cmd = [sys.executable, str(script), *map(str, args)]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               str(script), *map(str, args)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return r


@pytest.mark.slow
@pytest.mark.parametrize("command", ["generate", "synthesize"])
def test_two_processes_write_the_files_of_one(tmp_path, tiny_G, command):
    w = tiny_G.sample_w(5, seed=3).numpy()
    if command == "generate":
        save_networks(Networks("test", "-", tiny_G), tmp_path / "model")
        args = ["generate", "--model", tmp_path / "model", "--batch-size", "2"]
    else:  # the bundled model (64 px) and its mask network
        from latentedit.formats import load_generator

        w = load_generator().sample_w(5, seed=3).numpy()
        args = ["synthesize", "--kind", "mask", "--batch-size", "2"]
    (tmp_path / "w.json").write_text(json.dumps({str(i): row.tolist() for i, row in enumerate(w)}))
    args += ["--w-file", tmp_path / "w.json", "--out"]
    _torchrun(tmp_path, [*args, tmp_path / "one"], 1)
    r = _torchrun(tmp_path, [*args, tmp_path / "two"], 2)
    label = "generating {} images" if command == "generate" else "synthesizing {} of 5"
    assert label.format(3) in r.stdout and label.format(2) in r.stdout  # rank 0: batches 0, 2; rank 1: batch 1
    one, two = _folder_bytes(tmp_path / "one"), _folder_bytes(tmp_path / "two")
    assert len(one) >= 6 and set(two) == set(one)
    assert [name for name in one if two[name] != one[name]] == []


def test_what_cannot_be_split_over_processes_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it; refused before any process group starts
    Image.new("RGB", (64, 64), (200, 100, 50)).save(tmp_path / "a.png")
    cases = [(["generate", *RANDOM, "--seeds", "0-3", "--out", tmp_path / "grid.png"], "a grid alone"),
             (["synthesize", "--kind", "mask", "--input", tmp_path / "a.png", "--out", tmp_path / "s"],
              "--input runs in one process")]
    for args, message in cases:
        r = CliRunner().invoke(main, [str(a) for a in args])
        errors = [line for line in r.output.splitlines() if line.startswith("error:")]
        assert r.exit_code == 2 and len(errors) == 1 and message in errors[0], r.output
    assert not (tmp_path / "grid.png").exists() and not (tmp_path / "s").exists()


def test_frames_folders_record_how_codes_leave_sunglasses(tmp_path):
    """A frames synthesize folder (the bundle's label prior) records how codes past the sunglasses
    boundary leave it; a folder without the record (made when they moved onto the boundary) holds
    other images and is refused, not topped up. Masks record nothing (their old folders resume)."""
    args = ["synthesize", "--kind", "glasses", "--normal", "--n", "1", "--out", tmp_path / "f"]
    r = run(*args)
    assert r.exit_code == 0, r.output
    record = tmp_path / "f" / "run.json"
    settings = json.loads(record.read_text())
    assert settings["replaces"] == {"sunglasses": "mirrored"}
    del settings["replaces"]
    record.write_text(json.dumps(settings))
    assert "replaces was 'unset'" in error_line(run(*args))  # resuming it (the same settings otherwise)
    r = run("synthesize", "--kind", "mask", "--n", "1", "--out", tmp_path / "m")
    assert r.exit_code == 0 and "replaces" not in json.loads((tmp_path / "m" / "run.json").read_text()), r.output
