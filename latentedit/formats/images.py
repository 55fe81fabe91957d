"""Images out: [-1, 1] tensors to PNG files and contact-sheet grids (written atomically)."""
import math

import numpy as np
import torch
from PIL import Image

from latentedit.formats.atomic import atomic_path


def to_uint8(images):
    """[N, C, H, W] in [-1, 1] -> uint8 array [N, H, W, C]."""
    x = (images.detach().float().cpu() * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def grid(images, cols=None):
    """[N, C, H, W] in [-1, 1] -> one uint8 [rows * H, cols * W, C] contact sheet."""
    arr = to_uint8(images)
    n, h, w, c = arr.shape
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    sheet = np.zeros([rows * h, cols * w, c], dtype=np.uint8)
    for i in range(n):
        r, k = divmod(i, cols)
        sheet[r * h:(r + 1) * h, k * w:(k + 1) * w] = arr[i]
    return sheet


def save_png(path, array):
    """uint8 [H, W, C] (C = 1 or 3) -> PNG, atomically."""
    array = array[..., 0] if array.shape[-1] == 1 else array
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")
