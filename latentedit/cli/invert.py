"""`latentedit invert IMG|DIR ... --out DIR`: latent codes for images (projection, the image -> W+
encoder, or projection started from the encoder's codes)."""
from pathlib import Path

import click
import numpy as np

from latentedit.cli.inputs import (image_uint8 as _uint8, input_encoder, read_aligned_inputs, warning_lines,
                                   write_pasted)
from latentedit.cli.options import align_option, model_for_encoder, model_options, threads_option
from latentedit.edit.losses import evaluator_losses
from latentedit.edit.inversion import MODES, SPACES, invert as invert_images, reconstruct
from latentedit.errors import InputError
from latentedit.formats.image_input import list_images, read_image, to_tensor
from latentedit.formats.images import save_png, tile
from latentedit.formats.latents import write_latents
from latentedit.runs import ResumableRun


@click.command()
@threads_option
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@model_options
@click.option("--out", required=True, type=click.Path(), help="Output folder.")
@click.option("--mode", type=click.Choice(MODES), default="project", show_default=True,
              help="project: optimise from w_avg; encoder: the encoder's codes; hybrid: optimise from them "
                   "(with --encoder and no --mode: encoder).")
@click.option("--encoder", "encoder_path", type=click.Path(), default=None,
              help="Bundle folder holding the encoder, or an e4e / pSp / ReStyle checkpoint, whose generator "
                   "is then the default --model (modes encoder / hybrid; default: the --model bundle).")
@click.option("--steps", type=int, default=300, show_default=True, help="Optimisation steps (project / hybrid).")
@click.option("--space", type=click.Choice(SPACES), default="w+", show_default=True)
@click.option("--evaluators", "evaluators_path", type=click.Path(), default=None,
              help="Evaluator bundle for the perceptual (attribute features) and identity losses "
                   "(default: the --model bundle when it holds evaluators; else pixel loss only).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--batch-size", type=int, default=4, show_default=True)
@click.option("--lpips", "lpips_spec", default=None, metavar="TRUNK.pth[:vgg|alex]",
              help="Perceptual loss LPIPS: torchvision's ImageNet trunk file (vgg16-397923af.pth or "
                   "alexnet-owt-7be5be79.pth); its linear weights come from the lpips package. Replaces the "
                   "evaluators' perceptual loss.")
@click.option("--arcface", "arcface_path", type=click.Path(), default=None,
              help="Identity loss ArcFace IR-SE-50 (model_ir_se50.pth, as pSp / e4e use it). Replaces the "
                   "evaluators' identity loss.")
@align_option
def invert(inputs, model_choice, out, mode, encoder_path, steps, space, evaluators_path, seed, batch_size, lpips_spec,
           arcface_path, align):
    """Invert images (files or folders) into latents: NAME.npy / NAME.json (SD-GAN style),
    NAME_rec.png reconstructions and grid.png (input | reconstruction per row) in --out.
    Modes encoder / hybrid use the encoder of --encoder, else of the --model bundle.
    With --align the inputs are photos: NAME_aligned.png is the FFHQ-aligned face, NAME_pasted.png
    the reconstruction pasted back into the photo, NAME_align.json the crop's quad and landmarks.
    A re-run skips images whose NAME.npy exists."""
    if batch_size < 1 or steps < 1:
        raise InputError("--batch-size and --steps must be >= 1")
    if encoder_path is not None and click.get_current_context().get_parameter_source("mode") == \
            click.core.ParameterSource.DEFAULT:
        mode = "encoder"  # an explicit --encoder means: use it
    for folder in (Path(p) for p in inputs):
        if folder.is_dir() and Path(out).resolve().is_relative_to(folder.resolve()):
            # its reconstructions and grid would be read back as inputs on every re-run
            raise InputError(f"--out {out} is inside the input folder {folder}: choose a folder outside it")
    if encoder_path is not None and mode == "project":
        click.echo("note: --encoder is used by modes encoder / hybrid; unused in mode project")
    with warning_lines():
        model = model_choice.load(model_for_encoder(encoder_path))
        encoder = input_encoder(mode, encoder_path, model, flag="--mode")[0]
        if evaluators_path is None and mode != "encoder" and (model.has("attributes") or model.has("identity")):
            evaluators_path = model.parts
        _run(inputs, model.G, Path(out), mode, encoder, steps, space, evaluators_path, seed, batch_size,
             (lpips_spec, arcface_path), align)


