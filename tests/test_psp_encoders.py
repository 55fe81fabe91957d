"""e4e / pSp / ReStyle checkpoints and ArcFace IR-SE: each built here in its released layout with
random weights and compared with an independent re-implementation of the released maths (written
below from the layout: functional ops on the released tensor names, EqualLinear scaling, 0.01
LeakyReLU, align_corners upsampling, pSp's identity crop). Reduced widths / depths keep the default
run fast; the full IR-SE-50 sizes run in the slow tests."""
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from latentedit.cli import main
from latentedit.edit.inversion import invert

from latentedit.errors import FormatError, InputError
from latentedit.formats import load_generator
from latentedit.formats.arcface import load_arcface
from latentedit.formats.psp import load_psp_encoder
from latentedit.formats.rosinality import generator_to_rosinality
from latentedit.models.encoder import Encoder
from latentedit.models.restyle import ReStyle
from latentedit.models.stylegan2 import Generator, GeneratorConfig

torch.set_num_threads(1)
IRSE50 = dict(stem=64, widths=[64, 128, 256, 512], blocks=[3, 4, 14, 3], r=16, resolution=256)
SMALL = dict(stem=8, widths=[8, 16, 24, 32], blocks=[1, 2, 2, 1], r=4, resolution=64)   # 4 px coarse level


# ---------------------------------------------------------------------------------------------
# Released layouts with random weights


def _bn(sd, prefix, c, g, affine=True):
    if affine:
        sd[prefix + "weight"] = 1 + 0.2 * torch.randn(c, generator=g)
        sd[prefix + "bias"] = 0.2 * torch.randn(c, generator=g)
    sd[prefix + "running_mean"] = 0.2 * torch.randn(c, generator=g)
    sd[prefix + "running_var"] = 0.5 + torch.rand(c, generator=g)
    sd[prefix + "num_batches_tracked"] = torch.tensor(7)


def _conv(c_out, c_in, k, g):
    return torch.randn(c_out, c_in, k, k, generator=g) / math.sqrt(c_in * k * k)


