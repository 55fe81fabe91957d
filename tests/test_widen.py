"""Warm-starting a wider GAN (channel_base / channel_max grown): the generator is exactly the trained
one, the discriminator too except for its minibatch-std input, and the new channels can learn."""
import pytest
import torch

from latentedit.errors import InputError
from latentedit.models.discriminator import Discriminator
from latentedit.models.stylegan2 import DiscriminatorConfig, Generator, GeneratorConfig
from latentedit.train.gan import GANConfig, GANTrainer
from latentedit.train.widen import widen_into

NARROW = dict(resolution=16, channel_base=256, channel_max=32)
WIDE = dict(resolution=16, channel_base=512, channel_max=64)  # every resolution's width grows


def _trained_like(module, seed):
    """Random weights away from the initialisation (biases non-zero, weights not N(0, 1))."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return module


def test_widened_generator_draws_the_same_images_and_its_new_channels_learn():
    torch.manual_seed(0)
    narrow = _trained_like(Generator(GeneratorConfig(**NARROW)), 1).eval()
    wide = widen_into(narrow.state_dict(), Generator(GeneratorConfig(**WIDE))).eval()
    assert wide.synthesis.b4.conv1.weight.shape[0] > narrow.synthesis.b4.conv1.weight.shape[0]
    z = torch.randn(3, narrow.z_dim, generator=torch.Generator().manual_seed(2))
    for fast in (False, True):
        a = narrow(z, noise_mode="const", fast=fast)
        b = wide(z, noise_mode="const", fast=fast)
        scale = a.abs().max()
        assert (a - b).abs().max() <= 1e-5 * scale, (fast, (a - b).abs().max(), scale)
    # The zeroed block (new inputs -> old outputs) receives a gradient: the old channels can start
    # using the new ones.
    wide.train()
    wide(z, noise_mode="const").square().mean().backward()
    conv = wide.synthesis.b8.conv1
    old_out, old_in = narrow.synthesis.b8.conv1.weight.shape[:2]
    assert conv.weight[:old_out, old_in:].abs().max() == 0
    assert conv.weight.grad[:old_out, old_in:].abs().max() > 0


def test_widened_discriminator_matches_but_for_the_minibatch_std_feature():
    torch.manual_seed(0)
    narrow = _trained_like(Discriminator(DiscriminatorConfig(**NARROW)), 3)
    wide = widen_into(narrow.state_dict(), Discriminator(DiscriminatorConfig(**WIDE)), mbstd_channels=1)
    img = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        before = narrow(img), wide(img)
        # The std channel is the last input of the epilogue conv in both: silence it in both.
        narrow.b4.conv.weight[:, -1] = 0
        wide.b4.conv.weight[:, -1] = 0
        a, b = narrow(img), wide(img)
    assert (a - b).abs().max() <= 1e-5 * a.abs().max()
    assert not torch.allclose(*before, atol=1e-6)  # it does move: averaged over the new channels too


def test_narrowing_and_other_changes_are_refused(tmp_path):
    wide = Generator(GeneratorConfig(**WIDE))
    with pytest.raises(InputError, match="widen"):
        widen_into(wide.state_dict(), Generator(GeneratorConfig(**NARROW)))
    trainer = GANTrainer(GANConfig(**NARROW, batch=4), tmp_path / "a")
    trainer.export_bundle(tmp_path / "bundle")
    with pytest.raises(InputError, match="n_mlp"):
        GANTrainer(GANConfig(**WIDE, batch=4, n_mlp=4), tmp_path / "b").init_from(tmp_path / "bundle")


def _narrow_bundle(tmp_path):
    """A narrow trainer after one step, its bundle exported to tmp_path / "bundle" -> the trainer."""
    a = GANTrainer(GANConfig(**NARROW, batch=4), tmp_path / "a")
    a.train_step()
    a.export_bundle(tmp_path / "bundle")
    return a


def test_trainer_warm_starts_a_wider_run_from_a_narrower_bundle(tmp_path):
    a = _narrow_bundle(tmp_path)
    b = GANTrainer(GANConfig(**WIDE, batch=4), tmp_path / "b")
    b.init_from(tmp_path / "bundle")
    z = torch.randn(2, a.G.z_dim, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want = a.G_ema(z, noise_mode="const")
        for net in (b.G, b.G_ema):
            assert (net(z, noise_mode="const") - want).abs().max() <= 1e-5 * want.abs().max()
    assert torch.isfinite(torch.tensor(b.train_step()["loss_G"]))


def test_a_wider_discriminator_alone_keeps_the_generator_and_the_critic(tmp_path):
    """--d-channel-base: only D grows; G starts as the bundle's exactly, D as its function (std
    feature silenced), and the bundle the run exports keeps D's own width."""
    from latentedit.formats import load_networks

    a = _narrow_bundle(tmp_path)
    b = GANTrainer(GANConfig(**NARROW, d_channel_base=2 * NARROW["channel_base"], batch=4), tmp_path / "b")
    b.init_from(tmp_path / "bundle")
    assert b.D.b16.conv0.weight.shape[0] == 2 * a.D.b16.conv0.weight.shape[0]
    for name, value in a.G_ema.state_dict().items():
        assert torch.equal(b.G.state_dict()[name], value), name
    img = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        for D in (a.D, b.D):
            D.b4.conv.weight[:, -1] = 0
        want = a.D(img)
        assert (b.D(img) - want).abs().max() <= 1e-5 * want.abs().max()
    assert torch.isfinite(torch.tensor(b.train_step()["loss_D"]))
    b.export_bundle(tmp_path / "wide_d")
    nets = load_networks(tmp_path / "wide_d")
    assert nets.D.cfg.channel_base == 2 * NARROW["channel_base"]
    assert nets.G.cfg.channel_base == NARROW["channel_base"]
    with pytest.raises(InputError, match="d_channel_base"):
        GANConfig(**NARROW, d_channel_base=0)