def _run(inputs, G, out, mode, encoder, steps, space, evaluators_path, seed, batch_size, loss_paths=(None, None),
         align=False):
    files = list_images(inputs)
    names = [f.stem for f in files]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"several inputs share the name(s) {dupes}; outputs would collide")
    R = G.img_resolution
    if align:  # every face found up front: a photo without one writes nothing
        files, images, alignments, photos = read_aligned_inputs(files, R)
    else:
        images = to_tensor([read_image(f, R) for f in files])  # reads (and checks) every file up front
    losses = _losses(mode, evaluators_path, *loss_paths, device=G.w_avg.device)

    # Fixed batches, resumed whole and split over torchrun's processes (latentedit.runs): a resumed
    # or split run writes the same codes as one uninterrupted run (a batch shares its optimisation).
    run = ResumableRun(out, names, batch_size, done=lambda i: (out / f"{names[i]}.npy").exists())
    done = len(names) - len(run.left)
    if done:
        click.echo(f"resuming: {done} of {len(names)} images already inverted")
    per_image = 1 if mode == "encoder" else steps
    with click.progressbar(length=run.todo_count() * per_image,
                           label=f"inverting {run.todo_count()} images ({mode}, {space})", file=None) as bar:
        for batch in run.todo():
            left = run.missing(batch)

            def progress(step, total, losses, _bar=bar, _k=len(left)):
                _bar.update(_k)

            codes = invert_images(images[batch], mode=mode, G=G, perceptual=losses[0], identity=losses[1],
                                  encoder=encoder, space=space, steps=steps, seed=seed, progress=progress)
            if mode == "encoder":
                bar.update(len(left))
            recs = reconstruct(G, codes)
            for i, code, rec in zip(batch, codes, recs):
                if i not in run.left:
                    continue
                stem = out / names[i]
                save_png(out / f"{names[i]}_rec.png", _uint8(rec))
                if align:
                    _write_alignment(out, names[i], images[i], rec, alignments[i], photos[i])
                write_latents(stem.with_suffix(".json"), code[None].numpy())
                write_latents(stem.with_suffix(".npy"), code[None].numpy())  # last: marks the image done
    if not run.finish():
        return
    grid_path = out / "grid.png"
    if run.left or not grid_path.exists():
        rows = []
        for i, n in enumerate(names):
            rows += [_uint8(images[i]), _read_png(out / f"{n}_rec.png")]
        save_png(grid_path, tile(np.stack(rows), cols=2))
    click.echo(f"inverted {len(run.left)} images ({done} already done) into {out}/ and the grid {grid_path}")


def _write_alignment(out, name, crop, rec, alignment, photo):
    import json

    from latentedit.formats.atomic import write_text

    save_png(out / f"{name}_aligned.png", _uint8(crop))
    write_pasted(out / f"{name}_pasted.png", photo, rec, alignment)
    write_text(out / f"{name}_align.json", json.dumps({
        "format": "latentedit-alignment", "version": 1, "method": "FFHQ (dlib 68 landmarks)",
        "photo_size": list(alignment.photo_size), "quad": alignment.quad.round(4).tolist(),
        "quad_corners": ["top-left", "bottom-left", "bottom-right", "top-right"],
        "landmarks": alignment.landmarks.round(3).tolist()}) + "\n")


def _losses(mode, evaluators_path, lpips_spec, arcface_path, device):
    """(perceptual, identity) losses of modes project / hybrid: --lpips / --arcface, else the evaluator
    bundle's attribute classifier / identity embedder; each read once, before anything is written."""
    if mode == "encoder":
        given = [flag for flag, v in (("--evaluators", evaluators_path), ("--lpips", lpips_spec),
                                      ("--arcface", arcface_path)) if v]
        if given:
            click.echo(f"note: {' / '.join(given)} only shape{'s' if len(given) == 1 else ''} the losses of modes "
                       "project / hybrid; unused in mode encoder")
        return None, None
    evaluators = {}
    wanted = [k for k, replaced in (("attributes", lpips_spec), ("identity", arcface_path)) if not replaced]
    if evaluators_path and wanted:
        from latentedit.formats import bundle
        from latentedit.formats.evaluators import load_evaluators

        held = bundle.read_manifest(Path(evaluators_path))["networks"]
        used = [k for k in wanted if k in held]
        evaluators = {k: m.to(device) for k, m in load_evaluators(evaluators_path, used).items()}
    perceptual, identity = evaluator_losses(evaluators, lpips_spec, arcface_path, device)
    names = [name for name, loss in (("perceptual" + (" (LPIPS)" if lpips_spec else ""), perceptual),
                                     ("identity" + (" (ArcFace)" if arcface_path else ""), identity)) if loss]
    if names:
        click.echo(f"losses: pixel + {' + '.join(names)}")
    elif evaluators_path:
        click.echo("note: the evaluator bundle has no attribute classifier or identity embedder; pixel loss only")
    else:
        click.echo("note: no evaluators (the model is not a bundle holding them, and no --evaluators / --lpips / "
                   "--arcface); pixel loss only")
    return perceptual, identity


def _read_png(path):
    from PIL import Image

    from latentedit.formats.files import regular_file

    with Image.open(regular_file(path, "image from an earlier run")) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)
