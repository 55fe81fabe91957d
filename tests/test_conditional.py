"""Conditional networks: labels drawn from z at the prior, NVlabs' conditional mapping (checked
against an independent implementation of their maths), the projection discriminator, an
unconditional run gaining labels as the same function, and the world's labels."""
import math

import pytest
import torch
import torch.nn.functional as F

from latentedit import world
from latentedit.errors import FormatError, InputError
from latentedit.formats import load_networks, save_networks
from latentedit.models.discriminator import Discriminator
from latentedit.models.stylegan2 import DiscriminatorConfig, Generator, GeneratorConfig, label_spans, with_class
from latentedit.train.gan import GANConfig, GANTrainer
from latentedit.train.widen import is_widening
from latentedit.world.labels import face_labels, label_names, label_prior

from conftest import TINY, randomize, run
from test_formats import write_nvlabs_pkl

PRIOR = [[0.2, 0.15], [0.15], [0.5]]
SMALL = dict(resolution=16, channel_base=256, channel_max=32, batch=4)


def _conditional_G(prior=PRIOR, c_dim=4):
    torch.manual_seed(0)
    return randomize(Generator(GeneratorConfig(**TINY, c_dim=c_dim, label_prior=prior))).eval()


def test_labels_drawn_from_z_follow_the_prior_per_group_and_independently():
    G = _conditional_G()
    z = torch.randn(40_000, G.z_dim, generator=torch.Generator().manual_seed(1))
    c = G.mapping.labels_from_z(z)
    rates = c.mean(0)
    # binomial standard error at 40,000 draws is <= 0.0025: 0.012 is about 5 of them
    for got, want in zip(rates.tolist(), [0.2, 0.15, 0.15, 0.5]):
        assert abs(got - want) < 0.012, (rates, want)
    assert c[:, :2].sum(1).max() == 1  # one class per group at most: frame and sun never together
    both = (c[:, 0] * c[:, 2]).mean()  # frame and mask: independent groups
    assert abs(both - 0.2 * 0.15) < 0.006
    assert torch.equal(G.mapping.labels_from_z(z[:7]), c[:7])  # a seed keeps its labels in any batch
    # the same z with and without the drawn label: one mapping
    assert torch.equal(G.mapping(z[:5]), G.mapping(z[:5], c[:5]))
    assert not torch.allclose(G.mapping(z[:5]), G.mapping(z[:5], 1 - c[:5]))


def test_label_prior_and_c_dim_are_checked():
    with pytest.raises(InputError, match="c_dim is 5"):
        GeneratorConfig(**TINY, c_dim=5, label_prior=PRIOR)
    with pytest.raises(InputError, match="summing to <= 1"):
        GeneratorConfig(**TINY, c_dim=2, label_prior=[[0.7, 0.6]])
    G = Generator(GeneratorConfig(**TINY, c_dim=3))  # NVlabs' conditional: no prior, c must be given
    z = torch.randn(2, G.z_dim)
    with pytest.raises(InputError, match=r"conditional: c must be a label \[2, 3\]"):
        G(z)
    with pytest.raises(InputError, match="NaN"):
        G(z, torch.full([2, 3], float("nan")))
    assert G(z, torch.eye(3)[:2]).shape == (2, 3, 16, 16)


def test_w_offset_labels_add_one_learnt_w_vector_per_class():
    torch.manual_seed(0)
    G = Generator(GeneratorConfig(**TINY, c_dim=4, label_prior=PRIOR, label_input="w_offset")).eval()
    z = torch.randn(5, G.z_dim, generator=torch.Generator().manual_seed(2))
    c = G.mapping.labels_from_z(z)
    bare = G.mapping(z, torch.zeros_like(c))
    assert torch.equal(G.mapping(z), bare)  # zero offsets: the labels change nothing yet
    with torch.no_grad():
        G.mapping.label_offset.weight.normal_()
    # a class's offset is its column as stored: the lr multiplier cancels the fan-in gain
    want = bare + (c @ G.mapping.label_offset.weight.t())[:, None]
    assert (G.mapping(z) - want).abs().max() <= 1e-5 * want.abs().max()
    assert not hasattr(G.mapping, "embed") and G.mapping.fc0.weight.shape[1] == G.z_dim
    with pytest.raises(InputError, match="label_input"):
        GeneratorConfig(**TINY, c_dim=4, label_prior=PRIOR, label_input="film")


