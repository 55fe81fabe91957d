"""Latent files: SD-GAN JSON ({"0": [w_dim floats], ...} or nested [L][w_dim] for W+) and .npy
([N, w_dim] or [N, L, w_dim]). Read -> float32 array; written atomically.

SD-GAN JSON is read strictly: the keys are exactly "0".."N-1" (the sample indices), every entry
is a flat list of w_dim numbers (a W code; a single row [[w_dim numbers]] counts as one) or a
nested [L][w_dim] list (a W+ code), all entries alike. A missing key, an entry of another length,
or a value that is not a finite number is an error naming the key. A plain JSON list of entries
is read the same way (the entries named by their position).
"""
import io
import json
import math
import re
from pathlib import Path

import numpy as np

from latentedit.errors import FormatError
from latentedit.formats.atomic import write_bytes, write_text
from latentedit.formats.files import read_json, regular_file

_INDEX = re.compile(r"0|[1-9][0-9]*")
MAX_NPY_BYTES = 8 << 30  # 8 GiB: millions of W+ codes; a header claiming more is refused unread


def _check_npy_header(path):
    """Refuses, before np.load allocates anything, an .npy whose header claims more data than the
    file holds or than MAX_NPY_BYTES (a 40-byte file can claim 10^12 x 512 floats)."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy version {version}")
            offset = f.tell()
    except (ValueError, OSError, EOFError) as e:
        raise FormatError(f"{path}: not a readable .npy file ({type(e).__name__}: {e})") from None
    claimed = math.prod(shape) * dtype.itemsize
    if claimed > MAX_NPY_BYTES:
        raise FormatError(f"{path}: its header claims shape {list(shape)} ({claimed / 2 ** 30:.3g} GiB; "
                          f"at most {MAX_NPY_BYTES >> 30} GiB)")
    present = path.stat().st_size - offset
    if claimed > present:
        raise FormatError(f"{path}: truncated: its header claims shape {list(shape)} ({claimed} bytes), "
                          f"the file holds {present}")


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _entry(path, name, value, w_dim):
    """One JSON entry -> float32 [w_dim] or [L, w_dim]; errors name the entry."""
    if not isinstance(value, list) or not value:
        raise FormatError(f"{path}: {name} must be a list of numbers (a W code) or of lists (a W+ code), "
                          f"got {type(value).__name__ if not isinstance(value, list) else 'an empty list'}")
    rows = value if isinstance(value[0], list) else [value]
    nested = isinstance(value[0], list)
    expected = w_dim if w_dim is not None else len(rows[0])
    for j, row in enumerate(rows):
        where = f"{name}" + (f" row {j}" if nested else "")
        if not isinstance(row, list):
            raise FormatError(f"{path}: {where}: mixes numbers and lists")
        if len(row) != expected:
            raise FormatError(f"{path}: {where} has {len(row)} values, expected {expected}")
        for v in row:
            if not _is_number(v):
                raise FormatError(f"{path}: {where} holds {json.dumps(v)[:40]}, not a number")
            try:
                finite = math.isfinite(v)
            except OverflowError:  # an integer too large for a float
                finite = False
            if not finite:
                raise FormatError(f"{path}: {name} contains NaN or infinite values")
    arr = np.asarray(rows, dtype=np.float32)
    if not np.isfinite(arr).all():  # finite doubles beyond float32's range
        raise FormatError(f"{path}: {name} has values beyond float32's range")
    return arr[0] if len(rows) == 1 else arr  # [[w_dim numbers]]: one W code


def _read_json(path, w_dim):
    data = read_json(path, "latent file")
    if isinstance(data, dict):
        for key in data:
            if not _INDEX.fullmatch(key):
                raise FormatError(f"{path}: key {json.dumps(key)} is not a sample index "
                                  f"(SD-GAN latent JSON keys are \"0\", \"1\", ...)")
        for i in range(len(data)):
            if str(i) not in data:
                raise FormatError(f"{path}: missing key \"{i}\" (keys must be \"0\"..\"{len(data) - 1}\")")
        entries = [_entry(path, f"key \"{i}\"", data[str(i)], w_dim) for i in range(len(data))]
    elif isinstance(data, list):
        entries = [_entry(path, f"entry {i}", v, w_dim) for i, v in enumerate(data)]
    else:
        raise FormatError(f"{path}: expected an SD-GAN latent object {{\"0\": [...], ...}} or a list, "
                          f"got {type(data).__name__}")
    if not entries:
        raise FormatError(f"{path}: holds no latents")
    first = entries[0].shape
    for i, e in enumerate(entries):
        if e.shape != first:
            name = f"key \"{i}\"" if isinstance(data, dict) else f"entry {i}"
            raise FormatError(f"{path}: {name} has shape {list(e.shape)}, entry 0 has {list(first)} "
                              "(all W codes or all W+ codes of one length)")
    return np.stack(entries)


def read_npy(path, what="the array"):
    """A .npy array of numbers (never a pickle): truncated, object-dtype or .npz files are a
    FormatError naming the file; `what` names the contents in the message."""
    path = regular_file(path, "array file")
    _check_npy_header(path)
    try:
        a = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise FormatError(f"{path}: not a readable .npy file ({type(e).__name__}: {e})") from None
    if not isinstance(a, np.ndarray):  # an .npz archive saved under .npy
        raise FormatError(f"{path}: an .npz archive, not a single .npy array")
    if a.dtype.kind not in "fiu":
        raise FormatError(f"{path}: {what} must be numbers, got dtype {a.dtype}")
    return a


def read_earlier_array(path, shape, what):
    """float32 array of `shape` that an earlier run saved (.npy); a FormatError that says to delete
    it when it is unreadable, of another shape or not finite."""
    try:
        a = read_npy(path, what)
    except FormatError as e:
        raise FormatError(f"{e} ({what} from an earlier run); delete it") from None
    if a.shape != tuple(shape) or not np.isfinite(a).all():
        raise FormatError(f"{path}: {what} from an earlier run is not {list(shape)} finite values; delete it")
    return a.astype(np.float32)


def read_latents(path, w_dim=None, num_ws=None):
    """Latents [N, w_dim] or [N, L, w_dim] (float32) from .json or .npy. w_dim / num_ws (when
    given) are the generator's: a code of another length or W+ depth is an error naming it."""
    path = regular_file(path, "latent file")
    if path.suffix == ".npy":
        w = read_npy(path, "latents")
    elif path.suffix == ".json":
        w = _read_json(path, w_dim)
    else:
        raise FormatError(f"{path}: unknown latent file type (expected .json or .npy)")
    if w.ndim not in (2, 3) or w.shape[0] == 0:
        raise FormatError(f"{path}: latents must be [N, w_dim] or [N, L, w_dim], got shape {list(w.shape)}")
    if not np.isfinite(w).all():
        raise FormatError(f"{path}: latents contain NaN or infinite values")
    if w_dim is not None and w.shape[-1] != w_dim:
        raise FormatError(f"{path}: codes of {w.shape[-1]} values, the generator's W has {w_dim}")
    if num_ws is not None and w.ndim == 3 and w.shape[1] != num_ws:
        raise FormatError(f"{path}: W+ codes of {w.shape[1]} layers, the generator has {num_ws}")
    return w.astype(np.float32)


def read_priors(path, n, w_dim, codes_source=None):
    """Per-sample prior vectors [n, w_dim] (SD-GAN's interface file, .json or .npy) for n codes;
    codes_source says where the codes came from, for the error when the counts differ."""
    p = read_latents(path, w_dim=w_dim)
    if p.ndim != 2:
        raise FormatError(f"{path}: priors must be one {w_dim}-vector per sample, got shape {list(p.shape)}")
    if len(p) != n:
        source = f" ({codes_source})" if codes_source else ""
        raise FormatError(f"{path}: {len(p)} prior vectors for {n} latent codes{source} (one per code)")
    return p


def write_latents(path, w):
    path = Path(path)
    w = np.asarray(w, dtype=np.float32)
    if path.suffix == ".npy":
        buf = io.BytesIO()
        np.save(buf, w)
        write_bytes(path, buf.getvalue())
    elif path.suffix == ".json":
        write_text(path, json.dumps({str(i): row.tolist() for i, row in enumerate(w)}))
    else:
        raise FormatError(f"{path}: unknown latent file type (expected .json or .npy)")
    return path
