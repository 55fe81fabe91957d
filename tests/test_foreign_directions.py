"""Direction files other projects publish, built here in their released layouts: e4e / HyperStyle /
PTI `interfacegan_directions/*.pt`, GANSpace `.npz` components (and e4e's `ffhq_pca.pt`),
InterfaceGAN and InterFaceGAN++ boundaries. Edits are checked against those projects' formulas,
written out independently below."""
import numpy as np
import pytest
import torch
from PIL import Image

from latentedit.edit.directions import Direction, linear_interpolate
from latentedit.errors import FormatError, InputError
from latentedit.formats.images import grid
from latentedit.models.stylegan2 import Generator, GeneratorConfig, z_from_seeds

from conftest import run

RANDOM = ["--random-weights", "--resolution", "16", "--channel-base", "512", "--channel-max", "32"]


def _unit_rows(k, d, seed):
    a = np.random.RandomState(seed).randn(k, d).astype(np.float32)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def _ganspace_npz(path, k=6, d=512, in_w=True, seed=0):
    """GANSpace's decomposition dump (decomposition.py's keys); lat_stdev is all ones for a Z run."""
    comp = _unit_rows(k, d, seed)[:, None]                                   # [K, 1, D]
    stdev = np.linspace(3.0, 0.5, k).astype(np.float32) if in_w else np.ones(k, np.float32)
    np.savez_compressed(path, act_comp=comp, act_mean=np.zeros([1, d], np.float32), act_stdev=stdev,
                        lat_comp=comp, lat_mean=np.full([1, d], 0.1, np.float32), lat_stdev=stdev,
                        var_ratio=np.full(k, 0.01, np.float32), random_stdevs=np.ones(k, np.float32))
    return comp, stdev


def test_e4e_interfacegan_pt_adds_factor_times_direction(tmp_path):
    direction = torch.from_numpy(_unit_rows(1, 512, 1))                     # [1, 512], as e4e ships them
    torch.save(direction, tmp_path / "age.pt")
    d = Direction.load(tmp_path / "age.pt")
    assert d.space == "w" and d.layers is None and d.name == "age" and d.generator is None
    latents = torch.randn(3, 18, 512)
    # e4e's LatentEditor.apply_interfacegan: latents + factor * direction (broadcast over the 18 layers)
    assert torch.allclose(d.apply(latents, -2.5), latents + -2.5 * direction, atol=1e-6)
    torch.save(direction[0], tmp_path / "smile.pt")                          # [512] reads alike
    assert torch.equal(Direction.load(tmp_path / "smile.pt").vector, direction[0])
    torch.save(torch.randn(1, 18, 512), tmp_path / "perlayer.pt")            # a per-layer W+ direction
    assert Direction.load(tmp_path / "perlayer.pt").space == "w+"


def test_ganspace_npz_component_scaled_by_stdev_on_layer_range(tmp_path):
    comp, stdev = _ganspace_npz(tmp_path / "stylegan2-ffhq_style_ipca_c6_n100_w.npz")
    path = tmp_path / "stylegan2-ffhq_style_ipca_c6_n100_w.npz"
    d = Direction.load(f"{path}:3")
    assert d.space == "w" and d.layers is None and d.provenance["component"] == 3
    assert np.allclose(d.vector.numpy(), comp[3, 0] * stdev[3], atol=1e-7)
    # GANSpace's viewer: z_deltas[l] += Z_comp[c] * Z_stdev[c] * sigma for l in range(start, end)
    w = torch.randn(2, 14, 512)
    sigma, start, end = 1.7, 2, 5
    expected = w.clone()
    for layer in range(start, end):
        expected[:, layer] += torch.from_numpy(comp[3, 0] * stdev[3] * sigma)
    ranged = Direction.load(f"{path}:3:{start}-{end - 1}")                  # inclusive, as E(c, s-e)
    assert ranged.layers == (start, end)
    assert torch.allclose(ranged.apply(w, sigma), expected, atol=1e-5)
    _ganspace_npz(tmp_path / "z.npz", in_w=False)
    assert Direction.load(f"{tmp_path / 'z.npz'}:0").space == "z"            # ones: a Z decomposition
    with pytest.raises(InputError, match=r"holds 6 components: name one as .*:INDEX"):
        Direction.load(path)
    with pytest.raises(InputError, match="component 6 is outside 0..5"):
        Direction.load(f"{path}:6")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(FormatError, match="not a GANSpace component file"):
        Direction.load(f"{tmp_path / 'other.npz'}:0")


def test_e4e_ganspace_pca_pt(tmp_path):
    comp = torch.from_numpy(_unit_rows(8, 512, 2))[:, None]                  # [80, 1, 512] in e4e's file
    std, mean = torch.linspace(2, 1, 8), torch.zeros(1, 512)
    torch.save({"comp": comp, "std": std, "mean": mean}, tmp_path / "ffhq_pca.pt")
    d = Direction.load(f"{tmp_path / 'ffhq_pca.pt'}:5:0-4")
    assert d.space == "w" and d.layers == (0, 5)
    assert torch.allclose(d.vector, comp[5, 0] * std[5])


