"""Direction algebra, conditional projection, applying / interpolating, files, SeFa, GANSpace and
the `edit` / `boundary discover` commands, against oracles computed independently."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import latentedit as le
from latentedit.edit.directions import Direction, gram_schmidt, linear_interpolate
from latentedit.edit.discover import ganspace, modulation_layers, name_directions, sefa
from latentedit.errors import FormatError, InputError
from latentedit.formats import Networks, load_generator, save_networks
from latentedit.formats.directions import generator_hash
from latentedit.models.evaluators import AttributeClassifier, ClassifierConfig
from latentedit.models.stylegan2 import Generator, GeneratorConfig

from conftest import run

RANDOM = ["--random-weights", "--resolution", "16", "--channel-base", "512", "--channel-max", "32"]


def rand_dir(seed, name=None, dim=512, **kw):
    g = torch.Generator().manual_seed(seed)
    return Direction(torch.randn(dim, generator=g), name=name or f"d{seed}", **kw)


def test_algebra():
    a, b = rand_dir(0), rand_dir(1)
    assert torch.allclose((a + b).vector, a.vector + b.vector)
    assert torch.allclose((a - 2 * b).vector, a.vector - 2 * b.vector)
    assert torch.allclose((a * 0.5).vector, (a / 2).vector) and torch.allclose((-a).vector, -a.vector)
    assert a.dot(b) == pytest.approx(float(a.vector.double() @ b.vector.double()))
    assert a.normalized().norm() == pytest.approx(1.0)
    p = a.project(b)
    assert abs((a - p).dot(b)) < 1e-3 and abs(p.normalized().dot(b.normalized())) == pytest.approx(1, abs=1e-6)
    basis = gram_schmidt([rand_dir(i) for i in range(5)])
    gram = np.array([[u.dot(v) for v in basis] for u in basis])
    assert np.allclose(gram, np.eye(5), atol=1e-6)
    with pytest.raises(InputError, match="linearly dependent"):
        gram_schmidt([a, b, a + b])
    with pytest.raises(InputError, match="Z and a W"):
        rand_dir(0, space="z") + a


@pytest.mark.parametrize("m", [1, 2, 7])
def test_orthogonal_to_any_number_of_conditions(m):
    d = rand_dir(0)
    conds = [rand_dir(10 + i) for i in range(m)]
    out = d.orthogonal_to(*conds)
    assert out.norm() == pytest.approx(1.0, abs=1e-6)
    for c in conds:
        assert abs(out.dot(c.normalized())) < 1e-6
    # the remainder keeps as much of d as possible: d's component in out is d minus its projection
    C = np.stack([c.vector.double().numpy() for c in conds], 1)
    v = d.vector.double().numpy()
    resid = v - C @ np.linalg.pinv(C) @ v
    assert np.allclose(out.vector.numpy(), resid / np.linalg.norm(resid), atol=1e-6)
    if m == 2:  # InterfaceGAN's closed form for two unit conditions
        p, c1, c2 = d.normalized().vector.double().numpy(), *(c.normalized().vector.double().numpy() for c in conds)
        c12 = c1 @ c2
        alpha = (p @ c1 - (p @ c2) * c12) / (1 - c12 ** 2)
        beta = (p @ c2 - (p @ c1) * c12) / (1 - c12 ** 2)
        new = p - alpha * c1 - beta * c2
        assert np.allclose(out.vector.numpy(), new / np.linalg.norm(new), atol=1e-6)
    with pytest.raises(InputError, match="span"):
        (conds[0] + d * 0).orthogonal_to(conds[0])


def test_apply_and_layers(tiny_G):
    G = tiny_G
    d = rand_dir(0, dim=G.w_dim).normalized()
    w = G.sample_w(3)
    assert torch.allclose(w + 2 * d, w + 2 * d.vector) and torch.allclose(w - d, w - d.vector)
    wp = G.broadcast_w(w)
    assert torch.allclose(wp + d, wp + d.vector)
    assert isinstance(w.numpy() + d, np.ndarray)
    r = d.restrict(1, 3, num_ws=G.num_ws)
    out = w + 1.5 * r                                               # W codes become W+ [N, L, D]
    assert out.shape == (3, G.num_ws, G.w_dim)
    moved = (out - wp).norm(dim=2) > 0                              # [N, L]
    assert moved[:, 1:3].all() and not moved[:, :1].any() and not moved[:, 3:].any()
    assert (r + d).space == "w+" and G.synthesize(w + r).shape == (3, 3, 16, 16)


def test_linear_interpolate_modes(tiny_G):
    d = rand_dir(0, dim=tiny_G.w_dim).normalized()
    w = tiny_G.sample_w(2)
    out = linear_interpolate(w, d, -3, 3, 7)                        # absolute: signed distances
    assert out.shape == (2, 7, tiny_G.w_dim)
    assert torch.allclose(out @ d.vector, torch.linspace(-3, 3, 7).expand(2, 7), atol=1e-4)
    wp = tiny_G.broadcast_w(w)
    rel = linear_interpolate(wp, d, -3, 3, 7)                       # W+: relative shift
    assert rel.shape == (2, 7, tiny_G.num_ws, tiny_G.w_dim)
    assert torch.allclose(rel[:, 0], wp - 3 * d.vector, atol=1e-5)
    # InterfaceGAN's formula, one code at a time
    x = w[:1].numpy()
    ref = x + (np.linspace(-3, 3, 7) - x @ d.vector.numpy()).reshape(-1, 1) * d.vector.numpy()[None]
    assert np.allclose(out[0].numpy(), ref, atol=1e-4)


def test_refuses_other_generator_and_space(tiny_G):
    torch.manual_seed(5)
    other = Generator(tiny_G.cfg).eval()
    d = rand_dir(0, dim=tiny_G.w_dim, generator=generator_hash(tiny_G))
    w = tiny_G.sample_w(2)
    d.apply(w, G=tiny_G)
    with pytest.raises(InputError, match="another generator"):
        d.apply(w, G=other)
    with pytest.raises(InputError, match="lives in Z"):
        rand_dir(0, dim=tiny_G.w_dim, space="z").apply(w, space="w")
    with pytest.raises(InputError, match="latents must be"):
        d + torch.zeros(2, 7)


def test_generator_hash_stable_across_formats(tiny_G, tmp_path):
    h = generator_hash(tiny_G)
    save_networks(Networks("random", "x", G=tiny_G), tmp_path / "b")
    save_networks(Networks("random", "x", G=tiny_G), tmp_path / "r.pt")
    assert generator_hash(load_generator(tmp_path / "b")) == h == generator_hash(load_generator(tmp_path / "r.pt"))
    torch.manual_seed(5)
    assert generator_hash(Generator(tiny_G.cfg)) != h


def test_files_interfacegan_compatible(tmp_path, tiny_G):
    d = rand_dir(3, name="smile", generator=generator_hash(tiny_G), provenance={"made_by": "test"}).normalized()
    d.save(tmp_path / "smile.npy")
    arr = np.load(tmp_path / "smile.npy")
    assert arr.shape == (1, 512) and arr.dtype == np.float32 and np.linalg.norm(arr) == pytest.approx(1, abs=1e-6)
    side = json.loads((tmp_path / "smile.json").read_text())
    assert side["space"] == "w" and side["generator"] == d.generator and side["provenance"] == {"made_by": "test"}
    back = Direction.load(tmp_path / "smile.npy")
    assert torch.equal(back.vector, d.vector) and back.generator == d.generator and back.name == "smile"
    # an InterfaceGAN boundary: a bare [1, 512] .npy, no sidecar
    np.save(tmp_path / "ig_age_w_boundary.npy", arr)
    ig = Direction.load(tmp_path / "ig_age_w_boundary.npy", space="w")
    assert ig.space == "w" and ig.generator is None and np.array_equal(ig.vector.numpy()[None], arr)
    # a layer-confined direction keeps its range
    d.restrict(2, 4, num_ws=6).save(tmp_path / "r.npy")
    r = Direction.load(tmp_path / "r.npy")
    assert r.layers == (2, 4) and r.num_ws == 6 and np.load(tmp_path / "r.npy").shape == (1, 512)


def test_named_directions_resolve_in_bundle(tmp_path):
    rand_dir(0, name="eyeglasses").normalized().save(tmp_path / "boundaries" / "eyeglasses.npy")
    assert Direction.load("eyeglasses", bundle=tmp_path).name == "eyeglasses"
    with pytest.raises(FormatError, match=r"no direction named 'smile'.*available: \['eyeglasses'\]"):
        Direction.load("smile", bundle=tmp_path)
    with pytest.raises(FormatError, match="no such direction file"):
        Direction.load(tmp_path / "nope.npy")
    assert le.Direction is Direction and le.linear_interpolate is linear_interpolate


def _sefa_oracle(G):
    """A^T A from the modulation weights found by module name: every conv affine plus the last ToRGB."""
    mods = dict(G.synthesis.named_modules())
    last = f"b{G.synthesis.block_resolutions[-1]}.torgb.affine"
    rows = [m.weight.detach().double().numpy() for n, m in mods.items()
            if n.endswith("affine") and (".conv" in n or n == last)]
    A = np.concatenate(rows)
    A = A / np.linalg.norm(A, axis=1, keepdims=True)
    vals, vecs = np.linalg.eig(A.T @ A)
    order = np.argsort(-vals.real)
    return vecs.real[:, order].T


def test_sefa_equals_eigenvectors(tiny_G):
    assert [i for i, _, _ in modulation_layers(tiny_G)] == [0, 1, 1, 2, 3, 3, 4, 5]
    dirs = sefa(tiny_G, k=5)
    ref = _sefa_oracle(tiny_G)
    for d, r in zip(dirs, ref):
        assert abs(float(d.vector.double() @ torch.from_numpy(r))) > 0.9999 and d.norm() == pytest.approx(1, abs=1e-5)
    evals = [d.provenance["eigenvalue"] for d in dirs]
    assert evals == sorted(evals, reverse=True)
    part = sefa(tiny_G, k=3, layers=(0, 2))
    assert part[0].layers == (0, 2) and part[0].num_ws == tiny_G.num_ws


def test_ganspace_matches_pca(tiny_G):
    from sklearn.decomposition import PCA

    from latentedit.edit.boundaries import sample_latents

    dirs = ganspace(tiny_G, k=3, n=2000, seed=1)
    pca = PCA(3).fit(sample_latents(tiny_G, 2000, "w", seed=1))
    for d, comp in zip(dirs, pca.components_):
        assert abs(float(d.vector.numpy() @ comp)) > 0.999
    assert dirs[0].provenance["std"] == pytest.approx(np.sqrt(pca.explained_variance_[0]), rel=1e-3)


def test_name_directions_by_classifier():
    torch.manual_seed(0)
    G = Generator(GeneratorConfig(resolution=64, channel_base=256, channel_max=16)).eval()
    clf = AttributeClassifier(ClassifierConfig(channels=[8, 8, 8, 8])).eval()
    named = name_directions(G, clf, sefa(G, k=2), n=16)
    for d in named:
        assert d.name.startswith("sefa") and "effects" in d.provenance
        if "attribute" in d.provenance:
            assert d.provenance["effects"][d.provenance["attribute"]] > 0  # + raises the named attribute



def test_cli_edit_grid_and_errors(tmp_path):
    torch.manual_seed(0)
    G = Generator(GeneratorConfig(resolution=16, channel_base=512, channel_max=32))  # what --random-weights builds
    gh = generator_hash(G)
    rand_dir(0, name="smile", generator=gh).normalized().save(tmp_path / "b" / "boundaries" / "smile.npy")
    rand_dir(1, name="age", generator=gh).normalized().save(tmp_path / "b" / "boundaries" / "age.npy")
    out = tmp_path / "grid.png"
    r = run("edit", *RANDOM, "--boundaries", tmp_path / "b", "--direction", "smile", "--condition", "age",
            "--strength=-3..3", "--steps", 5, "--seeds", "0-2", "--layers", "0-3", "--out", out)
    assert r.exit_code == 0, r.output
    assert Image.open(out).size == (5 * 16, 3 * 16)
    r = run("edit", *RANDOM, "--weights-seed", 1, "--boundaries", tmp_path / "b", "--direction", "smile",
            "--out", out)
    assert r.exit_code == 2 and "error:" in r.output and "another generator" in r.output
    r = run("edit", *RANDOM, "--boundaries", tmp_path / "b", "--direction", "hat", "--out", out)
    assert r.exit_code == 2 and "no direction named 'hat'" in r.output


def test_cli_discover(tmp_path):
    r = run("boundary", "discover", *RANDOM, "--method", "sefa", "--k", 3, "--layers", "0-2", "--no-names",
            "--out", tmp_path)
    assert r.exit_code == 0, r.output
    files = sorted(p.name for p in tmp_path.glob("*.npy"))
    assert files == ["sefa00.npy", "sefa01.npy", "sefa02.npy"]
    assert Direction.load(tmp_path / "sefa00.npy").layers == (0, 3)
