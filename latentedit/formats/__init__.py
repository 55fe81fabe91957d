"""Every model file format in and out: our bundles, rosinality .pt, NVlabs .pkl (and the decoder
of an e4e / pSp / ReStyle checkpoint, a rosinality generator).

`load_networks(path)` detects the format and returns our modules; `save_networks(nets, dst)`
writes a bundle folder or a rosinality-layout .pt. Architecture is read from the file; what a
file cannot tell (rosinality's mapping lr multiplier) comes from `overrides`.
"""
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from latentedit.errors import FormatError, UnsafeFileError
from latentedit.formats import bundle, nvlabs, psp, rosinality
from latentedit.formats.atomic import atomic_path
from latentedit.formats.files import regular_file
from latentedit.formats.safe_pickle import restricted_load
from latentedit.formats.weights import load_weights
from latentedit.models.discriminator import Discriminator
from latentedit.models.stylegan2 import DiscriminatorConfig, Generator, GeneratorConfig
from latentedit.shipped import shipped_dir

FORMATS = ("bundle", "rosinality", "nvlabs", "psp")
DEFAULT_BUNDLE = shipped_dir("checkpoints") / "default"
def is_default_bundle(path):
    """Whether `path` names the bundled default model's folder (recipes record it as "default")."""
    return path is not None and Path(path).resolve() == DEFAULT_BUNDLE.resolve()


W_AVG_SAMPLES = 10_000  # rosinality files without latent_avg: estimate w_avg from this many z (fixed seed)


@dataclass
class Networks:
    format: str
    path: str
    G: Generator = None
    D: Discriminator = None
    info: dict = field(default_factory=dict)


def detect_format(path):
    path = Path(path)
    if not path.exists():
        raise FormatError(f"{path}: no such file or folder")
    if path.is_dir():
        if bundle.is_bundle(path):
            return "bundle"
        raise FormatError(f"{path}: a folder without bundle.json is not a latentedit bundle")
    regular_file(path, "model file")
    with open(path, "rb") as f:
        head = f.read(4)
    if zipfile.is_zipfile(path):
        return "rosinality"  # torch.save's zip container
    if head[:1] == b"\x80":
        return "pickle"  # an NVlabs pickle, or a legacy (non-zip) torch.save file: told apart on load
    raise FormatError(f"{path}: unknown format (expected a bundle folder, a rosinality .pt or an NVlabs .pkl)")


def _build(cls, cfg_cls, cfg, sd, what, overrides=None):
    cfg = cfg_cls.from_dict({**cfg.to_dict(), **(overrides or {})}) if overrides else cfg
    return load_weights(cls(cfg), sd, what).eval()


def _estimate_w_avg(G):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        z = torch.randn([W_AVG_SAMPLES, G.z_dim], generator=g)
        return G.mapping(z, update_w_avg=False)[:, 0].mean(0)


def _set_generator(nets, cfg, sd, latent_avg, what, overrides):
    """nets.G from a converted rosinality-layout state dict; w_avg is the file's latent_avg when it
    has one (already in sd), else estimated."""
    nets.G = _build(Generator, GeneratorConfig, cfg, sd, what, overrides)
    if latent_avg is None:
        nets.G.mapping.w_avg.copy_(_estimate_w_avg(nets.G))
    nets.info["w_avg"] = "stored (latent_avg)" if latent_avg is not None else f"estimated from {W_AVG_SAMPLES} z"


def _load_rosinality(path, ckpt, overrides):
    nets = Networks("rosinality", str(path))
    g_key = "g_ema" if "g_ema" in ckpt else "g"
    latent_avg = ckpt.get("latent_avg")
    cfg, sd = rosinality.generator_from_rosinality(ckpt[g_key], latent_avg)
    _set_generator(nets, cfg, sd, latent_avg, f"{path} [{g_key}]", overrides)
    nets.info["generator_key"] = g_key
    if isinstance(ckpt.get("d"), dict):
        dcfg, dsd = rosinality.discriminator_from_rosinality(ckpt["d"])
        nets.D = _build(Discriminator, DiscriminatorConfig, dcfg, dsd, f"{path} [d]")
    if "args" in ckpt:
        nets.info["training_args"] = {k: v for k, v in vars(ckpt["args"]).items()
                                      if isinstance(v, (int, float, str, bool, type(None)))}
    return nets


