"""InterfaceGAN boundaries (selection rule, linear solver vs kernel SVM, planted hyperplanes),
scoring latents with the classifier, sparse-label boundaries and `boundary train`."""
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from latentedit.edit.boundaries import score_latents, select_samples, train_boundary
from latentedit.edit.directions import Direction
from latentedit.edit.sparse import sparse_boundary
from latentedit.errors import InputError
from latentedit.models.evaluators import AttributeClassifier, ClassifierConfig
from latentedit.models.stylegan2 import Generator, GeneratorConfig


def planted(n=20000, d=32, noise=0.3, seed=0):
    """Latents off the origin (like W) whose score is a noisy linear function of a known normal."""
    rng = np.random.RandomState(seed)
    normal = rng.randn(d)
    normal /= np.linalg.norm(normal)
    x = rng.randn(n, d) * rng.uniform(0.5, 2.0, d) + rng.randn(d) * 3           # anisotropic, offset
    scores = x @ normal + noise * rng.randn(n)
    return x.astype(np.float32), scores[:, None].astype(np.float32), normal


def test_selection_rule_is_interfacegans():
    x, s, _ = planted(n=1000, d=4)
    sets = select_samples(x, s, ratio=0.1, split_ratio=0.7)
    (xt, yt), (xv, yv), (xr, yr) = sets["train"], sets["val"], sets["rest"]
    assert len(yt) == 2 * 70 and len(yv) == 2 * 30 and len(yr) == 1000 - 200       # chosen = int(N * ratio)
    by_row = {tuple(r): v for r, v in zip(x.astype(np.float64), s[:, 0])}
    score = lambda rows: np.array([by_row[tuple(r)] for r in rows])               # noqa: E731
    top = np.sort(s[:, 0])[-100:]
    assert set(score(xt[yt == 1])) | set(score(xv[yv == 1])) == set(top)         # positives = the top 10%
    assert score(np.concatenate([xt[yt == 0], xv[yv == 0]])).max() < score(xr).min()
    mid = (s.max() + s.min()) / 2
    assert np.array_equal(yr, (score(xr) >= mid).astype(float))                    # rest: mid-score labels
    assert len(select_samples(x, s, ratio=40)["train"][1]) == 2 * 28              # a count when > 1
    with pytest.raises(InputError, match=r"scores must be \[N, 1\]"):
        select_samples(x, s[:, 0])


def test_recovers_planted_hyperplane():
    x, s, normal = planted()
    b = train_boundary(x, s, ratio=0.05)
    assert b.normal.shape == (1, 32) and b.normal.dtype == np.float32
    # The SVM on the extremes of this anisotropic cloud finds cosines 0.974-0.990 over planted()
    # seeds 0-5 (0.9801 for seed 0; a random 32-d direction: about 0.18), rest accuracy 0.85-0.91.
    assert float(b.normal[0] @ normal) > 0.95
    assert b.val_accuracy > 0.99 and b.rest_accuracy > 0.8


@pytest.mark.parametrize("ratio,noise,solver", [(0.05, 0.3, "dual"), (0.5, 2.0, "dual"), (0.05, 0.3, "primal"),
                                                (0.5, 2.0, "primal")])
def test_linear_solver_matches_kernel_svm(ratio, noise, solver):
    x, s, _ = planted(n=4000 if ratio == 0.5 else 20000, d=64, noise=noise, seed=1)
    fast = train_boundary(x, s, ratio=ratio, solver=solver)
    ref = train_boundary(x, s, ratio=ratio, solver="kernel")          # sklearn SVC(kernel="linear")
    assert float(fast.normal[0] @ ref.normal[0]) >= 0.99
    assert abs(fast.val_accuracy - ref.val_accuracy) < 0.02


def test_score_latents_and_boundary_end_to_end():
    torch.manual_seed(0)
    G = Generator(GeneratorConfig(resolution=32, channel_base=256, channel_max=16)).eval()   # resized to 64
    clf = AttributeClassifier(ClassifierConfig(channels=[8, 8, 8, 8])).eval()
    w = G.sample_w(40)
    table = score_latents(G, clf, w.numpy(), batch=16)
    assert {"eyeglasses", "frame_glasses", "sunglasses", "mask", "smile", "age", "hair_color_blond"} <= set(table)
    assert all(v.shape == (40,) and (v >= 0).all() and (v <= 1).all() for v in table.values())
    d = train_boundary(w.numpy(), table["smile"][:, None], ratio=0.25).direction(name="smile")
    assert isinstance(d, Direction) and d.norm() == pytest.approx(1, abs=1e-5)


def two_clusters(n, d=64, seed=0):
    """A two-cluster manifold: the class is the cluster (means +-2.5 along `axis`), and a few
    large-variance nuisance dims make 10 labelled samples alone a poor guide."""
    rng = np.random.RandomState(seed)
    axis = np.zeros(d)
    axis[0] = 1
    y = rng.rand(n) < 0.5
    x = rng.randn(n, d) * 0.7
    x[:, 1:6] *= 4                                                              # nuisance
    x += np.where(y, 2.5, -2.5)[:, None] * axis
    return x, y.astype(float), axis


def test_sparse_labels_beat_labels_only():
    x, y, axis = two_clusters(6000)
    x_test, y_test, _ = two_clusters(2000, seed=9)
    rng = np.random.RandomState(3)
    semi, only = [], []
    for trial in range(5):
        idx = rng.choice(len(x), 10, replace=False)
        while y[idx].min() == y[idx].max():
            idx = rng.choice(len(x), 10, replace=False)
        rest = np.setdiff1d(np.arange(len(x)), idx)
        for out, method in ((semi, "spreading"), (only, "labels_only")):
            b = sparse_boundary(x[idx], y[idx], x[rest], method=method)
            out.append((float(b.normal[0] @ axis), b.accuracy(x_test, y_test)))
    semi, only = np.array(semi), np.array(only)                    # [trials, (cosine to truth, accuracy)]
    assert (semi[:, 0] > 0.85).all() and (semi[:, 0] > only[:, 0]).all()
    # mean accuracy 0.9836 / 0.9838 under two CPU settings, labels only 0.933: the claim is the gain
    assert semi[:, 1].mean() > 0.97 and semi[:, 1].mean() > only[:, 1].mean() + 0.02


def test_cli_boundary_train_from_files(tmp_path):
    from latentedit.cli import main

    x, s, normal = planted(n=5000, d=512, seed=2)
    np.save(tmp_path / "w.npy", x)
    np.save(tmp_path / "s.npy", s)
    r = CliRunner().invoke(main, ["boundary", "train", "--attribute", "smile", "--latents", str(tmp_path / "w.npy"),
                                  "--scores", str(tmp_path / "s.npy"), "--ratio", "0.1", "--out",
                                  str(tmp_path / "smile.npy")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    d = Direction.load(tmp_path / "smile.npy")
    assert np.load(tmp_path / "smile.npy").shape == (1, 512) and d.provenance["made_by"] == "interfacegan"
    assert float(d.vector.numpy() @ normal) > 0.8 and d.generator is None
    r = CliRunner().invoke(main, ["boundary", "train", "--attribute", "smile", "--latents", str(tmp_path / "w.npy"),
                                  "--scores", str(tmp_path / "w.npy"), "--out", str(tmp_path / "x.npy")])
    assert r.exit_code == 2 and "error: scores must be [N, 1]" in r.output
