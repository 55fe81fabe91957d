"""The encoder wired into inversion and the command line: `encode_images`, `invert(mode="encoder" |
"hybrid")` (encoder from the model bundle, from another bundle, or missing), `latentedit invert
--mode encoder | hybrid`, `latentedit train encoder` (train, export, resume) and `--input` on
`synthesize` and `edit`. Runs on a copy of the bundled default with an untrained small encoder
(w_avg from G) and an untrained small mask offset network (as in sdgan_world.py)."""
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import latentedit as le
from latentedit.edit.directions import Direction
from latentedit.edit.inversion import encode_images
from latentedit.errors import InputError
from latentedit.formats import DEFAULT_BUNDLE, bundle, load_generator, save_networks, Networks
from latentedit.formats.encoder import read_encoder, write_encoder
from latentedit.formats.images import to_uint8
from latentedit.formats.latents import read_latents
from latentedit.formats.sdgan import write_offset_network
from latentedit.models.encoder import Encoder, EncoderConfig
from latentedit.models.stylegan2 import Generator, GeneratorConfig
from latentedit.world.templates import accessory_template

from conftest import error_line, run
from sdgan_world import small_net

torch.set_num_threads(1)


def untrained_encoder(G, seed=0, **kw):
    torch.manual_seed(seed)
    enc = Encoder(EncoderConfig.small(**{"num_ws": G.num_ws, "w_dim": G.w_dim, **kw})).eval()
    with torch.no_grad():
        enc.w_avg.copy_(G.w_avg)
    return enc


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(bundle copy with an encoder and a mask offset network, G, encoder, folder of 2 face PNGs,
    a bundle holding only G (no encoder))."""
    root = tmp_path_factory.mktemp("encoder_cli")
    path = root / "bundle"
    shutil.copytree(DEFAULT_BUNDLE, path)
    G = load_generator(path)
    enc = untrained_encoder(G)
    write_encoder(path, enc)
    d = Direction.load("mask", bundle=path)
    write_offset_network(path, "mask", small_net(G, 0), accessory_template("mask"), d.vector,
                         d.provenance["intercept"], 3.0, boundary="mask")
    faces = root / "faces"
    faces.mkdir()
    with torch.no_grad():
        arrays = to_uint8(G.synthesize(G.sample_w(2, seed=3, truncation=0.7)))
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(faces / f"face{i}.png")
    g_only = root / "g_only"
    save_networks(Networks("bundle", str(path), G=G), g_only)
    return path, G, enc, faces, g_only


def face_tensor(faces):
    files = sorted(faces.glob("*.png"))
    return torch.from_numpy(np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])) \
        .permute(0, 3, 1, 2).float() / 127.5 - 1


# -- Python API -----------------------------------------------------------------------------------

def test_encode_images_shapes_resize_and_mismatch(world):
    _, G, enc, faces, _ = world
    x = face_tensor(faces)
    codes = encode_images(enc, G, x)
    assert codes.shape == (2, G.num_ws, G.w_dim)
    with torch.no_grad():
        assert torch.equal(codes, enc(x))                      # 64 px in, 64 px encoder: no resize
    small = torch.nn.functional.interpolate(x, size=(32, 32), mode="area")
    assert encode_images(enc, G, small).shape == (2, G.num_ws, G.w_dim)   # resized to 64 px
    enc.train()
    torch.testing.assert_close(encode_images(enc, G, x), codes)   # eval inside, flag restored after
    assert enc.training
    enc.eval()
    for bad in (untrained_encoder(G, num_ws=8), Encoder(EncoderConfig.small(num_ws=G.num_ws, w_dim=256))):
        with pytest.raises(InputError, match="the encoder makes .* codes, the generator takes 10 x 512"):
            encode_images(bad, G, x)
    with pytest.raises(InputError, match=r"\[N, 3, R, R\]"):
        encode_images(enc, G, x[0])
    with pytest.raises(InputError, match="needs an Encoder"):
        encode_images(lambda t: t, G, x)


def test_invert_encoder_and_hybrid_modes(world, tmp_path, monkeypatch):
    path, G, enc, faces, g_only = world
    x = face_tensor(faces)
    codes = encode_images(enc, G, x)
    with monkeypatch.context() as m:                    # le.invert(images, mode=...): the default bundle's
        m.setattr("latentedit.formats.DEFAULT_BUNDLE", path)
        assert torch.equal(le.invert(x, mode="encoder"), codes)
    # encoder from G's bundle (G as a path), from a bundle path, or given as an Encoder
    assert torch.equal(le.invert(x, mode="encoder", G=str(path)), codes)
    assert torch.equal(le.invert(x, mode="encoder", G=G, encoder=path), codes)
    assert torch.equal(le.invert(faces, mode="encoder", G=G, encoder=enc), codes)   # a folder of images
    # space "w": the mean over the layers; a stage-0 encoder gives layer 0 exactly
    assert torch.equal(le.invert(x, mode="encoder", G=G, encoder=enc, space="w"), codes.mean(1))
    stage0 = untrained_encoder(G, seed=1)
    stage0.progressive_stage = 0
    c0 = encode_images(stage0, G, x)
    assert torch.equal(le.invert(x, mode="encoder", G=G, encoder=stage0, space="w"), c0[:, 0])
    r = le.invert(x, mode="encoder", G=G, encoder=enc, return_result=True)
    assert torch.equal(r.codes, codes) and r.history == {} and r.extra["mode"] == "encoder"
    # hybrid: projection started at the encoder codes (step 0 runs at lr 0, so 1 step keeps them)
    r = le.invert(x, mode="hybrid", G=G, encoder=enc, steps=1, return_result=True)
    assert torch.equal(r.extra["init"], codes) and r.history["total"].shape == (1, 2)
    torch.testing.assert_close(r.codes, codes)
    r3 = le.invert(x, mode="hybrid", G=G, encoder=enc, steps=3, return_result=True)
    assert not torch.equal(r3.codes, codes) and (r3.codes - codes).norm(dim=2).max() < 5
    rw = le.invert(x, mode="hybrid", G=G, encoder=stage0, space="w", steps=1, return_result=True)
    assert rw.codes.shape == (2, G.w_dim) and torch.equal(rw.extra["init"], c0[:, 0])
    # no encoder to be had
    with pytest.raises(InputError, match="g_only has no encoder; train one with `latentedit train encoder`"):
        le.invert(x, mode="encoder", G=g_only)
    with pytest.raises(InputError, match="g_only has no encoder"):
        le.invert(x, mode="hybrid", G=G, encoder=g_only)
    with pytest.raises(InputError, match="needs an encoder"):
        le.invert(x, mode="encoder", G=G)
    # an encoder trained through another generator is refused
    other = tmp_path / "other"
    write_encoder(other, enc, provenance={"generator": "0" * 64})
    with pytest.raises(InputError, match="trained through another generator"):
        le.invert(x, mode="encoder", G=G, encoder=other)


# -- latentedit invert ----------------------------------------------------------------------------

def test_cli_invert_encoder_and_hybrid(world, tmp_path):
    path, G, enc, faces, g_only = world
    codes = encode_images(enc, G, face_tensor(faces))
    out = tmp_path / "out"
    r = run("invert", faces, "--model", path, "--mode", "encoder", "--out", out)
    assert r.exit_code == 0, r.output
    assert "pixel loss only" not in r.output and "inverted 2 images" in r.output
    for i in range(2):
        assert np.array_equal(read_latents(out / f"face{i}.npy"), codes[i:i + 1].numpy())
        assert np.array_equal(read_latents(out / f"face{i}.json"), codes[i:i + 1].numpy())
        assert Image.open(out / f"face{i}_rec.png").size == (64, 64)
    assert Image.open(out / "grid.png").size == (128, 128)
    # --encoder from another bundle; hybrid optimises from the encoder codes
    r = run("invert", faces / "face0.png", "--model", g_only, "--encoder", path, "--mode", "hybrid",
            "--steps", 2, "--out", tmp_path / "h")
    assert r.exit_code == 0, r.output
    assert read_latents(tmp_path / "h" / "face0.npy").shape == (1, G.num_ws, G.w_dim)
    assert "pixel loss only" in r.output  # g_only holds no evaluators
    # a model bundle that holds evaluators lends them to the losses without --evaluators
    r = run("invert", faces / "face0.png", "--model", path, "--mode", "hybrid", "--steps", 1, "--out", tmp_path / "e")
    assert r.exit_code == 0, r.output
    assert "losses: pixel + perceptual + identity" in r.output
    assert "g_only has no encoder" in error_line(
        run("invert", faces, "--model", g_only, "--mode", "encoder", "--out", tmp_path / "x"))
    assert not (tmp_path / "x").exists()


# -- latentedit train encoder ---------------------------------------------------------------------

def test_train_encoder_export_and_resume(world, tmp_path):
    path, G, _, faces, _ = world
    run_dir, export = tmp_path / "run", tmp_path / "export"
    args = ("train", "encoder", "--bundle", path, "--out", run_dir, "--batch", 4, "--threads", 1)
    assert "expected LOSS=VALUE with LOSS one of" in error_line(run(*args, "--steps", 2, "--weight", "pixel=4"))
    assert "--weight 'mse=-1': a weight must be >= 0" in error_line(run(*args, "--steps", 2, "--weight", "mse=-1"))
    r = run(*args, "--steps", 2, "--export", export, "--weight", "mse=4", "--real-fraction", 0.75)
    assert r.exit_code == 0, r.output
    assert "step 2/2" in r.output and "exported the encoder" in r.output
    saved = json.loads((run_dir / "config.json").read_text())
    assert (saved["batch"], saved["w_mse"], saved["real_fraction"], saved["w_l1"]) == (4, 4.0, 0.75, 0.5)
    assert "5.0 conflicts with the run's saved 4.0" in error_line(run(*args, "--resume", "--steps", 3,
                                                                      "--weight", "mse=5"))
    assert json.loads((run_dir / "state.json").read_text())["info"]["step"] == 2
    enc = read_encoder(export)
    from safetensors.torch import load_file
    saved = load_file(run_dir / "state.safetensors")
    for k, v in enc.state_dict().items():   # exported in fp16, except w_avg (exact)
        trained = saved[f"encoder.{k}"]
        rounded = trained if k == "w_avg" or not trained.is_floating_point() else trained.half().to(trained.dtype)
        assert torch.equal(v, rounded), k
    assert bundle.read_manifest(export)["networks"]["encoder"]["dtype"] == "float16"
    manifest = bundle.read_manifest(export)
    assert manifest["figures"]["encoder"]["steps"] == 2
    assert manifest["provenance"]["encoder"]["steps"] == 2
    # the exported encoder (its provenance names this generator) inverts through --encoder
    r = run("invert", faces, "--model", path, "--encoder", export, "--mode", "encoder", "--out", tmp_path / "inv")
    assert r.exit_code == 0, r.output

    assert "pass --resume" in error_line(run(*args, "--steps", 3))
    assert "--batch 8 conflicts" in error_line(run(*args[:-4], "--batch", 8, "--resume", "--steps", 3))
    r = run(*args, "--resume", "--steps", 3, "--export", export, "--lr", 2e-5)   # a resumed run decays its lr
    assert r.exit_code == 0, r.output
    assert "resumed at step 2" in r.output and "step 3/3" in r.output
    info = json.loads((run_dir / "state.json").read_text())["info"]
    assert info["step"] == 3 and (info["log"][0]["lr"], info["log"][-1]["lr"]) == (pytest.approx(1e-4), pytest.approx(2e-5))
    assert "conflicts with the run's saved widths [32, 64, 128, 192]" in error_line(
        run(*args, "--resume", "--steps", 4, "--width", 2))
    # a new run --width 2 --init-from the width-1 encoder: the wider layout, widened from it
    r = run(*args[:-6], "--out", tmp_path / "wide", "--batch", 4, "--threads", 1, "--steps", 1, "--width", 2,
            "--init-from", export)
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "wide" / "config.json").read_text())["encoder"]["widths"] == [64, 128, 256, 384]
    assert bundle.read_manifest(export)["figures"]["encoder"]["steps"] == 3
    # exporting into a bundle with another generator is refused
    torch.manual_seed(0)
    save_networks(Networks("bundle", "x", G=Generator(GeneratorConfig(resolution=16, channel_base=512,
                                                                      channel_max=32)).eval()), tmp_path / "alien")
    assert "holds another generator" in error_line(run(*args, "--resume", "--steps", 3, "--export",
                                                       tmp_path / "alien"))


# -- --input on synthesize and edit ---------------------------------------------------------------

def test_synthesize_input(world, tmp_path):
    path, G, enc, faces, _ = world
    codes = encode_images(enc, G, face_tensor(faces))
    inputs = tmp_path / "in"
    shutil.copytree(faces, inputs)
    (inputs / "notes.txt").write_text("not an image")                       # skipped with a warning
    out = tmp_path / "out"
    args = ("synthesize", "--kind", "mask", "--model", path, "--input", inputs, "--out", out)
    r = run(*args)
    assert r.exit_code == 0, r.output
    assert "warning:" in r.output and "notes.txt" in r.output
    for folder in ("origins", "interfacegan_origins", "predict_images"):
        assert sorted(p.name for p in (out / folder).iterdir()) == ["0000.png", "0001.png"]
    assert np.array_equal(read_latents(out / "latents.json"), codes.numpy())          # W+ inputs, [N, L, D]
    assert np.array_equal(np.load(out / "inverted_latents.npy"), codes.numpy())
    with torch.no_grad():
        origin = to_uint8(G.synthesize(codes)).astype(int)
    assert np.abs(np.asarray(Image.open(out / "origins" / "0001.png")).astype(int) - origin[1]).max() <= 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert [im["input"] for im in manifest["images"]] == [str(inputs / "face0.png"), str(inputs / "face1.png")]
    assert manifest["images"][0]["seed"] is None and np.array(manifest["images"][0]["w"]).shape == (10, 512)
    settings = json.loads((out / "run.json").read_text())
    assert settings["invert_mode"] == "encoder" and len(settings["input_sha256"]) == 2
    # a re-run resumes (the inverted codes are reused); a changed input image is other settings
    (out / "predict_images" / "0001.png").unlink()
    r = run(*args)
    assert r.exit_code == 0 and "synthesizing 1 of 2" in r.output and "reusing the inverted codes" in r.output, \
        r.output
    Image.fromarray(np.zeros([64, 64, 3], np.uint8)).save(inputs / "face1.png")
    assert "other settings" in error_line(run(*args))
    # bad input: a non-image file, given by name or inside the folder; nothing written
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    base = ("synthesize", "--kind", "mask", "--model", path)
    assert "junk.png: not a readable image" in error_line(run(*base, "--input", junk, "--out", tmp_path / "o"))
    shutil.copy(junk, inputs / "junk.png")
    assert "junk.png: not a readable image" in error_line(run(*base, "--input", inputs, "--out", tmp_path / "o"))
    assert "--n is for sampling" in error_line(run(*base, "--input", faces, "--n", 2, "--out", tmp_path / "o"))
    assert "--invert-mode applies to images given with --input" in error_line(
        run(*base, "--invert-mode", "project", "--out", tmp_path / "o"))
    assert not (tmp_path / "o").exists()


def test_edit_input(world, tmp_path):
    path, G, enc, faces, g_only = world
    out = tmp_path / "smile.png"
    r = run("edit", "--model", path, "--direction", "smile", "--strength", "-2..2", "--steps", 3,
            "--input", faces / "face1.png", "--out", out)
    assert r.exit_code == 0, r.output
    assert Image.open(out).size == (4 * 64, 64)                      # input | 3 strengths
    codes = encode_images(enc, G, face_tensor(faces)[1:])
    assert np.array_equal(read_latents(tmp_path / "smile_latents.npy"), codes.numpy())
    assert np.array_equal(read_latents(tmp_path / "smile_latents.json"), codes.numpy())
    assert np.array_equal(np.asarray(Image.open(out))[:, :64], np.asarray(Image.open(faces / "face1.png")))
    # hybrid through an explicit --encoder, two images
    r = run("edit", "--model", g_only, "--boundaries", path, "--encoder", path, "--direction", "smile",
            "--steps", 2, "--input", faces, "--invert-mode", "hybrid", "--invert-steps", 2, "--out", tmp_path / "h.png")
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "h.png").size == (3 * 64, 2 * 64)
    base = ("edit", "--model", path, "--direction", "smile", "--input", faces)
    assert "--seeds is for sampling" in error_line(run(*base, "--seeds", "0-1", "--out", tmp_path / "x.png"))
    assert "use --mode relative" in error_line(run(*base, "--mode", "absolute", "--out", tmp_path / "x.png"))
    assert "g_only has no encoder" in error_line(
        run("edit", "--model", g_only, "--boundaries", path, "--direction", "smile", "--input", faces,
            "--out", tmp_path / "x.png"))
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    assert "notes.txt: not a readable image" in error_line(run(*base[:-1], notes, "--out", tmp_path / "x.png"))
    assert not (tmp_path / "x.png").exists()
