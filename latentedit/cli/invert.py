"""`latentedit invert IMG|DIR ... --out DIR`: latent codes for images (projection, the image -> W+
encoder, or projection started from the encoder's codes)."""
import contextlib
import warnings
from pathlib import Path

import click
import numpy as np

from latentedit.cli.models import model_options, resolve_model
from latentedit.edit.losses import evaluator_losses, identity_loss, perceptual_loss
from latentedit.edit.inversion import MODES, SPACES, invert as invert_images, load_encoder, reconstruct
from latentedit.errors import InputError
from latentedit.formats.image_input import list_images, read_image, to_tensor
from latentedit.formats.images import save_png, tile, to_uint8
from latentedit.formats.latents import write_latents
from latentedit.runs import ResumableRun


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


align_option = click.option(
    "--align", is_flag=True,
    help="Unaligned photos: find the face (dlib's 68 landmarks), crop it as FFHQ was aligned, and also write "
         "the result pasted back into the photo (needs `pip install 'latentedit[align]'`).")


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
                     help="Bundle holding the encoder for --input, or an e4e / pSp / ReStyle checkpoint "
                          "(default: the model bundle)."),
        align_option,
    ]
    for option in reversed(options):
        f = option(f)
    return f


def check_input_options(input_paths, invert_mode, invert_steps, encoder_path):
    """Refuses --invert-* / --encoder without --input, and bad --invert-steps."""
    ctx = click.get_current_context()
    if not input_paths:
        for name in ("invert_mode", "invert_steps", "encoder_path", "align"):
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

    save_png(path, paste_back(photo, _uint8(image) if torch.is_tensor(image) else image, alignment.quad))


def input_encoder(mode, encoder_path, model_path, G, flag="--invert-mode"):
    """(encoder or None, its weights' sha256 or None) for --invert-mode / --mode; the encoder comes
    from --encoder (a bundle, or an e4e / pSp / ReStyle checkpoint file), else from the model bundle."""
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
    if Path(encoder_path).is_file():
        import hashlib

        return encoder, hashlib.sha256(Path(encoder_path).read_bytes()).hexdigest()
    return encoder, bundle.read_manifest(encoder_path)["networks"][NAME]["sha256"]


def model_for_encoder(model_path, encoder_path):
    """--model, defaulting to the generator inside an --encoder checkpoint file (an e4e / pSp /
    ReStyle file holds its decoder) instead of the bundled model."""
    if model_path is None and encoder_path is not None and Path(encoder_path).is_file():
        return encoder_path
    return model_path


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
def invert(inputs, model_path, random_weights, resolution, channel_base, channel_max, weights_seed, mapping_lr_mul,
           out, mode, encoder_path, steps, space, evaluators_path, seed, batch_size, lpips_spec, arcface_path,
           align):
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
        if not random_weights:
            model_path = model_for_encoder(model_path, encoder_path)
        nets = resolve_model(model_path, random_weights, resolution, channel_base, channel_max, weights_seed,
                             mapping_lr_mul)
        encoder = input_encoder(mode, encoder_path, nets.path, nets.G, flag="--mode")[0]
        if evaluators_path is None and mode != "encoder" and _holds_evaluators(nets.path):
            evaluators_path = nets.path
        _run(inputs, nets.G, Path(out), mode, encoder, steps, space, evaluators_path, seed, batch_size,
             (lpips_spec, arcface_path), align)


def _holds_evaluators(path):
    from latentedit.formats import bundle

    return (path is not None and bundle.is_bundle(path)
            and any(k in bundle.read_manifest(path)["networks"] for k in ("attributes", "identity")))


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
    perceptual, identity = evaluator_losses(evaluators)
    perceptual = perceptual_loss(lpips_spec, device) or perceptual
    identity = identity_loss(arcface_path, device) or identity
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


def _uint8(img):  # [3, H, W] in [-1, 1] -> [H, W, 3] uint8
    return to_uint8(img[None])[0]


def _read_png(path):
    from PIL import Image

    from latentedit.formats.files import regular_file

    with Image.open(regular_file(path, "image from an earlier run")) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)
