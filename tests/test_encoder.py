"""The image -> W+ encoder: shapes and the e4e code structure (w0 + deltas, mode "w", progressive
stage), its start near w_avg, bundle round trip and bad files, input checks, and the trainer's
steps, snapshot and exact resume. Trainer tests run through the bundled default generator."""
import json
import shutil

import pytest
import torch

from latentedit import world
from latentedit.edit.inversion import w_stats
from latentedit.errors import FormatError, InputError
from latentedit.formats import DEFAULT_BUNDLE, bundle, load_generator
from latentedit.formats.files import recorded_path
from latentedit.formats.encoder import has_encoder, read_encoder, write_encoder
from latentedit.models.encoder import Encoder, EncoderConfig
from latentedit.train.encoder import EncoderTrainConfig, EncoderTrainer

torch.set_num_threads(1)

TINY = dict(resolution=32, num_ws=8, w_dim=16, stem_width=8, widths=[8, 16, 16], blocks=[1, 1, 1],
            se_reduction=4, fpn_width=16, head_width=16, init_scale=1.0)


def tiny(seed=0, **kw):
    torch.manual_seed(seed)
    enc = Encoder(EncoderConfig(**{**TINY, **kw}))
    with torch.no_grad():
        enc.w_avg.normal_()
    return enc.eval()


