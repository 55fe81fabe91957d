"""`latentedit train offset` and the OffsetTrainer: train, export, resume, warm start, batches that
mix sampled and inverted codes, the view-placed losses and the conditioned prior, on the SD-GAN test
world of sdgan_world.py (untrained small offset networks in a copy of the bundled default)."""
import json
import shutil
from dataclasses import asdict

import pytest
import torch

from latentedit.edit.directions import Direction
from latentedit.edit.discrete import prior_basis
from latentedit.errors import InputError
from latentedit.formats import bundle
from latentedit.formats.sdgan import read_offset_network, write_offset_network
from latentedit.models.fusion import FusionConfig, FusionNet
from latentedit.world.templates import accessory_template

from conftest import error_line, run
from sdgan_world import copy_without_offsets, signed_distance, world  # noqa: F401 (world: a fixture)

torch.set_num_threads(1)


def test_train_offset_export_and_resume(world, tmp_path):
    source, G, _ = world
    target = tmp_path / "bundle"
    shutil.copytree(source, target)
    run_dir = tmp_path / "run"
    args = ("train", "offset", "--kind", "mask", "--bundle", source, "--out", run_dir, "--batch", 4,
            "--threads", 1, "--snapshot", 1)
    r = run(*args, "--steps", 2, "--export", target)
    assert r.exit_code == 0, r.output
    assert "step 2/2" in r.output and "exported offset_mask" in r.output
    state = json.loads((run_dir / "state.json").read_text())
    assert state["info"]["step"] == 2 and (run_dir / "samples_000002.png").exists()
    net, settings = read_offset_network(target, "mask")
    from safetensors.torch import load_file
    saved = load_file(run_dir / "state.safetensors")
    # exported in fp16: the run's fp32 weights rounded to half precision
    assert all(torch.equal(v, saved[f"net.{k}"].half().to(v.dtype)) for k, v in net.state_dict().items())
    d = Direction.load("mask", bundle=source)
    assert torch.equal(settings["normal"], d.vector.float()) and settings["boundary"] == "mask"
    manifest = bundle.read_manifest(target)
    assert manifest["networks"]["offset_mask"]["config"]["provenance"]["steps"] == 2
    assert "offset_frame_glasses" in manifest["networks"]  # the other networks stay
    r = run("synthesize", "--kind", "mask", "--model", target, "--n", 1, "--out", tmp_path / "s")
    assert r.exit_code == 0, r.output
    manifest["networks"]["offset_mask"]["config"]["generator"] = "0" * 64  # trained through another G
    (target / "bundle.json").write_text(json.dumps(manifest))
    assert "another generator" in error_line(
        run("synthesize", "--kind", "mask", "--model", target, "--n", 1, "--out", tmp_path / "s2"))

    assert "pass --resume" in error_line(run(*args, "--steps", 3))
    assert "conflicts" in error_line(run(*args[:-6], "--batch", 8, "--threads", 1, "--steps", 3, "--resume"))
    r = run(*args, "--steps", 3, "--resume")
    assert r.exit_code == 0, r.output
    assert "resumed at step 2" in r.output and "step 3/3" in r.output
    assert json.loads((run_dir / "state.json").read_text())["info"]["step"] == 3
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [2, 3]
    # a fine-tune on the bundle encoder's codes of world renders (half of each batch)
    r = run(*args, "--steps", 4, "--resume", "--inverted-fraction", 0.5)
    assert r.exit_code == 0, r.output
    assert json.loads((run_dir / "config.json").read_text())["inverted_fraction"] == 0.5
    r = run(*args, "--steps", 5, "--resume")  # kept without the flag
    assert r.exit_code == 0, r.output
    assert json.loads((run_dir / "config.json").read_text())["inverted_fraction"] == 0.5
    assert "inverted_fraction must be in [0, 1]" in error_line(run(*args, "--steps", 6, "--resume",
                                                                   "--inverted-fraction", 2))


