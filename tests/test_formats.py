"""Foreign checkpoints in the layouts their projects write, round trips, and refusals."""
import argparse
import io
import json
import pickle
import sys
import types

import pytest
import torch
from torch import nn

from latentedit.errors import FormatError, UnsafeFileError
from latentedit.formats import Networks, detect_format, load_networks, save_networks
from latentedit.formats import rosinality as ros_format
from latentedit.models.stylegan2 import Generator

# --- NVlabs network pickles, built the way torch_utils.persistence writes them -----------------
# Each persistent network pickles as a call _reconstruct_persistent_obj(meta), meta holding the
# class name, the source of its module (which NVlabs' loader executes), and the module state with
# _init_args / _init_kwargs. The stand-in modules below exist only so that pickle can name them.

EMBEDDED_SOURCE = "import pathlib\npathlib.Path({marker!r}).write_text('source was executed')\n"


def _install_nvlabs_names():
    persistence = types.ModuleType("torch_utils.persistence")
    persistence._reconstruct_persistent_obj = lambda meta: meta
    persistence._reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    persistence._reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    util = types.ModuleType("dnnlib.util")

    class EasyDict(dict):
        pass

    EasyDict.__module__, EasyDict.__qualname__ = "dnnlib.util", "EasyDict"
    util.EasyDict = EasyDict
    sys.modules.update({"torch_utils": types.ModuleType("torch_utils"), "torch_utils.persistence": persistence,
                        "dnnlib": types.ModuleType("dnnlib"), "dnnlib.util": util})
    return persistence, EasyDict


def nvlabs_init_kwargs(net):
    cfg = net.cfg
    if isinstance(net, Generator):
        return dict(z_dim=cfg.z_dim, c_dim=cfg.c_dim, w_dim=cfg.w_dim, img_resolution=cfg.resolution,
                    img_channels=cfg.img_channels,
                    mapping_kwargs=dict(num_layers=cfg.n_mlp),
                    synthesis_kwargs=dict(channel_base=cfg.channel_base, channel_max=cfg.channel_max,
                                          num_fp16_res=cfg.num_fp16_res, conv_clamp=cfg.conv_clamp))
    return dict(c_dim=0, img_resolution=cfg.resolution, img_channels=cfg.img_channels,
                channel_base=cfg.channel_base, channel_max=cfg.channel_max, num_fp16_res=cfg.num_fp16_res,
                conv_clamp=cfg.conv_clamp, block_kwargs={}, mapping_kwargs={}, epilogue_kwargs={})


def write_nvlabs_pkl(path, networks, marker):
    persistence, EasyDict = _install_nvlabs_names()
    source = EMBEDDED_SOURCE.format(marker=str(marker))

    class NVPickler(pickle.Pickler):
        def reducer_override(self, obj):
            if isinstance(obj, nn.Module):
                state = {k: v for k, v in obj.__dict__.items() if k != "cfg"}
                state["_init_args"] = ()
                state["_init_kwargs"] = EasyDict(nvlabs_init_kwargs(obj) if hasattr(obj, "cfg") else {})
                meta = dict(type="class", version=6, module_src=source, class_name=type(obj).__name__, state=state)
                return persistence._reconstruct_persistent_obj, (meta,)
            return NotImplemented

    with open(path, "wb") as f:
        NVPickler(f).dump(dict(networks, augment_pipe=None, training_set_kwargs=EasyDict(resolution=16)))


def images(G, seed=0):
    with torch.no_grad():
        return G.synthesize(G.sample_w(3, seed=seed, truncation=0.8), noise_mode="const")


def test_nvlabs_pickle_loads_without_running_its_source(tmp_path, tiny_G, tiny_D):
    marker = tmp_path / "marker.txt"
    write_nvlabs_pkl(tmp_path / "net.pkl", {"G": tiny_G, "G_ema": tiny_G, "D": tiny_D}, marker)
    nets = load_networks(tmp_path / "net.pkl")
    assert nets.format == "nvlabs" and not marker.exists()
    assert nets.G.cfg == tiny_G.cfg
    assert torch.equal(images(nets.G), images(tiny_G))
    img = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(nets.D(img), tiny_D(img))
    # the stand-in loader would have run the source: prove the marker logic is live
    exec(EMBEDDED_SOURCE.format(marker=str(marker)), {})
    assert marker.exists()


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_pickle_outside_allow_list_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _Evil(marker)}))
    with pytest.raises(UnsafeFileError, match="builtins.eval"):
        load_networks(path)
    assert not marker.exists()


