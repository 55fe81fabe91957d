"""Latent files: SD-GAN JSON ({"0": [w_dim floats], ...} or nested [L][w_dim] for W+) and .npy
([N, w_dim] or [N, L, w_dim]). Read -> float32 array; written atomically."""
import io
import json
from pathlib import Path

import numpy as np

from latentedit.errors import FormatError
from latentedit.formats.atomic import write_bytes, write_text


def read_latents(path):
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path}: no such latent file")
    if path.suffix == ".npy":
        try:
            w = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise FormatError(f"{path}: not a readable .npy file ({type(e).__name__}: {e})") from None
        if not isinstance(w, np.ndarray):  # an .npz archive saved under .npy
            raise FormatError(f"{path}: an .npz archive, not a single .npy array")
    elif path.suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise FormatError(f"{path}: not valid JSON ({e})") from None
        if isinstance(data, dict):
            try:
                keys = sorted(data, key=int)
            except ValueError:
                raise FormatError(f"{path}: SD-GAN latent JSON keys must be integers (\"0\", \"1\", ...)") from None
            data = [data[k] for k in keys]
        try:
            w = np.asarray(data, dtype=np.float32)
        except (ValueError, TypeError):
            raise FormatError(f"{path}: latents are not a rectangular array of numbers") from None
    else:
        raise FormatError(f"{path}: unknown latent file type (expected .json or .npy)")
    if w.ndim not in (2, 3) or w.shape[0] == 0:
        raise FormatError(f"{path}: latents must be [N, w_dim] or [N, L, w_dim], got shape {list(w.shape)}")
    if not np.isfinite(w).all():
        raise FormatError(f"{path}: latents contain NaN or infinite values")
    return w.astype(np.float32)


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