def test_offset_training_batch_mixes_sampled_and_inverted_codes(world, tmp_path):
    from latentedit import world as face_world
    from latentedit.edit.inversion import encode_images, load_encoder
    from latentedit.train.offset import OffsetConfig, OffsetTrainer

    source, G, _ = world
    t = OffsetTrainer(OffsetConfig(kind="mask", batch=4, inverted_fraction=0.5), source, tmp_path)
    t.step = 3
    ws = t.sample_codes(4)
    renders = face_world.sample(2, seed=0, resolution=G.img_resolution, start=6).image
    assert ws.shape == (4, G.num_ws, G.w_dim)
    assert torch.equal(ws[2:], encode_images(load_encoder(source, G), G, renders))
    assert torch.equal(ws[0, 0], ws[0, -1]) and not torch.equal(ws[2, 0], ws[2, -1])  # W, then W+


def test_offset_losses_place_the_region_at_the_view(world, tmp_path, monkeypatch):
    """The offset trainer's visible / outside losses ask for the accessory's region at each origin's
    view by the bundle's face3d; with a face3d in another frame (unsup3d's) the frontal region."""
    import latentedit.world.templates as templates
    from latentedit.models.face3d import Face3D, Face3DConfig
    from latentedit.train.offset import OffsetConfig, OffsetTrainer

    asked = []
    region = templates.accessory_region
    monkeypatch.setattr(templates, "accessory_region", lambda *a: asked.append(a[2]) or region(*a))
    source, G, nets = world
    t = OffsetTrainer(OffsetConfig(kind="mask", batch=4), source, tmp_path / "t")
    w = t.sample_codes(4)
    _, out = t.losses(w)
    assert asked[-1].shape == (4, 6) and 0 <= float(out["visible"].detach()) <= 1
    t.synth.face3d = Face3D(Face3DConfig(nf=16, zdim=64, nf_encoder=16)).eval()
    _, out = t.losses(w)
    assert asked[-1] is None and 0 <= float(out["visible"].detach()) <= 1


def test_train_offset_warm_start(world, tmp_path):
    """--init-from starts a new run from a bundle's offset network for the kind (fresh optimiser);
    a resumed run ignores it; a bundle without the kind or with another architecture is refused."""
    from latentedit.train.offset import OffsetConfig, OffsetTrainer

    source, G, nets = world
    t = OffsetTrainer(OffsetConfig(kind="mask", batch=4), source, tmp_path / "t")
    t.init_from(source)
    sd = t.net.state_dict()
    assert all(torch.equal(v, sd[k]) for k, v in nets["mask"].state_dict().items())
    assert t.cfg.init_from == source.name and not t.opt.state  # a folder outside the working one: its name

    run_dir = tmp_path / "run"
    args = ("train", "offset", "--kind", "mask", "--bundle", source, "--out", run_dir, "--batch", 4,
            "--threads", 1, "--snapshot", 1, "--init-from", source)
    r = run(*args, "--steps", 1)
    assert r.exit_code == 0, r.output
    assert f"warm start from {source}" in r.output
    assert json.loads((run_dir / "config.json").read_text())["init_from"] == source.name
    r = run(*args, "--steps", 2, "--resume")
    assert r.exit_code == 0 and "resumed at step 1 (--init-from ignored)" in r.output, r.output

    other = tmp_path / "other"
    copy_without_offsets(source, other)
    assert "no offset network for 'mask'" in error_line(run(*args[:-1], other, "--out", tmp_path / "r2", "--steps", 1))
    wide = FusionNet(FusionConfig(**{**asdict(FusionConfig.small()), "num_ws": G.num_ws, "se_reduction": 4}))
    d = Direction.load("mask", bundle=source)
    write_offset_network(other, "mask", wide, accessory_template("mask"), d.vector, d.provenance["intercept"], 3.0)
    with pytest.raises(InputError, match="another architecture"):
        OffsetTrainer(OffsetConfig(kind="mask", batch=4), source, tmp_path / "t2").init_from(other)


