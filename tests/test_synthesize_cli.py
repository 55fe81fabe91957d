"""SD-GAN's latent files read strictly and `latentedit synthesize` (layout, manifest, resume, the w and
interface files, a template, bad input), on the SD-GAN test world of sdgan_world.py; the synthesizer
itself: test_discrete.py."""
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from latentedit.edit.discrete import DiscreteSynthesizer
from latentedit.errors import FormatError
from latentedit.formats.images import to_uint8
from latentedit.formats.latents import read_latents, read_priors
from latentedit.world.templates import accessory_template

from conftest import error_line, run
from sdgan_world import world  # noqa: F401 (a fixture)

torch.set_num_threads(1)


# -- strict SD-GAN latent files ----------------------------------------------------------------------

def test_read_sdgan_json_strictly(tmp_path):
    rows = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    good = {str(i): r.tolist() for i, r in enumerate(rows)}
    f = tmp_path / "w.json"
    f.write_text(json.dumps(good))
    assert np.array_equal(read_latents(f, w_dim=8), rows)
    f.write_text(json.dumps({"0": [rows[0].tolist()], "1": [rows[1].tolist()]}))  # [[w_dim]] rows are W
    assert read_latents(f).shape == (2, 8)
    f.write_text(json.dumps({k: [v] * 4 for k, v in good.items()}))  # W+ [L][w_dim]
    assert read_latents(f, w_dim=8, num_ws=4).shape == (3, 4, 8)
    with pytest.raises(FormatError, match="4 layers"):
        read_latents(f, num_ws=5)
    cases = [({"0": good["0"], "2": good["2"]}, 'missing key "1"'),
             ({"0": good["0"], "1": good["1"][:5]}, 'key "1" has 5 values, expected 8'),
             ({"0": good["0"], "1": [float("nan")] * 8}, 'key "1" contains NaN'),
             ({"0": good["0"], "01": good["1"]}, 'key "01" is not a sample index'),
             ({"0": good["0"], "1": ["a"] * 8}, 'key "1" holds "a"'),
             ({"0": good["0"], "1": [good["1"]] * 2}, 'key "1" has shape [2, 8]'),
             ({}, "holds no latents")]
    for data, message in cases:
        f.write_text(json.dumps(data))
        with pytest.raises(FormatError, match=message.replace("[", r"\[").replace("]", r"\]")):
            read_latents(f, w_dim=8)
    f.write_text(json.dumps(good))
    with pytest.raises(FormatError, match='key "0" has 8 values, expected 9'):
        read_latents(f, w_dim=9)
    assert read_priors(f, 3, 8).shape == (3, 8)
    with pytest.raises(FormatError, match="3 prior vectors for 2"):
        read_priors(f, 2, 8)
    np.save(tmp_path / "w.npy", rows)
    with pytest.raises(FormatError, match="the generator's W has 9"):
        read_latents(tmp_path / "w.npy", w_dim=9)


# -- latentedit synthesize ------------------------------------------------------------------------

def png(path):
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def test_synthesize_layout_manifest_and_resume(world, tmp_path):
    path, G, _ = world
    out = tmp_path / "out"
    args = ("synthesize", "--kind", "mask", "--model", path, "--n", 3, "--seed", 5, "--out", out)
    r = run(*args)
    assert r.exit_code == 0, r.output
    for folder in ("origins", "interfacegan_origins", "predict_images"):
        assert sorted(p.name for p in (out / folder).iterdir()) == ["0000.png", "0001.png", "0002.png"]
    assert Image.open(out / "grid.png").size == (3 * 66 + 2, 3 * 66 + 2)  # rows: samples; 3 columns
    w = G.sample_w(3, seed=5, truncation=0.7)
    assert np.array_equal(read_latents(out / "latents.json"), w.numpy())
    final = torch.from_numpy(np.load(out / "predict_latents.npy"))
    assert final.shape == (3, G.num_ws, G.w_dim)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "mask" and manifest["count"] == 3 and manifest["settings"]["seed"] == 5
    p = torch.tensor([im["prior"] for im in manifest["images"]])
    assert torch.equal(torch.tensor([im["w"] for im in manifest["images"]]), w)
    assert torch.equal(p, torch.from_numpy(read_latents(out / "interface.json")))
    for im in manifest["images"]:
        assert len(im["offset_norm"]) == G.num_ws and im["seed"] == 5 + im["index"]
        assert math.isclose(im["prior_norm"], float(torch.tensor(im["prior"]).norm()), abs_tol=1e-5)
        assert math.isclose(im["distance_after"], max(im["distance_before"], 3.0), abs_tol=1e-4)
    with torch.no_grad():
        origin, prior_only = (to_uint8(G.synthesize(x)).astype(int) for x in (w, G.broadcast_w(w) + p[:, None]))
        edited = to_uint8(DiscreteSynthesizer.load("mask", bundle=path, G=G)(w).image).astype(int)  # composited
    how = {"from_resolution": None, "feather": 0.0, "eye_clearance": 1 / 64}  # masks: the edit's pixels, unfeathered
    assert {k: manifest["composite"][k] for k in how} == how and manifest["settings"]["composite"] == how
    for i in range(3):
        assert np.abs(png(out / "origins" / f"{i:04d}.png") - origin[i]).max() <= 1
        assert np.abs(png(out / "interfacegan_origins" / f"{i:04d}.png") - prior_only[i]).max() <= 1
        assert np.abs(png(out / "predict_images" / f"{i:04d}.png") - edited[i]).max() <= 1

    # an interrupted run: one result missing; the re-run writes only that sample
    (out / "predict_images" / "0001.png").unlink()
    others = [f for f in out.glob("*/*.png") if f.name != "0001.png"] + [out / "records" / "0000.npy"]
    before = {f: f.stat().st_mtime_ns for f in others}
    r = run(*args)
    assert r.exit_code == 0 and "synthesizing 1 of 3" in r.output, r.output
    assert {f: f.stat().st_mtime_ns for f in others} == before
    assert np.abs(png(out / "predict_images" / "0001.png") - edited[1]).max() <= 1
    assert json.loads((out / "manifest.json").read_text())["count"] == 3
    # other settings into the same folder are refused
    assert "other settings" in error_line(run(*args[:-4], "--seed", 6, "--out", out))
    assert "other settings" in error_line(run(*args, "--no-composite"))  # not composited: another run
    # --no-composite: the result as G draws the edited codes
    r = run(*args[:-1], tmp_path / "raw", "--no-composite")
    assert r.exit_code == 0, r.output
    with torch.no_grad():
        raw = to_uint8(G.synthesize(final)).astype(int)
    assert json.loads((tmp_path / "raw" / "manifest.json").read_text())["composite"] is None
    for i in range(3):
        assert np.abs(png(tmp_path / "raw" / "predict_images" / f"{i:04d}.png") - raw[i]).max() <= 1
    assert max(np.abs(raw[i] - edited[i]).max() for i in range(3)) > 8  # compositing changed the images


