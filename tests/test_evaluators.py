"""Evaluators: unsup3d layout and loading, canonical-map oracle, metrics, tiny trainings."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from latentedit import world
from latentedit.errors import FormatError, InputError
from latentedit.formats.evaluators import add_evaluators, load_evaluators
from latentedit.formats.unsup3d import face3d_to_state, load_unsup3d
from latentedit.metrics.fid import fid, kid, mmd2_unbiased, precision_recall
from latentedit.models.evaluators import AttributeClassifier, ClassifierConfig, FaceParser, IdentityEmbedder
from latentedit.models.face3d import (EDDeconv, Face3D, Face3DConfig, normal_from_depth,
                                      shading_from_normal, world_to_unsup3d)
from latentedit.world.render import TAN_HALF_FOV


# -- unsup3d layout: key names and shapes of networks.py (EDDeconv / Encoder) ----------------------

def _edd_layout(cin, cout, zdim, nf):
    """(index, shape) of every parameter of unsup3d's EDDeconv, from its layer list."""
    conv = lambda i, o, k: [("weight", (o, i, k, k))]  # noqa: E731
    deconv = lambda i, o, k: [("weight", (i, o, k, k))]  # noqa: E731
    gn = lambda c: [("weight", (c,)), ("bias", (c,))]  # noqa: E731
    layers = {0: conv(cin, nf, 4), 1: gn(nf), 3: conv(nf, 2 * nf, 4), 4: gn(2 * nf), 6: conv(2 * nf, 4 * nf, 4),
              7: gn(4 * nf), 9: conv(4 * nf, 8 * nf, 4), 11: conv(8 * nf, zdim, 4), 13: deconv(zdim, 8 * nf, 4),
              15: conv(8 * nf, 8 * nf, 3), 17: deconv(8 * nf, 4 * nf, 4), 18: gn(4 * nf), 20: conv(4 * nf, 4 * nf, 3),
              21: gn(4 * nf), 23: deconv(4 * nf, 2 * nf, 4), 24: gn(2 * nf), 26: conv(2 * nf, 2 * nf, 3),
              27: gn(2 * nf), 29: deconv(2 * nf, nf, 4), 30: gn(nf), 32: conv(nf, nf, 3), 33: gn(nf),
              36: conv(nf, nf, 3), 37: gn(nf), 39: conv(nf, nf, 5), 40: gn(nf), 42: conv(nf, cout, 5)}
    return {f"network.{i}.{name}": shape for i, ps in layers.items() for name, shape in ps}


def _enc_layout(cin, cout, nf):
    shapes = {0: (nf, cin, 4, 4), 2: (2 * nf, nf, 4, 4), 4: (4 * nf, 2 * nf, 4, 4), 6: (8 * nf, 4 * nf, 4, 4),
              8: (8 * nf, 8 * nf, 4, 4), 10: (cout, 8 * nf, 1, 1)}
    return {f"network.{i}.weight": s for i, s in shapes.items()}


def _shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_unsup3d_layout_matches():
    m = Face3D(Face3DConfig.unsup3d())
    assert _shapes(m.netD) == _edd_layout(3, 1, 256, 64)
    assert _shapes(m.netA) == _edd_layout(3, 3, 256, 64)
    assert _shapes(m.netL) == _enc_layout(3, 4, 32)
    assert _shapes(m.netV) == _enc_layout(3, 6, 32)
    # activations: depth net linear, albedo / light / view nets end in tanh
    assert not isinstance(m.netD.network[-1], torch.nn.Tanh)
    assert all(isinstance(n.network[-1], torch.nn.Tanh) for n in (m.netA, m.netL, m.netV))
    assert len(m.netD.network) == 43 and len(m.netA.network) == 44 and len(m.netL.network) == 12


