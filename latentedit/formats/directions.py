"""Direction files: `NAME.npy` (float32 [1, w_dim] unit vector, InterfaceGAN's layout; or
[num_ws, w_dim] for a per-layer W+ direction) plus an optional `NAME.json` sidecar with the
metadata (latent space, layer range, generator hash, provenance).

A sidecar-less .npy (an InterfaceGAN boundary) reads with unknown generator, so it is never
refused for one; its space is read from InterfaceGAN's file names (`stylegan_ffhq_age_w_boundary.npy`
W, `..._age_boundary.npy` Z) and InterFaceGAN++'s folders (`stylegan2_ffhq_z/boundary_Young.npy`),
else unknown. Named directions live in a bundle's `boundaries/` folder.

Foreign direction files (`read_foreign_direction`):
- `.pt` holding one tensor [D] / [1, D] (or [L, D] per layer): e4e / HyperStyle / PTI
  `editings/interfacegan_directions/age.pt`, InterfaceGAN normals in W, added to every W+ layer.
- GANSpace components, named `FILE:INDEX` (optionally `FILE:INDEX:START-END`, W+ layers inclusive,
  the paper's E(c, s-e)): GANSpace's `.npz` (`lat_comp` [K, 1, D], `lat_stdev` [K], `lat_mean`, ...)
  or e4e's `ganspace_pca/ffhq_pca.pt` ({'comp', 'std', 'mean'}). The direction is comp[c] * stdev[c],
  so a strength counts standard deviations, as GANSpace's sliders do.
"""
import hashlib
import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from latentedit.errors import FormatError, InputError
from latentedit.formats.atomic import write_bytes, write_text
from latentedit.formats.files import read_json, regular_file
from latentedit.formats.latents import read_npy
from latentedit.formats.weights import is_derived
from latentedit.models.config import is_count

SPACES = ("z", "w", "w+")  # latent spaces a direction lives in (edit.directions uses this list)
MAX_NUM_WS = 64  # W+ layers of a 4096 px generator are 22; a larger count is a corrupt file

DIRECTION_FORMAT = "latentedit-direction"
DIRECTION_VERSION = 1
BOUNDARIES = "boundaries"   # sub-folder of a bundle holding its named directions
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
FOREIGN_SUFFIXES = (".pt", ".pth", ".npz")
_COMPONENT = re.compile(r"^(?P<path>.+\.(?:npz|pt|pth)):(?P<index>-?\d+)(?::(?P<start>\d+)(?:-(?P<end>\d+))?)?$")
# InterfaceGAN's released names: {pggan,stylegan}_{celebahq,ffhq}_ATTR[_c_COND][_w]_boundary.npy
_INTERFACEGAN = re.compile(r"^(?:pggan|stylegan)_(?:celebahq|ffhq)_(?P<attr>.+?)(?P<w>_w)?_boundary\.npy$")
_INTERFACEGAN_PP = re.compile(r"^boundary_(?P<attr>.+)\.npy$")  # in a folder MODEL_DATA_{z,w}


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


def made_for(G, expected, known_hash=None):
    """Whether G is the generator a file says it was made for (`expected`: its generator_hash);
    known_hash: G's hash when the caller has it (a Model computes it once)."""
    return (known_hash if known_hash is not None else generator_hash(G)) == expected


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
    vector = read_npy(path, "a direction")
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
        _check_sidecar(side, meta, vector.shape)
    else:
        meta = _interfacegan_meta(path)
    return vector.astype(np.float32), meta


def _interfacegan_meta(path):
    """Space and name of a sidecar-less boundary from InterfaceGAN's / InterFaceGAN++'s naming; {}
    for any other name (space unknown)."""
    m = _INTERFACEGAN.match(path.name)
    if m:
        return {"space": "w" if m["w"] else "z", "name": m["attr"],
                "provenance": {"file": str(path), "format": "InterfaceGAN boundary"}}
    m = _INTERFACEGAN_PP.match(path.name)
    folder = re.search(r"_(z|w)$", path.parent.name)
    if m and folder:
        return {"space": folder[1], "name": m["attr"],
                "provenance": {"file": str(path), "format": f"InterFaceGAN++ boundary ({path.parent.name})"}}
    return {}


def split_component(text):
    """'pca.npz:12' -> ('pca.npz', 12, None); 'pca.npz:12:0-5' -> ('pca.npz', 12, (0, 6)) (W+ layers
    0..5); any other text -> (text, None, None)."""
    m = _COMPONENT.match(str(text))
    if not m:
        return str(text), None, None
    layers = None
    if m["start"] is not None:
        start, end = int(m["start"]), int(m["end"] if m["end"] is not None else m["start"])
        if end < start:
            raise InputError(f"{text}: layer range {start}-{end} is empty")
        layers = (start, end + 1)
    return m["path"], int(m["index"]), layers


