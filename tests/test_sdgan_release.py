"""SD-GAN's released set end to end: stand-ins of every released file (their layouts, random weights,
small sizes), `latentedit convert` into one bundle, `latentedit synthesize` and the Python route,
checked against an independent implementation of test.py's maths and of unsup3d's Demo written
here from their formulas. The generator, the fusion network and the unsup3d nets are shared with
the library (their layouts are tested in test_formats / test_fusion / test_evaluators); everything
test.py and Demo.run do around them is re-derived below."""
import json
import math
import os
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image

import latentedit as le
from conftest import TINY, error_line, randomize, run
from latentedit import runtime
from latentedit.cli import main
from latentedit.edit.sdgan import SDGANSynthesizer, mean_latent
from latentedit.errors import FormatError, InputError
from latentedit.formats import Networks, load_generator, save_networks
from latentedit.formats.sdgan import fusion_state_dict_for_sdgan, load_sdgan_fusion
from latentedit.formats.unsup3d import face3d_to_state, load_unsup3d, read_checkpoint
from latentedit.models.face3d import Face3D, Face3DConfig
from latentedit.models.fusion import FusionConfig, FusionNet
from latentedit.models.discriminator import Discriminator
from latentedit.models.stylegan2 import DiscriminatorConfig, Generator, GeneratorConfig

torch.set_num_threads(1)
FUSION = FusionConfig(resolution=32, id_widths=(8, 16, 16, 32), id_depths=(1, 2, 1, 1), tpl_widths=(8, 8, 16, 24),
                      tpl_depths=(2, 1, 1, 1), se_reduction=4, maps_ngf=4, maps_down=3, style_dim=16,
                      num_style_fc=5, spade_hidden=12, ace_kernel=3, num_ws=8, w_dim=512)
GEN = dict(TINY, resolution=32)  # the released 256 px generator's layout, small; as large as the fusion input
FOLDERS = {"mask": "mask", "sunglasses": "glasses", "frame_glasses": "frame_glasses"}



def _install_unsup3d_meters():
    """A module unsup3d.meters whose MetricsTrace pickles under unsup3d's own name."""
    mod = types.ModuleType("unsup3d.meters")

    class MetricsTrace:
        def __init__(self):
            self.data = {"train": [{"loss": 0.51, "speed": 98.5}], "val": [{"loss": 0.55, "speed": 120.0}]}

    MetricsTrace.__module__, MetricsTrace.__qualname__ = "unsup3d.meters", "MetricsTrace"
    mod.MetricsTrace = MetricsTrace
    sys.modules.setdefault("unsup3d", types.ModuleType("unsup3d"))
    sys.modules["unsup3d.meters"] = mod
    return MetricsTrace


def trainer_checkpoint(face3d, metrics_trace):
    """unsup3d's trainer save: the nets, netC, optimiser states, the metrics trace and the epoch."""
    state = face3d_to_state(face3d)
    state["netC"] = {"network.0.weight": torch.randn(4, 3, 4, 4)}
    for name in ("netD", "netA", "netL", "netV", "netC"):
        params = [torch.nn.Parameter(torch.randn(2, 2))]
        opt = torch.optim.Adam(params, lr=1e-4, betas=(0.9, 0.999))
        params[0].sum().backward()
        opt.step()
        state["optimizer" + name[3:]] = opt.state_dict()
    state["metrics_trace"] = metrics_trace
    state["epoch"] = 30
    return state