def test_pickle_cannot_modify_allow_listed_objects(tmp_path):
    """GLOBAL + BUILD would set attributes on a library function or class for the whole process."""
    before = torch._utils._rebuild_tensor_v2.__defaults__
    # protocol 2: GLOBAL torch._utils._rebuild_tensor_v2; state (None, {"__defaults__": (1,)}); BUILD;
    # then a dict {"G_ema": None} as the result; STOP.
    stream = (b"\x80\x02" + b"ctorch._utils\n_rebuild_tensor_v2\n" + b"N}q\x00X\x0c\x00\x00\x00__defaults__q\x01"
              + b"K\x01\x85q\x02s\x86q\x03b" + b"}q\x04X\x04\x00\x00\x00G_emaq\x05Ns" + b".")
    path = tmp_path / "poison.pkl"
    path.write_bytes(stream)
    with pytest.raises(UnsafeFileError, match="refusing to set attributes"):
        load_networks(path)
    assert torch._utils._rebuild_tensor_v2.__defaults__ == before


def test_rosinality_training_checkpoint(tmp_path, tiny_G, tiny_D):
    """A training file: g, d, g_ema, optimiser states and an argparse.Namespace of args."""
    g_sd = ros_format.generator_to_rosinality(tiny_G.cfg, tiny_G.state_dict())
    d_sd = ros_format.discriminator_to_rosinality(tiny_D.cfg, tiny_D.state_dict())
    opt = torch.optim.Adam([nn.Parameter(torch.zeros(3))])
    torch.save({"g": g_sd, "d": d_sd, "g_ema": g_sd, "g_optim": opt.state_dict(), "d_optim": opt.state_dict(),
                "args": argparse.Namespace(size=16, channel_multiplier=2, lr=0.002), "ada_aug_p": 0.0},
               tmp_path / "train.pt")
    nets = load_networks(tmp_path / "train.pt")
    assert nets.info["training_args"]["size"] == 16
    assert nets.info["w_avg"].startswith("estimated")
    img = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(nets.D(img), tiny_D(img), rtol=0, atol=0)


def test_rosinality_layout_keys():
    """The keys rosinality's Generator has at 16 px (n_mlp = 8), written out from its layout rules."""
    from latentedit.models.stylegan2 import GeneratorConfig

    cfg = GeneratorConfig(resolution=16, channel_base=512, channel_max=32)
    keys = set(ros_format.generator_to_rosinality(cfg, Generator(cfg).state_dict()))
    conv = ["conv.weight", "conv.modulation.weight", "conv.modulation.bias", "noise.weight", "activate.bias"]
    rgb = ["conv.weight", "conv.modulation.weight", "conv.modulation.bias", "bias"]
    expected = {f"style.{i}.{p}" for i in range(1, 9) for p in ("weight", "bias")} | {"input.input"}
    expected |= {f"conv1.{p}" for p in conv} | {f"to_rgb1.{p}" for p in rgb}
    expected |= {f"convs.{i}.{p}" for i in range(4) for p in conv} | {"convs.0.conv.blur.kernel",
                                                                       "convs.2.conv.blur.kernel"}
    expected |= {f"to_rgbs.{k}.{p}" for k in range(2) for p in rgb + ["upsample.kernel"]}
    expected |= {f"noises.noise_{i}" for i in range(5)}
    assert keys == expected


def test_round_trips_are_bit_identical(tmp_path, tiny_G, tiny_D):
    """bundle -> rosinality .pt -> NVlabs pickle -> bundle: the same tensors, the same images."""
    reference = images(tiny_G)
    save_networks(Networks("test", "-", tiny_G, tiny_D), tmp_path / "a")
    a = load_networks(tmp_path / "a")
    save_networks(a, tmp_path / "b.pt")
    b = load_networks(tmp_path / "b.pt")
    write_nvlabs_pkl(tmp_path / "c.pkl", {"G_ema": b.G, "D": b.D}, tmp_path / "m")
    c = load_networks(tmp_path / "c.pkl")
    save_networks(c, tmp_path / "d")
    d = load_networks(tmp_path / "d")
    assert [n.format for n in (a, b, c, d)] == ["bundle", "rosinality", "nvlabs", "bundle"]
    for nets in (a, b, c, d):
        assert torch.equal(images(nets.G), reference)
        for k, v in tiny_G.state_dict().items():
            assert torch.equal(nets.G.state_dict()[k], v), k
        for k, v in tiny_D.state_dict().items():
            assert torch.equal(nets.D.state_dict()[k], v), k


