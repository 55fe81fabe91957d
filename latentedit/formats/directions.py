"""Direction files: `NAME.npy` (float32 [1, w_dim] unit vector, InterfaceGAN's layout; or
[num_ws, w_dim] for a per-layer W+ direction) plus an optional `NAME.json` sidecar with the
metadata (latent space, layer range, generator hash, provenance).

A sidecar-less .npy (an InterfaceGAN boundary) reads with unknown space and generator, so it is
never refused for them. Named directions live in a bundle's `boundaries/` folder.
"""
import hashlib
import io
import json
import re
from pathlib import Path

import numpy as np
import torch

from latentedit.errors import FormatError
from latentedit.formats.atomic import write_bytes, write_text
from latentedit.formats.files import read_json, regular_file
from latentedit.formats.weights import is_derived

DIRECTION_FORMAT = "latentedit-direction"
DIRECTION_VERSION = 1
BOUNDARIES = "boundaries"   # sub-folder of a bundle holding its named directions
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def generator_hash(G):
    """sha256 over the generator's state-dict tensors (name, shape, fp32 bytes, sorted by name);
    derived buffers (FIR filters) are left out, so every format of the same weights hashes alike."""
    h = hashlib.sha256()
    for name, t in sorted(G.state_dict().items()):
        if is_derived(name):
            continue
        t = t.detach().to("cpu", torch.float32).contiguous()
        h.update(f"{name}:{list(t.shape)};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def sidecar_path(path):
    return Path(path).with_suffix(".json")


def write_direction(path, vector, meta):
    """vector [1, D] or [L, D] -> path (.npy) and its sidecar (.json), each atomically."""
    path = Path(path)
    if path.suffix != ".npy":
        raise FormatError(f"{path}: a direction file must end in .npy")
    vector = np.asarray(vector, dtype=np.float32)
    if vector.ndim != 2:
        raise FormatError(f"{path}: direction array must be 2-D ([1, D] or [L, D]), got {list(vector.shape)}")
    buf = io.BytesIO()
    np.save(buf, vector)
    write_bytes(path, buf.getvalue())
    side = {"format": DIRECTION_FORMAT, "version": DIRECTION_VERSION, "shape": list(vector.shape), **meta}
    write_text(sidecar_path(path), json.dumps(side, indent=2, default=_json_default) + "\n")
    return path


def read_direction(path):
    """-> (vector float32 [1, D] or [L, D], metadata dict; {} without a sidecar)."""
    path = regular_file(path, "direction file")
    try:
        vector = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise FormatError(f"{path}: not a readable .npy file ({type(e).__name__}: {e})") from None
    if vector.ndim == 1:
        vector = vector[None]  # some tools save [D]
    if vector.ndim != 2 or vector.size == 0 or not np.issubdtype(vector.dtype, np.floating):
        raise FormatError(f"{path}: a direction must be a float array [1, D] or [L, D], got "
                          f"{vector.dtype} {list(vector.shape)}")
    if not np.isfinite(vector).all():
        raise FormatError(f"{path}: direction contains NaN or infinite values")
    meta = {}
    side = sidecar_path(path)
    if side.is_file():
        meta = read_json(side, "direction sidecar")
        if not isinstance(meta, dict) or meta.get("format") != DIRECTION_FORMAT:
            raise FormatError(f"{side}: not a latentedit direction sidecar")
        if meta.get("version", 0) > DIRECTION_VERSION:
            raise FormatError(f"{side}: sidecar version {meta['version']} is newer than this latentedit reads")
        if list(meta.get("shape", vector.shape)) != list(vector.shape):
            raise FormatError(f"{side}: sidecar says shape {meta['shape']}, the .npy holds {list(vector.shape)}")
    return vector.astype(np.float32), meta


def find_direction(name_or_path, bundle=None):
    """A direction file path from a path, or from a name in `bundle`/boundaries/ (default bundle
    when None)."""
    p = Path(name_or_path)
    if p.suffix == ".npy" or p.exists() or len(p.parts) > 1:
        return regular_file(p, "direction file")
    name = str(name_or_path)
    if not _NAME.match(name):
        raise FormatError(f"{name!r} is neither a direction file nor a direction name")
    if bundle is None:
        from latentedit.formats import DEFAULT_BUNDLE

        bundle = DEFAULT_BUNDLE
    folder = Path(bundle) / BOUNDARIES
    f = folder / f"{name}.npy"
    if not f.is_file():
        have = sorted(q.stem for q in folder.glob("*.npy")) if folder.is_dir() else []
        raise FormatError(f"no direction named {name!r} in {folder} (available: {have or 'none'}); "
                          "pass a .npy path or train one with `latentedit boundary train`")
    return f


def _json_default(o):
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")