def rgba_template(path, seed, size=32):
    """An RGBA PNG with random colours under its transparent pixels (as SD-GAN's templates have)."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size, size, 4), dtype=np.uint8)
    arr[..., 3] = 0
    arr[size // 4: 3 * size // 4, 2:-2, 3] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, "RGBA").save(path)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """SD-GAN's released files (small, random) and the bundle `latentedit convert` makes of them."""
    root = tmp_path_factory.mktemp("sdgan")
    torch.manual_seed(0)
    G = randomize(Generator(GeneratorConfig(**GEN))).eval()
    D = randomize(Discriminator(DiscriminatorConfig(**GEN)), seed=1).eval()
    save_networks(Networks("ours", "-", G=G, D=D), root / "network-snapshot-020180.pt")
    torch.manual_seed(1)
    face3d = randomize(Face3D(Face3DConfig(nf=16, zdim=16, nf_encoder=8)), seed=2).eval()
    torch.save(trainer_checkpoint(face3d, _install_unsup3d_meters()()), root / "checkpoint030.pth",
               _use_new_zipfile_serialization=False)
    fusions = []
    for i, kind in enumerate(FOLDERS):
        torch.manual_seed(10 + i)
        net = randomize(FusionNet(FUSION), seed=10 + i).eval()
        torch.save(fusion_state_dict_for_sdgan(net), root / f"{kind}_checkpoint_latest.pt")
        rgba_template(root / "templates" / FOLDERS[kind] / f"{kind}_1.png", seed=i)
        fusions.append(f"{kind}={root / f'{kind}_checkpoint_latest.pt'}")
    g = torch.Generator().manual_seed(5)
    w = G.mapping(torch.randn(3, G.z_dim, generator=g), update_w_avg=False)[:, 0].detach()
    (root / "data").mkdir()
    for name, rows in (("w_glasses_test_1000.json", w), ("glasses_interfacegan_test_1000.json",
                                                          torch.randn(3, 512, generator=g) * 0.5)):
        (root / "data" / name).write_text(json.dumps({str(i): r.tolist() for i, r in enumerate(rows)}))
    r = run("convert", root / "network-snapshot-020180.pt", root / "sdgan", "--unsup3d", root / "checkpoint030.pth",
            *[a for f in fusions for a in ("--sdgan-fusion", f)], "--sdgan-templates", root / "templates")
    assert r.exit_code == 0, r.output
    return root


# -- the independent reference: unsup3d's Demo.run + out_results, and test.py -----------------------