def _nvlabs_mapping(sd, z, c, num_layers, lr_multiplier=0.01):
    """NVlabs' MappingNetwork.forward written from their maths: normalised z beside the normalised
    label embedding, then equalised-lr lrelu layers (gain sqrt 2)."""
    def fc(x, name, lr_mul, act):
        w, b = sd[f"{name}.weight"], sd[f"{name}.bias"]
        x = x @ (w * (lr_mul / math.sqrt(w.shape[1]))).t() + b * lr_mul
        return F.leaky_relu(x, 0.2) * math.sqrt(2) if act else x

    def normalise(x):
        return x * (x.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()

    x = torch.cat([normalise(z), normalise(fc(c, "mapping.embed", 1.0, False))], dim=1)
    for i in range(num_layers):
        x = fc(x, f"mapping.fc{i}", lr_multiplier, True)
    return x


def test_nvlabs_conditional_generator_loads_and_maps_as_theirs(tmp_path):
    G = _conditional_G(prior=None, c_dim=3)
    write_nvlabs_pkl(tmp_path / "cond.pkl", {"G_ema": G}, tmp_path / "marker")
    nets = load_networks(tmp_path / "cond.pkl")
    assert nets.G.c_dim == 3 and nets.G.cfg.label_prior is None
    z = torch.randn(4, G.z_dim, generator=torch.Generator().manual_seed(3))
    c = torch.eye(3)[[0, 1, 2, 0]]
    with torch.no_grad():
        ours = nets.G.mapping(z, c)[:, 0]
        theirs = _nvlabs_mapping({k: v.float() for k, v in G.state_dict().items()}, z, c, G.cfg.n_mlp)
    assert (ours - theirs).abs().max() <= 1e-5 * theirs.abs().max()
    with pytest.raises(InputError, match="conditional"):
        nets.G.sample_w(2)  # a label is needed, and no prior says how to draw one


def test_conditional_nvlabs_discriminator_is_left_out_with_a_note(tmp_path, tiny_D, monkeypatch):
    import test_formats

    G = _conditional_G(prior=None, c_dim=3)
    original = test_formats.nvlabs_init_kwargs
    monkeypatch.setattr(test_formats, "nvlabs_init_kwargs",
                        lambda net: dict(original(net), c_dim=3) if isinstance(net, Discriminator) else original(net))
    write_nvlabs_pkl(tmp_path / "cond.pkl", {"G_ema": G, "D": tiny_D}, tmp_path / "marker")
    nets = load_networks(tmp_path / "cond.pkl")
    assert nets.G is not None and nets.D is None and "conditional" in nets.info["discriminator"]


def test_projection_discriminator_starts_unconditional_and_reads_the_label():
    torch.manual_seed(0)
    plain = randomize(Discriminator(DiscriminatorConfig(**TINY)), seed=1).eval()
    cond = Discriminator(DiscriminatorConfig(**TINY, c_dim=3)).eval()
    cond.load_state_dict(plain.state_dict(), strict=False)
    img = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    c = torch.eye(3)[[0, 1, 2, 0]]
    with torch.no_grad():
        assert torch.equal(cond(img, c), plain(img))  # zero projection: the unconditional logit
        cond.project.weight.normal_()
        moved = cond(img, c) - plain(img)
    # the projection term by hand: features of the epilogue's fc, dotted with the label's row
    feats = {}
    cond.b4.fc.register_forward_hook(lambda m, i, o: feats.setdefault("h", o))
    with torch.no_grad():
        cond(img, c)
        rows = cond.project.weight.t()[c.argmax(1)] * cond.project.weight_gain
        want = (feats["h"] * rows).sum(1, keepdim=True) / math.sqrt(feats["h"].shape[1])
    assert (moved - want).abs().max() <= 1e-4 * want.abs().max()
    with torch.no_grad():
        assert torch.equal(cond(img), plain(img))  # no label: the unconditional term alone
    with pytest.raises(InputError, match=r"conditional: c must be a label \[4, 3\]"):
        cond(img, torch.zeros(4, 2))


def test_widening_a_conditional_discriminator_keeps_its_label_term():
    from latentedit.train.widen import widen_into

    torch.manual_seed(0)
    narrow = randomize(Discriminator(DiscriminatorConfig(resolution=16, channel_base=256, channel_max=32, c_dim=3)))
    with torch.no_grad():
        narrow.project.weight.normal_()
    wide = widen_into(narrow.state_dict(), Discriminator(DiscriminatorConfig(resolution=16, channel_base=512,
                                                                             channel_max=64, c_dim=3)), 1)
    img = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    c = torch.eye(3)[[0, 1, 2, 0]]
    with torch.no_grad():
        for net in (narrow, wide):  # the minibatch-std feature averages the new channels too: silenced
            net.b4.conv.weight[:, -1] = 0
        term = [net(img, c) - net(img) for net in (narrow, wide)]
    assert (term[0] - term[1]).abs().max() <= 1e-5 * term[0].abs().max()


def test_world_labels_match_the_faces_and_the_prior_groups():
    names = ["glasses", "mask", "hair_style", "beard"]
    params = world.sample_params(400, seed=5, p_glasses=0.3)
    c = face_labels(params, names)
    cols = label_names(names)
    assert c.shape == (400, len(cols)) == (400, sum(len(g) for g in label_prior(names)))
    assert torch.equal(c[:, cols.index("frame")], (params.glasses == 1).float())
    assert torch.equal(c[:, cols.index("sun")], (params.glasses == 2).float())
    assert torch.equal(c[:, cols.index("beard")], (params.beard > 0).float())
    last = params.hair_style == len(world.HAIR_STYLES) - 1  # the last style has no column
    hair = [i for i, name in enumerate(cols) if name.startswith("hair_style=")]
    assert len(hair) == len(world.HAIR_STYLES) - 1 and torch.equal(c[:, hair].sum(1) == 0, last)
    assert torch.equal(c[:, hair].argmax(1)[~last], params.hair_style[~last])
    assert label_prior(["glasses"], p_glasses=0.3) == [[0.3, world.PROBABILITIES["p_sunglasses"]]]
    with pytest.raises(InputError, match="unknown label group 'hats'"):
        GANConfig(**SMALL, labels=["hats"])


def test_unconditional_run_gains_labels_as_the_same_function_and_exports_the_world_prior(tmp_path):
    a = GANTrainer(GANConfig(**SMALL), tmp_path / "a")
    a.train_step()
    a.export_bundle(tmp_path / "plain")
    cfg = GANConfig(**SMALL, labels=["glasses", "mask"], world_overrides={"p_mask": 0.4})
    b = GANTrainer(cfg, tmp_path / "b")
    b.init_from(tmp_path / "plain")
    z = torch.randn(8, a.G.z_dim, generator=torch.Generator().manual_seed(4))
    img = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        before, after = a.G_ema(z, noise_mode="const"), b.G_ema(z, noise_mode="const")
        assert (before - after).abs().max() <= 1e-5 * before.abs().max()
        assert torch.equal(a.D(img), b.D(img, b.G.mapping.labels_from_z(z)))
    assert b.G.cfg.label_prior[1] == [0.4]  # training draws labels at the renders' prior
    for _ in range(2):
        stats = b.train_step()
    assert all(math.isfinite(v) for v in stats.values())
    assert b.D.project.weight.abs().max() > 0 and b.G.mapping.label_offset.weight.abs().max() > 0
    b.export_bundle(tmp_path / "cond")
    nets = load_networks(tmp_path / "cond")
    assert nets.G.cfg.label_prior[1] == [world.PROBABILITIES["p_mask"]]  # exported at the world's own
    assert nets.D.cfg.c_dim == 3 and nets.G.sample_w(2).shape == (2, nets.G.w_dim)
    with pytest.raises(FormatError, match="no class label"):
        save_networks(nets, tmp_path / "cond.pt")
    # and back: a conditional run cannot warm-start one with other labels, however many
    other = GANTrainer(GANConfig(**SMALL, labels=["glasses"]), tmp_path / "c")
    with pytest.raises(InputError, match=r"trained on the labels \['glasses', 'mask'\], this run asks for \['glasses'\]"):
        other.init_from(tmp_path / "cond")
    with pytest.raises(InputError, match="conditioned on 3 label classes"):
        is_widening(nets.G.cfg, other.G.cfg, "G")
    swapped = GANTrainer(GANConfig(**SMALL, labels=["mask", "glasses"]), tmp_path / "d")
    with pytest.raises(InputError, match=r"trained on the labels \['glasses', 'mask'\]"):
        swapped.init_from(tmp_path / "cond")


def test_exported_truncation_centre_moves_to_the_world_prior(tmp_path):
    t = GANTrainer(GANConfig(**SMALL, labels=["glasses", "mask"], world_overrides={"p_mask": 0.6}), tmp_path)
    with torch.no_grad():
        t.G_ema.mapping.label_offset.weight.normal_()
    t.export_bundle(tmp_path / "b")
    G = load_networks(tmp_path / "b").G
    z = torch.randn(40_000, G.z_dim, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        drawn = G.mapping(z)[:, 0].mean(0) - t.G_ema.mapping(z)[:, 0].mean(0)  # the same z at both priors
    moved = G.w_avg - t.G_ema.w_avg
    # mask rate 0.6 -> 0.15: the mask offset's column times -0.45; the sampling error is ~0.003 of it
    assert (moved - drawn).norm() <= 0.02 * moved.norm()
    assert moved.norm() > 0.3 * t.G_ema.mapping.label_offset.weight[:, 2].norm()


def test_real_labels_are_the_renders_and_a_mixed_fake_keeps_its_label(tmp_path):
    t = GANTrainer(GANConfig(**SMALL, labels=["glasses", "hair_style"], style_mixing=1.0), tmp_path)
    images, labels = t.real_images()
    batch = world.sample(4, seed=0, resolution=16)
    assert torch.equal(images, batch.image) and torch.equal(labels, face_labels(batch.params, t.cfg.labels))
    calls = []
    original = t.G.mapping.forward
    t.G.mapping.forward = lambda z, c=None, **kw: calls.append(c) or original(z, c, **kw)
    for _ in range(4):  # the crossover is drawn: some calls may not mix
        calls.clear()
        ws, c = t._ws(t.G, 4)
        assert all(torch.equal(seen, c) for seen in calls) and c.shape == (4, 8)


def test_cli_rejects_an_unknown_label_group(tmp_path):
    result = run("train", "gan", "--out", str(tmp_path / "r"), "--labels", "glasses,wings", "--kimg", "0.004")
    assert result.exit_code == 2 and "unknown label group 'wings'" in result.output


@pytest.mark.parametrize("label_input", ["embed", "w_offset"])
def test_size_estimate_counts_the_label_tensors(label_input):
    def numel(net):
        return sum(t.numel() for t in net.state_dict().values())

    plain, cond = GeneratorConfig(**TINY), GeneratorConfig(**TINY, c_dim=7, label_input=label_input)
    assert cond.tensor_elements() - plain.tensor_elements() == numel(Generator(cond)) - numel(Generator(plain)) > 0
    dplain, dcond = DiscriminatorConfig(**TINY), DiscriminatorConfig(**TINY, c_dim=7)
    assert (dcond.tensor_elements() - dplain.tensor_elements()
            == numel(Discriminator(dcond)) - numel(Discriminator(dplain)) > 0)


def test_generate_with_a_class_matches_the_api_and_refuses_without_one(tmp_path):
    import numpy as np
    from PIL import Image

    G = _conditional_G(prior=None, c_dim=3)
    write_nvlabs_pkl(tmp_path / "cond.pkl", {"G_ema": G}, tmp_path / "marker")
    r = run("generate", "--model", tmp_path / "cond.pkl", "--seeds", "3", "--class", "2", "--out", tmp_path / "g")
    assert r.exit_code == 0, r.output
    from latentedit.models.stylegan2 import z_from_seeds

    with torch.no_grad():
        img = G(z_from_seeds([3], G.z_dim), torch.eye(3)[[2]], noise_mode="const")
    want = (img * 127.5 + 128).clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()
    assert np.array_equal(np.asarray(Image.open(tmp_path / "g" / "seed0003.png")), want)
    for args, message in [([], "pick one with --class 0..2"), (["--class", "3"], "--class must be in 0..2")]:
        r = run("generate", "--model", tmp_path / "cond.pkl", "--seeds", "3", *args, "--out", tmp_path / "h")
        assert r.exit_code == 2 and message in r.output, r.output
    r = run("generate", "--random-weights", "--resolution", "16", "--channel-base", "512", "--channel-max", "32",
            "--class", "0", "--out", tmp_path / "i")
    assert r.exit_code == 2 and "unconditional" in r.output


def test_class_of_a_generator_with_a_prior_sets_its_group_and_keeps_the_rest(tmp_path):
    from latentedit.cli.models import _class_label

    G = _conditional_G()
    z = torch.randn(64, G.z_dim, generator=torch.Generator().manual_seed(7))
    own = G.mapping.labels_from_z(z)
    c = _class_label(G, 1, z)  # sunglasses, in the first group
    assert torch.equal(c[:, :2], torch.tensor([[0.0, 1.0]]).expand(64, 2)) and torch.equal(c[:, 2:], own[:, 2:])
    r = run("info", _save_bundle(G, tmp_path))
    assert r.exit_code == 0 and "conditional: c_dim=4 label_input=embed, labels drawn from z" in r.output, r.output


def _save_bundle(G, tmp_path):
    from latentedit.formats import Networks

    save_networks(Networks("test", "-", G), tmp_path / "bundle")
    return tmp_path / "bundle"


def test_label_adherence_names_the_classifier_class_of_every_label(tmp_path, tiny_G, capsys):
    from conftest import load_benchmark
    from latentedit.models.evaluators import ATTRIBUTE_HEADS
    from latentedit.world.labels import LABEL_GROUPS

    bench = load_benchmark("label_adherence")
    for column in label_names(list(LABEL_GROUPS)):
        head, k = bench.classifier_class(column)
        named = ATTRIBUTE_HEADS[head][k]
        assert (head, named) in {("glasses", column), ("hair_style", column[len("hair_style="):]), (column, "on")}
    assert label_spans(PRIOR) == [(0, 2), (2, 3), (3, 4)]
    assert bench.main(["--model", str(_save_bundle(tiny_G, tmp_path)), "--n", "4"]) == 2
    assert "not a generator trained with world labels" in capsys.readouterr().err


def test_label_adherence_can_measure_the_training_generator_of_a_run(tmp_path):
    from conftest import load_benchmark

    bench = load_benchmark("label_adherence")
    t = GANTrainer(GANConfig(**SMALL, labels=["mask"], label_lr_mul=10.0), tmp_path / "run")
    t.train_step()
    t.save()
    t.export_bundle(tmp_path / "bundle")
    G = load_networks(tmp_path / "bundle").G.float()
    offset = G.mapping.label_offset.weight
    assert not torch.equal(offset, t.G.mapping.label_offset.weight.detach())  # the EMA trails it
    bench.load_training_g(G, tmp_path / "run" / "state.safetensors")
    assert torch.equal(G.mapping.label_offset.weight, t.G.mapping.label_offset.weight.detach())
    with pytest.raises(InputError, match="no training state"):
        bench.load_training_g(G, tmp_path / "state.safetensors")
    other = GANTrainer(GANConfig(**SMALL), tmp_path / "plain")
    other.save()
    with pytest.raises(InputError, match="does not match"):
        bench.load_training_g(G, tmp_path / "plain" / "state.safetensors")


def test_label_guidance_scales_the_w_move_from_the_own_label_to_the_forced_one(tmp_path, capsys):
    from conftest import load_benchmark

    bench = load_benchmark("label_adherence")
    G = GANTrainer(GANConfig(**SMALL, labels=["glasses", "mask"]), tmp_path).G.eval()
    with torch.no_grad():
        G.mapping.label_offset.weight.normal_()
        z = torch.randn([6, G.z_dim])
        own = G.mapping.labels_from_z(z)
        on = with_class(own, G.cfg.label_prior, 0)
        plain, forced = G.mapping(z, own), G.mapping(z, on)
        assert torch.equal(bench.guided_ws(G, z, on, own, 1.0), forced)
        moved = (forced - plain).norm(dim=(1, 2))
        assert moved.max() > 0.1  # some code's own glasses label was not frames
        for s in (0.5, 2.0):
            got = bench.guided_ws(G, z, on, own, s)
            assert torch.allclose(got - plain, s * (forced - plain), atol=1e-4)
            assert (got[:, 0] == got[:, -1]).all()  # still one W per face
    for bad in ("0", "-1", "nan", "inf"):
        assert bench.main(["--model", str(tmp_path), "--guidance", bad]) == 2
        assert "--guidance must be a positive number" in capsys.readouterr().err


class _PixelClassifier:
    """A stand-in attribute classifier: each head's class from pixel statistics of the image."""

    class cfg:
        image_size = 16

    def features(self, x):
        return x

    def classify(self, x):
        stats = torch.stack([x.mean((1, 2, 3)), x[:, 0].mean((1, 2)), x[:, :, :8].mean((1, 2, 3))], 1)
        return {head: torch.sin(stats @ torch.randn(3, k, generator=torch.Generator().manual_seed(i)) * 50)
                for i, (head, k) in enumerate({"glasses": 3, "mask": 2, "beard": 2, "hair_style": 7,
                                               "hair_color": 7, "age": 2}.items())}


def test_label_adherence_counts_what_the_label_keeps_of_the_face(tmp_path):
    from conftest import load_benchmark

    bench = load_benchmark("label_adherence")
    G = GANTrainer(GANConfig(**SMALL, labels=["glasses", "mask"]), tmp_path).G.eval()
    report = bench.adherence(G, _PixelClassifier(), ["glasses", "mask"], 40, batch=16)
    for col in ("frame", "sun", "mask"):  # zero offsets: the label changes nothing
        assert report[col]["on"] == report[col]["own"]
        assert set(report[col]["kept"].values()) == {1.0}
    with torch.no_grad():
        G.mapping.label_offset.weight.normal_(std=3.0)
    report = bench.adherence(G, _PixelClassifier(), ["glasses", "mask"], 40, batch=16)
    assert min(v for col in ("frame", "sun", "mask") for v in report[col]["kept"].values()) < 0.9


def test_label_tensors_learn_at_their_own_rate_and_a_resume_may_change_it(tmp_path):
    t = GANTrainer(GANConfig(**SMALL, labels=["mask"], label_lr_mul=10.0), tmp_path)
    for opt, tensors in ((t.G_opt, [t.G.mapping.label_offset.weight]), (t.D_opt, [t.D.project.weight])):
        plain, labels = opt.param_groups
        assert labels["params"] == tensors and labels["lr"] == pytest.approx(10 * plain["lr"])
    t.train_step()
    t.save()
    again = GANTrainer(GANConfig(**SMALL, labels=["mask"], label_lr_mul=3.0), tmp_path)
    assert again.resume()
    assert again.G_opt.param_groups[1]["lr"] == pytest.approx(3 * again.G_opt.param_groups[0]["lr"])
    assert len(GANTrainer(GANConfig(**SMALL), tmp_path / "plain").G_opt.param_groups) == 1  # saved states load
    with pytest.raises(InputError, match="label_lr_mul"):
        GANConfig(**SMALL, label_lr_mul=0)