def test_conditioned_prior(world, tmp_path):
    """--condition: the prior moves along the kind's boundary made orthogonal to the conditions
    (it leaves their scores alone), on a plane through the foot of w_avg on the plain boundary."""
    from latentedit.edit.discrete import conditioned_plane
    from latentedit.train.offset import OffsetConfig, OffsetTrainer

    source, G, _ = world
    mask, sun = Direction.load("mask", bundle=source), Direction.load("sunglasses", bundle=source)
    b = mask.provenance["intercept"]
    n, b_cond = conditioned_plane(mask, mask.orthogonal_to(sun), G.w_avg, b)
    s = sun.vector.float() / sun.vector.float().norm()
    assert abs(float(n @ s)) < 1e-5 and abs(float(n.norm()) - 1) < 1e-5 and float(n @ mask.vector.float()) > 0
    m = mask.vector.float() / mask.vector.float().norm()
    foot = G.w_avg - (G.w_avg @ m + b) * m
    assert abs(float(signed_distance(foot[None], n, b_cond))) < 1e-3
    w = G.sample_w(16, seed=3, truncation=0.7)
    p = prior_basis(w, n, b_cond, 3.0)
    assert (p @ s).abs().max() < 1e-4
    assert torch.allclose(signed_distance(w + p, n, b_cond), signed_distance(w, n, b_cond).clamp(min=3), atol=1e-3)

    t = OffsetTrainer(OffsetConfig(kind="mask", batch=4, condition=["sunglasses"]), source, tmp_path / "t")
    assert t.boundary_name == "mask|sunglasses" and torch.allclose(t.synth.normal, n)
    assert t.synth.intercept == pytest.approx(b_cond)
    run_dir = tmp_path / "run"
    args = ("train", "offset", "--kind", "mask", "--bundle", source, "--out", run_dir, "--batch", 4,
            "--threads", 1, "--snapshot", 1)
    r = run(*args, "--steps", 1, "--condition", "sunglasses", "--export", tmp_path / "b")
    assert r.exit_code == 0, r.output
    _, settings = read_offset_network(tmp_path / "b", "mask")
    assert settings["boundary"] == "mask|sunglasses" and torch.allclose(settings["normal"], n)
    assert "conflicts" in error_line(run(*args, "--steps", 2, "--resume", "--condition", "hat"))
    assert "no direction named 'nonexistent'" in error_line(
        run(*args[:6], "--out", tmp_path / "r2", "--batch", 4, "--condition", "nonexistent", "--steps", 1))


def test_composite_training_judges_the_edit_as_synthesize_delivers_it(world, tmp_path, monkeypatch):
    """--composite: the losses see the edit composited into the origin, so the prior's change of the
    face outside the accessory's region no longer counts (outside near 0) and the gradient still
    reaches the offset network through the composite."""
    from latentedit.train.offset import OffsetConfig, OffsetTrainer

    source, G, _ = world
    plain = OffsetTrainer(OffsetConfig(kind="mask", batch=4), source, tmp_path / "p")
    comp = OffsetTrainer(OffsetConfig(kind="mask", batch=4, composite=True), source, tmp_path / "c")
    comp.net.load_state_dict(plain.net.state_dict())
    w = plain.sample_codes(4)
    _, a = plain.losses(w)
    total, b = comp.losses(w)
    oa, ob = float(a["outside"].detach()), float(b["outside"].detach())
    assert oa > 1e-3 and ob < 0.2 * oa, (oa, ob)
    assert float(b["identity"].detach()) < float(a["identity"].detach())
    total.backward()
    assert sum(float(p.grad.abs().sum()) for p in comp.net.parameters() if p.grad is not None) > 0
    r = run("train", "offset", "--kind", "mask", "--bundle", source, "--out", tmp_path / "run", "--batch", 4,
            "--threads", 1, "--snapshot", 1, "--steps", 1, "--composite")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "run" / "config.json").read_text())["composite"] is True
    # its state records how it composited; a version that composites otherwise does not resume it
    from dataclasses import replace

    from latentedit.edit import compositing

    args = ("train", "offset", "--kind", "mask", "--bundle", source, "--out", tmp_path / "run", "--threads", 1,
            "--snapshot", 1, "--resume")
    how = compositing.COMPOSITING["mask"]
    monkeypatch.setitem(compositing.COMPOSITING, "mask", replace(how, eye_clearance=2 / 64))
    assert "composites as" in error_line(run(*args, "--steps", 2))
    monkeypatch.setitem(compositing.COMPOSITING, "mask", how)
    r = run(*args, "--steps", 2)
    assert r.exit_code == 0 and "resumed at step 1" in r.output, r.output


