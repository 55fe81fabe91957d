"""`latentedit invert IMG|DIR ... --out DIR`: latent codes for images (projection; encoder later)."""
import warnings
from pathlib import Path

import click
import numpy as np

from latentedit.cli.models import model_options, resolve_model
from latentedit.edit.project import MODES, SPACES, evaluator_losses, invert as invert_images, reconstruct
from latentedit.errors import InputError
from latentedit.formats.image_input import list_images, read_image, to_tensor
from latentedit.formats.images import save_png, tile, to_uint8
from latentedit.formats.latents import write_latents


def _warn_line(message, category, filename, lineno, file=None, line=None):
    click.echo(f"warning: {message}", err=True)


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@model_options
@click.option("--out", required=True, type=click.Path(), help="Output folder.")
@click.option("--mode", type=click.Choice(MODES), default="project", show_default=True,
              help="encoder / hybrid need an encoder (none is bundled yet).")
@click.option("--steps", type=int, default=300, show_default=True, help="Optimisation steps.")
@click.option("--space", type=click.Choice(SPACES), default="w+", show_default=True)
@click.option("--evaluators", "evaluators_path", type=click.Path(), default=None,
              help="Evaluator bundle: adds the perceptual (attribute features) and identity losses.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--batch-size", type=int, default=4, show_default=True)
def invert(inputs, model_path, random_weights, resolution, channel_base, channel_max, weights_seed, mapping_lr_mul,
           out, mode, steps, space, evaluators_path, seed, batch_size):
    """Invert images (files or folders) into latents: NAME.npy / NAME.json (SD-GAN style),
    NAME_rec.png reconstructions and grid.png (input | reconstruction per row) in --out.
    A re-run skips images whose NAME.npy exists."""
    if batch_size < 1 or steps < 1:
        raise InputError("--batch-size and --steps must be >= 1")
    old_show = warnings.showwarning
    warnings.showwarning = _warn_line
    try:
        _run(inputs, resolve_model(model_path, random_weights, resolution, channel_base, channel_max,
                                   weights_seed, mapping_lr_mul).G,
             Path(out), mode, steps, space, evaluators_path, seed, batch_size)
    finally:
        warnings.showwarning = old_show


def _run(inputs, G, out, mode, steps, space, evaluators_path, seed, batch_size):
    if mode != "project":
        raise InputError(f"--mode {mode} needs an encoder, and no encoder is bundled yet; use --mode project")
    files = list_images(inputs)
    names = [f.stem for f in files]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"several inputs share the name(s) {dupes}; outputs would collide")
    R = G.img_resolution
    images = to_tensor([read_image(f, R) for f in files])  # reads (and checks) every file up front
    evaluators = None
    if evaluators_path:
        from latentedit.formats import bundle
        from latentedit.formats.evaluators import load_evaluators

        held = bundle.read_manifest(Path(evaluators_path))["networks"]
        used = [k for k in ("attributes", "identity") if k in held]
        evaluators = load_evaluators(evaluators_path, used)
        click.echo(f"losses: pixel + {' + '.join({'attributes': 'perceptual', 'identity': 'identity'}[k] for k in used)}"
                   if used else "note: the evaluator bundle has no attribute classifier or identity embedder; pixel loss only")
    else:
        click.echo("note: no --evaluators given; pixel loss only (perceptual and identity losses need an evaluator bundle)")
    evaluator_losses(evaluators)  # fail early on a bad bundle layout

    todo = [i for i, n in enumerate(names) if not (out / f"{n}.npy").exists()]
    if len(todo) < len(names):
        click.echo(f"resuming: {len(names) - len(todo)} of {len(names)} images already inverted")
    batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
    with click.progressbar(length=len(todo) * steps, label=f"inverting {len(todo)} images ({mode}, {space})",
                           file=None) as bar:
        for batch in batches:
            def progress(step, total, losses, _bar=bar, _k=len(batch)):
                _bar.update(_k)

            codes = invert_images(images[batch], mode=mode, G=G, evaluators=evaluators, space=space, steps=steps,
                                  seed=seed, progress=progress)
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

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)