def _fake_checkpoint(path, nf=16, zdim=32, nf_enc=16):
    g = torch.Generator().manual_seed(0)
    ckpt = {"netD": {k: torch.randn(s, generator=g) * 0.05 for k, s in _edd_layout(3, 1, zdim, nf).items()},
            "netA": {k: torch.randn(s, generator=g) * 0.05 for k, s in _edd_layout(3, 3, zdim, nf).items()},
            "netL": {k: torch.randn(s, generator=g) * 0.05 for k, s in _enc_layout(3, 4, nf_enc).items()},
            "netV": {k: torch.randn(s, generator=g) * 0.05 for k, s in _enc_layout(3, 6, nf_enc).items()},
            "netC": {"network.0.weight": torch.zeros(nf, 3, 4, 4)},
            "optimizerD": {"state": {}, "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "params": [0, 1]}]},
            "epoch": 30}
    torch.save(ckpt, path)
    return ckpt


def test_fake_checkpoint030_loads(tmp_path):
    ckpt = _fake_checkpoint(tmp_path / "checkpoint030.pth")
    m = load_unsup3d(tmp_path / "checkpoint030.pth")
    assert (m.cfg.nf, m.cfg.zdim, m.cfg.nf_encoder) == (16, 32, 16)
    assert torch.equal(m.netD.network[42].weight, ckpt["netD"]["network.42.weight"])
    out = m(torch.zeros(2, 3, 64, 64))
    assert out["depth"].shape == (2, 64, 64) and out["normal"].shape == (2, 64, 64, 3)
    assert out["maps"].shape == (2, 9, 64, 64) and out["view"].shape == (2, 6) and out["light"].shape == (2, 5)
    assert out["depth"].min() >= 0.9 and out["depth"].max() <= 1.1
    # round trip through the unsup3d layout
    state = face3d_to_state(m)
    assert set(state) == {"netD", "netA", "netL", "netV"}
    # missing net / missing key / wrong shape -> FormatError with one clear line
    bad = dict(ckpt)
    del bad["netV"]
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(FormatError, match="netV"):
        load_unsup3d(tmp_path / "bad.pth")
    bad = {k: dict(v) if isinstance(v, dict) else v for k, v in ckpt.items()}
    del bad["netA"]["network.42.weight"]
    torch.save(bad, tmp_path / "bad2.pth")
    with pytest.raises(FormatError, match="missing"):
        load_unsup3d(tmp_path / "bad2.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(FormatError):
        load_unsup3d(tmp_path / "junk.pth")


# -- canonical maps: the unsup3d derivation against the world's ground truth -------------------------

def test_normals_and_shading_from_depth_match_world():
    b = world.sample(12, seed=3, p_glasses=0, p_sunglasses=0, p_mask=0, p_hat=0)
    depth = b.depth[:, 0].clone()
    fin = torch.isfinite(depth)
    depth[~fin] = 100.0
    # unsup3d's field of view is measured between the centres of the edge pixels
    normal = normal_from_depth(depth, TAN_HALF_FOV * 63 / 64)
    truth = world_to_unsup3d(b.normal.permute(0, 2, 3, 1))
    # compare away from silhouettes and depth steps (central differences straddle them)
    m = (-F.max_pool2d(-fin.float()[:, None], 3, 1, 1))[:, 0] > 0.5
    dd = F.pad(depth[:, None], (1, 1, 1, 1), mode="replicate")
    m &= ((dd[:, 0, 1:-1, 2:] - dd[:, 0, 1:-1, :-2]).abs() < 0.15) & ((dd[:, 0, 2:, 1:-1] - dd[:, 0, :-2, 1:-1]).abs() < 0.15)
    assert m.float().mean() > 0.25
    ang = (normal * truth).sum(3).clamp(-1, 1).acos().rad2deg()[m]
    assert ang.median() < 3.0 and (ang < 10).float().mean() > 0.8
    light = b.light
    shading = shading_from_normal(normal, light[:, 0], light[:, 1], world_to_unsup3d(light[:, 2:]))
    err = (shading - b.shading)[:, 0][m].abs()
    assert err.median() < 0.02
    # a wrong light convention (x not mirrored) is clearly worse
    wrong = shading_from_normal(normal, light[:, 0], light[:, 1], light[:, 2:])
    assert (wrong - b.shading)[:, 0][m].abs().mean() > 2 * err.mean()


def test_face3d_rejects_bad_input():
    with pytest.raises(InputError):
        Face3D(Face3DConfig(nf=16, zdim=16, nf_encoder=8))(torch.zeros(1, 3, 32, 32))
    with pytest.raises(InputError):
        EDDeconv(3, 1, nf=20)


# -- metrics ---------------------------------------------------------------------------------------

def test_fid_zero_on_itself_and_grows_with_shift():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3000, 16, generator=g)
    b = torch.randn(3000, 16, generator=g)
    assert fid(a, a) < 1e-6
    base = fid(a, b)
    assert base < 0.1
    shifts = [fid(a, b + s) for s in (0.25, 0.5, 1.0)]
    assert base < shifts[0] < shifts[1] < shifts[2]
    assert abs(shifts[2] - 16.0) < 1.0   # ||mu||^2 = 16 * 1^2
    with pytest.raises(InputError):
        fid(torch.full((10, 4), float("nan")), a[:10, :4])


def test_weighted_fid_reweights_a_mixture():
    """Importance weights turn a sample drawn at the wrong mixture into the right one: FID of a
    70 / 30 mixture against 30 / 70 is large as drawn and near the same-mixture floor once each
    sample is weighted by target / drawn share; zero weights are the same as leaving samples out."""
    g = torch.Generator().manual_seed(0)

    def mixture(n, share):
        side = (torch.rand(n, generator=g) < share).long()
        return torch.randn(n, 8, generator=g) + 3.0 * side[:, None], side

    ref, _ = mixture(4000, 0.3)
    drawn, side = mixture(4000, 0.7)
    same, _ = mixture(4000, 0.3)
    w = torch.where(side == 1, 0.3 / 0.7, 0.7 / 0.3)
    floor, as_drawn, reweighted = fid(ref, same), fid(ref, drawn), fid(ref, drawn, weights_b=w)
    assert as_drawn > 10 * floor and reweighted < 3 * floor + 0.05
    keep = side == 0
    assert abs(fid(ref, drawn, weights_b=keep.double()) - fid(ref, drawn[keep])) < 1e-6
    with pytest.raises(InputError):
        fid(ref, drawn, weights_b=-w)


def test_kid_unbiased():
    rng = np.random.RandomState(0)
    vals = [mmd2_unbiased(rng.randn(200, 8), rng.randn(200, 8)) for _ in range(30)]
    assert abs(np.mean(vals)) < 3 * np.std(vals) / math.sqrt(len(vals))   # zero mean: unbiased
    assert min(vals) < 0 < max(vals)                                        # hence sometimes negative
    same, _ = kid(rng.randn(1000, 8), rng.randn(1000, 8), subsets=10, subset_size=500)
    shifted, _ = kid(rng.randn(1000, 8), rng.randn(1000, 8) + 0.5, subsets=10, subset_size=500)
    assert abs(same) < 0.01 < shifted


def test_precision_recall_on_point_clouds():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(1500, 2, generator=g)
    p, r = precision_recall(real, torch.randn(1500, 2, generator=g))
    assert p > 0.9 and r > 0.9
    # fake collapsed onto a small part of the real support: precise, no recall
    p, r = precision_recall(real, torch.randn(1500, 2, generator=g) * 0.1)
    assert p > 0.95 and r < 0.3
    # fake far away: neither
    p, r = precision_recall(real, torch.randn(1500, 2, generator=g) + 10)
    assert p < 0.01 and r < 0.01
    # per group: half the fakes on the real support, half far away; an empty group has none
    fake = torch.cat([torch.randn(750, 2, generator=g), torch.randn(750, 2, generator=g) + 10])
    near = torch.arange(1500) < 750
    p, r, by = precision_recall(real, fake, groups={"near": near, "far": ~near, "empty": near & ~near})
    assert by["near"] > 0.9 and by["far"] < 0.01 and by["empty"] is None
    assert p == pytest.approx((by["near"] * 750 + by["far"] * 750) / 1500, abs=1e-6)


# -- networks and bundles -------------------------------------------------------------------------------

def test_evaluator_shapes_and_bundle_roundtrip(tmp_path):
    torch.manual_seed(0)
    clf, emb, par = AttributeClassifier().eval(), IdentityEmbedder().eval(), FaceParser().eval()
    f3 = Face3D(Face3DConfig(nf=16, zdim=16, nf_encoder=8)).eval()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    out = clf(x)
    assert out["glasses"].shape == (2, 3) and clf.features(x).shape == (2, clf.feature_dim)
    assert emb(x).norm(dim=1).allclose(torch.ones(2))
    assert par(x).shape == (2, 20, 64, 64)
    add_evaluators(tmp_path / "b", {"attributes": clf, "identity": emb, "parser": par, "face3d": f3},
                   figures={"x": 1})
    loaded = load_evaluators(tmp_path / "b")
    assert set(loaded) == {"attributes", "identity", "parser", "face3d"}
    with torch.no_grad():
        assert torch.allclose(loaded["attributes"](x)["glasses"], out["glasses"], atol=1e-5)
        assert torch.allclose(loaded["face3d"](x)["maps"], f3(x)["maps"], atol=1e-5)
    with pytest.raises(FormatError, match="no evaluator"):
        load_evaluators(tmp_path / "b", names=["nope"])


# -- tiny trainings: held-out loss drops ----------------------------------------------------------------

@pytest.mark.parametrize("kind", ["attributes", "identity", "parser", "face3d"])
def test_tiny_training_lowers_heldout_loss(tmp_path_factory, kind):
    from latentedit.train.evaluators import TASKS, load_pool, trained_evaluator, train_evaluator

    torch.set_num_threads(1)
    pools = tmp_path_factory.mktemp("pools") if not hasattr(test_tiny_training_lowers_heldout_loss, "dir") \
        else test_tiny_training_lowers_heldout_loss.dir
    test_tiny_training_lowers_heldout_loss.dir = pools
    out = tmp_path_factory.mktemp(kind)
    steps = {"attributes": 24, "identity": 24, "parser": 16, "face3d": 16}[kind]
    kw = dict(batch=16, n_train=64, n_eval=24, pool_dir=pools, progress=lambda *_: None)
    task = TASKS[kind]()
    torch.manual_seed(0)
    before = task.evaluate(task.build().eval(), load_pool(pools, 10_000_000, 24))["heldout_loss"]
    train_evaluator(kind, out, steps=steps // 2, eval_every=steps // 2, **kw)
    after = train_evaluator(kind, out, steps=steps, eval_every=steps // 2, **kw)   # resumes
    assert after["heldout_loss"] < before
    net, info = trained_evaluator(out, kind)
    assert info["step"] == steps


# -- evaluate generator (CLI over the metrics) ----------------------------------------------------------

def test_evaluate_generator_cli(tmp_path):
    import json

    from click.testing import CliRunner

    from latentedit.cli.evaluate import evaluate
    from latentedit.formats import Networks, save_networks
    from latentedit.models.stylegan2 import Generator, GeneratorConfig

    torch.manual_seed(0)
    G = Generator(GeneratorConfig(resolution=16, channel_base=512, channel_max=32, z_dim=32, w_dim=32, n_mlp=2))
    save_networks(Networks("test", "random", G=G.eval()), tmp_path / "model")
    clf = AttributeClassifier(ClassifierConfig(channels=[8, 8, 8, 8])).eval()
    add_evaluators(tmp_path / "model", {"attributes": clf})
    out = tmp_path / "m.json"
    res = CliRunner().invoke(evaluate, ["generator", "--model", str(tmp_path / "model"), "--n", "24",
                                        "--batch", "12", "--out", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    for key in ("world_fid", "world_fid_floor", "kid", "precision", "recall", "rates_generated", "rates_prior",
                "confidence_ratio"):
        assert key in report
    assert report["world_fid_floor"] >= 0 and set(report["rates_prior"]) == set(report["rates_generated"])
    assert set(report["kind_fid"]) == {"frame_glasses", "sunglasses", "mask"}
    for kind, counts in report["kind_counts"].items():
        # 24 renders at the world's priors: the counts are the ground truth's, the FID exists iff both have >= 2
        assert 0 <= counts["renders"] <= 24 and 0 <= counts["generated"] <= 24
        assert (report["kind_fid"][kind] is None) == (min(counts.values()) < 2)
        assert (report["kind_fid_ratio_matched"][kind] is None) == (report["kind_fid"][kind] is None)
    # each kind's precision exists iff the classifier gave it to some generated face; "none": the bare ones
    assert set(report["kind_precision"]) == {"frame_glasses", "sunglasses", "mask", "none"}
    for kind, counts in report["kind_counts"].items():
        assert (report["kind_precision"][kind] is None) == (counts["generated"] == 0)
    assert "precision by kind" in res.output
    assert set(report["kind_precision_floor"]) == set(report["kind_precision"])  # the renders' own, beside it


def test_kind_fid_compares_only_the_kind():
    """Per-kind FID uses the samples of the kind on both sides: far-away other samples do not move it."""
    from latentedit.metrics.fid import fid
    from latentedit.metrics.generator import kind_fid

    g = torch.Generator().manual_seed(0)
    real = torch.cat([torch.randn(400, 8, generator=g), torch.randn(400, 8, generator=g) + 6])
    fake = torch.cat([torch.randn(400, 8, generator=g), torch.randn(100, 8, generator=g) - 6])
    real_kind = torch.arange(800) < 400
    fake_kind = torch.arange(500) < 400
    same = kind_fid(real, real_kind, fake, fake_kind)
    assert same < 0.5 < 10 < fid(real, fake)  # same distribution for the kind; far apart overall
    assert kind_fid(real, ~real_kind, fake, fake_kind) > 100
    assert kind_fid(real, real_kind, fake, torch.zeros(500, dtype=torch.bool)) is None


def test_kind_fid_ratio_at_matched_counts_removes_the_small_sample_bias():
    """One distribution on both sides: the kind's FID on few samples is all small-sample bias, far
    above the overall FID on many; the overall FID at the kind's counts carries the same bias."""
    from latentedit.metrics.fid import fid
    from latentedit.metrics.generator import fid_at_counts

    g = torch.Generator().manual_seed(1)
    real, fake = torch.randn(4000, 32, generator=g), torch.randn(4000, 32, generator=g)
    few = fid(real[:200], fake[:150])
    assert few > 3 * fid(real, fake)  # the raw ratio would call a perfect kind 3x worse
    assert 0.6 < few / fid_at_counts(real, 200, fake, 150) < 1.6
    # subsets, not the first samples: a shifted tail is seen
    shifted = torch.cat([fake[:3000], fake[3000:] + 3])
    assert fid_at_counts(real, 200, shifted, 150) > 2 * fid(real[:200], shifted[:150])


def test_kind_renders_wear_the_kind():
    from latentedit import world
    from latentedit.metrics.generator import KIND_RENDERS, _truth

    for kind, overrides in KIND_RENDERS.items():
        truth = _truth(world.sample_params(64, seed=3, **overrides))
        assert truth[kind].all(), kind
        others = {"frame_glasses", "sunglasses"} - {kind}
        assert not any(truth[o].any() for o in others if kind != "mask"), kind


def test_generated_kind_features_keeps_only_the_kind():
    from types import SimpleNamespace

    from latentedit.metrics.generator import generated_kind_features, generated_kind_images
    from latentedit.models.stylegan2 import Generator, GeneratorConfig

    G = Generator(GeneratorConfig(resolution=16, channel_base=512, channel_max=32, z_dim=32, w_dim=32, n_mlp=2)).eval()

    def classify(f):  # mask head: kind 1 exactly where the first feature is positive
        return {"mask": torch.stack([-f[:, 0], f[:, 0]], 1)}

    clf = SimpleNamespace(cfg=SimpleNamespace(image_size=16), features=lambda x: x.mean((2, 3)), classify=classify)
    feats, drawn = generated_kind_features(G, clf, "mask", 10, batch=8)
    assert feats.shape == (10, 3) and (feats[:, 0] > 0).all() and drawn >= 16
    few, drawn = generated_kind_features(G, clf, "mask", 1000, batch=8, max_draws=16)
    assert len(few) < 1000 and drawn == 16
    images, drawn = generated_kind_images(G, clf, "mask", 10, batch=8)  # the faces behind those features
    assert images.shape == (10, 3, 16, 16) and torch.allclose(clf.features(images), feats)
    never = SimpleNamespace(cfg=clf.cfg, features=clf.features,
                            classify=lambda f: {"mask": torch.stack([f[:, 0] * 0 + 1, f[:, 0] * 0], 1)})
    none, drawn = generated_kind_features(G, never, "mask", 5, batch=8, max_draws=16)
    assert none.shape == (0, 3) and drawn == 16


def test_evaluator_ddp_two_processes_keep_ranks_identical(tmp_path):
    """torchrun with 2 gloo processes: each rank trains on its half of every batch, DDP averages the
    gradients, so both ranks end with the same weights, and those moved away from the initial ones."""
    import json
    import subprocess
    import sys
    import textwrap

    script = tmp_path / "ddp_eval.py"
    script.write_text(textwrap.dedent("""
        import hashlib, json, sys, torch
        import latentedit.train.evaluators as te
        from latentedit.train.distributed import init_distributed
        torch.set_num_threads(1)
        rank, world, _ = init_distributed()
        built = []
        class Capture(te.TASKS["attributes"]):
            def build(self):
                built.append(super().build())
                return built[-1]
        te.TASKS["attributes"] = Capture
        def digest(net):
            return hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in net.parameters())).hexdigest()
        torch.manual_seed(te.TRAIN_SEED)
        start = digest(Capture().build())
        te.train_evaluator("attributes", sys.argv[1], steps=3, batch=8, n_train=16, n_eval=8, eval_every=3,
                           progress=lambda *_: None)
        json.dump({"world": world, "start": start, "end": digest(built[-1])},
                  open(f"{sys.argv[1]}/rank{rank}.json", "w"))
    """))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(script), str(tmp_path)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    ranks = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in range(2)]
    assert ranks[0]["world"] == 2
    assert ranks[0]["end"] == ranks[1]["end"] != ranks[0]["start"]
    assert json.loads((tmp_path / "attributes" / "state.json").read_text())["info"]["step"] == 3
