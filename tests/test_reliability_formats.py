"""Hostile or malformed file fields, pickles and options: one clear error (InputError / FormatError,
exit status 2 on the CLI), never a traceback, a hang or a huge allocation (issue 16, part B)."""
import json
import re

import numpy as np
import pytest
import torch

from latentedit.edit.directions import Direction
from latentedit.errors import FormatError, InputError

from conftest import run

RANDOM = ["--random-weights", "--resolution", "16", "--channel-base", "512", "--channel-max", "32"]



def assert_one_error_line(r, *words):
    assert r.exit_code == 2, r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    for word in words:
        assert word in lines[0], lines[0]


# -- 1. direction sidecars -------------------------------------------------------------------

BAD_SIDECAR_FIELDS = [("version", "2"), ("version", 1.5), ("layers", 5), ("layers", ["a", "b"]), ("layers", [3, 1]),
                      ("layers", [0, 1, 2]), ("num_ws", "ten"), ("num_ws", -3), ("num_ws", 10 ** 9),
                      ("generator", 12345), ("generator", "abc"), ("provenance", "abc"), ("provenance", [1]),
                      ("shape", 5), ("shape", ["1", "512"]), ("space", "q"), ("space", 3), ("name", 7)]


def _direction_with_sidecar(tmp_path, **fields):
    path = Direction(np.ones(8, np.float32), space="w", name="d").normalized().save(tmp_path / "d.npy")
    side = json.loads(path.with_suffix(".json").read_text())
    side.update(fields)
    path.with_suffix(".json").write_text(json.dumps(side))
    return path


@pytest.mark.parametrize("field,value", BAD_SIDECAR_FIELDS)
def test_sidecar_field_of_wrong_type_or_range_is_a_format_error_naming_it(tmp_path, field, value):
    path = _direction_with_sidecar(tmp_path, **{field: value})
    with pytest.raises(FormatError, match=f"'{field}'" if field != "shape" or value == 5 else "shape"):
        Direction.load(path)


def test_sidecar_good_fields_still_load(tmp_path):
    path = _direction_with_sidecar(tmp_path, layers=[2, 4], num_ws=6, provenance={"made_by": "test"}, generator=None)
    d = Direction.load(path)
    assert d.layers == (2, 4) and d.num_ws == 6 and d.provenance == {"made_by": "test"}


@pytest.mark.parametrize("command", [["edit", "--steps", "2", "--seeds", "0"], ["mask", "--seeds", "0"],
                                     ["layers", "--steps", "2", "--seeds", "0"]])
def test_cli_with_bad_sidecar_prints_one_error_line(tmp_path, command):
    path = _direction_with_sidecar(tmp_path, layers=5)
    r = run(*command, *RANDOM, "--direction", path, "--out", tmp_path / "out.png")
    assert_one_error_line(r, "layers", "d.json")


# -- 2. bundle.json network configs ----------------------------------------------------------

def _bundle_with_config(tmp_path, tiny_G, **fields):
    from latentedit.formats import Networks, save_networks

    save_networks(Networks("test", "-", tiny_G), tmp_path / "b")
    manifest = json.loads((tmp_path / "b" / "bundle.json").read_text())
    manifest["networks"]["G"]["config"].update(fields)
    (tmp_path / "b" / "bundle.json").write_text(json.dumps(manifest))
    return tmp_path / "b"


@pytest.mark.parametrize("field,value", [("resample_filter", "abc"), ("resample_filter", [1] * 200000),
                                         ("resample_filter", [1, -1]), ("resample_filter", [[1, 3], [3, 1]]),
                                         ("mapping_lr_multiplier", "fast"), ("mapping_lr_multiplier", 0),
                                         ("conv_clamp", "abc"), ("conv_clamp", -1), ("w_avg_beta", 2),
                                         ("resolution", "abc"), ("channel_max", 8192), ("n_mlp", 64)])
