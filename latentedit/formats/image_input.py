"""Images in: files or folders -> [N, 3, R, R] float tensors in [-1, 1] at a generator's size.

A non-square image is centre-cropped to a square and an image of another size is resized
(Lanczos), each with a warning naming the file; an unreadable or non-image file is a FormatError
naming it. A folder contributes its image files (by extension) in sorted order.
"""
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from latentedit.errors import FormatError, InputError
from latentedit.formats.files import regular_file

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm")


def list_images(paths):
    """A file, a folder or a list of them -> image file paths: each folder's image files sorted by
    name (hidden files and other extensions skipped, with a warning for the latter); files given
    by name are kept whatever their extension (reading them says whether they are images)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
            images = [f for f in files if f.suffix.lower() in IMAGE_EXTENSIONS]
            skipped = [f.name for f in files if f.suffix.lower() not in IMAGE_EXTENSIONS]
            if skipped:
                shown = ", ".join(skipped[:5]) + (f", ... ({len(skipped)} in all)" if len(skipped) > 5 else "")
                warnings.warn(f"{p}: skipping files that are not images: {shown}", stacklevel=2)
            if not images:
                raise InputError(f"{p}: no image files in this folder")
            out += images
        elif p.exists():
            out.append(regular_file(p, "image file"))
        else:
            raise InputError(f"{p}: no such file or folder")
    return out


ALPHA_MODES = ("white", "drop")


def open_rgb(path, alpha="white", upright=False):
    """One image file -> a PIL RGB image at its own size (first frame). alpha: "white" flattens
    transparent pixels onto white; "drop" discards the alpha channel and keeps the colours stored
    under it (what PIL's convert("RGB") and cv2.imread do). upright: turned as its EXIF
    orientation says, as a phone photo is shown. FormatError naming an unreadable file."""
    if alpha not in ALPHA_MODES:
        raise InputError(f"alpha must be one of {ALPHA_MODES}, got {alpha!r}")
    path = regular_file(path, "image file")
    try:
        with Image.open(path) as im:
            im.load()
            if upright:
                im = ImageOps.exif_transpose(im)
            if getattr(im, "n_frames", 1) > 1:
                warnings.warn(f"{path}: has {im.n_frames} frames; using the first", stacklevel=3)
            if alpha == "white" and ("A" in im.getbands() or im.mode == "P"):
                im = im.convert("RGBA")
                bg = Image.new("RGBA", im.size, (255, 255, 255, 255))  # flatten onto white
                im = Image.alpha_composite(bg, im)
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise FormatError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None


def read_image(path, resolution, alpha="white", purpose="the generator"):
    """One image file -> uint8 array [R, R, 3] (RGB), centre-cropped / resized with a warning
    that says for what (alpha: see `open_rgb`)."""
    path = Path(path)
    im = open_rgb(path, alpha)
    w, h = im.size
    changes = []
    if w != h:
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        im = im.crop((left, top, left + s, top + s))
        changes.append(f"centre-cropped {w}x{h} to {s}x{s}")
    if im.size != (resolution, resolution):
        changes.append(f"resized {im.size[0]}x{im.size[1]} to {resolution}x{resolution}")
        im = im.resize((resolution, resolution), Image.LANCZOS)
    if changes:
        warnings.warn(f"{path}: " + " and ".join(changes) + f" for {purpose}", stacklevel=2)
    return np.asarray(im, dtype=np.uint8)


def to_tensor(arrays):
    """uint8 [N, H, W, 3] (or a list of [H, W, 3]) -> float [N, 3, H, W] in [-1, 1]."""
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1


def read_images(paths, resolution):
    """Files / folders -> images [N, 3, R, R] in [-1, 1] (see `list_images`, `read_image`)."""
    if resolution < 1:
        raise InputError(f"resolution must be positive, got {resolution}")
    return to_tensor([read_image(p, resolution) for p in list_images(paths)])