def test_synthesize_w_file_interface_file_and_template(world, tmp_path):
    path, G, _ = world
    w = G.sample_w(2, seed=11, truncation=0.5)
    p = 0.5 * torch.randn(2, G.w_dim, generator=torch.Generator().manual_seed(0))
    (tmp_path / "w.json").write_text(json.dumps({str(i): v.tolist() for i, v in enumerate(w)}))
    (tmp_path / "p.json").write_text(json.dumps({str(i): v.tolist() for i, v in enumerate(p)}))
    template = tmp_path / "tpl.png"
    Image.fromarray(to_uint8(accessory_template("mask")[None])[0]).save(template)
    out = tmp_path / "o"
    r = run("synthesize", "--kind", "mask", "--model", path, "--w-file", tmp_path / "w.json",
            "--interface-file", tmp_path / "p.json", "--template", template, "--out", out)
    assert r.exit_code == 0, r.output
    with torch.no_grad():
        expected = to_uint8(G.synthesize(G.broadcast_w(w) + p[:, None])).astype(int)
    for i in range(2):
        assert np.abs(png(out / "interfacegan_origins" / f"{i:04d}.png") - expected[i]).max() <= 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert torch.equal(torch.tensor([im["prior"] for im in manifest["images"]]), p)
    assert manifest["template"] == str(template) and manifest["images"][0]["seed"] is None


def test_synthesize_bad_input(world, tmp_path):
    path, G, _ = world
    w = G.sample_w(3, seed=0).numpy()
    base = ("synthesize", "--kind", "mask", "--model", path)

    def w_file(data, name="w.json"):
        f = tmp_path / name
        f.write_text(json.dumps(data))
        return f

    good = {str(i): v.tolist() for i, v in enumerate(w)}
    cases = [
        (("--w-file", w_file({"0": good["0"], "2": good["2"]}, "w1.json")), 'w1.json: missing key "1"'),
        (("--w-file", w_file({"0": good["0"], "1": good["1"][:100]}, "w2.json")),
         'w2.json: key "1" has 100 values, expected 512'),
        (("--w-file", w_file({"0": good["0"], "1": [float("nan")] * 512}, "w3.json")), 'w3.json: key "1" contains NaN'),
        (("--w-file", w_file(good), "--n", 2), "--n is for sampling from seeds"),
        (("--w-file", w_file(good), "--truncation", 0.5), "--truncation applies to seeds"),
        (("--interface-file", w_file(good, "p.json")), "pass --w-file too"),
        (("--w-file", w_file(good), "--interface-file", w_file({"0": good["0"]}, "p1.json")),
         "p1.json: 1 prior vectors for 3"),
        (("--w-file", w_file(good), "--interface-file", w_file({"0": good["0"][:3]}, "p2.json")),
         'p2.json: key "0" has 3 values, expected 512'),
    ]
    for extra, message in cases:
        r = run(*base, *extra, "--out", tmp_path / "o")
        assert r.exit_code == 2, (extra, r.output)
        assert message in error_line(r), extra
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    assert "junk.png" in error_line(run(*base, "--n", 1, "--template", junk, "--out", tmp_path / "o"))
    assert "missing.png: no such template" in error_line(
        run(*base, "--n", 1, "--template", tmp_path / "missing.png", "--out", tmp_path / "o"))
    assert "does not apply to kind 'mask'" in error_line(run(*base, "--normal", "--n", 1, "--out", tmp_path / "o"))
    assert "unknown kind 'hat'" in error_line(run("synthesize", "--kind", "hat", "--out", tmp_path / "o"))
    assert "no offset network for 'sunglasses'" in error_line(
        run("synthesize", "--kind", "glasses", "--model", path, "--n", 1, "--out", tmp_path / "o"))
    assert not (tmp_path / "o").exists()  # nothing written before the input is known to be good
    # SD-GAN's `--kind glasses --normal` is our frame glasses
    r = run("synthesize", "--kind", "glasses", "--normal", "--model", path, "--n", 1, "--out", tmp_path / "g")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "g" / "manifest.json").read_text())["kind"] == "frame_glasses"