def test_info_refuses_a_bundle_config_of_wrong_type_range_or_size(tmp_path, tiny_G, field, value):
    if field in ("channel_max", "n_mlp"):  # within CONFIG_LIMITS, but 4 GiB and more of weights
        bundle = _bundle_with_config(tmp_path, tiny_G, **{field: value}, channel_base=1 << 20, resolution=1024,
                                     w_dim=8192)
    else:
        bundle = _bundle_with_config(tmp_path, tiny_G, **{field: value})
    r = run("info", bundle)
    assert_one_error_line(r, "GeneratorConfig", "parameters" if field in ("channel_max", "n_mlp") else field)


def test_config_size_estimate_matches_the_networks_built():
    from latentedit.models.discriminator import Discriminator
    from latentedit.models.stylegan2 import DiscriminatorConfig, Generator, GeneratorConfig

    sizes = dict(resolution=32, channel_base=2048, channel_max=64)
    for cfg, net in [(GeneratorConfig(**sizes, z_dim=48, w_dim=80, n_mlp=3, img_channels=4), Generator),
                     (DiscriminatorConfig(**sizes, mbstd_num_channels=2), Discriminator)]:
        real = sum(t.numel() for t in net(cfg).state_dict().values())
        assert abs(cfg.tensor_elements() - real) <= 0.01 * real  # only the FIR filter buffers are left out


def test_config_f_1024_is_within_the_size_limit():
    from latentedit.models.stylegan2 import MAX_CONFIG_ELEMENTS, DiscriminatorConfig, GeneratorConfig

    assert GeneratorConfig(resolution=1024).tensor_elements() < MAX_CONFIG_ELEMENTS / 10
    assert DiscriminatorConfig(resolution=1024).tensor_elements() < MAX_CONFIG_ELEMENTS / 10


# -- 3. hostile NVlabs-style pickles, written opcode by opcode -------------------------------
# Protocol 2 opcodes: } EMPTY_DICT, ( MARK, u SETITEMS, s SETITEM, \x85 TUPLE1, R REDUCE, b BUILD,
# q BINPUT, h BINGET, 0 POP, . STOP; c GLOBAL "module\nname\n"; X BINUNICODE; K BININT1.

PERSISTENT = b"ctorch_utils.persistence\n_reconstruct_persistent_obj\n"
GENERATOR_KWARGS = {"img_resolution": 16, "z_dim": 8, "w_dim": 8, "img_channels": 3,
                    "synthesis_kwargs": {"channel_base": 512, "channel_max": 32}}


def _ops(value):
    """Opcodes pushing a str / small int / dict of them."""
    if isinstance(value, str):
        data = value.encode()
        return b"X" + len(data).to_bytes(4, "little") + data
    if isinstance(value, int):
        return b"K" + bytes([value]) if value < 256 else b"J" + value.to_bytes(4, "little")
    return b"}(" + b"".join(_ops(k) + _ops(v) for k, v in value.items()) + b"u"


def _generator_open(class_name="Generator"):
    """Opcodes up to an open `_modules` dict of a persistent network (close with _generator_close)."""
    return (PERSISTENT + b"}(" + _ops("class_name") + _ops(class_name) + _ops("state") + b"}("
            + _ops("_init_kwargs") + _ops(GENERATOR_KWARGS) + _ops("_modules") + b"}")


_generator_close = b"uu\x85R"  # close state and meta, then call the (stubbed) reconstructor


def _load(tmp_path, stream):
    from latentedit.formats import load_networks

    path = tmp_path / "hostile.pkl"
    path.write_bytes(b"\x80\x02}(" + _ops("G_ema") + stream + b"u.")
    return load_networks(path)


def test_pickle_with_a_3000_deep_module_chain_is_a_format_error(tmp_path):
    depth = 3000
    child = (PERSISTENT + b"}(" + _ops("class_name") + _ops("Leaf") + b"u\x85R")
    for _ in range(depth):
        child = PERSISTENT + b"}(" + _ops("class_name") + _ops("M") + _ops("state") + b"}(" + _ops("_modules") \
            + b"}(" + _ops("c") + child + b"uu" + b"u\x85R"
    with pytest.raises(FormatError, match="nested deeper"):
        _load(tmp_path, _generator_open() + b"(" + _ops("c") + child + b"u" + _generator_close)


