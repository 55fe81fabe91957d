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
from latentedit.formats.weights import is_derived

SPACES = ("z", "w", "w+")  # latent spaces a direction lives in (edit.directions uses this list)
MAX_NUM_WS = 64  # W+ layers of a 4096 px generator are 22; a larger count is a corrupt file

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
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path}: no such direction file")
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
        try:
            meta = json.loads(side.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise FormatError(f"{side}: unreadable direction sidecar ({e})") from None
        _check_sidecar(side, meta, vector.shape)
    return vector.astype(np.float32), meta


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _check_sidecar(side, meta, shape):
    """Every field a reader uses, type and range, so a hand-edited or foreign sidecar fails here with
    its field named instead of deep inside an edit."""
    def bad(field, want):
        raise FormatError(f"{side}: sidecar field {field!r} must be {want}, got {meta[field]!r:.80}")

    if not isinstance(meta, dict) or meta.get("format") != DIRECTION_FORMAT:
        raise FormatError(f"{side}: not a latentedit direction sidecar")
    if "version" in meta:
        if not _is_int(meta["version"]) or meta["version"] < 1:
            bad("version", "a positive integer")
        if meta["version"] > DIRECTION_VERSION:
            raise FormatError(f"{side}: sidecar version {meta['version']} is newer than this latentedit reads")
    if "shape" in meta:
        if not isinstance(meta["shape"], list) or not all(_is_int(n) for n in meta["shape"]):
            bad("shape", "a list of integers")
        if meta["shape"] != list(shape):
            raise FormatError(f"{side}: sidecar says shape {meta['shape']}, the .npy holds {list(shape)}")
    if meta.get("space") is not None and meta["space"] not in SPACES:
        bad("space", f"one of {list(SPACES)} or null")
    if meta.get("num_ws") is not None and (not _is_int(meta["num_ws"]) or not 1 <= meta["num_ws"] <= MAX_NUM_WS):
        bad("num_ws", f"an integer in [1, {MAX_NUM_WS}] or null")
    layers = meta.get("layers")
    if layers is not None and (not isinstance(layers, list) or len(layers) != 2 or not all(_is_int(n) for n in layers)
                               or not 0 <= layers[0] < layers[1] <= (meta.get("num_ws") or MAX_NUM_WS)):
        bad("layers", "null or [start, stop] with 0 <= start < stop <= num_ws")
    if meta.get("generator") is not None and not (isinstance(meta["generator"], str)
                                                  and re.fullmatch(r"[0-9a-f]{64}", meta["generator"])):
        bad("generator", "null or a sha256 hex digest (64 characters)")
    if meta.get("name") is not None and not isinstance(meta["name"], str):
        bad("name", "a string or null")
    if meta.get("provenance") is not None and not isinstance(meta["provenance"], dict):
        bad("provenance", "an object or null")


def find_direction(name_or_path, bundle=None):
    """A direction file path from a path, or from a name in `bundle`/boundaries/ (default bundle
    when None)."""
    p = Path(name_or_path)
    if p.suffix == ".npy" or p.exists() or len(p.parts) > 1:
        if not p.is_file():
            raise FormatError(f"{p}: no such direction file")
        return p
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