def read_foreign_direction(path, component=None, layers=None):
    """An e4e-style `.pt` direction or a GANSpace component -> (vector float32 [1, D] or [L, D],
    metadata: space, name, layers, provenance). `component`: the GANSpace component's index."""
    path = Path(path)
    if path.suffix == ".npz":
        data = _read_npz(path)
        missing = [k for k in ("lat_comp", "lat_stdev") if k not in data]
        if missing:
            raise FormatError(f"{path}: not a GANSpace component file (no {', '.join(missing)}; holds {sorted(data)})")
        # GANSpace fills lat_stdev with ones when it decomposed in Z (no W statistics)
        space = "z" if np.all(data["lat_stdev"] == 1) else "w"
        return _component(path, data["lat_comp"], data["lat_stdev"], component, layers, space, "GANSpace .npz")
    from latentedit.formats.torch_file import load_torch_file

    obj = load_torch_file(path)
    if isinstance(obj, dict) and "comp" in obj and "std" in obj:
        return _component(path, _array(path, obj["comp"]), _array(path, obj["std"]), component, layers, "w",
                          "e4e ganspace_pca .pt")
    if not torch.is_tensor(obj):
        held = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise FormatError(f"{path}: not a direction file (expected one tensor [1, D] as e4e's "
                          f"interfacegan_directions/*.pt, or a GANSpace dict with comp / std; holds {held})")
    if component is not None:
        raise InputError(f"{path}: one direction, not a set of components; drop ':{component}'")
    vector = _array(path, obj)
    while vector.ndim > 2 and vector.shape[0] == 1:
        vector = vector[0]  # [1, L, D] -> [L, D]
    vector = vector.reshape(1, -1) if vector.ndim == 1 else vector
    if vector.ndim != 2:
        raise FormatError(f"{path}: a direction tensor must be [D], [1, D] or [L, D], got {list(obj.shape)}")
    meta = {"space": "w" if len(vector) == 1 else "w+", "name": path.stem, "layers": _layers(layers),
            "provenance": {"file": str(path), "format": "interfacegan_directions .pt (e4e / HyperStyle / PTI)"}}
    return vector, meta


def _component(path, comp, stdev, index, layers, space, fmt):
    comp, stdev = np.asarray(comp, np.float32), np.asarray(stdev, np.float32).reshape(-1)
    if comp.ndim == 2:
        comp = comp[:, None]                                                    # [K, D] -> [K, 1, D]
    if comp.ndim != 3 or len(stdev) != len(comp):
        raise FormatError(f"{path}: components {list(comp.shape)} and stdevs {list(stdev.shape)} do not match "
                          "(expected [K, 1, D] and [K])")
    if index is None:
        raise InputError(f"{path} holds {len(comp)} components: name one as {path}:INDEX (0..{len(comp) - 1})")
    if not 0 <= index < len(comp):
        raise InputError(f"{path}: component {index} is outside 0..{len(comp) - 1}")
    vector = comp[index] * stdev[index]                                         # [1, D] or [L, D]
    if not np.isfinite(vector).all():
        raise FormatError(f"{path}: component {index} contains NaN or infinite values")
    meta = {"space": space if len(vector) == 1 else "w+", "name": f"{path.stem}_c{index}", "layers": _layers(layers),
            "provenance": {"file": str(path), "format": fmt, "component": index, "stdev": float(stdev[index]),
                           "unit": "one standard deviation per unit of strength"}}
    return vector, meta


def _layers(layers):
    return list(layers) if layers else None


def _read_npz(path):
    path = regular_file(path, "direction file")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise FormatError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from None


def _array(path, t):
    if not torch.is_tensor(t) or not t.is_floating_point():
        raise FormatError(f"{path}: expected float tensors, got {type(t).__name__}")
    a = t.detach().to("cpu", torch.float32).numpy()
    if a.size == 0 or not np.isfinite(a).all():
        raise FormatError(f"{path}: empty, or contains NaN or infinite values")
    return a


def _check_sidecar(side, meta, shape):
    """Every field a reader uses, type and range, so a hand-edited or foreign sidecar fails here with
    its field named instead of deep inside an edit."""
    def bad(field, want):
        raise FormatError(f"{side}: sidecar field {field!r} must be {want}, got {meta[field]!r:.80}")

    if not isinstance(meta, dict) or meta.get("format") != DIRECTION_FORMAT:
        raise FormatError(f"{side}: not a latentedit direction sidecar")
    if "version" in meta:
        if not is_count(meta["version"], 1):
            bad("version", "a positive integer")
        if meta["version"] > DIRECTION_VERSION:
            raise FormatError(f"{side}: sidecar version {meta['version']} is newer than this latentedit reads")
    if "shape" in meta:
        if not isinstance(meta["shape"], list) or not all(is_count(n, 0) for n in meta["shape"]):
            bad("shape", "a list of integers")
        if meta["shape"] != list(shape):
            raise FormatError(f"{side}: sidecar says shape {meta['shape']}, the .npy holds {list(shape)}")
    if meta.get("space") is not None and meta["space"] not in SPACES:
        bad("space", f"one of {list(SPACES)} or null")
    if meta.get("num_ws") is not None and (not is_count(meta["num_ws"], 1) or meta["num_ws"] > MAX_NUM_WS):
        bad("num_ws", f"an integer in [1, {MAX_NUM_WS}] or null")
    layers = meta.get("layers")
    if layers is not None and (not isinstance(layers, list) or len(layers) != 2 or not all(is_count(n, 0) for n in layers)
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
