"""Images given to a command (`invert`, `edit --input`, `synthesize --input`): reading them (or
finding and aligning their faces), their encoder, inverting them with a progress bar, pasting
results back into photos, and Python warnings shown as `warning: ...` lines."""
import contextlib
import warnings
from pathlib import Path

import click
import numpy as np

from latentedit.errors import InputError
from latentedit.formats.files import file_sha256
from latentedit.formats.image_input import list_images, read_image, to_tensor
from latentedit.formats.images import save_png, to_uint8


def _warn_line(message, category, filename, lineno, file=None, line=None):
    click.echo(f"warning: {message}", err=True)


@contextlib.contextmanager
def warning_lines():
    """Python warnings (an image resized, a folder's non-image files skipped) as `warning: ...` lines."""
    old_show = warnings.showwarning
    warnings.showwarning = _warn_line
    try:
        yield
    finally:
        warnings.showwarning = old_show


def image_uint8(img):
    """[3, H, W] in [-1, 1] -> [H, W, 3] uint8."""
    return to_uint8(img[None])[0]


def read_inputs(input_paths, resolution):
    """--input files / folders -> (files, images [N, 3, R, R] in [-1, 1]); every file read up front,
    so a file that is not an image is an error naming it before anything is written."""
    files = list_images(list(input_paths))
    return files, to_tensor([read_image(f, resolution) for f in files])


def read_aligned_inputs(input_paths, resolution):
    """--input --align photos -> (files, aligned crops [N, 3, R, R] in [-1, 1], Alignments, photos
    uint8 [H, W, 3]); every face is found up front, so a photo without one is an error before
    anything is written."""
    from latentedit.edit.align import align_face
    from latentedit.formats.image_input import open_rgb

    files = list_images(list(input_paths))
    photos = [np.asarray(open_rgb(f, upright=True), dtype=np.uint8) for f in files]
    alignments = [align_face(photo, resolution, name=str(f)) for f, photo in zip(files, photos)]
    return files, to_tensor([a.crop for a in alignments]), alignments, photos


def write_pasted(path, photo, image, alignment):
    """A crop (tensor [3, R, R] in [-1, 1], or uint8 [R, R, 3]) pasted back into its photo -> path."""
    import torch

    from latentedit.edit.align import paste_back

    save_png(path, paste_back(photo, image_uint8(image) if torch.is_tensor(image) else image, alignment.quad))


def input_encoder(mode, encoder_path, model, flag="--invert-mode"):
    """(encoder or None, its weights' sha256 or None) for --invert-mode / --mode; the encoder comes
    from --encoder (a bundle, or an e4e / pSp / ReStyle checkpoint file), else from the bundle of
    `model` (a latentedit.Model)."""
    from latentedit.edit.inversion import load_encoder
    from latentedit.formats import bundle
    from latentedit.formats.encoder import NAME

    if mode == "project":
        return None, None
    if encoder_path is None:
        if model.parts is None:
            raise InputError(f"{flag} {mode} needs an encoder, and the model {model.source} is "
                             "not a bundle that could hold one; pass --encoder BUNDLE (train one with "
                             "`latentedit train encoder`)")
        encoder_path, encoder = model.parts, model.encoder()
    else:
        encoder = load_encoder(encoder_path, model.G, generator_hash=model.generator_hash)
    if Path(encoder_path).is_file():
        return encoder, file_sha256(encoder_path, "encoder file")
    return encoder, bundle.read_manifest(encoder_path)["networks"][NAME]["sha256"]


def invert_inputs(images, G, mode, encoder, steps, batch_size=16, label="inverting"):
    """W+ codes [N, num_ws, w_dim] of images [N, 3, R, R] (seed 0, pixel loss for project / hybrid)."""
    import torch

    from latentedit.edit.inversion import invert

    per_image = 1 if mode == "encoder" else steps
    parts = []
    with click.progressbar(length=len(images) * per_image, label=f"{label} {len(images)} images ({mode})",
                           file=None) as bar:
        for i in range(0, len(images), batch_size):
            batch = images[i:i + batch_size]

            def progress(step, total, losses, _bar=bar, _k=len(batch)):
                _bar.update(_k)

            parts.append(invert(batch, mode=mode, G=G, encoder=encoder, space="w+", steps=steps,
                                progress=progress))
            if mode == "encoder":
                bar.update(len(batch))
    return torch.cat(parts)
