"""`latentedit mask | transfer | layers` and `edit --region` on the bundled 64 px generator: the
files they write agree with the Python API, and bad input is one `error:` line with exit 2.
Part clusters are fitted small (--fit-samples 16 --clusters 48) to keep the file fast."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from latentedit.cli import main
from latentedit.edit import regions as rg
from latentedit.edit.directions import Direction
from latentedit.formats import DEFAULT_BUNDLE, load_generator
from latentedit.formats.evaluators import load_evaluators
from latentedit.formats.images import to_uint8

SMALL = ["--fit-samples", "16", "--clusters", "48"]
R = 64


@pytest.fixture(scope="module")
def G():
    return load_generator().eval()


@pytest.fixture(scope="module")
def comps(G):
    # What the commands fit with SMALL (same blocks, seed and parser), for comparing with the API.
    parser = load_evaluators(DEFAULT_BUNDLE, names=["parser"])["parser"]
    return rg.component_clusters(G, n_samples=16, k=48, layer_res=(32, 64), parser=parser)


def run(*args):
    r = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r


def png(path):
    return np.asarray(Image.open(path))


def close_uint8(a, b, tol=1):
    return np.abs(a.astype(int) - b.astype(int)).max() <= tol


def test_mask_direction_writes_masks_overlays_and_a_grid(tmp_path, G):
    out = tmp_path / "m"
    run("mask", "--direction", "smile", "--strength", "2", "--seeds", "0-1", "--out", out)
    for name in ("seed0000", "seed0001"):
        for suffix in ("", "_edited", "_soft", "_binary", "_overlay"):
            assert (out / f"{name}{suffix}.png").is_file()
        soft, binary = np.load(out / f"{name}_soft.npy"), np.load(out / f"{name}_binary.npy")
        assert soft.shape == (R, R) and soft.dtype == np.float32 and 0 <= soft.min() and soft.max() <= 1
        assert binary.dtype == bool and 0 < binary.mean() < 0.95
        assert np.array_equal(png(out / f"{name}_binary.png"), binary.astype(np.uint8) * 255)
        assert close_uint8(png(out / f"{name}_soft.png"), np.round(soft * 255))
    assert Image.open(out / "grid.png").size == (5 * R, 2 * R)
    report = json.loads((out / "masks.json").read_text())
    assert report["direction"] == "smile" and [r["name"] for r in report["images"]] == ["seed0000", "seed0001"]
    # The same masks as the API's.
    w = G.sample_w(seeds=[0, 1], truncation=0.7)
    we = Direction.load("smile").apply(w, 2.0, G=G)
    api = rg.edit_mask(G, w, we)
    # The command edits W+ in one pass per edit (AttributeLayers), the API edits W: the same sums in
    # another order, which the cues' normalisation amplifies to ~3e-5 on some CPUs; a strength 1%
    # off (2.02) moves the mask by ~7e-3.
    soft = np.load(out / "seed0001_soft.npy")
    assert np.abs(soft - api[1, 0].numpy()).max() < 5e-4
    binary, t = rg.threshold_mask(api, rg.edit_cues(G, w, we))
    differ = np.load(out / "seed0001_binary.npy") != binary[1, 0].numpy()
    assert np.all(np.abs(api[1, 0].numpy() - float(t[1]))[differ] < 5e-4)   # only pixels at the threshold


def test_mask_region_writes_part_masks_and_label_maps(tmp_path, G, comps):
    out = tmp_path / "p"
    run("mask", "--region", "mouth,nose", "--seeds", "3", *SMALL, "--out", out)
    for f in ("seed0003.png", "seed0003_labels.png", "seed0003_mouth.png", "seed0003_mouth_overlay.png",
              "seed0003_nose.png", "grid.png", "parts.json"):
        assert (out / f).is_file(), f
    labels = np.load(out / "seed0003_labels.npy")
    assert labels.shape == (R, R) and labels.max() < 48
    w = G.sample_w(seeds=[3], truncation=0.7)
    assert np.array_equal(labels, comps.labels(G, w)[0].numpy())
    mouth = np.load(out / "seed0003_mouth.npy")
    assert np.array_equal(mouth, rg.region_mask(G, w, "mouth", comps)[0, 0].numpy()) and mouth.max() == 1
    assert Image.open(out / "grid.png").size == (4 * R, R)
    report = json.loads((out / "parts.json").read_text())
    assert report["regions"] == ["mouth", "nose"] and report["clusters"] == 48
    run("mask", "--region", "all", "--seeds", "3", *SMALL, "--out", tmp_path / "all")
    everything = json.loads((tmp_path / "all" / "parts.json").read_text())["regions"]
    assert {"mouth", "hair", "skin"} <= set(everything)  # which parts get a cluster depends on the generator


def test_transfer_writes_source_target_result_and_mask(tmp_path, G, comps):
    out = tmp_path / "t"
    run("transfer", "--component", "mouth", "--source", "7", "--target", "0,1", *SMALL, "--out", out)
    for name in ("seed0000", "seed0001"):
        for suffix in ("_source.png", "_target.png", "_result.png", "_mask.png", "_mask.npy"):
            assert (out / f"{name}{suffix}").is_file()
    assert Image.open(out / "grid.png").size == (4 * R, 2 * R)
    t, s = G.sample_w(seeds=[0, 1], truncation=0.7), G.sample_w(seeds=[7], truncation=0.7)
    with torch.no_grad():
        api = to_uint8(rg.transfer_component(G, t, s, "mouth", components=comps)[0])
    assert close_uint8(png(out / "seed0001_result.png"), api[1])
    mask = np.load(out / "seed0001_mask.npy")
    assert mask.shape == (R, R) and mask.max() == 1 and 0 < mask.mean() < 0.5
    pairs = json.loads((out / "transfer.json").read_text())["pairs"]
    assert [p["source"] for p in pairs] == ["seed0007", "seed0007"]
    # The same faces from latent files give the same result.
    np.save(tmp_path / "t.npy", t.numpy())
    np.save(tmp_path / "s.npy", s.numpy())
    run("transfer", "--component", "mouth", "--source-w", tmp_path / "s.npy", "--target-w", tmp_path / "t.npy",
        *SMALL, "--out", tmp_path / "tw")
    assert np.array_equal(png(tmp_path / "tw" / "0001_result.png"), png(out / "seed0001_result.png"))


def test_edit_region_locks_the_grid_to_the_part(tmp_path, G, comps):
    out = tmp_path / "e.png"
    run("edit", "--direction", "smile", "--strength", "-2..2", "--steps", "3", "--seeds", "0-1", "--region", "mouth",
        *SMALL, "--out", out)
    sheet = png(out)
    assert sheet.shape == (2 * R, 3 * R, 3)
    w = G.sample_w(seeds=[0, 1], truncation=0.7)
    smile = Direction.load("smile")
    with torch.no_grad():
        api = to_uint8(rg.region_edit(G, w, smile, "mouth", strength=2.0, components=comps))
        plain = to_uint8(G.synthesize(w))
    assert close_uint8(sheet[R:, 2 * R:], api[1])                  # row 1, column 3: strength 2, mouth only
    assert close_uint8(sheet[:R, R:2 * R], plain[0])               # strength 0: the face itself


def test_layers_grid_and_psnr_report(tmp_path):
    out = tmp_path / "layers.png"
    run("layers", "--direction", "smile,beard", "--seeds", "0-1", "--strengths", "-2..2", "--steps", "5",
        "--colour", "hair=200,40,40", "--colour", "beard=40,40,200", "--compare", *SMALL, "--out", out)
    assert Image.open(out).size == (5 * R, 2 * 4 * R)              # per image: layers, 2 colours, regenerated
    sheet = png(out)
    assert not np.array_equal(sheet[:R], sheet[R:2 * R])            # the hair row is recoloured
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["layers"] == ["smile", "beard"] and report["strengths"] == [-2, -1, 0, 1, 2]
    psnr = {p["strength"]: p["mean_db"] for p in report["psnr_recomposited_vs_regenerated"]}
    assert psnr[0] is None                                          # identical at strength 0
    assert psnr[1] > psnr[2] and psnr[1] > psnr[-1] > psnr[-2]
    assert 0 < report["render_ms"] < 200


def test_bad_input_is_one_error_line_with_exit_2(tmp_path):
    o = tmp_path / "o"
    cases = [
        (["mask", "--region", "teeth", "--out", o], "unknown region 'teeth'"),
        (["mask", "--out", o], "either --direction"),
        (["mask", "--direction", "smile", "--region", "mouth", "--out", o], "either --direction"),
        (["mask", "--direction", "smile", "--seeds", "x-y", "--out", o], "--seeds"),
        (["mask", "--direction", "no_such_direction", "--seeds", "0", "--out", o], "no_such_direction"),
        (["transfer", "--component", "teeth", "--source", "1", "--target", "2", "--out", o], "unknown region 'teeth'"),
        (["transfer", "--component", "mouth", "--source", "1,2", "--target", "3", "--out", o], "one seed"),
        (["transfer", "--component", "mouth", "--source", "1", "--target", "3-1", "--out", o], "--seeds"),
        (["transfer", "--component", "mouth", "--source-w", tmp_path / "nope.npy", "--target", "3", "--out", o],
         "no such latent file"),
        (["edit", "--direction", "smile", "--region", "teeth", "--out", tmp_path / "e.png"], "unknown region 'teeth'"),
        (["layers", "--direction", "smile", "--colour", "hair=300,0,0", "--out", tmp_path / "l.png"], "--colour must"),
        (["layers", "--direction", "smile", "--colour", "hair=red", "--out", tmp_path / "l.png"], "--colour must"),
        (["layers", "--direction", "smile", "--colour", "teeth=1,2,3", "--out", tmp_path / "l.png"], "not a layer"),
        (["layers", "--direction", "smile", "--seeds", "-1", "--out", tmp_path / "l.png"], "--seeds"),
        (["layers", "--direction", "smile", "--out", tmp_path / "l.jpg"], ".png"),
        (["layers", "--direction", "smile", "--strengths", "a..b", "--out", tmp_path / "l.png"], "--strength"),
    ]
    for args, message in cases:
        r = CliRunner().invoke(main, [str(a) for a in args])
        assert r.exit_code == 2, (args, r.output)
        lines = [line for line in r.output.strip().splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and message in lines[0], (args, r.output)
        assert "Traceback" not in r.output
