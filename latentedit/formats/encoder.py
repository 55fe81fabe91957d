"""The image -> W+ encoder in bundles: network "encoder", kind "encoder", config = EncoderConfig.

    write_encoder("checkpoints/default", encoder, figures={"pixel_mse": 0.01})
    enc = read_encoder("checkpoints/default")     # Encoder in eval mode, w_avg included

The entry's config is exactly `EncoderConfig.to_dict()`; figures and provenance are merged into the
bundle's manifest under the key "encoder", so they never overwrite the generator's.
"""
from pathlib import Path

import torch

from latentedit.errors import FormatError
from latentedit.formats import bundle
from latentedit.formats.weights import load_weights
from latentedit.models.encoder import Encoder, EncoderConfig

KIND = "encoder"
NAME = "encoder"


def has_encoder(path, name=NAME):
    """True when bundle folder `path` lists an encoder network `name`."""
    if not bundle.is_bundle(path):
        return False
    entry = bundle.read_manifest(path)["networks"].get(name)
    return isinstance(entry, dict) and entry.get("kind") == KIND


def read_encoder(path, name=NAME, device="cpu") -> Encoder:
    """The encoder stored in bundle folder `path` (eval mode). FormatError, naming the bundle, when
    the bundle is missing or unreadable, holds no encoder, or the encoder's config or weights are bad."""
    path = Path(path)
    manifest = bundle.read_manifest(path)
    entry = manifest["networks"].get(name)
    if entry is None:
        raise FormatError(f"{path}: bundle has no encoder network {name!r} (has {sorted(manifest['networks'])}); "
                          "train one with latentedit.train.encoder and export it into the bundle")
    if entry.get("kind") != KIND:
        raise FormatError(f"{path}: network {name!r} is a {entry.get('kind')!r}, not an {KIND!r}")
    what = f"{path} [{name}]"
    try:
        cfg = EncoderConfig.from_dict(entry.get("config", {}))
    except (TypeError, ValueError) as e:  # InputError from the config's own checks is a ValueError
        raise FormatError(f"{what}: bad encoder config ({e})") from None
    _, sd = bundle.read_network(path, name)
    encoder = load_weights(Encoder(cfg), sd, what)
    stage = int(encoder.stage)
    if not 0 <= stage <= cfg.num_ws - 1:
        raise FormatError(f"{what}: progressive stage {stage} outside [0, {cfg.num_ws - 1}]")
    return encoder.eval().to(device)


def write_encoder(path, encoder: Encoder, figures=None, provenance=None, dtype=torch.float32):
    """Writes `encoder` into bundle folder `path` (created if needed) as network "encoder", keeping
    every other network there. Weights first, manifest last, each written atomically. With an fp16
    dtype, w_avg (added to every code) stays fp32."""
    if not isinstance(encoder, Encoder):
        raise FormatError(f"write_encoder needs an Encoder, got {type(encoder).__name__}")
    networks = {NAME: (KIND, encoder.cfg.to_dict(), encoder.state_dict())}
    return bundle.write_bundle(path, networks, figures={NAME: figures} if figures else None,
                               provenance={NAME: provenance} if provenance else None, dtype=dtype, merge=True,
                               keep_fp32=("w_avg",))