def images(n, size=32, seed=0):
    return torch.rand([n, 3, size, size], generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_shapes_w_mode_and_layer_split():
    x = images(3)
    enc = tiny()
    codes = enc(x)
    assert codes.shape == (3, 8, 16)
    assert not torch.allclose(codes[:, 1], codes[:, 0])       # w+: per-layer deltas
    torch.testing.assert_close(enc(x[:1]), codes[:1])          # eval mode: no batch coupling
    w = tiny(mode="w")
    assert len(w.heads) == 1
    cw = w(x)
    assert cw.shape == (3, 8, 16) and (cw == cw[:, :1]).all()  # every layer the same code
    assert EncoderConfig(num_ws=18).layer_levels() == [2] * 3 + [1] * 4 + [0] * 11   # pSp's split
    assert EncoderConfig.small().layer_levels() == [2] * 3 + [1] * 4 + [0] * 3
    assert EncoderConfig(**{**TINY, "num_ws": 2}).layer_levels() == [2, 2]
    n = sum(p.numel() for p in Encoder(EncoderConfig.small()).parameters())
    assert 2e6 < n < 5e6


def test_progressive_stage_zeroes_later_deltas():
    x = images(2)
    enc = tiny()
    full = enc(x)
    enc.progressive_stage = 3
    w0, deltas = enc.encode(x)
    assert (deltas[:, 0] == 0).all() and (deltas[:, 4:] == 0).all()
    assert (deltas[:, 1:4].abs().sum(2) > 0).all()
    codes = enc(x)
    assert (codes[:, 4:] == codes[:, :1]).all()
    torch.testing.assert_close(codes[:, :4], full[:, :4])      # active layers unchanged
    enc.progressive_stage = 0
    torch.testing.assert_close(enc(x), full[:, :1].expand_as(full))
    for bad in (-1, 8):
        with pytest.raises(InputError):
            enc.progressive_stage = bad


def test_untrained_codes_start_near_w_avg():
    G = load_generator()
    torch.manual_seed(0)
    enc = Encoder(EncoderConfig.small(num_ws=G.num_ws, w_dim=G.w_dim)).eval()
    enc.w_avg.copy_(G.w_avg)
    x = world.sample(8, seed=0).image
    with torch.no_grad():
        dist = (enc(x) - G.w_avg).norm(dim=2).mean()
    assert dist < 0.05 * w_stats(G, samples=500)


def test_bundle_round_trip_is_exact(tmp_path):
    path = tmp_path / "b"
    bundle.write_bundle(path, {"other": ("something", {"a": 1}, {"t": torch.ones(2)})})
    enc = tiny(seed=3)
    enc.progressive_stage = 5
    write_encoder(path, enc, figures={"pixel_mse": 0.1})
    manifest = bundle.read_manifest(path)
    assert set(manifest["networks"]) == {"other", "encoder"}          # merged, not replaced
    assert manifest["networks"]["encoder"]["kind"] == "encoder"
    assert manifest["networks"]["encoder"]["config"] == enc.cfg.to_dict()
    assert manifest["figures"]["encoder"] == {"pixel_mse": 0.1}
    assert has_encoder(path) and not has_encoder(tmp_path)
    back = read_encoder(path)
    assert not back.training and back.cfg == enc.cfg and back.progressive_stage == 5
    sd, sd2 = enc.state_dict(), back.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    x = images(2)
    assert torch.equal(back(x), enc(x))


def test_missing_or_corrupt_encoder_is_a_format_error(tmp_path):
    with pytest.raises(FormatError, match="nowhere"):
        read_encoder(tmp_path / "nowhere")
    path = tmp_path / "b"
    bundle.write_bundle(path, {"other": ("something", {}, {"t": torch.ones(2)})})
    with pytest.raises(FormatError, match=f"{path}.*no encoder"):
        read_encoder(path)
    write_encoder(path, tiny())
    manifest_text = (path / "bundle.json").read_text()
    data = bytearray((path / "encoder.safetensors").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (path / "encoder.safetensors").write_bytes(bytes(data))
    with pytest.raises(FormatError, match="sha256"):
        read_encoder(path)
    (path / "encoder.safetensors").unlink()
    with pytest.raises(FormatError, match="cannot read"):
        read_encoder(path)
    write_encoder(path, tiny())
    manifest = json.loads((path / "bundle.json").read_text())
    manifest["networks"]["encoder"]["config"]["depth"] = 50
    (path / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(FormatError, match="unknown EncoderConfig keys"):
        read_encoder(path)
    manifest = json.loads(manifest_text)
    manifest["networks"]["encoder"]["kind"] = "fusion"
    (path / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(FormatError, match="not an 'encoder'"):
        read_encoder(path)
    write_encoder(path, tiny(mode="w"))          # weights for one head, config for eight
    manifest = json.loads((path / "bundle.json").read_text())
    manifest["networks"]["encoder"]["config"]["mode"] = "w+"
    (path / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(FormatError, match="missing"):
        read_encoder(path)


def test_bad_inputs_and_configs_are_input_errors():
    enc = tiny()
    for bad in (images(2, size=16), images(2)[:, :1], images(2)[0], [[0.0]]):
        with pytest.raises(InputError, match=r"\[N, 3, 32, 32\]"):
            enc(bad)
    for value in (float("nan"), float("inf")):
        x = images(2)
        x[1, 0, 3, 3] = value
        with pytest.raises(InputError, match="NaN"):
            enc(x)
    with pytest.raises(InputError, match="unknown EncoderConfig keys"):
        EncoderConfig.from_dict({**TINY, "depth": 3})
    for bad in ({"mode": "z"}, {"widths": [8, 8]}, {"blocks": [1, 1]}, {"resolution": 48}, {"resolution": 4},
                {"num_ws": 0}, {"w_dim": 2.5}):
        with pytest.raises(InputError):
            EncoderConfig(**{**TINY, **bad})
    assert EncoderConfig.from_dict(EncoderConfig.small().to_dict()) == EncoderConfig.small()
    with pytest.raises(InputError):
        EncoderTrainConfig(batch=1)


TRAIN = dict(batch=4, progressive_every=1, snapshot=1000, log_every=1)


def test_trainer_steps_save_and_resume_exactly(tmp_path):
    cfg = EncoderTrainConfig(**TRAIN)
    a = EncoderTrainer(cfg, DEFAULT_BUNDLE, tmp_path / "a")
    assert torch.equal(a.encoder.w_avg, a.G.w_avg)
    before = {k: v.clone() for k, v in a.encoder.state_dict().items()}
    stats = [a.train_step() for _ in range(3)]
    assert [s["stage"] for s in stats] == [0, 1, 2]
    assert all(set(s) >= {"mse", "l1", "perceptual", "identity", "attributes", "latent", "delta", "w0"}
               and all(torch.isfinite(torch.tensor(v)) for v in s.values()) for s in stats)
    assert stats[0]["delta"] == 0 and stats[1]["delta"] > 0      # stage 0: no deltas yet
    assert not torch.equal(before["heads.0.linear.weight"], a.encoder.state_dict()["heads.0.linear.weight"])

    b = EncoderTrainer(cfg, DEFAULT_BUNDLE, tmp_path / "b")
    b.log = [{"step": 0}]
    b.train_step(), b.train_step()
    b.save()
    assert (tmp_path / "b" / "samples_000002.png").is_file()
    assert (tmp_path / "b" / "log.jsonl").read_text() == '{"step": 0}\n'
    c = EncoderTrainer(cfg, DEFAULT_BUNDLE, tmp_path / "b")
    assert c.resume() and c.step == 2 and c.log == [{"step": 0}]
    c.train_step()
    assert c.step == 3
    sa, sc = a.encoder.state_dict(), c.encoder.state_dict()
    assert all(torch.equal(sa[k], sc[k]) for k in sa), [k for k in sa if not torch.equal(sa[k], sc[k])]

    out = tmp_path / "bundle"
    shutil.copytree(DEFAULT_BUNDLE, out, ignore=shutil.ignore_patterns("D.*", "parser.*", "face3d.*", "boundaries"))
    c.export(out, figures={"steps": 3}, dtype=torch.float32)  # exact; the fp16 default: test_encoder_cli
    enc = read_encoder(out)
    assert {"G", "attributes", "identity", "encoder"} <= set(bundle.read_manifest(out)["networks"])
    assert enc.progressive_stage == 2
    x = world.sample(2, seed=5).image
    with torch.no_grad():
        assert torch.equal(enc(x), c.encoder.eval()(x))


def test_trainer_warm_start_from_a_bundle_encoder(tmp_path):
    """--init-from: the bundled encoder's weights with this generator's w_avg, all of its deltas
    active from step 0, the source named in the run's config; another architecture is refused."""
    t = EncoderTrainer(EncoderTrainConfig(**TRAIN), DEFAULT_BUNDLE, tmp_path / "a")
    t.init_from(DEFAULT_BUNDLE)
    source, sd = read_encoder(DEFAULT_BUNDLE), t.encoder.state_dict()
    assert all(torch.equal(v, sd[k]) for k, v in source.state_dict().items() if k != "w_avg")
    assert torch.equal(t.encoder.w_avg, t.G.w_avg)
    assert t.cfg.init_from == recorded_path(DEFAULT_BUNDLE) and t.cfg.progressive_start == source.progressive_stage > 0
    assert t.train_step()["stage"] == source.progressive_stage
    deeper = {**EncoderConfig.small().to_dict(), "blocks": [1, 2, 3, 1]}
    other = EncoderTrainer(EncoderTrainConfig(**TRAIN, encoder=deeper), DEFAULT_BUNDLE, tmp_path / "b")
    with pytest.raises(InputError, match="differs from this run's in blocks"):
        other.init_from(DEFAULT_BUNDLE)
    narrower = {**EncoderConfig.small().to_dict(), "fpn_width": 64}
    other = EncoderTrainer(EncoderTrainConfig(**TRAIN, encoder=narrower), DEFAULT_BUNDLE, tmp_path / "c")
    with pytest.raises(InputError, match="cannot warm-start this run's"):
        other.init_from(DEFAULT_BUNDLE)
    shortcut = {**EncoderConfig.small().to_dict(), "stem_width": 48}   # the first block gains a shortcut conv
    other = EncoderTrainer(EncoderTrainConfig(**TRAIN, encoder=shortcut), DEFAULT_BUNDLE, tmp_path / "d")
    with pytest.raises(InputError, match="layers are not this run's"):
        other.init_from(DEFAULT_BUNDLE)
    with pytest.raises(InputError, match="no such encoder bundle"):
        t.init_from(tmp_path / "missing")


def test_trainer_warm_start_widens_a_narrower_encoder(tmp_path):
    """--width 2 --init-from the bundle: a wider encoder that gives the bundled encoder's codes (its
    new channels reach no old output yet) and whose every channel then trains."""
    cfg = EncoderTrainConfig(**{**TRAIN, "progressive_every": 0}, encoder=EncoderConfig.small(width=2).to_dict())
    t = EncoderTrainer(cfg, DEFAULT_BUNDLE, tmp_path / "wide")
    t.init_from(DEFAULT_BUNDLE)
    source = read_encoder(DEFAULT_BUNDLE).float().eval()
    assert t.encoder.cfg.widths == [2 * c for c in source.cfg.widths]
    x = world.sample(3, seed=12, resolution=t.G.img_resolution).image
    with torch.no_grad():
        ours, theirs = t.encoder.eval()(x), source(x)
    assert (ours - theirs - (t.encoder.w_avg - source.w_avg)).abs().max() <= 1e-4 * theirs.abs().max()
    cross = t.encoder.state_dict()["stages.1.0.residual.1.weight"]   # a conv's new inputs -> old outputs
    old_out, old_in = source.state_dict()["stages.1.0.residual.1.weight"].shape[:2]
    assert cross[:old_out, old_in:].abs().max() == 0
    t.train_step()
    assert t.encoder.state_dict()["stages.1.0.residual.1.weight"][:old_out, old_in:].abs().max() > 0


def test_encoder_and_offset_trainers_under_torchrun(tmp_path):
    """torchrun with 2 gloo processes: each rank computes its share of every batch, gradients are
    averaged, so both ranks end with the same weights (even from different initial weights: rank
    0's are broadcast first), the logged means are the same on both, and rank 0 saves the state."""
    import subprocess
    import sys
    import textwrap

    script = tmp_path / "ddp_runs.py"
    script.write_text(textwrap.dedent("""
        import hashlib, json, sys, torch
        from latentedit.formats import DEFAULT_BUNDLE
        from latentedit.train.distributed import init_distributed
        from latentedit.train.encoder import EncoderTrainConfig, EncoderTrainer
        from latentedit.train.offset import OffsetConfig, OffsetTrainer
        torch.set_num_threads(1)
        rank, world, _ = init_distributed("gloo")
        def digest(m):
            return hashlib.sha256(b"".join(t.detach().numpy().tobytes() for t in m.state_dict().values())).hexdigest()
        enc = EncoderTrainer(EncoderTrainConfig(steps=2, batch=4, progressive_every=1, snapshot=1000, log_every=1,
                                                seed=rank), DEFAULT_BUNDLE, sys.argv[1] + "/enc")
        start = digest(enc.encoder)
        enc.train(progress=None)
        off = OffsetTrainer(OffsetConfig(kind="mask", batch=8, steps=2), DEFAULT_BUNDLE, sys.argv[1] + "/off")
        off.train(snapshot=1000, progress=None)
        json.dump({"world": world, "start": start, "enc": digest(enc.encoder), "enc_log": enc.log,
                   "off": digest(off.net), "off_log": off.log}, open(f"{sys.argv[1]}/rank{rank}.json", "w"))
    """))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(script), str(tmp_path)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = (json.loads((tmp_path / f"rank{i}.json").read_text()) for i in range(2))
    assert a["world"] == 2 and a["start"] != b["start"]          # different seeds, different initial weights
    assert a["enc"] == b["enc"] != a["start"] and a["off"] == b["off"]
    means = lambda log: [{k: v for k, v in e.items() if "_per_s" not in k} for e in log]  # noqa: E731 (rates are per rank)
    assert means(a["enc_log"]) == means(b["enc_log"]) and means(a["off_log"]) == means(b["off_log"])
    assert len(a["off_log"]) == 1
    for run in ("enc", "off"):
        assert json.loads((tmp_path / run / "state.json").read_text())["info"]["step"] == 2


def test_restyle_trainer_warm_start_refines_and_exports(tmp_path):
    """--restyle N: a 6-channel encoder; warm-started from the one-pass bundled encoder its step 0
    is that encoder (the reconstruction's input channels start at zero weight); a step trains
    through N refinements (each step's losses, previous codes detached), resumes exactly, and the
    exported bundle encoder loads as a ReStyle that refines N times through the generator."""
    from latentedit.edit.inversion import encode_images, load_encoder
    from latentedit.models.restyle import ReStyle

    cfg = EncoderTrainConfig(**TRAIN, restyle_steps=2)
    assert cfg.encoder["input_channels"] == 6
    a = EncoderTrainer(cfg, DEFAULT_BUNDLE, tmp_path / "a")
    a.init_from(DEFAULT_BUNDLE)
    stem = a.encoder.state_dict()["stem.0.weight"]
    assert stem.shape[1] == 6 and torch.equal(stem[:, 3:], torch.zeros_like(stem[:, 3:]))
    source = load_encoder(DEFAULT_BUNDLE, a.G)
    x = world.sample(3, seed=11, resolution=a.G.img_resolution).image
    a.encoder.eval()
    with torch.no_grad():
        first = a.encode(x, a.restyle.average_image().expand(3, -1, -1, -1))[0]
    assert torch.allclose(first, encode_images(source, a.G, x), atol=1e-4)
    # a refinement step starts from the previous codes: twice the source's offsets before training
    with torch.no_grad():
        rec = torch.nn.functional.adaptive_avg_pool2d(a.G.synthesis(first, noise_mode="const"), 64)
        second = a.encode(x, rec, first)[0]
    assert torch.allclose(second - first, first - a.encoder.w_avg, atol=1e-3)

    before = a.encoder.state_dict()["stem.0.weight"].clone()
    stats = [a.train_step() for _ in range(2)]
    assert all(torch.isfinite(torch.tensor(v)) for s in stats for v in s.values())
    assert a.encoder.state_dict()["stem.0.weight"][:, 3:].abs().sum() > 0   # the new channels learn
    assert not torch.equal(before, a.encoder.state_dict()["stem.0.weight"])
    a.save()
    b = EncoderTrainer(a.cfg, DEFAULT_BUNDLE, tmp_path / "a")  # the warm start's config, as --resume reads it
    assert b.resume() and b.step == 2
    a.train_step(), b.train_step()
    sa, sb = a.encoder.state_dict(), b.encoder.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)

    out = tmp_path / "bundle"
    shutil.copytree(DEFAULT_BUNDLE, out, ignore=shutil.ignore_patterns("D.*", "parser.*", "face3d.*", "boundaries"))
    b.export(out, dtype=torch.float32)
    loaded = load_encoder(out)  # the bundle's own generator
    assert isinstance(loaded, ReStyle) and loaded.steps == 2
    b.encoder.eval()
    with torch.no_grad():
        expected = ReStyle(b.encoder, b.G, steps=2)(x)
        assert torch.allclose(encode_images(load_encoder(out, b.G), b.G, x), expected, atol=1e-5)
        # ReStyle's own loop and the trainer's agree on the codes they refine to
        assert torch.allclose(b.refine(x)[2], expected, atol=1e-4)