def test_pickle_with_a_module_cycle_is_a_format_error(tmp_path):
    # _modules is memoised (q1), the network too (q2); then network._modules["loop"] = network
    stream = _generator_open() + b"q\x01" + _generator_close + b"q\x02" + b"h\x01" + _ops("loop") + b"h\x02s0"
    with pytest.raises(FormatError, match="nested deeper"):
        _load(tmp_path, stream)


@pytest.mark.parametrize("attribute,value", [("state_dict", b"ccollections\nOrderedDict\n"),
                                             ("class_name", _ops("Generator")), ("children", b"cbuiltins\nset\n")])
def test_pickle_setting_attributes_of_a_built_object_is_refused_at_load(tmp_path, attribute, value):
    """BUILD on a network: it would replace its state_dict method (or any attribute) by an
    allow-listed callable. Nothing runs, but the file is hostile: refused while reading."""
    from latentedit.errors import UnsafeFileError

    stream = _generator_open() + _generator_close + b"}" + _ops(attribute) + value + b"sb"
    with pytest.raises(UnsafeFileError, match="refusing to set attributes"):
        _load(tmp_path, stream)


def test_pickle_group_of_wrong_type_is_a_format_error(tmp_path):
    stream = (PERSISTENT + b"}(" + _ops("class_name") + _ops("Generator") + _ops("state")
              + _ops({"_init_kwargs": GENERATOR_KWARGS, "_parameters": "abc"}) + b"u\x85R")
    with pytest.raises(FormatError, match="_parameters is a str"):
        _load(tmp_path, stream)


@pytest.mark.parametrize("protocol", [3, 4])  # what NVlabs wrote (protocol 2 needs _codecs for bytes)
def test_numpy_arrays_and_scalars_still_unpickle(protocol):
    """Their BUILD (a dtype's or an array's __setstate__ tuple) is the one real pickles use."""
    import io
    import pickle

    from latentedit.formats.safe_pickle import restricted_load

    data = {"gain": np.float32(0.5), "filter": np.arange(4, dtype=np.float16).reshape(2, 2)}
    back = restricted_load(io.BytesIO(pickle.dumps(data, protocol=protocol)))
    assert back["gain"] == np.float32(0.5) and back["gain"].dtype == np.float32
    assert np.array_equal(back["filter"], data["filter"]) and back["filter"].dtype == np.float16


# -- 4. trainer and boundary options ---------------------------------------------------------

@pytest.mark.parametrize("option,value", [("--batch", 0), ("--batch", -4), ("--n-mlp", 0)])
def test_train_gan_bad_option_is_one_error_line(tmp_path, option, value):
    r = run("train", "gan", "--out", tmp_path / "run", option, value)
    assert_one_error_line(r, option.lstrip("-").replace("-", "_"))
    assert not (tmp_path / "run" / "state.json").exists()


@pytest.mark.parametrize("text,words", [("{", ["not valid JSON"]), ("[1, 2]", ["holds no GAN-training"]),
                                        ('{"batch": 32, "flavour": 1}', ["unknown", "flavour"]),
                                        ('{"batch": "abc"}', ["batch"]), ('{"lr": 0}', ["lr"]),
                                        ('{"resolution": 48}', ["power of two"])])
def test_train_gan_resume_with_a_bad_saved_config_is_one_error_line(tmp_path, text, words):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(text)
    r = run("train", "gan", "--out", tmp_path / "run", "--resume")
    assert_one_error_line(r, *words)


@pytest.mark.parametrize("command", [["gan"], ["offset", "--kind", "mask"], ["encoder"]])
def test_every_trainer_refuses_unknown_keys_in_a_saved_config(tmp_path, command):
    (tmp_path / "run").mkdir()
    saved = {"kind": "mask", "flavour": 1} if command[0] == "offset" else {"flavour": 1}
    (tmp_path / "run" / "config.json").write_text(json.dumps(saved))
    r = run("train", *command, "--out", tmp_path / "run", "--resume")
    assert_one_error_line(r, "unknown", "flavour")


