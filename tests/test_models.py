"""Generator and discriminator behaviour: determinism, truncation, W/W+, noise, mixing, bad input."""
import pytest
import torch

from latentedit.errors import InputError
from latentedit.models.stylegan2 import DiscriminatorConfig, Generator, GeneratorConfig, truncate, z_from_seeds


def test_same_seed_same_images(tiny_G):
    w1 = tiny_G.sample_w(3, seed=5, truncation=0.7)
    w2 = tiny_G.sample_w(3, seed=5, truncation=0.7)
    assert torch.equal(w1, w2)
    with torch.no_grad():
        assert torch.equal(tiny_G.synthesize(w1), tiny_G.synthesize(w2))
    # a seed's latent does not depend on the batch it is drawn in (up to matmul rounding)
    torch.testing.assert_close(tiny_G.sample_w(seeds=[6])[0], tiny_G.sample_w(3, seed=5)[1], rtol=0, atol=1e-5)


def test_seeds_draw_numpy_randomstate_z():
    import numpy as np

    z = z_from_seeds([0, 42], 512)
    assert torch.allclose(z[1].double(), torch.from_numpy(np.random.RandomState(42).randn(512)), atol=1e-6)


def test_psi_zero_gives_w_avg_image(tiny_G):
    z = torch.randn(4, tiny_G.z_dim)
    with torch.no_grad():
        img = tiny_G(z, truncation_psi=0.0, noise_mode="const")
        avg = tiny_G.synthesize(tiny_G.w_avg[None])
    assert torch.allclose(img, avg.expand_as(img), atol=1e-5)


def test_truncation_cutoff_only_touches_first_layers(tiny_G):
    ws = torch.randn(2, tiny_G.num_ws, tiny_G.w_dim)
    out = truncate(ws, tiny_G.w_avg, psi=0.5, cutoff=3)
    assert torch.equal(out[:, 3:], ws[:, 3:])
    torch.testing.assert_close(out[:, :3], tiny_G.w_avg + 0.5 * (ws[:, :3] - tiny_G.w_avg))


def test_w_equals_broadcast_w_plus(tiny_G):
    w = tiny_G.sample_w(2, seed=0)
    with torch.no_grad():
        a = tiny_G.synthesize(w)
        b = tiny_G.synthesize(w[:, None].repeat(1, tiny_G.num_ws, 1))
    assert torch.equal(a, b)


def test_fused_and_unfused_modconv_agree(tiny_G):
    ws = tiny_G.broadcast_w(tiny_G.sample_w(3, seed=1))
    with torch.no_grad():
        a = tiny_G.synthesis(ws, noise_mode="const", fused_modconv=True)
        b = tiny_G.synthesis(ws, noise_mode="const", fused_modconv=False)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-4)


def test_noise_modes(tiny_G):
    w = tiny_G.sample_w(2, seed=3)
    with torch.no_grad():
        r1, r2 = tiny_G.synthesize(w, noise_mode="random"), tiny_G.synthesize(w, noise_mode="random")
        c1, c2 = tiny_G.synthesize(w, noise_mode="const"), tiny_G.synthesize(w, noise_mode="const")
        none = tiny_G.synthesize(w, noise_mode="none")
        for m in tiny_G.modules():
            if hasattr(m, "noise_strength"):
                m.noise_strength.zero_()
        zero_strength = tiny_G.synthesize(w, noise_mode="const")
    assert not torch.equal(r1, r2)
    assert torch.equal(c1, c2)
    assert not torch.equal(c1, none)
    assert torch.equal(none, zero_strength)
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    with torch.no_grad():
        assert torch.equal(tiny_G.synthesize(w, noise_mode="random", generator=g1),
                           tiny_G.synthesize(w, noise_mode="random", generator=g2))


def test_style_mixing_uses_each_source_on_its_layers(tiny_G):
    a = tiny_G.broadcast_w(tiny_G.sample_w(1, seed=0))
    b = tiny_G.broadcast_w(tiny_G.sample_w(1, seed=1))
    mixed = Generator.mix_styles(a, b, crossover=2)
    assert torch.equal(mixed[:, :2], a[:, :2]) and torch.equal(mixed[:, 2:], b[:, 2:])
    with torch.no_grad():
        img_a, img_mixed = tiny_G.synthesize(a), tiny_G.synthesize(mixed)
    assert not torch.equal(img_a, img_mixed)


def test_bad_latents_are_refused(tiny_G):
    with pytest.raises(InputError, match="latents must have shape"):
        tiny_G.synthesize(torch.randn(2, 100))
    with pytest.raises(InputError, match="latents must have shape"):
        tiny_G.synthesize(torch.randn(2, tiny_G.num_ws + 1, tiny_G.w_dim))
    w = torch.randn(2, tiny_G.w_dim)
    w[1, 3] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        tiny_G.synthesize(w)
    with pytest.raises(InputError, match="noise_mode"):
        tiny_G.synthesize(torch.randn(1, tiny_G.w_dim), noise_mode="loud")


def test_config_sizes():
    cfg = GeneratorConfig()  # config-f 1024
    assert cfg.num_ws == 18 and cfg.channels(1024) == 32 and cfg.channels(64) == 512
    assert GeneratorConfig(resolution=256).num_ws == 14
    with pytest.raises(InputError, match="power of two"):
        GeneratorConfig(resolution=100)


def test_discriminator_shapes_and_mbstd(tiny_D):
    img = torch.randn(8, 3, 16, 16)
    with torch.no_grad():
        logits = tiny_D(img)
        assert logits.shape == (8, 1)
        # the minibatch-std feature makes a sample's score depend on the others in its group
        alone = tiny_D(torch.cat([img[:1], torch.zeros(3, 3, 16, 16)]))
    assert not torch.allclose(logits[0], alone[0])


def test_training_mode_tracks_w_avg(tiny_G):
    before = tiny_G.w_avg.clone()
    tiny_G.train()
    tiny_G.mapping(torch.randn(4, tiny_G.z_dim))
    assert not torch.equal(before, tiny_G.w_avg)
    tiny_G.eval()
    after = tiny_G.w_avg.clone()
    tiny_G.mapping(torch.randn(4, tiny_G.z_dim))
    assert torch.equal(after, tiny_G.w_avg)


@pytest.mark.parametrize("cls", [GeneratorConfig, DiscriminatorConfig])
def test_configs_check_their_values(cls):
    with pytest.raises(InputError, match="power of two"):
        cls(resolution=100)
    with pytest.raises(InputError, match="channel_max must be an integer"):
        cls(channel_max=-1)
    assert cls.from_dict(cls(resolution=64).to_dict()) == cls(resolution=64)
