"""The command line: generate / info / convert, resuming, and one-line errors with exit status 2."""
import json

import numpy as np
import torch
from click.testing import CliRunner
from PIL import Image

from latentedit.cli import main
from latentedit.cli.options import parse_seeds
from latentedit.formats import Networks, save_networks

RANDOM = ["--random-weights", "--resolution", "16", "--channel-base", "512", "--channel-max", "32"]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_parse_seeds():
    assert parse_seeds("0-3") == [0, 1, 2, 3]
    assert parse_seeds("1,5,7-9") == [1, 5, 7, 8, 9]


def test_generate_folder_and_resume(tmp_path):
    out = tmp_path / "out"
    r = run("generate", *RANDOM, "--seeds", "0-4", "--truncation", "0.7", "--out", out)
    assert r.exit_code == 0, r.output
    files = sorted(p.name for p in out.glob("seed*.png"))
    assert files == [f"seed{i:04d}.png" for i in range(5)]
    grid = Image.open(out / "grid.png")
    assert grid.size == (3 * 16, 2 * 16)
    first = (out / "seed0000.png").read_bytes()
    # an interrupted run: one image missing; the re-run writes only that one and the same grid
    (out / "seed0003.png").unlink()
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("seed*.png")}
    grid_bytes = (out / "grid.png").read_bytes()
    r = run("generate", *RANDOM, "--seeds", "0-4", "--truncation", "0.7", "--out", out)
    assert r.exit_code == 0 and "generating 1 images" in r.output
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("seed*.png") if p.name in before} == before
    assert (out / "seed0000.png").read_bytes() == first and (out / "grid.png").read_bytes() == grid_bytes


def test_generate_from_model_and_w_file_matches_api(tmp_path, tiny_G):
    save_networks(Networks("test", "-", tiny_G), tmp_path / "model")
    w = tiny_G.sample_w(2, seed=0).numpy()
    (tmp_path / "w.json").write_text(json.dumps({"0": w[0].tolist(), "1": w[1].tolist()}))
    r = run("generate", "--model", tmp_path / "model", "--w-file", tmp_path / "w.json", "--out", tmp_path / "g")
    assert r.exit_code == 0, r.output
    with torch.no_grad():
        expected = (tiny_G.synthesize(torch.from_numpy(w)) * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    got = np.asarray(Image.open(tmp_path / "g" / "0001.png"))
    assert np.array_equal(got, expected[1].permute(1, 2, 0).numpy())


def test_info_and_convert(tmp_path, tiny_G):
    save_networks(Networks("test", "-", tiny_G), tmp_path / "m.pt")
    r = run("convert", tmp_path / "m.pt", tmp_path / "bundle", "--fp16")
    assert r.exit_code == 0, r.output
    r = run("info", tmp_path / "bundle", "--json")
    report = json.loads(r.output)
    assert report["format"] == "bundle" and report["G"]["config"]["resolution"] == 16
    assert report["G"]["parameters"] == sum(p.numel() for p in tiny_G.parameters())


def test_errors_are_one_line_with_exit_2(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"\x80\x04garbage")
    (tmp_path / "nan.json").write_text(json.dumps({"0": [float("nan")] * 512}))
    (tmp_path / "short.npy").write_bytes(b"")
    np.save(tmp_path / "wrong.npy", np.zeros([2, 100], np.float32))
    cases = [
        (["generate", *RANDOM, "--seeds", "x-y", "--out", tmp_path / "o"], "--seeds"),
        (["generate", "--model", tmp_path / "bad.pt", "--out", tmp_path / "o"], "bad.pt"),
        (["generate", "--model", tmp_path / "nope.pkl", "--out", tmp_path / "o"], "no such file"),
        (["generate", *RANDOM, "--w-file", tmp_path / "nan.json", "--out", tmp_path / "o"], "NaN"),
        (["generate", *RANDOM, "--w-file", tmp_path / "wrong.npy", "--out", tmp_path / "o"], "codes of 100 values"),
        (["generate", *RANDOM, "--w-file", tmp_path / "short.npy", "--out", tmp_path / "o"], "short.npy"),
        (["info", tmp_path], "without bundle.json"),
    ]
    for args, message in cases:
        r = CliRunner().invoke(main, [str(a) for a in args])
        assert r.exit_code == 2, (args, r.output)
        lines = [line for line in r.output.strip().splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and message in lines[0], r.output
        assert "Traceback" not in r.output


def test_generate_refuses_to_mix_settings_in_one_folder(tmp_path):
    out = tmp_path / "out"
    assert run("generate", *RANDOM, "--seeds", "0-1", "--truncation", "0.5", "--out", out).exit_code == 0
    r = CliRunner().invoke(main, [str(a) for a in ("generate", *RANDOM, "--seeds", "0-1", "--out", out)])
    assert r.exit_code == 2 and "other settings" in r.output


def test_train_resume_keeps_the_run_config(tmp_path):
    small = ["--resolution", "16", "--channel-base", "512", "--channel-max", "32", "--batch", "4"]
    assert run("train", "gan", "--out", tmp_path, *small, "--kimg", "0.004", "--snapshot-kimg", "0.004").exit_code == 0
    r = run("train", "gan", "--out", tmp_path, "--kimg", "0.008", "--snapshot-kimg", "0.004", "--resume")
    assert r.exit_code == 0 and "resumed at" in r.output  # 64 px defaults were not applied
    r = CliRunner().invoke(main, ["train", "gan", "--out", str(tmp_path), "--resume", "--batch", "8"])
    assert r.exit_code == 2 and "conflicts" in r.output