def test_label_prior_trains_and_exports_its_direction(world, tmp_path):
    """--prior label: the prior moves along the generator's own label vector for the kind; the
    exported network keeps that vector, so synthesize moves codes as training did."""
    from latentedit.edit.discrete import DiscreteSynthesizer, label_direction
    from latentedit.train.offset import OffsetConfig
    from latentedit.world.labels import trained_labels

    source, G, _ = world
    u = label_direction(G, trained_labels(bundle.read_manifest(source)), "mask")
    run_dir = tmp_path / "run"
    args = ("train", "offset", "--kind", "mask", "--bundle", source, "--out", run_dir, "--batch", 4,
            "--threads", 1, "--snapshot", 1)
    copy_without_offsets(source, tmp_path / "b")  # the synthesizer below reads the face3d evaluator there
    r = run(*args, "--steps", 1, "--prior", "label", "--export", tmp_path / "b")
    assert r.exit_code == 0, r.output
    _, settings = read_offset_network(tmp_path / "b", "mask")
    assert torch.equal(settings["direction"], u)
    synth = DiscreteSynthesizer.load("mask", bundle=tmp_path / "b", G=G)
    w = G.sample_w(4, seed=2, truncation=0.7)
    p = synth.priors(w)
    assert p.abs().sum() > 0 and torch.allclose(p - (p @ u / (u @ u))[:, None] * u, torch.zeros_like(p), atol=1e-4)
    assert "conflicts" in error_line(run(*args, "--steps", 2, "--resume", "--prior", "boundary"))
    r = run(*args[:6], "--out", tmp_path / "r2", "--prior", "sideways")
    assert "is not one of 'boundary', 'label'" in error_line(r)
    with pytest.raises(InputError, match="prior must be one of"):
        OffsetConfig(kind="mask", batch=4, prior="sideways")


def test_frames_runs_record_how_codes_leave_sunglasses(world, tmp_path):
    """A frames run on the label prior records the rule that moves codes off sunglasses first
    (REPLACING_RULE); a state without it (made when codes moved onto the boundary) is refused on
    resume rather than continued under another prior. Masks replace nothing and record None."""
    source, _, _ = world
    args = ("train", "offset", "--kind", "frame_glasses", "--bundle", source, "--out", tmp_path / "run", "--batch", 4,
            "--threads", 1, "--snapshot", 1, "--prior", "label")
    r = run(*args, "--steps", 1)
    assert r.exit_code == 0, r.output
    state_file = tmp_path / "run" / "state.json"
    state = json.loads(state_file.read_text())
    assert state["info"]["replaces"] == {"sunglasses": "mirrored"}
    del state["info"]["replaces"]
    state_file.write_text(json.dumps(state))
    assert "replaces=None" in error_line(run(*args, "--steps", 2, "--resume"))
    r = run("train", "offset", "--kind", "mask", "--bundle", source, "--out", tmp_path / "mask", "--batch", 4,
            "--threads", 1, "--snapshot", 1, "--steps", 1)
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "mask" / "state.json").read_text())["info"]["replaces"] is None