def test_fp16_bundle_is_half_size_and_close(tmp_path, tiny_G):
    save_networks(Networks("test", "-", tiny_G), tmp_path / "f32")
    save_networks(Networks("test", "-", tiny_G), tmp_path / "f16", fp16=True)
    s32, s16 = (tmp_path / "f32" / "G.safetensors").stat().st_size, (tmp_path / "f16" / "G.safetensors").stat().st_size
    assert s16 < 0.6 * s32
    torch.testing.assert_close(images(load_networks(tmp_path / "f16").G), images(tiny_G), rtol=0, atol=2e-2)


def test_corrupt_and_foreign_files(tmp_path, tiny_G):
    save_networks(Networks("test", "-", tiny_G), tmp_path / "ok.pt")
    data = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.bin").write_text("hello")
    (tmp_path / "other.pt").write_bytes(_torch_bytes({"model": {"w": torch.zeros(2)}}))
    (tmp_path / "empty_dir").mkdir()
    cases = {"truncated.pt": "not a loadable|unknown format", "text.bin": "unknown format",
             "other.pt": "not a rosinality", "missing.pt": "no such file", "empty_dir": "without bundle.json"}
    for name, message in cases.items():
        with pytest.raises(FormatError, match=message):
            load_networks(tmp_path / name)
    # a bundle whose weights were altered
    save_networks(Networks("test", "-", tiny_G), tmp_path / "bundle")
    w = tmp_path / "bundle" / "G.safetensors"
    w.write_bytes(w.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(FormatError, match="sha256 mismatch"):
        load_networks(tmp_path / "bundle")
    # a rosinality file missing a tensor
    ck = torch.load(tmp_path / "ok.pt", weights_only=True)
    del ck["g_ema"]["conv1.activate.bias"]
    torch.save(ck, tmp_path / "missing_key.pt")
    with pytest.raises(FormatError, match="conv1.activate.bias"):
        load_networks(tmp_path / "missing_key.pt")


def test_torch_file_with_arbitrary_class_is_refused(tmp_path):
    torch.save({"g_ema": {"input.input": torch.zeros(1)}, "args": _Evil(tmp_path / "x")}, tmp_path / "evil.pt")
    with pytest.raises(FormatError, match="not a loadable weights-only"):
        load_networks(tmp_path / "evil.pt")
    assert not (tmp_path / "x").exists()


def test_detect_format(tmp_path, tiny_G):
    save_networks(Networks("test", "-", tiny_G), tmp_path / "b")
    save_networks(Networks("test", "-", tiny_G), tmp_path / "r.pt")
    assert detect_format(tmp_path / "b") == "bundle" and detect_format(tmp_path / "r.pt") == "rosinality"
    with pytest.raises(FormatError, match="NVlabs .pkl is not supported"):
        save_networks(Networks("test", "-", tiny_G), tmp_path / "x.pkl")


def _torch_bytes(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def test_a_rewritten_network_keeps_its_plain_file_name_and_an_interrupted_rewrite_stays_readable(tmp_path, monkeypatch):
    from latentedit.formats import bundle

    b = tmp_path / "b"

    def write(value):
        bundle.write_bundle(b, {"net": ("parser", {}, {"t": torch.full((2,), value)})}, merge=True)

    def holds():
        return float(bundle.read_network(b, "net")[1]["t"][0]), sorted(p.name for p in b.iterdir())

    write(1.0)
    write(2.0)  # the listed file has other content: written under a new name first, then settled back
    assert holds() == (2.0, ["bundle.json", "net.safetensors"])
    manifests, write_text = [], bundle.write_text

    def interrupted(path, text):  # the process dies before the second manifest (the settled names)
        manifests.append(text)
        if len(manifests) == 2:
            raise KeyboardInterrupt
        write_text(path, text)

    monkeypatch.setattr(bundle, "write_text", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write(3.0)
    value, files = holds()
    assert value == 3.0 and len(files) == 3 and json.loads(manifests[0])["networks"]["net"]["file"] != "net.safetensors"
    monkeypatch.setattr(bundle, "write_text", write_text)
    write(4.0)
    assert holds() == (4.0, ["bundle.json", "net.safetensors"])