def demo_maps(face3d, images):
    """The 9-channel input as SD-GAN's Demo makes it, from unsup3d's formulas: [N, 9, 128, 128]."""
    x = F.interpolate(images.clamp(-1, 1) / 2 + 0.5, (64, 64), mode="bilinear", align_corners=False) * 2 - 1
    b, h, w = x.shape[0], 64, 64
    d = face3d.netD(x)[:, 0]
    d = (d - d.reshape(b, -1).mean(1).reshape(b, 1, 1)).tanh()
    d = (1 + d) / 2 * 1.1 + (1 - d) / 2 * 0.9
    border = F.pad(torch.zeros(1, h, w - 4), (2, 2), value=1)
    d = d * (1 - border) + border * 1.05
    albedo = face3d.netA(x)
    light = face3d.netL(x)
    ld = torch.cat([light[:, 2:], torch.ones(b, 1)], 1)
    ld = ld / (ld ** 2).sum(1, keepdim=True) ** 0.5
    f = (64 - 1) / 2 / np.tan(np.radians(10 / 2))
    K = torch.tensor([[f, 0, 31.5], [0, f, 31.5], [0, 0, 1]], dtype=torch.float32)
    ys, xs = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    grid = torch.stack([xs, ys, torch.ones(h, w)], -1)[None]
    pts = grid.matmul(torch.inverse(K).T[None]) * d[..., None]
    n = torch.cross(pts[:, 1:-1, 2:] - pts[:, 1:-1, :-2], pts[:, 2:, 1:-1] - pts[:, :-2, 1:-1], dim=3)
    normal = torch.zeros(b, h, w, 3)
    normal[..., 2] = 1
    normal[:, 1:-1, 1:-1] = n
    normal = normal / ((normal ** 2).sum(3, keepdim=True) ** 0.5 + 1e-7)
    shading = (normal * ld[:, None, None]).sum(3).clamp(min=0)[:, None]
    up = lambda t: F.interpolate(t, (128, 128), mode="bilinear", align_corners=False)  # noqa: E731
    normal = up(normal.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    normal = normal / (normal ** 2).sum(3, keepdim=True) ** 0.5
    shading, albedo = up(shading), up(albedo)

    def out_image(img):  # unsup3d_utils.out_image then ToTensor + Normalize(0.5, 0.5)
        u8 = np.uint8(img.permute(1, 2, 0).numpy() * 255.)[:, :, ::-1]
        return torch.from_numpy(u8.copy()).permute(2, 0, 1).float() / 255 * 2 - 1

    return torch.stack([torch.cat([out_image(normal[i].permute(2, 0, 1) / 2 + 0.5),
                                   out_image(shading[i].repeat(3, 1, 1)), out_image(albedo[i] / 2 + 0.5)])
                        for i in range(b)])


def reference(root, kind, w, p, psi=0.5):
    """test.py's loop for codes w [N, 512] and interface vectors p [N, 512] -> three image batches."""
    G = load_generator(root / "network-snapshot-020180.pt")
    mean = torch.load(root / "network-snapshot-020180.pt", weights_only=True)["latent_avg"]
    face3d = load_unsup3d(root / "checkpoint030.pth")
    _, fusion = load_sdgan_fusion(root / f"{kind}_checkpoint_latest.pt")
    png = next((root / "templates" / FOLDERS[kind]).iterdir())
    tpl = torch.from_numpy(np.array(Image.open(png).convert("RGB"))).permute(2, 0, 1).float() / 255
    tpl = ((tpl - 0.5) / 0.5)[None]

    def generate(latent, direction=None):  # generate_from_synthesis with truncation 0.5
        code = latent if direction is None else latent + direction
        return G.synthesis(mean + psi * (code - mean), noise_mode="const")

    out = []
    with torch.no_grad():
        for wi, pi in zip(w, p):
            latent = wi[None, None].repeat(1, G.num_ws, 1)
            gt = pi[None, None]
            origin = generate(latent)
            inter = generate(latent, gt)
            outputs = fusion(origin, tpl, demo_maps(face3d, origin))
            out.append((origin, inter, generate(latent, outputs + gt)))
    return [torch.cat(t) for t in zip(*out)]


def save_image_normalized(img):
    """torchvision's save_image(normalize=True) of one image [3, H, W] -> uint8 [H, W, 3]."""
    x = img.clone()
    lo, hi = float(x.min()), float(x.max())
    x = (x.clamp(lo, hi) - lo) / max(hi - lo, 1e-5)
    return x.mul(255).add(0.5).clamp(0, 255).permute(1, 2, 0).to(torch.uint8).numpy()


def read_json_rows(path):
    return torch.tensor([v for _, v in sorted(json.loads(path.read_text()).items(), key=lambda kv: int(kv[0]))])


# -- tests ------------------------------------------------------------------------------------------

def test_trainer_checkpoint_loads_without_running_code(release, tmp_path):
    ckpt = read_checkpoint(release / "checkpoint030.pth")
    assert open(release / "checkpoint030.pth", "rb").read(2) == b"\x80\x02"  # the old, pre-zip format
    assert ckpt["epoch"] == 30 and ckpt["metrics_trace"].data["val"][0]["loss"] == 0.55
    assert type(ckpt["metrics_trace"]).__module__ == "latentedit.formats.unsup3d"  # the stand-in, not theirs
    assert isinstance(load_unsup3d(release / "checkpoint030.pth"), Face3D)

    marker = tmp_path / "ran"

    class Planted:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    state = trainer_checkpoint(Face3D(Face3DConfig(nf=16, zdim=16, nf_encoder=8)), Planted())
    torch.save(state, tmp_path / "evil.pth", _use_new_zipfile_serialization=False)
    with pytest.raises(FormatError, match="outside the allow-list"):
        load_unsup3d(tmp_path / "evil.pth")
    assert not marker.exists()
    # the newer zip format, without a trace, loads the same way
    state["metrics_trace"] = None
    torch.save(state, tmp_path / "ok.pth")
    assert read_checkpoint(tmp_path / "ok.pth")["metrics_trace"] is None


def test_demo_canonical_maps_match_unsup3d(release):
    face3d = load_unsup3d(release / "checkpoint030.pth")
    cfg = Face3DConfig.sdgan_demo()
    cfg.nf, cfg.zdim, cfg.nf_encoder = face3d.cfg.nf, face3d.cfg.zdim, face3d.cfg.nf_encoder
    ours = Face3D(cfg).eval()
    ours.load_state_dict(face3d.state_dict())
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.no_grad():
        got, want = ours(images)["maps"], demo_maps(face3d, images)
    assert got.shape == want.shape == (2, 9, 128, 128)
    # 8-bit maps: equal but for the rare value whose float rounding lands on the other side of a step
    differ = (got - want).abs() > 1e-5
    assert differ.float().mean() < 1e-3 and (got - want).abs().max() < 2 / 255 + 1e-5
    cfg.maps_uint8 = False
    exact = Face3D(cfg).eval()
    exact.load_state_dict(face3d.state_dict())
    with torch.no_grad():
        floats = exact(images)["maps"]
    assert (floats - got).abs().max() < 2 / 255 + 1e-5 and (floats - got).abs().max() > 1e-4  # quantised


def test_convert_and_synthesize_equal_test_py(release, tmp_path):
    w = read_json_rows(release / "data" / "w_glasses_test_1000.json")
    p = read_json_rows(release / "data" / "glasses_interfacegan_test_1000.json")
    want = reference(release, "sunglasses", w, p)
    # the Python route
    res = SDGANSynthesizer.load(release / "sdgan", "glasses")(w, p)
    via_model = le.load_model(release / "sdgan").synthesizer("glasses")(w, p)  # the model object's route
    for got, again, ref in zip((res.origin, res.prior_image, res.image),
                               (via_model.origin, via_model.prior_image, via_model.image), want):
        assert (got - ref).abs().max() < 1e-4 and torch.equal(got, again)
    assert (res.image - res.prior_image).abs().max() > 1e-2  # the offset does something
    # the command line, as README says
    out = tmp_path / "out"
    r = run("synthesize", "--model", release / "sdgan", "--kind", "glasses", "--w-file",
            release / "data" / "w_glasses_test_1000.json", "--interface-file",
            release / "data" / "glasses_interfacegan_test_1000.json", "--truncation", 0.5, "--normalize-output",
            "--out", out)
    assert r.exit_code == 0, r.output
    for folder, ref in zip(("origins", "interfacegan_origins", "predict_images"), want):
        for i in range(len(w)):
            png = np.asarray(Image.open(out / folder / f"{i:04d}.png")).astype(int)
            assert np.abs(png - save_image_normalized(ref[i]).astype(int)).max() <= 1
    final = np.load(out / "predict_latents.npy")
    assert final.shape == (3, 8, 512)
    assert json.loads((out / "manifest.json").read_text())["settings"]["truncation"] == 0.5


def test_sdgan_synthesize_resumes_bit_identically(release, tmp_path):
    """SD-GAN's path writes through the same resumable writer as ours: records, run.json, and a
    re-run after an interruption redoes whole batches and leaves every file as one run would."""
    args = ["synthesize", "--model", release / "sdgan", "--kind", "glasses", "--w-file",
            release / "data" / "w_glasses_test_1000.json", "--interface-file",
            release / "data" / "glasses_interfacegan_test_1000.json", "--batch-size", 2, "--out"]
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    for out in (whole, resumed):
        assert run(*args, out).exit_code == 0
    for name in ("records/0001.npy", "predict_images/0001.png", "origins/0002.png"):
        (resumed / name).unlink()
    r = run(*args, resumed)
    assert r.exit_code == 0 and "synthesizing 2 of 3" in r.output, r.output
    expected, got = ({p.relative_to(f): p.read_bytes() for p in f.rglob("*") if p.is_file()} for f in (whole, resumed))
    assert {"run.json", "records/0002.npy"} <= {str(k) for k in expected} and got == expected
    r = CliRunner().invoke(main, [str(a) for a in (*args[:-3], "--batch-size", 3, "--out", resumed)])
    assert r.exit_code == 2 and "other settings: batch_size was 2, now 3" in r.output, r.output


def test_bf16_precision(release, tmp_path, monkeypatch):
    """--precision bf16 (precision="bf16"): the generator's images within its bf16 bound (PSNR >= 40 dB
    against fp32, tests/test_generator_fastpaths.py) and not equal (bf16 ran); the offsets within
    tests/test_fusion.py's bf16 bound (0.2 relative, above 1e-3); recorded with the run; refused
    where no SD-GAN bundle is used."""
    w = read_json_rows(release / "data" / "w_glasses_test_1000.json")[:2]
    p = read_json_rows(release / "data" / "glasses_interfacegan_test_1000.json")[:2]
    fp32 = SDGANSynthesizer.load(release / "sdgan", "mask")(w, p)
    bf16 = SDGANSynthesizer.load(release / "sdgan", "mask", precision="bf16")(w, p)
    for a, b in ((fp32.origin, bf16.origin), (fp32.prior_image, bf16.prior_image), (fp32.image, bf16.image)):
        psnr = 10 * math.log10((a.max() - a.min()).item() ** 2 / (a - b).double().square().mean().item())
        assert 40 <= psnr < 100, psnr
    error = float((bf16.offset - fp32.offset).norm() / fp32.offset.norm())
    assert 1e-3 < error < 0.2, error
    monkeypatch.setattr(runtime, "bf16_conv_speedup", lambda device="cpu": 2.0)  # a CPU with bf16 arithmetic
    out = tmp_path / "out"
    args = ("synthesize", "--model", release / "sdgan", "--kind", "mask", "--w-file",
            release / "data" / "w_glasses_test_1000.json", "--interface-file",
            release / "data" / "glasses_interfacegan_test_1000.json", "--precision", "bf16")
    r = run(*args, "--out", out)
    assert r.exit_code == 0, r.output
    assert json.loads((out / "run.json").read_text())["precision"] == "bf16"
    assert json.loads((out / "manifest.json").read_text())["settings"]["precision"] == "bf16"
    # Where bf16 is the slower path (AVX2 only), the run is fp32's, and says so.
    monkeypatch.setattr(runtime, "bf16_conv_speedup", lambda device="cpu": 0.1)
    r = run(*args, "--out", tmp_path / "slow")
    assert r.exit_code == 0 and "note: bf16 runs slower than fp32" in r.output, r.output
    assert json.loads((tmp_path / "slow" / "manifest.json").read_text())["settings"]["precision"] == "fp32"
    assert "precision" not in json.loads((tmp_path / "slow" / "run.json").read_text())
    r = run("synthesize", "--kind", "mask", "--n", 1, "--precision", "bf16", "--out", tmp_path / "ours")
    assert "--precision" in error_line(r), r.output


def test_truncation_and_mean_latent_settings(release):
    bundle = release / "sdgan"
    w = read_json_rows(release / "data" / "w_glasses_test_1000.json")[:2]
    p = read_json_rows(release / "data" / "glasses_interfacegan_test_1000.json")[:2]
    # psi = 1: today's untruncated edit G(w + p + offset)
    synth = SDGANSynthesizer.load(bundle, "mask", truncation=1.0)
    res = synth(w, p)
    with torch.no_grad():
        direct = synth.G.synthesis(res.latents, noise_mode="const")
    assert (res.image - direct).abs().max() < 1e-5
    # a seeded mean of N samples: reproducible, seed-dependent, near the mapped mean
    G = synth.G
    a, b = mean_latent(G, "sampled", 512, seed=1), mean_latent(G, "sampled", 512, seed=2)
    assert torch.equal(a, mean_latent(G, "sampled", 512, seed=1)) and not torch.equal(a, b)
    s = SDGANSynthesizer.load(bundle, "mask", mean_source="sampled", mean_samples=512, mean_seed=1)
    assert torch.equal(s.mean, a) and s.truncation == 0.5
    with pytest.raises(InputError, match="samples must be >= 1"):  # 0 is refused, not read as "the default"
        SDGANSynthesizer.load(bundle, "mask", mean_source="sampled", mean_samples=0)
    with pytest.raises(InputError, match="apply to the sampled mean latent"):  # not silently unused
        SDGANSynthesizer.load(bundle, "mask", mean_samples=512)
    r1 = s(w, p)
    expected = a + 0.5 * (r1.latents - a)
    with torch.no_grad():
        assert (r1.image - G.synthesis(expected, noise_mode="const")).abs().max() < 1e-5


def test_prior_needs_an_interface_file(release, tmp_path):
    r = run("synthesize", "--model", release / "sdgan", "--kind", "mask", "--n", 2, "--out", tmp_path / "o")
    assert "interface file" in error_line(r), r.output
    assert not (tmp_path / "o" / "predict_images").exists()
    # An interface file for sampled codes: the count error says where the codes came from.
    r = run("synthesize", "--model", release / "sdgan", "--kind", "mask", "--interface-file",
            release / "data" / "glasses_interfacegan_test_1000.json", "--out", tmp_path / "o")
    line = error_line(r)
    assert "sampled: --n 16" in line and "--w-file" in line, r.output


def test_boundary_prior_and_default_output(release, tmp_path):
    w = read_json_rows(release / "data" / "w_glasses_test_1000.json")[:2]
    n = torch.randn(512, generator=torch.Generator().manual_seed(9))
    np.save(tmp_path / "eyeglasses_boundary.npy", (n / n.norm())[None].numpy())
    synth = SDGANSynthesizer.load(release / "sdgan", "frame_glasses", boundary=tmp_path / "eyeglasses_boundary.npy",
                                  distance=3.0)
    res = synth(w)
    unit = n / n.norm()
    assert torch.allclose(res.prior, (3.0 - w @ unit).clamp(min=0)[:, None] * unit, atol=1e-5)
    # default PNGs: the plain [-1, 1] mapping, not test.py's stretch
    r = run("synthesize", "--model", release / "sdgan", "--kind", "frame_glasses", "--n", 1, "--seed", 4,
            "--out", tmp_path / "o")
    assert r.exit_code == 2 and "interface file" in r.output  # seeds need a prior too
    w1 = load_generator(release / "sdgan").sample_w(1, seed=4)
    np.save(tmp_path / "w.npy", w1.numpy())
    np.save(tmp_path / "p.npy", np.zeros((1, 512), np.float32))
    r = run("synthesize", "--model", release / "sdgan", "--kind", "frame_glasses", "--w-file", tmp_path / "w.npy",
            "--interface-file", tmp_path / "p.npy", "--out", tmp_path / "o")
    assert r.exit_code == 0, r.output
    s = SDGANSynthesizer.load(release / "sdgan", "frame_glasses")
    with torch.no_grad():
        origin = s.G.synthesis(s.truncated(s.G.broadcast_w(w1)), noise_mode="const")
    png = np.asarray(Image.open(tmp_path / "o" / "origins" / "0000.png")).astype(int)
    plain = (origin[0].permute(1, 2, 0) * 127.5 + 128).clamp(0, 255).to(torch.uint8).numpy().astype(int)
    assert np.abs(png - plain).max() <= 1


@pytest.mark.parametrize("args, message", [
    (["--sdgan-fusion", "mask"], "KIND=PATH"),
    (["--sdgan-fusion", "hat=x.pt"], "unknown SD-GAN kind"),
    ([], "needs all of"),
])
def test_convert_errors_are_one_line(release, tmp_path, args, message):
    full = ["--unsup3d", release / "checkpoint030.pth", "--sdgan-templates", release / "templates"] if args else \
        ["--unsup3d", release / "checkpoint030.pth"]
    r = run("convert", release / "network-snapshot-020180.pt", tmp_path / "b", *full, *args)
    assert message in error_line(r), r.output


@pytest.mark.parametrize("case, message", [
    ("no templates folder", "no such folder"),
    ("unreadable template", "broken.png: not a readable image"),
    ("unsup3d file as a fusion", "allow-list, such as unsup3d.meters.MetricsTrace"),
])
def test_convert_checks_every_part_before_writing(release, tmp_path, case, message):
    """A bad part is refused before DST is touched (no half-made bundle that synthesize would then
    misreport), with one line naming it: a template no reader opens at convert, not at synthesize."""
    fusions = {kind: release / f"{kind}_checkpoint_latest.pt" for kind in FOLDERS}
    templates = release / "templates"
    if case == "no templates folder":
        templates = tmp_path / "nowhere"
    elif case == "unreadable template":
        templates = tmp_path / "templates"
        for folder in FOLDERS.values():
            (templates / folder).mkdir(parents=True)
            for png in (release / "templates" / folder).iterdir():
                (templates / folder / png.name).write_bytes(png.read_bytes())
        (templates / "glasses" / "broken.png").write_text("not a png")
    else:
        fusions["frame_glasses"] = release / "checkpoint030.pth"
    dst = tmp_path / "bundle"
    r = run("convert", release / "network-snapshot-020180.pt", dst, "--unsup3d", release / "checkpoint030.pth",
            *[a for kind, f in fusions.items() for a in ("--sdgan-fusion", f"{kind}={f}")],
            "--sdgan-templates", templates)
    assert message in error_line(r), r.output
    assert not dst.exists()


def test_template_warnings_are_lines(release, tmp_path):
    """A template folder's other files skipped and a template resized to the fusion network's input
    are said as `warning:` lines (not Python's two-line warnings), at convert and at synthesize."""
    templates = tmp_path / "templates" / "mask"
    templates.mkdir(parents=True)
    png = next((release / "templates" / "mask").iterdir())
    Image.open(png).resize((40, 40)).save(templates / png.name)
    (templates / "notes.txt").write_text("where these came from")
    r = run("convert", release / "network-snapshot-020180.pt", tmp_path / "b", "--unsup3d",
            release / "checkpoint030.pth", "--sdgan-fusion", f"mask={release / 'mask_checkpoint_latest.pt'}",
            "--sdgan-templates", templates.parent)
    warned = [line for line in r.output.splitlines() if line.startswith("warning: ")]
    assert r.exit_code == 0 and "UserWarning" not in r.output, r.output
    assert len(warned) == 2 and "notes.txt" in warned[0] and "resized 40x40 to 32x32" in warned[1], r.output
    assert "SD-GAN fusion (mask: 1 template)" in r.output  # the images a kind cycles through, counted
    r = run("synthesize", "--model", tmp_path / "b", "--kind", "mask", "--w-file",
            release / "data" / "w_glasses_test_1000.json", "--interface-file",
            release / "data" / "glasses_interfacegan_test_1000.json", "--out", tmp_path / "o")
    warned = [line for line in r.output.splitlines() if line.startswith("warning: ")]
    assert r.exit_code == 0 and len(warned) == 1 and "resized 40x40 to 32x32" in warned[0], r.output


def test_cpu_chunks_keep_each_sample_with_its_maps_and_template(release):
    """Batches above CPU_FUSION_CHUNK run the fusion network in chunks: each sample's offset is the
    one it gets alone (its face, maps and template i mod K), up to float rounding across batch
    sizes (measured <= 5e-7 relative; a sample given its neighbour's maps: ~3e-4, template: ~0.1)."""
    from latentedit.edit.sdgan import CPU_FUSION_CHUNK

    synth = SDGANSynthesizer.load(release / "sdgan", "mask")
    synth.templates = torch.cat([synth.templates, synth.templates.flip(-1)])  # K = 2: odd samples differ
    n = CPU_FUSION_CHUNK + 2
    with torch.no_grad():
        origin = synth.G.synthesis(synth.truncated(synth.G.broadcast_w(synth.G.sample_w(n, seed=3))))
        chunked = synth.offsets(origin, range(n))
        alone = torch.cat([synth.offsets(origin[i:i + 1], [i]) for i in range(n)])
        swapped = torch.cat([synth.offsets(origin[i:i + 1], [i + 1]) for i in range(n)])  # the other template
    scale = alone.norm(dim=(1, 2))
    assert ((chunked - alone).norm(dim=(1, 2)) / scale).max() < 1e-4
    assert ((swapped - alone).norm(dim=(1, 2)) / scale).min() > 1e-2
    w, p = synth.G.sample_w(2, seed=3), torch.zeros(2, 512)
    for codes, priors, indices in ((w, p, [0]), (w[:0], p[:0], None)):  # one sample number per code, >= 1 code
        with pytest.raises(InputError, match="one sample number per code"):
            synth(codes, priors, indices=indices)
