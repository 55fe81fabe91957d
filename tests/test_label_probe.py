"""A conditional D's label projection fitted as a probe of its features (train/label_probe.py)."""
import pytest
import torch

from latentedit.errors import InputError
from latentedit.models.discriminator import Discriminator
from latentedit.models.stylegan2 import DiscriminatorConfig
from latentedit.train.gan import GANConfig, GANTrainer
from latentedit.train.label_probe import fit_label_projection, fit_probe, last_features, probe_targets

from conftest import load_benchmark, run

SMALL = dict(resolution=16, channel_base=256, channel_max=32, batch=4)
SPANS = [(0, 2), (2, 3)]  # a three-way group (two columns + its reference class) and a yes / no one


def _labelled_images(n, seed):
    """Images whose labels show: the first group's class sets the red level, the second a bright
    lower half; plus noise. Labels one-hot per group, all zero for the reference class."""
    g = torch.Generator().manual_seed(seed)
    first, second = torch.randint(0, 3, [n], generator=g), torch.randint(0, 2, [n], generator=g)
    x = 0.3 * torch.randn(n, 3, 16, 16, generator=g)
    x[:, 0] += 2 * (first.float() - 1)[:, None, None]
    x[:, :, 8:] += second.float()[:, None, None, None]
    c = torch.zeros(n, 3)
    c[first < 2, first[first < 2]] = 1
    c[:, 2] = second.float()
    return x, c


def _logits(D, x, c=None, batch=32):
    """D's logits in the probe's batches (minibatch-std groups depend on the batch)."""
    return torch.cat([D(xb, None if c is None else cb) for xb, cb in zip(x.split(batch), (x if c is None else c).split(batch))])


def _D():
    torch.manual_seed(0)
    return Discriminator(DiscriminatorConfig(resolution=16, channel_base=256, channel_max=32, c_dim=3)).eval()


def test_probe_targets_name_the_reference_class_after_the_columns():
    c = torch.tensor([[1.0, 0, 0], [0, 1, 1], [0, 0, 1], [0, 0, 0]])
    assert probe_targets(c, SPANS).tolist() == [[0, 1], [1, 0], [2, 0], [2, 1]]


def test_fitted_projection_adds_the_probe_logit_of_the_label_and_reads_the_images():
    D = _D()
    x, c = _labelled_images(256, 0)
    with torch.no_grad():
        plain = _logits(D, x)
    accuracy = fit_label_projection(D, x, c, SPANS)
    # the cues are plain to any features: far above always guessing the commonest class (~1/3, ~1/2)
    assert accuracy[0] > 0.9 and accuracy[1] > 0.9, accuracy
    h = last_features(D, x)
    V = fit_probe(h, c, SPANS, weight_decay=1e-2)  # the same fit, independently of D.project
    with torch.no_grad():
        assert torch.equal(_logits(D, x), plain)  # the unconditional term is untouched
        for col in range(3):
            one = torch.zeros(len(x), 3)
            one[:, col] = 1
            got = (_logits(D, x, one) - plain)[:, 0]
            want = h @ V[col]
            assert (got - want).abs().max() <= 1e-3 * (1 + want.abs().max()), col
        # held-out images: D now prefers a face's true label to a wrong one
        y, cy = _labelled_images(128, 1)
        wrong = cy.clone()
        wrong[:, 2] = 1 - wrong[:, 2]
        assert ((_logits(D, y, cy) - _logits(D, y, wrong)) > 0).float().mean() > 0.9
    with pytest.raises(InputError, match="conditional D"):
        fit_label_projection(D, x, c[:, :2], [(0, 2)])


def test_features_from_chunks_equal_the_features_of_the_whole():
    D = _D()
    x, _ = _labelled_images(96, 2)
    chunks = (chunk.clone() for chunk in x.split(64))  # consumed as they come, as the trainer's renders
    assert torch.equal(last_features(D, chunks), last_features(D, x))


def test_a_warm_start_fits_the_probe_only_where_the_bundle_has_no_projection(tmp_path):
    a = GANTrainer(GANConfig(**SMALL), tmp_path / "a")
    a.export_bundle(tmp_path / "plain")
    cfg = GANConfig(**SMALL, labels=["glasses", "mask"], label_probe=64)
    b = GANTrainer(cfg, tmp_path / "b")
    b.init_from(tmp_path / "plain")
    assert len(b.label_probe_accuracy) == 2 and b.D.project.weight.abs().max() > 0
    img = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.equal(a.D(img), b.D(img))
    b.export_bundle(tmp_path / "cond")
    again = GANTrainer(cfg, tmp_path / "c")
    again.init_from(tmp_path / "cond")  # conditional already: its learnt projection is kept
    assert not hasattr(again, "label_probe_accuracy")
    assert torch.equal(again.D.project.weight, b.D.project.weight)
    # label_adherence.py's D margin: nothing where the projection is zero, something once fitted
    bench = load_benchmark("label_adherence")
    zero = GANTrainer(GANConfig(**SMALL, labels=["glasses", "mask"]), tmp_path / "d")
    for D, fitted in ((zero.D, False), (b.D, True)):
        margin = bench.label_margin(D.eval(), ["glasses", "mask"], 32)
        assert set(margin) == {"frame", "sun", "mask"}
        values = [abs(v) for r in margin.values() for v in (r["wearing"], r["not_wearing"]) if v is not None]
        assert (max(values) > 1e-3) == fitted, margin
    for bad in (dict(label_probe=8), dict(labels=["mask"], label_probe=-4), dict(labels=["mask"], label_probe=1.5),
                dict(labels=["mask"], label_probe=6), dict(labels=["mask"], label_probe=True)):
        with pytest.raises(InputError, match="label_probe"):
            GANConfig(**SMALL, **bad)


def test_train_gan_label_probe_flag(tmp_path):
    small = ["--resolution", "16", "--channel-base", "256", "--channel-max", "32", "--batch", "4"]
    GANTrainer(GANConfig(**SMALL), tmp_path / "a").export_bundle(tmp_path / "plain")
    r = run("train", "gan", "--out", tmp_path / "run", *small, "--labels", "mask", "--label-probe", "32",
            "--init-from", tmp_path / "plain", "--kimg", "0.004", "--snapshot-kimg", "0.004")
    assert r.exit_code == 0 and "label probe: D's projection fitted, accuracy per group on its renders (in-sample) mask" in r.output
    r = run("train", "gan", "--out", tmp_path / "cold", *small, "--labels", "mask", "--label-probe", "32", "--kimg", "0.004")
    assert r.exit_code == 2 and "give --init-from an unconditional bundle" in r.output
