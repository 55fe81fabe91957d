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


def to_uint8_stretched(images):
    """[N, C, H, W] -> uint8 [N, H, W, C], each image stretched by its own min / max first, as
    torchvision's save_image(normalize=True) writes one image (SD-GAN's test.py output)."""
    x = images.detach().float().cpu()
    lo, hi = x.amin((1, 2, 3), keepdim=True), x.amax((1, 2, 3), keepdim=True)
    x = (x - lo) / (hi - lo).clamp(min=1e-5)
    return (x * 255 + 0.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def tile(arrays, cols, scale=1, pad=0):
    """uint8 [N, H, W, C] -> one contact sheet of `cols` columns, each tile upscaled by `scale`
    (nearest) and separated by `pad` white pixels."""
    n, h, w, c = arrays.shape
    if scale > 1:
        arrays = arrays.repeat(scale, axis=1).repeat(scale, axis=2)
        h, w = h * scale, w * scale
    rows = math.ceil(n / cols)
    sheet = np.full([rows * (h + pad) + pad, cols * (w + pad) + pad, c], 255 if pad else 0, dtype=np.uint8)
    for i in range(n):
        r, k = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + k * (w + pad)
        sheet[y:y + h, x:x + w] = arrays[i]
    return sheet


def grid(images, cols=None):
    """[N, C, H, W] in [-1, 1] -> one uint8 [rows * H, cols * W, C] contact sheet."""
    return tile(to_uint8(images), cols or math.ceil(math.sqrt(images.shape[0])))


def save_png(path, array):
    """uint8 [H, W, C] (C = 1 or 3) -> PNG, atomically."""
    array = array[..., 0] if array.shape[-1] == 1 else array
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")
