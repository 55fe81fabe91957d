"""The loss protocol (latentedit.edit.losses): LPIPS, ArcFace-like and our own evaluators drive
invert / project alike; anything else is one InputError, never an AttributeError."""
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import latentedit as le
from latentedit.edit.losses import evaluator_losses, identity_loss, perceptual_loss
from latentedit.edit.inversion import project, synthesize_with_noise
from latentedit.errors import InputError
from latentedit.models.evaluators import AttributeClassifier, ClassifierConfig
from latentedit.models.lpips import LPIPS

from conftest import run


torch.set_num_threads(1)
RANDOM = ["--random-weights", "--resolution", "16", "--channel-base", "512", "--channel-max", "32"]


class StandInArcFace(nn.Module):
    """The contract of formats.arcface.load_arcface: images in [-1, 1] of any size -> unit 512-d
    embeddings; no cfg, no features (its own 112 px resize inside)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.conv = nn.Conv2d(3, 8, 3, 2, 1)
        self.fc = nn.Linear(8 * 56 * 56, 512)

    def forward(self, x):
        x = F.interpolate(x, size=(112, 112), mode="bilinear", align_corners=False)
        return F.normalize(self.fc(F.relu(self.conv(x)).flatten(1)), dim=1)


@pytest.fixture(scope="module")
def lpips():
    torch.manual_seed(1)
    net = LPIPS("vgg")
    for w in net.lins:
        w.uniform_(0, 1)
    return net.eval()


def test_lpips_distance_is_plain_in_project(G, lpips):
    """LPIPS-faithful: project's perceptual loss is the LPIPS distance itself (not divided by the
    target's feature norm); at step 0 without exploration noise the code is w_avg."""
    target = G.synthesize(G.sample_w(2, seed=4), noise_mode="const")
    r = project(G, target, steps=1, perceptual=lpips, initial_noise_factor=0)
    with torch.no_grad():
        start = synthesize_with_noise(G, G.w_avg.reshape(1, 1, -1).repeat(2, G.num_ws, 1))
        expected = lpips(start, target)
    assert expected.min() > 1e-3
    assert torch.allclose(r.history["perceptual"][0], expected, rtol=1e-4, atol=1e-6)
    # the attribute classifier's features stay relative to the target's norm
    torch.manual_seed(0)
    clf = AttributeClassifier(ClassifierConfig(image_size=32, channels=[8, 16])).eval()
    loss = perceptual_loss(clf)
    with torch.no_grad():
        f_t = clf.features(F.interpolate(target, size=32, mode="bilinear", antialias=True))
        f_s = clf.features(F.interpolate(start, size=32, mode="bilinear", antialias=True))
        assert torch.allclose(loss.distance(loss.features(start), loss.features(target)),
                              (f_s - f_t).square().sum(1) / f_t.square().sum(1), rtol=1e-4)


def test_foreign_networks_drive_invert(G, lpips):
    target = G.synthesize(G.sample_w(2, seed=11))
    arcface = StandInArcFace().eval()
    r = le.invert(target, G=G, perceptual=lpips, identity=arcface, steps=12, return_result=True)
    assert set(r.history) == {"total", "pixel", "perceptual", "identity"}
    assert (r.history["total"][-1] < r.history["total"][0]).all()
    assert all(p.grad is None for m in (lpips, arcface) for p in m.parameters())
    # the same networks as an evaluator dict (what crashed with AttributeError: no 'cfg' / 'features')
    r2 = le.invert(target, G=G, evaluators={"attributes": lpips, "identity": arcface}, steps=12,
                   return_result=True)
    assert torch.equal(r2.codes, r.codes)


def test_anything_else_is_one_input_error(G, lpips):
    target = G.synthesize(G.sample_w(1, seed=2))
    with pytest.raises(InputError, match="cannot be the perceptual network: it has no features"):
        le.invert(target, G=G, perceptual=nn.Linear(3, 3), steps=1)
    with pytest.raises(InputError, match="cannot be the perceptual network"):
        le.invert(target, G=G, evaluators={"attributes": StandInArcFace()}, steps=1)
    with pytest.raises(InputError, match="cannot be the identity network"):
        le.invert(target, G=G, identity=lpips, steps=1)
    with pytest.raises(InputError, match="cannot be the identity network"):
        identity_loss(42)
    with pytest.raises(InputError, match=r"identity network should return a tensor \[1, \.\.\.\]"):
        le.invert(target, G=G, identity=lambda x: {"e": x}, steps=1)
    with pytest.raises(InputError, match=r"the identity network failed on images \[1, 3, 16, 16\]"):
        le.invert(target, G=G, identity=nn.Linear(3, 3), steps=1)  # a module that is no image network
    with pytest.raises(InputError, match="evaluators must be a dict"):
        evaluator_losses([lpips])