def released_trunk(arch, in_c, g):
    """input_layer.* + body.{k}.* of TreB1eN / pSp's IR-SE backbone."""
    sd = {"input_layer.0.weight": _conv(arch["stem"], in_c, 3, g)}
    _bn(sd, "input_layer.1.", arch["stem"], g)
    sd["input_layer.2.weight"] = 0.25 + 0.1 * torch.randn(arch["stem"], generator=g)
    k, c = 0, arch["stem"]
    for width, count in zip(arch["widths"], arch["blocks"]):
        for j in range(count):
            cin = c if j == 0 else width
            p = f"body.{k}."
            if cin != width:
                sd[p + "shortcut_layer.0.weight"] = _conv(width, cin, 1, g)
                _bn(sd, p + "shortcut_layer.1.", width, g)
            _bn(sd, p + "res_layer.0.", cin, g)
            sd[p + "res_layer.1.weight"] = _conv(width, cin, 3, g)
            sd[p + "res_layer.2.weight"] = 0.25 + 0.1 * torch.randn(width, generator=g)
            sd[p + "res_layer.3.weight"] = _conv(width, width, 3, g)
            _bn(sd, p + "res_layer.4.", width, g)
            sd[p + "res_layer.5.fc1.weight"] = _conv(width // arch["r"], width, 1, g)
            sd[p + "res_layer.5.fc2.weight"] = _conv(width, width // arch["r"], 1, g)
            k += 1
        c = width
    return sd


def released_encoder(arch, n_styles, restyle, seed=0):
    """encoder.* of GradualStyleEncoder / Encoder4Editing (FPN) or ReStyle's backbone encoders."""
    g = torch.Generator().manual_seed(seed)
    sd = released_trunk(arch, 6 if restyle else 3, g)
    c = arch["widths"][-1]
    coarse_log2 = int(math.log2(arch["resolution"])) - len(arch["widths"])   # 16 px at 256 px input
    for i in range(n_styles):
        level = 0 if restyle or i < 3 else 1 if i < 7 else 2   # GradualStyleBlock(512, 512, 16 / 32 / 64)
        for m in range(coarse_log2 + level):                    # log2(spatial) stride-2 convs
            sd[f"styles.{i}.convs.{2 * m}.weight"] = _conv(c, c, 3, g)
            sd[f"styles.{i}.convs.{2 * m}.bias"] = 0.1 * torch.randn(c, generator=g)
        sd[f"styles.{i}.linear.weight"] = torch.randn(c, c, generator=g)      # EqualLinear: N(0, 1)
        sd[f"styles.{i}.linear.bias"] = 0.1 * torch.randn(c, generator=g)
    if not restyle:
        w = arch["widths"]
        sd["latlayer1.weight"], sd["latlayer1.bias"] = _conv(c, w[-2], 1, g), 0.1 * torch.randn(c, generator=g)
        sd["latlayer2.weight"], sd["latlayer2.bias"] = _conv(c, w[-3], 1, g), 0.1 * torch.randn(c, generator=g)
    return {"encoder." + k: v for k, v in sd.items()}


def tiny_generator(w_dim, resolution=32, seed=0):
    torch.manual_seed(seed)
    G = Generator(GeneratorConfig(resolution=resolution, z_dim=w_dim, w_dim=w_dim, channel_base=512,
                                  channel_max=32)).eval()
    with torch.no_grad():
        G.mapping.w_avg.normal_()
    return G


def write_checkpoint(path, arch, encoder_type, G, **extra):
    restyle = encoder_type in ("BackboneEncoder", "ProgressiveBackboneEncoder")
    sd = released_encoder(arch, G.num_ws, restyle)
    sd.update({"decoder." + k: v for k, v in generator_to_rosinality(G.cfg, G.state_dict()).items()})
    opts = {"encoder_type": encoder_type, "start_from_latent_avg": True, "output_size": G.img_resolution,
            "lpips_lambda": 0.8, "checkpoint_path": None, **extra}
    torch.save({"state_dict": sd, "latent_avg": G.w_avg.detach().clone().repeat(G.num_ws, 1), "opts": opts}, path)
    return sd


# ---------------------------------------------------------------------------------------------
# Their maths, re-implemented functionally on the released tensor names


def ref_bn(sd, p, x):
    return F.batch_norm(x, sd[p + "running_mean"], sd[p + "running_var"], sd.get(p + "weight"), sd.get(p + "bias"),
                        False, 0.0, 1e-5)


def ref_unit(sd, p, x, stride):
    r = ref_bn(sd, p + "res_layer.0.", x)
    r = F.prelu(F.conv2d(r, sd[p + "res_layer.1.weight"], padding=1), sd[p + "res_layer.2.weight"])
    r = ref_bn(sd, p + "res_layer.4.", F.conv2d(r, sd[p + "res_layer.3.weight"], stride=stride, padding=1))
    s = r.mean((2, 3), keepdim=True)
    s = torch.sigmoid(F.conv2d(F.relu(F.conv2d(s, sd[p + "res_layer.5.fc1.weight"])), sd[p + "res_layer.5.fc2.weight"]))
    r = r * s
    if p + "shortcut_layer.0.weight" in sd:
        short = ref_bn(sd, p + "shortcut_layer.1.", F.conv2d(x, sd[p + "shortcut_layer.0.weight"], stride=stride))
    else:
        short = F.max_pool2d(x, 1, stride)
    return r + short


def ref_trunk(sd, arch, x):
    """Outputs of every body unit."""
    x = F.prelu(ref_bn(sd, "input_layer.1.", F.conv2d(x, sd["input_layer.0.weight"], padding=1)),
                sd["input_layer.2.weight"])
    outs, k = [], 0
    for count in arch["blocks"]:
        for j in range(count):
            x = ref_unit(sd, f"body.{k}.", x, 2 if j == 0 else 1)
            outs.append(x)
            k += 1
    return outs


def ref_style(sd, i, x):
    m = 0
    while f"styles.{i}.convs.{m}.weight" in sd:
        x = F.leaky_relu(F.conv2d(x, sd[f"styles.{i}.convs.{m}.weight"], sd[f"styles.{i}.convs.{m}.bias"], 2, 1), 0.01)
        m += 2
    w = sd[f"styles.{i}.linear.weight"]
    return F.linear(x.flatten(1), w * (1 / math.sqrt(w.shape[1])), sd[f"styles.{i}.linear.bias"])


def ref_upsample_add(x, y):
    return F.interpolate(x, size=y.shape[2:], mode="bilinear", align_corners=True) + y


def ref_encoder(ckpt, arch, x, encoder_type):
    """Codes of pSp / e4e / ReStyle's encoder, before latent_avg is added."""
    sd = {k[len("encoder."):]: v for k, v in ckpt.items() if k.startswith("encoder.")}
    n = sum(1 for k in sd if k.endswith("linear.weight"))
    outs = ref_trunk(sd, arch, x)
    ends = np.cumsum(arch["blocks"]) - 1                  # the released 6 / 20 / 23 for IR-SE-50
    if encoder_type in ("BackboneEncoder", "ProgressiveBackboneEncoder"):
        levels = [outs[-1]] * n
    else:
        c1, c2, c3 = outs[ends[1]], outs[ends[2]], outs[ends[3]]
        p2 = ref_upsample_add(c3, F.conv2d(c2, sd["latlayer1.weight"], sd["latlayer1.bias"]))
        p1 = ref_upsample_add(p2, F.conv2d(c1, sd["latlayer2.weight"], sd["latlayer2.bias"]))
        levels = [c3 if i < 3 else p2 if i < 7 else p1 for i in range(n)]
    if encoder_type in ("GradualStyleEncoder", "BackboneEncoder"):
        return torch.stack([ref_style(sd, i, levels[i]) for i in range(n)], dim=1)
    w0 = ref_style(sd, 0, levels[0])
    w = w0[:, None].repeat(1, n, 1)
    for i in range(1, n):
        w[:, i] += ref_style(sd, i, levels[i])
    return w


def images(n, size, seed=0):
    return torch.rand([n, 3, size, size], generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ---------------------------------------------------------------------------------------------
# Encoders


@pytest.mark.parametrize("encoder_type", ["Encoder4Editing", "GradualStyleEncoder"])
def test_e4e_psp_codes_match_released_maths(tmp_path, encoder_type):
    G = tiny_generator(w_dim=32)
    path = tmp_path / "enc.pt"
    sd = write_checkpoint(path, SMALL, encoder_type, G)
    enc = load_psp_encoder(path)
    assert isinstance(enc, Encoder) and enc.cfg.resolution == 64 and enc.cfg.num_ws == G.num_ws == 8
    assert enc.cfg.mode == ("w+" if encoder_type == "Encoder4Editing" else "w+independent")
    x = images(2, 64)
    with torch.no_grad():
        ref = ref_encoder(sd, SMALL, x, encoder_type) + G.w_avg
        codes = enc(x)
    assert codes.shape == ref.shape == (2, 8, 32)
    assert (codes - ref).abs().max() < 1e-4, (codes - ref).abs().max()
    assert (codes[:, 1:] - codes[:, :1]).abs().max() > 1e-2   # per-layer codes really differ


def test_psp_maths_differences_matter(tmp_path):
    """Our own defaults (LeakyReLU 0.2, align_corners=False) give other codes: the parity above
    depends on the configured differences."""
    G = tiny_generator(w_dim=32)
    path = tmp_path / "e4e.pt"
    sd = write_checkpoint(path, SMALL, "Encoder4Editing", G)
    x = images(2, 64)
    with torch.no_grad():
        ref = ref_encoder(sd, SMALL, x, "Encoder4Editing") + G.w_avg
        for change in ({"style_slope": 0.2}, {"fpn_align_corners": False}):
            enc = load_psp_encoder(path)
            for k, v in change.items():
                setattr(enc.cfg, k, v)
            for head in enc.heads:
                for m in head.convs:
                    if isinstance(m, torch.nn.LeakyReLU):
                        m.negative_slope = enc.cfg.style_slope
            assert (enc(x) - ref).abs().max() > 1e-3, change


@pytest.mark.parametrize("encoder_type", ["ProgressiveBackboneEncoder", "BackboneEncoder"])
def test_restyle_matches_released_iterations(tmp_path, encoder_type):
    G = tiny_generator(w_dim=32)
    path = tmp_path / "restyle.pt"
    sd = write_checkpoint(path, SMALL, encoder_type, G, n_iters_per_batch=3)
    restyle = load_psp_encoder(path)
    assert isinstance(restyle, ReStyle) and restyle.steps == 3 and restyle.encoder.cfg.input_channels == 6
    G2 = restyle.G                                  # the checkpoint's decoder
    x = images(2, 64, seed=1)
    with torch.no_grad():
        # run_on_batch: step 0 sees the average image, later steps the last reconstruction (face_pool)
        avg_image = F.adaptive_avg_pool2d(G2.synthesis(G2.w_avg.repeat(1, G2.num_ws, 1), noise_mode="const"), 64)
        y, latent, ref_steps = avg_image.repeat(2, 1, 1, 1), None, []
        for _ in range(3):
            out = ref_encoder(sd, SMALL, torch.cat([x, y], 1), encoder_type)
            latent = out + (G2.w_avg if latent is None else latent)
            ref_steps.append(latent)
            y = F.adaptive_avg_pool2d(G2.synthesis(latent, noise_mode="const"), 64)
        steps = restyle(x, return_steps=True)
    for ours, ref in zip(steps, ref_steps):
        assert (ours - ref).abs().max() < 1e-4
    assert (steps[2] - steps[0]).abs().max() > 1e-2       # refinement changes the codes
    with pytest.raises(InputError):
        restyle.steps = 0
    # lateral tensors no head reads (their loader is not strict about them) are ignored
    ckpt = torch.load(path, weights_only=True)
    ckpt["state_dict"]["encoder.latlayer1.weight"] = torch.zeros(32, 24, 1, 1)
    torch.save(ckpt, path)
    with torch.no_grad():
        torch.testing.assert_close(load_psp_encoder(path, steps=1)(x), steps[0])


def test_checkpoint_decoder_is_the_generator(tmp_path):
    G = tiny_generator(w_dim=32)
    path = tmp_path / "e4e.pt"
    write_checkpoint(path, SMALL, "Encoder4Editing", G)
    G2 = load_generator(path)
    ws = G.w_avg + torch.randn([2, G.num_ws, 32], generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(G2.synthesis(ws, noise_mode="const"), G.synthesis(ws, noise_mode="const"),
                                   atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(G2.w_avg, G.w_avg)


def test_encoder_checkpoint_refusals(tmp_path):
    G = tiny_generator(w_dim=32)
    path = tmp_path / "x.pt"
    write_checkpoint(path, SMALL, "ResNetBackboneEncoder", G)
    with pytest.raises(FormatError, match="encoder_type"):
        load_psp_encoder(path)
    torch.save({"g_ema": {}}, path)
    with pytest.raises(FormatError, match="not an e4e / pSp / ReStyle"):
        load_psp_encoder(path)


class _Planted:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("which", ["encoder", "arcface"])
def test_loaders_refuse_planted_objects(tmp_path, which):
    planted = _Planted()
    planted.marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    if which == "encoder":
        torch.save({"state_dict": {"encoder.x": torch.zeros(1)}, "opts": planted}, path)
        load = load_psp_encoder
    else:
        torch.save({"input_layer.0.weight": planted}, path)
        load = load_arcface
    with pytest.raises(FormatError, match="allow-list"):
        load(path)
    assert not planted.marker.exists()


def test_invert_cli_with_an_e4e_checkpoint(tmp_path):
    """`latentedit invert photo.png --encoder e4e.pt`: encoder mode and the file's decoder by default."""
    from PIL import Image

    G = tiny_generator(w_dim=32)
    path = tmp_path / "e4e.pt"
    write_checkpoint(path, SMALL, "Encoder4Editing", G)
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(photo)
    r = CliRunner().invoke(main, ["invert", str(photo), "--encoder", str(path), "--out", str(tmp_path / "out")],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    codes = np.load(tmp_path / "out" / "photo.npy")
    assert codes.shape == (1, G.num_ws, 32)
    from latentedit.formats.image_input import read_image, to_tensor
    from latentedit.edit.inversion import encode_images

    x = to_tensor([read_image(photo, G.img_resolution)])
    expected = encode_images(load_psp_encoder(path), G, x)
    assert np.abs(codes - expected.numpy()).max() < 1e-4
    # the Python front end: the checkpoint as encoder, its decoder as the default generator
    assert np.abs(invert(x, mode="encoder", encoder=path).numpy() - codes).max() < 1e-4
    r = CliRunner().invoke(main, ["invert", str(photo), "--encoder", str(tmp_path / "missing.pt"),
                                  "--out", str(tmp_path / "out2")])
    assert r.exit_code == 2 and r.output.count("\n") == 1 and r.output.startswith("error: "), r.output


# ---------------------------------------------------------------------------------------------
# ArcFace


def released_arcface(arch, input_size=112, affine=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    sd = released_trunk(arch, 3, g)
    c, s = arch["widths"][-1], input_size // 16
    _bn(sd, "output_layer.0.", c, g)
    sd["output_layer.3.weight"] = torch.randn(512, c * s * s, generator=g) / math.sqrt(c * s * s)
    sd["output_layer.3.bias"] = 0.1 * torch.randn(512, generator=g)
    _bn(sd, "output_layer.4.", 512, g, affine=affine)
    return sd


def ref_arcface(sd, arch, faces):
    """IDLoss.extract_feats: crop [35:223, 32:220] of the 256 px face, face_pool to 112, Backbone, l2_norm."""
    x = F.adaptive_avg_pool2d(faces[:, :, 35:223, 32:220], (112, 112))
    x = ref_bn(sd, "output_layer.0.", ref_trunk(sd, arch, x)[-1])
    x = ref_bn(sd, "output_layer.4.", F.linear(x.flatten(1), sd["output_layer.3.weight"], sd["output_layer.3.bias"]))
    return x / torch.norm(x, 2, 1, True)


@pytest.mark.parametrize("affine", [True, False])
def test_arcface_matches_released_maths(tmp_path, affine):
    sd = released_arcface(SMALL, affine=affine)
    path = tmp_path / "model_ir_se50.pth"
    torch.save({k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}, path)  # an old file
    arc = load_arcface(path)
    assert not arc.training and not any(p.requires_grad for p in arc.parameters())
    faces = images(3, 256, seed=2)
    with torch.no_grad():
        ref, ours = ref_arcface(sd, SMALL, faces), arc(faces)
    assert ours.shape == (3, 512) and (ours - ref).abs().max() < 1e-4
    torch.testing.assert_close(ours.norm(dim=1), torch.ones(3))
    with torch.no_grad():  # other sizes: pooled to 256 px first, as pSp pools its 1024 px outputs
        big = F.interpolate(faces, scale_factor=2, mode="nearest")
        assert (arc(big) - ours).abs().max() < 1e-4
    with pytest.raises(InputError):
        arc(faces[:, :2])


# ---------------------------------------------------------------------------------------------
# Full-size IR-SE-50 (slow on CPU)


@pytest.mark.slow
@pytest.mark.parametrize("encoder_type", ["Encoder4Editing", "GradualStyleEncoder"])
def test_full_size_e4e_psp(tmp_path, encoder_type):
    G = tiny_generator(w_dim=512, resolution=64)        # 10 styles: 3 coarse, 4 medium, 3 fine
    path = tmp_path / "enc.pt"
    sd = write_checkpoint(path, IRSE50, encoder_type, G)
    enc = load_psp_encoder(path)
    assert enc.cfg.resolution == 256 and enc.cfg.blocks == [3, 4, 14, 3]
    n_tensors = sum(1 for k in sd if k.startswith("encoder.") and not k.endswith("num_batches_tracked"))
    ours = sum(1 for k in enc.state_dict() if not k.endswith("num_batches_tracked")) - 2   # w_avg, stage
    assert ours == n_tensors
    x = images(1, 256)
    with torch.no_grad():
        ref = ref_encoder(sd, IRSE50, x, encoder_type) + G.w_avg
        assert (enc(x) - ref).abs().max() < 1e-4


@pytest.mark.slow
def test_full_size_arcface(tmp_path):
    sd = released_arcface(IRSE50)
    path = tmp_path / "model_ir_se50.pth"
    torch.save(sd, path)
    arc = load_arcface(path)
    assert arc.cfg.blocks == [3, 4, 14, 3] and arc.cfg.input_size == 112
    faces = images(2, 256, seed=4)
    with torch.no_grad():
        assert (arc(faces) - ref_arcface(sd, IRSE50, faces)).abs().max() < 1e-4