@torch.inference_mode(False)  # as load_networks (formats.psp calls it for a checkpoint already read)
def psp_networks(path, ckpt, overrides=None):
    """The generator of an e4e / pSp / ReStyle checkpoint `ckpt` read from `path`: its decoder.*,
    latent_avg as w_avg."""
    nets = Networks("psp", str(path))
    cfg, sd, avg = psp.decoder_from_checkpoint(ckpt, str(path))
    _set_generator(nets, cfg, sd, avg, f"{path} [decoder]", overrides)
    nets.info["encoder_type"] = psp.options(ckpt).get("encoder_type")
    return nets


def _load_nvlabs(path, data, overrides):
    nets = Networks("nvlabs", str(path))
    g_key = "G_ema" if isinstance(data.get("G_ema"), nvlabs.PersistentObject) else "G"
    if isinstance(data.get(g_key), nvlabs.PersistentObject):
        cfg = nvlabs.generator_config(data[g_key])
        nets.G = _build(Generator, GeneratorConfig, cfg, nvlabs.network_weights(data[g_key]),
                        f"{path} [{g_key}]", overrides)
        nets.info["generator_key"] = g_key
        nets.info["w_avg"] = "stored (mapping.w_avg)"
    if isinstance(data.get("D"), nvlabs.PersistentObject) and (data["D"].init_kwargs.get("c_dim") or 0) \
            and nets.G is not None:  # the generator is what most users want from a conditional pickle
        nets.info["discriminator"] = "not loaded: a conditional NVlabs discriminator (label mapping network)"
    elif isinstance(data.get("D"), nvlabs.PersistentObject):
        dcfg = nvlabs.discriminator_config(data["D"])
        nets.D = _build(Discriminator, DiscriminatorConfig, dcfg, nvlabs.network_weights(data["D"]), f"{path} [D]")
    return nets


def _load_bundle(path, overrides, names=("G", "D")):
    nets = Networks("bundle", str(path))
    manifest = bundle.read_manifest(path)
    for name, (cls, cfg_cls) in {"G": (Generator, GeneratorConfig), "D": (Discriminator, DiscriminatorConfig)}.items():
        if name in manifest["networks"] and name in names:
            entry, sd = bundle.read_network(path, name)
            cfg = cfg_cls.from_dict(entry["config"])
            setattr(nets, name, _build(cls, cfg_cls, cfg, sd, f"{path} [{name}]", overrides if name == "G" else None))
    nets.info["provenance"] = manifest.get("provenance", {})
    nets.info["figures"] = manifest.get("figures", {})
    nets.info["w_avg"] = "stored"
    return nets


@torch.inference_mode(False)
def load_networks(path, overrides=None):
    """Loads the generator (and discriminator, when the file has one) from any supported format.
    overrides: GeneratorConfig fields the file cannot tell, e.g. {"mapping_lr_multiplier": 0.01}.
    The weights are normal tensors even when loaded under torch.inference_mode, so the networks
    also run (and train) outside it."""
    path = Path(path)
    fmt = detect_format(path)
    if fmt == "bundle":
        return _load_bundle(path, overrides)
    if fmt == "pickle":
        with open(path, "rb") as f:
            try:
                data = restricted_load(f)
            except UnsafeFileError:
                raise
            except FormatError:
                data = None
        if isinstance(data, dict):
            data = nvlabs.load_pkl(path)  # re-validates that it is a network pickle
            return _load_nvlabs(path, data, overrides)
        # Not a network pickle: perhaps a legacy torch.save file; that loader is weights-only too.
    ckpt = rosinality.load_pt(path)
    if psp.is_psp_checkpoint(ckpt):
        return psp_networks(path, ckpt, overrides)
    if not rosinality.is_rosinality(ckpt):
        keys = sorted(ckpt)[:5] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise FormatError(f"{path}: a torch file, but not a rosinality StyleGAN2 checkpoint (found {keys})")
    return _load_rosinality(path, ckpt, overrides)