def test_interfacegan_and_interfacegan_pp_boundaries_know_their_space(tmp_path):
    n = _unit_rows(1, 512, 3)
    np.save(tmp_path / "stylegan_ffhq_age_w_boundary.npy", n)
    np.save(tmp_path / "stylegan_ffhq_smile_boundary.npy", n)
    (tmp_path / "stylegan2_ffhq_z").mkdir()
    np.save(tmp_path / "stylegan2_ffhq_z" / "boundary_Young.npy", n)
    np.save(tmp_path / "mine.npy", n)
    age = Direction.load(tmp_path / "stylegan_ffhq_age_w_boundary.npy")
    assert (age.space, age.name) == ("w", "age")
    assert Direction.load(tmp_path / "stylegan_ffhq_smile_boundary.npy").space == "z"
    young = Direction.load(tmp_path / "stylegan2_ffhq_z" / "boundary_Young.npy")
    assert (young.space, young.name) == ("z", "Young") and np.array_equal(young.vector.numpy(), n[0])
    assert Direction.load(tmp_path / "mine.npy").space is None               # unknown, as before
    with pytest.raises(InputError, match="a Z direction, not W"):
        Direction.load(tmp_path / "stylegan2_ffhq_z" / "boundary_Young.npy", space="w")


def test_foreign_files_that_are_not_directions(tmp_path):
    torch.save({"state_dict": {"x": torch.zeros(2)}}, tmp_path / "ckpt.pt")
    with pytest.raises(FormatError, match="not a direction file"):
        Direction.load(tmp_path / "ckpt.pt")
    torch.save(torch.zeros(512), tmp_path / "one.pt")
    with pytest.raises(InputError, match="one direction, not a set of components"):
        Direction.load(f"{tmp_path / 'one.pt'}:2")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(FormatError, match="not a readable .npz"):
        Direction.load(f"{tmp_path / 'bad.npz'}:0")



def test_cli_edit_with_ganspace_component_and_z_boundary(tmp_path):
    _ganspace_npz(tmp_path / "pca.npz", d=512)
    out = tmp_path / "g.png"
    r = run("edit", *RANDOM, "--direction", f"{tmp_path / 'pca.npz'}:2", "--strength=-2..2", "--steps", 3,
            "--seeds", "0-1", "--layers", "0-2", "--out", out)
    assert r.exit_code == 0, r.output
    assert Image.open(out).size == (3 * 16, 2 * 16)
    # an InterFaceGAN++ StyleGAN2 boundary lives in Z: the edit moves z, then maps it to W
    (tmp_path / "stylegan2_ffhq_z").mkdir()
    n = _unit_rows(1, 512, 4)
    np.save(tmp_path / "stylegan2_ffhq_z" / "boundary_Smiling.npy", n)
    r = run("edit", *RANDOM, "--direction", tmp_path / "stylegan2_ffhq_z" / "boundary_Smiling.npy",
            "--strength=-3..3", "--steps", 3, "--seeds", "0-1", "--truncation", 0.8, "--out", out)
    assert r.exit_code == 0, r.output
    torch.manual_seed(0)
    G = Generator(GeneratorConfig(resolution=16, channel_base=512, channel_max=32)).eval()  # --random-weights
    z = z_from_seeds([0, 1], 512)
    zs = torch.stack([z + s * torch.from_numpy(n[0]) for s in (-3.0, 0.0, 3.0)], 1).flatten(0, 1)
    with torch.no_grad():
        expected = grid(G.synthesize(G.mapping(zs, truncation_psi=0.8, update_w_avg=False)[:, 0]), cols=3)
    got = np.asarray(Image.open(out).convert("RGB"))
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    photo = tmp_path / "p.png"
    Image.new("RGB", (16, 16)).save(photo)
    r = run("edit", *RANDOM, "--direction", tmp_path / "stylegan2_ffhq_z" / "boundary_Smiling.npy",
            "--input", photo, "--invert-mode", "project", "--invert-steps", 1, "--out", out)
    assert r.exit_code == 2 and "lives in Z" in r.output


def test_linear_interpolate_absolute_in_z_matches_interfacegan():
    """InterfaceGAN's linear_interpolate: z + (d - z . n) n for distances d in linspace(start, end)."""
    n = _unit_rows(1, 512, 5)[0]
    z = np.random.RandomState(6).randn(2, 512).astype(np.float32)
    out = linear_interpolate(z, Direction(n, space="z"), -3, 3, 4, mode="absolute")
    for i, dist in enumerate(np.linspace(-3, 3, 4)):
        assert np.allclose(out[:, i], z + (dist - z @ n)[:, None] * n, atol=1e-5)
