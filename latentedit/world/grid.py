"""Contact sheets of world renders and colour-coded label maps, written atomically."""
from __future__ import annotations

import os
import tempfile

import numpy as np
import torch
from PIL import Image

from latentedit.world.params import LABEL_COLORS


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[N, 3, H, W] in [-1, 1] -> [N, H, W, 3] uint8."""
    x = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def colorize(labels: torch.Tensor) -> np.ndarray:
    """[N, H, W] int64 label ids -> [N, H, W, 3] uint8 palette colours."""
    return LABEL_COLORS[labels].numpy()


def tile(images: np.ndarray, cols: int, scale: int = 1, pad: int = 1) -> np.ndarray:
    """[N, H, W, 3] uint8 -> one [rows*(H+pad)+pad, ..., 3] sheet (nearest upscaling)."""
    n, h, w, _ = images.shape
    if scale > 1:
        images = images.repeat(scale, axis=1).repeat(scale, axis=2)
        h, w = h * scale, w * scale
    rows = (n + cols - 1) // cols
    sheet = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        sheet[pad + r * (h + pad):pad + r * (h + pad) + h,
              pad + c * (w + pad):pad + c * (w + pad) + w] = images[i]
    return sheet


def save_png(array: np.ndarray, path: str) -> None:
    """Write an RGB uint8 array as PNG atomically (temp file in the same folder + os.replace)."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(suffix=".png", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            Image.fromarray(array).save(f, format="PNG")
        os.chmod(tmp, 0o644)  # mkstemp creates 0600 files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