def load_generator_networks(path=None, overrides=None, discriminator=True):
    """load_networks of `path`, the bundled default when None; FormatError when it holds no generator.
    discriminator=False: a bundle's D is not read (a copy of a bundle without it is a valid generator)."""
    if path is None:
        if not bundle.is_bundle(DEFAULT_BUNDLE):
            raise FormatError("no bundled default model is installed; pass a model path")
        path = DEFAULT_BUNDLE
    path = Path(path)
    nets = (_load_bundle(path, overrides, ("G",)) if not discriminator and bundle.is_bundle(path)
            else load_networks(path, overrides))
    if nets.G is None:
        raise FormatError(f"{path}: holds no generator")
    return nets


@torch.inference_mode(False)  # as load_networks: also .to(device)
def load_generator(path=None, device="cpu", overrides=None):
    """The generator from `path` (bundle folder, rosinality .pt, NVlabs .pkl, or an e4e / pSp /
    ReStyle checkpoint's decoder); the bundled default when path is None."""
    return load_generator_networks(path, overrides, discriminator=False).G.to(device)


def _holds_generator(path, entry, G):
    """Whether the bundle at `path`, whose manifest lists G as `entry`, holds G (same config, weights
    equal up to fp16 rounding)."""
    if entry.get("config") != G.cfg.to_dict():
        return False
    _, stored = bundle.read_network(path, "G")
    current = G.state_dict()
    return all(k in current and current[k].shape == v.shape
               and torch.allclose(current[k].float(), v, rtol=2e-3, atol=1e-4) for k, v in stored.items())


def save_networks(nets: Networks, dst, fp16=False, provenance=None, figures=None):
    """Writes a bundle folder (dst without a suffix) or a rosinality-layout .pt (dst ending in .pt).
    Into an existing bundle of the same generator (the source itself, or a copy of it), or of none
    yet, only G and D are written: its other networks, figures and provenance are kept. A bundle of
    another generator holding more networks (made for that one) is refused rather than orphaning them."""
    dst = Path(dst)
    if dst.suffix == ".pkl":
        raise FormatError("writing NVlabs .pkl is not supported (their loader executes embedded source); "
                          "convert to a bundle folder or a rosinality .pt")
    if dst.suffix == ".pt":
        ckpt = {"g_ema": rosinality.generator_to_rosinality(nets.G.cfg, nets.G.state_dict()),
                "latent_avg": nets.G.w_avg.detach().clone()}
        if nets.D is not None:
            ckpt["d"] = rosinality.discriminator_to_rosinality(nets.D.cfg, nets.D.state_dict())
        with atomic_path(dst) as tmp:
            torch.save(ckpt, tmp)
        return dst
    if dst.suffix:
        raise FormatError(f"{dst}: unknown output format (a folder for a bundle, or a .pt file)")
    networks = {"G": ("stylegan2-generator", nets.G.cfg.to_dict(), nets.G.state_dict())}
    if nets.D is not None:
        networks["D"] = ("stylegan2-discriminator", nets.D.cfg.to_dict(), nets.D.state_dict())
    if provenance is None:  # a conversion: keep what the source said about itself
        # the source's file name only: a provenance never holds the converting machine's paths
        provenance = {**nets.info.get("provenance", {}),
                      "converted_from": {"format": nets.format, "file": Path(str(nets.path)).name}}
    figures = nets.info.get("figures", {}) if figures is None else figures
    merge = False
    if bundle.is_bundle(dst):
        held = bundle.read_manifest(dst)["networks"]
        others = sorted(set(held) - {"G", "D"})
        merge = "G" not in held or _holds_generator(dst, held["G"], nets.G)
        if others and not merge:
            raise FormatError(f"{dst}: already a bundle of another generator, with networks made for it "
                              f"({', '.join(others)}); writing this generator there would orphan them: "
                              "choose a new folder")
    return bundle.write_bundle(dst, networks, provenance=provenance, figures=figures,
                               dtype=torch.float16 if fp16 else torch.float32, merge=merge)