@pytest.mark.parametrize("option,value", [("--n-train", 0), ("--eval-every", 0), ("--n-eval", 0), ("--batch", 6 - 1),
                                          ("--lr", -1.0)])
def test_train_evaluators_bad_option_is_one_error_line(tmp_path, option, value):
    r = run("train", "evaluators", "--out", tmp_path / "run", "--kind", "attributes", option, value)
    assert_one_error_line(r, option.lstrip("-").replace("-", "_"))
    assert not list((tmp_path / "run").glob("**/pool_*"))  # refused before rendering anything


def _latents_and_scores(tmp_path, n=40, d=8):
    rng = np.random.RandomState(0)
    x = rng.randn(n, d).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "s.npy", (x[:, :1] > 0).astype(np.float32))
    return tmp_path / "x.npy", tmp_path / "s.npy"


@pytest.mark.parametrize("damage", ["object", "truncated", "npz", "bool"])
def test_boundary_train_with_a_bad_latents_file_is_one_error_line(tmp_path, damage):
    x, s = _latents_and_scores(tmp_path)
    if damage == "object":
        np.save(x, np.array([[1, "a"], [None, 2.0]], dtype=object), allow_pickle=True)
    elif damage == "truncated":
        x.write_bytes(x.read_bytes()[:200])
    elif damage == "npz":
        with open(x, "wb") as f:
            np.savez(f, a=np.zeros(3))
    else:
        np.save(x, np.ones((40, 8), bool))
    r = run("boundary", "train", "--attribute", "smile", "--latents", x, "--scores", s, "--ratio", 0.25,
            "--out", tmp_path / "b.npy")
    assert_one_error_line(r, "x.npy")


@pytest.mark.parametrize("C", [-1, 0])
def test_boundary_train_nonpositive_C_is_one_error_line(tmp_path, C):
    x, s = _latents_and_scores(tmp_path)
    r = run("boundary", "train", "--attribute", "smile", "--latents", x, "--scores", s, "--ratio", 0.25, "--C", C,
            "--out", tmp_path / "b.npy")
    assert_one_error_line(r, "C must be a positive number")
    r = run("boundary", "train", "--attribute", "smile", "--latents", x, "--scores", s, "--ratio", 0.25,
            "--out", tmp_path / "b.npy")
    assert r.exit_code == 0, r.output  # the same files train with the default C


@pytest.mark.parametrize("n,words", [(0, "--n must be in 1.."), (-5, "--n must be in 1.."),
                                     (3, "n must be an integer >= k + 1")])
def test_boundary_discover_ganspace_too_few_samples_is_one_error_line(tmp_path, n, words):
    r = run("boundary", "discover", *RANDOM, "--method", "ganspace", "--k", 3, "--n", n, "--no-names",
            "--out", tmp_path / "dirs")
    assert_one_error_line(r, words)


def test_boundary_train_n_zero_is_one_error_line(tmp_path):
    r = run("boundary", "train", *RANDOM, "--attribute", "smile", "--n", 0, "--out", tmp_path / "b.npy")
    assert_one_error_line(r, "--n must be in 1..")


# -- 5. le.invert's input --------------------------------------------------------------------

@pytest.mark.parametrize("images,words", [
    (None, "got NoneType"), (5, "got int"), ([], "got list"), ([None], "got list"),
    (lambda: torch.zeros(2, 3, 16), "got shape [2, 3, 16]"), (lambda: torch.zeros(0, 3, 16, 16), "N >= 1"),
    (lambda: torch.zeros(1, 3, 16, 8), "got shape"), (lambda: torch.zeros(1, 3, 16, 16, dtype=torch.uint8), "floats"),
    (lambda: torch.full((1, 3, 16, 16), float("nan")), "NaN")])
@pytest.mark.parametrize("mode", ["project", "encoder"])
def test_invert_checks_its_images_argument(tiny_G, images, words, mode):
    import latentedit as le

    images = images() if callable(images) else images
    with pytest.raises(InputError, match=re.escape(words)):
        le.invert(images, mode=mode, G=tiny_G, encoder=lambda x: x, steps=1)
