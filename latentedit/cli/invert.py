"""`latentedit invert IMG|DIR ... --out DIR`: latent codes for images (projection, the image -> W+
encoder, or projection started from the encoder's codes)."""
import contextlib
import warnings
from pathlib import Path

import click
import numpy as np

from latentedit.cli.models import model_options, resolve_model
from latentedit.edit.project import MODES, SPACES, evaluator_losses, invert as invert_images, load_encoder, reconstruct
from latentedit.errors import InputError
from latentedit.formats.image_input import list_images, read_image, to_tensor
from latentedit.formats.images import save_png, tile, to_uint8
from latentedit.formats.latents import write_latents


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


def input_options(f):
    """--input IMG|DIR (repeatable), --invert-mode, --invert-steps, --encoder: edit the codes of images."""
    options = [
        click.option("--input", "input_paths", type=click.Path(), multiple=True,
                     help="Image file or folder (repeatable): invert these images and edit their codes."),
        click.option("--invert-mode", type=click.Choice(MODES), default="encoder", show_default=True,
                     help="How --input images are inverted (see `latentedit invert`)."),
        click.option("--invert-steps", type=int, default=300, show_default=True,
                     help="Optimisation steps of --invert-mode project / hybrid."),
        click.option("--encoder", "encoder_path", type=click.Path(), default=None,
                     help="Bundle holding the encoder for --input (default: the model bundle)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def check_input_options(input_paths, invert_mode, invert_steps, encoder_path):
    """Refuses --invert-* / --encoder without --input, and bad --invert-steps."""
    ctx = click.get_current_context()
    if not input_paths:
        for name in ("invert_mode", "invert_steps", "encoder_path"):
            if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE:
                flag = "--encoder" if name == "encoder_path" else "--" + name.replace("_", "-")
                raise InputError(f"{flag} applies to images given with --input")
    if invert_steps < 1:
        raise InputError(f"--invert-steps must be >= 1, got {invert_steps}")


def read_inputs(input_paths, resolution):
    """--input files / folders -> (files, images [N, 3, R, R] in [-1, 1]); every file read up front,
    so a file that is not an image is an error naming it before anything is written."""
    files = list_images(list(input_paths))
    return files, to_tensor([read_image(f, resolution) for f in files])


def input_encoder(mode, encoder_path, model_path, G, flag="--invert-mode"):
    """(encoder or None, its weights' sha256 or None) for --invert-mode / --mode; the encoder comes
    from --encoder, else from the model bundle (model_path)."""
    from latentedit.formats import bundle
    from latentedit.formats.encoder import NAME

    if mode == "project":
        return None, None
    if encoder_path is None:
        if model_path is None or not bundle.is_bundle(model_path):
            raise InputError(f"{flag} {mode} needs an encoder, and the model {model_path} is "
                             "not a bundle that could hold one; pass --encoder BUNDLE (train one with "
                             "`latentedit train encoder`)")
        encoder_path = model_path
    encoder = load_encoder(encoder_path, G)
    return encoder, bundle.read_manifest(encoder_path)["networks"][NAME]["sha256"]


def invert_inputs(images, G, mode, encoder, steps, batch_size=16, label="inverting"):
    """W+ codes [N, num_ws, w_dim] of images [N, 3, R, R] (seed 0, pixel loss for project / hybrid)."""
    import torch

    per_image = 1 if mode == "encoder" else steps
    parts = []
    with click.progressbar(length=len(images) * per_image, label=f"{label} {len(images)} images ({mode})",
                           file=None) as bar:
        for i in range(0, len(images), batch_size):
            batch = images[i:i + batch_size]

            def progress(step, total, losses, _bar=bar, _k=len(batch)):
                _bar.update(_k)

            parts.append(invert_images(batch, mode=mode, G=G, encoder=encoder, space="w+", steps=steps,
                                       progress=progress))
            if mode == "encoder":
                bar.update(len(batch))
    return torch.cat(parts)


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@model_options
@click.option("--out", required=True, type=click.Path(), help="Output folder.")
@click.option("--mode", type=click.Choice(MODES), default="project", show_default=True,
              help="project: optimise from w_avg; encoder: the encoder's codes; hybrid: optimise from them.")
@click.option("--encoder", "encoder_path", type=click.Path(), default=None,
              help="Bundle folder holding the encoder (modes encoder / hybrid; default: the --model bundle).")
@click.option("--steps", type=int, default=300, show_default=True, help="Optimisation steps (project / hybrid).")
@click.option("--space", type=click.Choice(SPACES), default="w+", show_default=True)
@click.option("--evaluators", "evaluators_path", type=click.Path(), default=None,
              help="Evaluator bundle for the perceptual (attribute features) and identity losses "
                   "(default: the --model bundle when it holds evaluators; else pixel loss only).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--batch-size", type=int, default=4, show_default=True)
def invert(inputs, model_path, random_weights, resolution, channel_base, channel_max, weights_seed, mapping_lr_mul,
           out, mode, encoder_path, steps, space, evaluators_path, seed, batch_size):
    """Invert images (files or folders) into latents: NAME.npy / NAME.json (SD-GAN style),
    NAME_rec.png reconstructions and grid.png (input | reconstruction per row) in --out.
    Modes encoder / hybrid use the encoder of --encoder, else of the --model bundle.
    A re-run skips images whose NAME.npy exists."""
    if batch_size < 1 or steps < 1:
        raise InputError("--batch-size and --steps must be >= 1")
    for folder in (Path(p) for p in inputs):
        if folder.is_dir() and Path(out).resolve().is_relative_to(folder.resolve()):
            # its reconstructions and grid would be read back as inputs on every re-run
            raise InputError(f"--out {out} is inside the input folder {folder}: choose a folder outside it")
    if encoder_path is not None and mode == "project":
        click.echo("note: --encoder is used by modes encoder / hybrid; unused in mode project")
    with warning_lines():
        nets = resolve_model(model_path, random_weights, resolution, channel_base, channel_max, weights_seed,
                             mapping_lr_mul)
        encoder = input_encoder(mode, encoder_path, nets.path, nets.G, flag="--mode")[0]
        if evaluators_path is None and mode != "encoder" and _holds_evaluators(nets.path):
            evaluators_path = nets.path
        _run(inputs, nets.G, Path(out), mode, encoder, steps, space, evaluators_path, seed, batch_size)


def _holds_evaluators(path):
    from latentedit.formats import bundle

    return (path is not None and bundle.is_bundle(path)
            and any(k in bundle.read_manifest(path)["networks"] for k in ("attributes", "identity")))


def _run(inputs, G, out, mode, encoder, steps, space, evaluators_path, seed, batch_size):
    files = list_images(inputs)
    names = [f.stem for f in files]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"several inputs share the name(s) {dupes}; outputs would collide")
    R = G.img_resolution
    images = to_tensor([read_image(f, R) for f in files])  # reads (and checks) every file up front
    evaluators = None
    if mode == "encoder":
        if evaluators_path:
            click.echo("note: --evaluators only shapes the losses of modes project / hybrid; unused in mode encoder")
    elif evaluators_path:
        from latentedit.formats import bundle
        from latentedit.formats.evaluators import load_evaluators

        held = bundle.read_manifest(Path(evaluators_path))["networks"]
        used = [k for k in ("attributes", "identity") if k in held]
        evaluators = load_evaluators(evaluators_path, used)
        click.echo(f"losses: pixel + {' + '.join({'attributes': 'perceptual', 'identity': 'identity'}[k] for k in used)}"
                   if used else "note: the evaluator bundle has no attribute classifier or identity embedder; pixel loss only")
    else:
        click.echo("note: no evaluators (the model is not a bundle holding them, and no --evaluators); pixel loss only")
    evaluator_losses(evaluators)  # fail early on a bad bundle layout

    todo = [i for i, n in enumerate(names) if not (out / f"{n}.npy").exists()]
    if len(todo) < len(names):
        click.echo(f"resuming: {len(names) - len(todo)} of {len(names)} images already inverted")
    batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
    per_image = 1 if mode == "encoder" else steps
    with click.progressbar(length=len(todo) * per_image, label=f"inverting {len(todo)} images ({mode}, {space})",
                           file=None) as bar:
        for batch in batches:
            def progress(step, total, losses, _bar=bar, _k=len(batch)):
                _bar.update(_k)

            codes = invert_images(images[batch], mode=mode, G=G, evaluators=evaluators, encoder=encoder, space=space,
                                  steps=steps, seed=seed, progress=progress)
            if mode == "encoder":
                bar.update(len(batch))
            recs = reconstruct(G, codes)
            for i, code, rec in zip(batch, codes, recs):
                stem = out / names[i]
                save_png(out / f"{names[i]}_rec.png", _uint8(rec))
                write_latents(stem.with_suffix(".json"), code[None].numpy())
                write_latents(stem.with_suffix(".npy"), code[None].numpy())  # last: marks the image done
    grid_path = out / "grid.png"
    if todo or not grid_path.exists():
        rows = []
        for i, n in enumerate(names):
            rows += [_uint8(images[i]), _read_png(out / f"{n}_rec.png")]
        save_png(grid_path, tile(np.stack(rows), cols=2))
    click.echo(f"inverted {len(todo)} images ({len(names) - len(todo)} already done) into {out}/ and the grid {grid_path}")


def _uint8(img):  # [3, H, W] in [-1, 1] -> [H, W, 3] uint8
    return to_uint8(img[None])[0]


def _read_png(path):
    from PIL import Image

    from latentedit.formats.files import regular_file

    with Image.open(regular_file(path, "image from an earlier run")) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)