def test_cli_lpips_and_arcface(tmp_path, monkeypatch):
    from PIL import Image

    from latentedit.formats import lpips as lpips_format
    import latentedit.edit.losses as losses

    Image.fromarray(torch.randint(0, 255, (16, 16, 3), dtype=torch.uint8).numpy()).save(tmp_path / "face.png")
    torch.manual_seed(0)
    trunk = {f"features.{k}": v for k, v in LPIPS("vgg").trunk.features.state_dict().items()}
    torch.save(trunk, tmp_path / "vgg16.pth")
    monkeypatch.setattr(lpips_format, "package_lin_path", lambda variant: None)  # the lpips package absent
    r = run("invert", tmp_path / "face.png", "--out", tmp_path / "o1", *RANDOM, "--steps", "2",
            "--lpips", f"{tmp_path / 'vgg16.pth'}:vgg")
    assert r.exit_code == 2 and "install the lpips package" in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "o1").exists()
    r = run("invert", tmp_path / "face.png", "--out", tmp_path / "o2", *RANDOM, "--steps", "2",
            "--lpips", f"{tmp_path / 'vgg16.pth'}:alex")
    assert r.exit_code == 2 and "holds a vgg trunk, not alex" in r.output, r.output

    lin = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate((64, 128, 256, 512, 512))}
    torch.save(lin, tmp_path / "vgg.pth")
    monkeypatch.setattr(lpips_format, "package_lin_path", lambda variant: tmp_path / f"{variant}.pth")
    monkeypatch.setattr(losses, "load_identity", lambda path: StandInArcFace())
    r = run("invert", tmp_path / "face.png", "--out", tmp_path / "o3", *RANDOM, "--steps", "2",
            "--lpips", tmp_path / "vgg16.pth", "--arcface", tmp_path / "model_ir_se50.pth")
    assert r.exit_code == 0, r.output
    assert "losses: pixel + perceptual (LPIPS) + identity (ArcFace)" in r.output
    assert (tmp_path / "o3" / "face.npy").exists()


def test_encoder_training_takes_lpips_and_arcface(tmp_path, monkeypatch, lpips):
    from latentedit.formats import DEFAULT_BUNDLE
    from latentedit.formats import lpips as lpips_format
    from latentedit.train.encoder import EncoderTrainConfig, EncoderTrainer
    import latentedit.edit.losses as losses

    torch.save({f"features.{k}": v for k, v in lpips.trunk.features.state_dict().items()}, tmp_path / "vgg16.pth")
    lins = {f"lin{k}.model.1.weight": w.reshape(1, -1, 1, 1) for k, w in enumerate(lpips.lins)}
    torch.save(lins, tmp_path / "vgg.pth")
    monkeypatch.setattr(lpips_format, "package_lin_path", lambda variant: tmp_path / f"{variant}.pth")
    arcface = StandInArcFace().eval()
    monkeypatch.setattr(losses, "load_identity", lambda path: arcface)
    cfg = EncoderTrainConfig(batch=4, progressive_every=1, snapshot=1000, log_every=1, w_attributes=0,
                             lpips=str(tmp_path / "vgg16.pth"), arcface=str(tmp_path / "model_ir_se50.pth"))
    t = EncoderTrainer(cfg, DEFAULT_BUNDLE, tmp_path / "run")
    assert t.clf is None  # neither the classifier nor the identity embedder is read
    with torch.no_grad():
        x = t.G.synthesize(t.G.sample_w(2, seed=3))
        _, out, y, _ = t.losses(x)
        xc, yc = x.clamp(-1, 1), y.clamp(-1, 1)
        assert torch.allclose(out["perceptual"], lpips(yc, xc).mean(), rtol=1e-4)
        assert torch.allclose(out["identity"], (1 - (arcface(yc) * arcface(xc)).sum(1)).mean(), rtol=1e-4, atol=1e-6)
    assert "attributes" not in out


def test_identity_similarity_of_edits():
    from latentedit.metrics.image import identity_similarity
    from latentedit.models.evaluators import IdentityConfig, IdentityEmbedder

    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 16, 16, generator=g) * 2.4 - 1.2  # out of range: clamped as the images are
    y = x.flip(0)
    torch.manual_seed(0)
    emb = IdentityEmbedder(IdentityConfig(image_size=32, channels=[8, 16], embed_dim=8)).eval()
    with torch.no_grad():
        ex, ey = (emb(F.interpolate(t.clamp(-1, 1), size=32, mode="bilinear", antialias=True)) for t in (x, y))
    sim = identity_similarity(x, y, emb)
    assert torch.allclose(sim, (ex * ey).sum(1), atol=1e-5)
    arc = StandInArcFace().eval()
    sim = identity_similarity(x, y, arc)
    with torch.no_grad():
        assert torch.allclose(sim, (arc(x.clamp(-1, 1)) * arc(y.clamp(-1, 1))).sum(1), atol=1e-5)
    assert sim[1] == pytest.approx(1.0, abs=1e-5) and sim[0] < 0.99, sim  # the middle image: with itself


def test_cli_train_encoder_with_lpips_and_arcface(tmp_path, monkeypatch, lpips):
    import json

    from latentedit.formats import DEFAULT_BUNDLE
    from latentedit.formats import lpips as lpips_format
    import latentedit.edit.losses as losses

    torch.save({f"features.{k}": v for k, v in lpips.trunk.features.state_dict().items()}, tmp_path / "vgg16.pth")
    lins = {f"lin{k}.model.1.weight": w.reshape(1, -1, 1, 1) for k, w in enumerate(lpips.lins)}
    torch.save(lins, tmp_path / "vgg.pth")
    monkeypatch.setattr(lpips_format, "package_lin_path", lambda variant: tmp_path / f"{variant}.pth")
    monkeypatch.setattr(losses, "load_identity", lambda path: StandInArcFace())
    run_dir = tmp_path / "run"
    args = ["train", "encoder", "--bundle", DEFAULT_BUNDLE, "--out", run_dir, "--batch", 2, "--threads", 1,
            "--snapshot", 1000]
    r = run(*args, "--steps", 1, "--lpips", f"{tmp_path / 'vgg16.pth'}:vgg", "--arcface", tmp_path / "arc.pth")
    assert r.exit_code == 0, r.output
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["lpips"] == f"{tmp_path / 'vgg16.pth'}:vgg" and saved["arcface"] == str(tmp_path / "arc.pth")
    r = run(*args, "--steps", 2, "--resume", "--lpips", tmp_path / "vgg16.pth")
    assert r.exit_code == 2 and "--lpips" in r.output and "conflicts" in r.output, r.output
