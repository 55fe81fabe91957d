"""`latentedit boundary train | discover` and `latentedit edit`: directions in latent space and
edit grids (rows: samples, columns: strengths)."""
import json
from pathlib import Path

import click
import numpy as np
import torch

from latentedit.cli.inputs import (input_encoder, invert_inputs, read_aligned_inputs, read_inputs, warning_lines,
                                   write_pasted)
from latentedit.cli.options import (MAX_IMAGES, check_count, check_input_options, check_region_name, check_scale,
                                    component_options, fit_components, input_options, model_for_encoder,
                                    model_options, parse_seeds, parse_strength, parts_source, threads_option)
from latentedit.errors import FormatError, InputError
from latentedit.models.stylegan2 import z_from_seeds


def parse_layers(text):
    """'0-3' / '5' (W+ indices, inclusive) -> (start, stop) or None."""
    if not text:
        return None
    try:
        lo, _, hi = text.partition("-")
        start, stop = int(lo), int(hi or lo) + 1
    except ValueError:
        raise InputError(f"--layers must look like 0-3 or 5, got {text!r}") from None
    return start, stop


def _classifier(model, evaluators_path, required=True):
    """The attribute classifier of --evaluators, else of the model's bundle, else of the bundled default."""
    source = parts_source(model, evaluators_path, "attributes")
    if source.has("attributes"):
        return source.evaluator("attributes")
    if required:
        raise FormatError(f"no attribute classifier found in {[str(source.parts)] if source.parts else []}; "
                          "pass --evaluators BUNDLE")
    return None


@click.group()
def boundary():
    """InterfaceGAN boundaries and unsupervised directions (SeFa, GANSpace)."""


@boundary.command()
@model_options
@click.option("--attribute", required=True, help="Attribute (eyeglasses, smile, age, ...); 'all' for every one.")
@click.option("--latents", "latents_path", type=click.Path(), help="Latents .npy [N, D] (with --scores).")
@click.option("--scores", "scores_path", type=click.Path(), help="Scores .npy [N, 1] (with --latents).")
@click.option("--evaluators", "evaluators_path", type=click.Path(), help="Bundle with the attribute classifier.")
@click.option("--n", type=int, default=20000, show_default=True,
              help=f"Latents to sample and score (at most {MAX_IMAGES:,}).")
@click.option("--ratio", type=float, default=0.02, show_default=True, help="Top / bottom share (or count if > 1).")
@click.option("--split", type=float, default=0.7, show_default=True, help="Train share of the chosen samples.")
@click.option("--space", type=click.Choice(["w", "z"]), default="w", show_default=True)
@click.option("--truncation", type=float, default=1.0, show_default=True)
@click.option("--solver", type=click.Choice(["auto", "dual", "primal", "kernel"]), default="auto", show_default=True,
              help="liblinear dual (hinge) / primal (squared hinge); auto: dual up to 10k samples; kernel: SVC.")
@click.option("--C", "C", type=float, default=1.0, show_default=True, help="SVM regularisation.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", required=True, type=click.Path(), help="X.npy (+ X.json); a folder with --attribute all.")
def train(model_choice, attribute, latents_path, scores_path, evaluators_path, n, ratio, split, space, truncation, solver, C,
          seed, out):
    """Train an InterfaceGAN boundary (unit normal of a linear SVM)."""
    from latentedit.edit.boundaries import sample_latents, score_latents, train_boundary

    check_count(n, "--n")
    check_scale(truncation, "--truncation")
    from latentedit.formats.latents import read_latents, read_npy

    if bool(latents_path) != bool(scores_path):
        raise InputError("pass --latents and --scores together")
    model = G = None
    if model_choice.path or model_choice.random_weights or not latents_path:
        model = model_choice.load()
        G = model.G.eval()
    if latents_path:
        if attribute == "all":
            raise InputError("--attribute all needs the classifier; with --scores name the attribute")
        x = read_latents(latents_path)
        table = {attribute: read_npy(scores_path, "scores")}
    else:
        clf = _classifier(model, evaluators_path)
        x = sample_latents(G, n, space, seed, truncation)
        with click.progressbar(length=n, label=f"scoring {n} samples") as bar:
            table = {k: v[:, None] for k, v in score_latents(
                G, clf, x, space, progress=lambda done, total: bar.update(done - bar.pos)).items()}
        if attribute != "all" and attribute not in table:
            raise InputError(f"unknown attribute {attribute!r}; the classifier scores {sorted(table)}")
    gh = model.generator_hash if model is not None else None
    names = sorted(table) if attribute == "all" else [attribute]
    for name in names:
        b = train_boundary(x, table[name], ratio, split, C=C, solver=solver, seed=seed)
        prov = {"truncation": truncation, "source": "latents+scores files" if latents_path else "classifier"}
        d = b.direction(space=space, generator=gh, name=name, provenance=prov)
        path = Path(out) / f"{name}.npy" if attribute == "all" else Path(out)
        d.save(path)
        click.echo(f"{name:22s} val acc {b.val_accuracy if b.val_accuracy is not None else float('nan'):.4f}  "
                   f"remaining acc {b.rest_accuracy if b.rest_accuracy is not None else float('nan'):.4f}  "
                   f"({2 * b.n_train} train, {b.seconds:.2f} s) -> {path}")


@boundary.command()
@model_options
@click.option("--method", type=click.Choice(["sefa", "ganspace"]), required=True)
@click.option("--k", type=int, default=10, show_default=True, help="Directions to find.")
@click.option("--layers", default=None, help="W+ layers the directions act on, e.g. 0-3 (default: all).")
@click.option("--n", type=int, default=20000, show_default=True, help="GANSpace: W samples for the PCA.")
@click.option("--evaluators", "evaluators_path", type=click.Path(), help="Bundle with the attribute classifier.")
@click.option("--no-names", is_flag=True, help="Skip naming directions with the classifier.")
@click.option("--out", required=True, type=click.Path(), help="Folder for NAME.npy + NAME.json files.")
def discover(model_choice, method, k, layers, n, evaluators_path, no_names, out):
    """Find directions without labels (SeFa / GANSpace), named by what the classifier sees change."""
    from latentedit.edit.discover import ganspace, name_directions, sefa

    check_count(n, "--n")

    model = model_choice.load()
    G = model.G.eval()
    if k < 1 or k > G.w_dim:
        raise InputError(f"--k must be in 1..{G.w_dim}, got {k}")
    dirs = sefa(G, k, parse_layers(layers)) if method == "sefa" else ganspace(G, k, n, layers=parse_layers(layers))
    clf = None if no_names else _classifier(model, evaluators_path, required=False)
    if clf is not None:
        dirs = name_directions(G, clf, dirs)
    elif not no_names:
        click.echo("no attribute classifier found: directions keep numbered names (pass --evaluators)")
    for d in dirs:
        d.save(Path(out) / f"{d.name}.npy")
        click.echo(f"{d.name:28s} " + json.dumps({k: round(v, 3) for k, v in d.provenance.get("effects", {}).items()}))
    click.echo(f"wrote {len(dirs)} directions to {out}/")


@click.command()
@threads_option
@model_options
@click.option("--direction", required=True,
              help="A bundle boundary name (smile, age, ...), a .npy path (InterfaceGAN / InterFaceGAN++ "
                   "boundaries too), an e4e-style .pt direction, or a GANSpace component FILE.npz:INDEX "
                   "(strength in standard deviations).")
@click.option("--strength", default="-3..3", show_default=True, help="Range of strengths, e.g. -3..3.")
@click.option("--steps", type=int, default=7, show_default=True, help="Columns of the grid.")
@click.option("--seeds", default="0-7", show_default=True, help="Rows of the grid: 0-7 or 1,5,7-9.")
@click.option("--condition", default=None, help="Directions to keep unchanged, e.g. age,smile.")
@click.option("--layers", default=None, help="Only move these W+ layers, e.g. 0-5.")
@click.option("--truncation", type=float, default=0.7, show_default=True)
@click.option("--mode", type=click.Choice(["relative", "absolute"]), default="relative", show_default=True,
              help="relative: w + s * n; absolute: move w to signed distance s from the boundary.")
@click.option("--boundaries", "bundle_path", type=click.Path(), default=None,
              help="Bundle whose boundaries/ holds named directions (default: --model, else the bundled model).")
@input_options
@click.option("--region", default=None,
              help="Lock the edit to a face part (mouth, eyes, left_eye, hair, ...; see `latentedit mask --region`).")
@component_options
@click.option("--out", required=True, type=click.Path(),
              help="Grid PNG; with --input also OUT_latents.npy / OUT_latents.json (the inverted codes).")
def edit(model_choice, direction, strength, steps, seeds, condition, layers, truncation, mode, bundle_path, input_paths,
         invert_mode, invert_steps, encoder_path, align, region, fit_samples, clusters, out):
    """Edit grid: rows are samples, columns strengths along a direction.

    With --input IMG|DIR the rows are those images, inverted (--invert-mode, default encoder) into
    W+ codes; the grid then starts with a column of the input images, and the inverted codes are
    written next to it (OUT_latents.npy, OUT_latents.json in SD-GAN's layout).

    With --region NAME every column is a region-locked edit (regions.region_edit): the edited
    latents' features replace the originals only inside that part (the union of its masks before
    and after the edit, feathered); the part clusters are fitted first (--fit-samples, --clusters).

    With --input PHOTO --align the faces are found and aligned as FFHQ was (the grid shows the
    aligned crops), and every edit is also pasted back into its photo: OUT_pasted/NAME_STRENGTH.png."""
    from latentedit.edit.directions import linear_interpolate
    from latentedit.formats.images import grid, save_png, tile, to_uint8
    from latentedit.formats.latents import write_latents

    if steps < 1:
        raise InputError("--steps must be >= 1")
    lo, hi = parse_strength(strength)
    check_scale(truncation, "--truncation")
    check_input_options(input_paths, invert_steps)
    if region:
        check_region_name(region)
    elif any(click.get_current_context().get_parameter_source(n) == click.core.ParameterSource.COMMANDLINE
             for n in ("fit_samples", "clusters")):
        raise InputError("--fit-samples / --clusters apply to --region")
    if input_paths:
        ctx = click.get_current_context()
        for name in ("seeds", "truncation"):
            if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE:
                raise InputError(f"--{name} is for sampling from seeds; the codes come from --input")
        if mode == "absolute":
            raise InputError("--mode absolute moves W codes to distances from the boundary; images from --input "
                             "are inverted into W+ codes: use --mode relative")
    # an e4e / pSp file given as --encoder brings its generator
    model = model_choice.load(model_for_encoder(encoder_path) if input_paths else None)
    G = model.G.eval()
    images = encoder = None
    if input_paths:
        with warning_lines():
            if align:
                files, images, alignments, photos = read_aligned_inputs(input_paths, G.img_resolution)
            else:
                files, images = read_inputs(input_paths, G.img_resolution)
        encoder = input_encoder(invert_mode, encoder_path, model)[0]
    directions = parts_source(model, bundle_path)  # --boundaries, else the model's bundle, else the default's
    d = directions.direction(direction)
    if condition:
        d = d.orthogonal_to(*[directions.direction(c.strip()) for c in condition.split(",") if c.strip()])
    if parse_layers(layers):
        d = d.restrict(*parse_layers(layers), num_ws=G.num_ws)
    in_z = d.space == "z"  # InterFaceGAN++'s StyleGAN2 boundaries, GANSpace components found in Z
    if in_z and input_paths:
        raise InputError(f"direction {d.name} lives in Z; images from --input are inverted into W+ codes: "
                         "use a W direction (or train one with `latentedit boundary train`)")
    d.check(G, "z" if in_z else "w", generator_hash=model.generator_hash)
    if input_paths:
        w = invert_inputs(images, G, invert_mode, encoder, invert_steps).cpu()       # [N, L, D]
        edited = linear_interpolate(w, d, lo, hi, steps, mode)                      # [N, S, L, D]
    elif in_z:
        z = z_from_seeds(parse_seeds(seeds), G.z_dim)                               # [N, Z]
        w, edited = (_z_to_w(G, c, truncation) for c in (z, linear_interpolate(z, d, lo, hi, steps, mode)))
    else:
        w = G.sample_w(seeds=parse_seeds(seeds), truncation=truncation)             # [N, D]
        edited = linear_interpolate(w, d, lo, hi, steps, mode)                      # [N, S, (L,) D]
    if region:
        results = _region_columns(G, w, edited, region, fit_components(model, fit_samples, clusters))
    else:
        with torch.no_grad():
            results = G.synthesize(edited.flatten(0, 1), batch_size=16)            # [N * steps, 3, R, R]
    if input_paths:
        tiles = to_uint8(results)                                                    # [N * S, R, R, C]
        tiles = np.concatenate([to_uint8(images)[:, None], tiles.reshape(len(w), steps, *tiles.shape[1:])], 1)
        save_png(out, tile(tiles.reshape(-1, *tiles.shape[2:]), cols=steps + 1))    # rows: input | strengths
        stem = Path(out).with_name(Path(out).stem + "_latents")
        write_latents(stem.with_suffix(".npy"), w.numpy())
        write_latents(stem.with_suffix(".json"), w.numpy())
        if align:
            pasted = Path(out).with_name(Path(out).stem + "_pasted")
            strengths = np.linspace(lo, hi, steps)
            for i, (f, photo, al) in enumerate(zip(files, photos, alignments)):
                for j, s in enumerate(strengths):
                    write_pasted(pasted / f"{f.stem}_{s:+g}.png", photo, results[i * steps + j], al)
            click.echo(f"wrote the edits pasted back into the photos: {pasted}/NAME_STRENGTH.png")
        click.echo(f"wrote {out} (inputs | {steps} strengths {lo:g}..{hi:g} along {d.name}) for {len(w)} images "
                   f"({', '.join(f.name for f in files[:4])}{', ...' if len(files) > 4 else ''}) and their "
                   f"inverted codes {stem}.npy / .json")
        return
    save_png(out, grid(results, cols=steps))
    where = f" inside {region}" if region else ""
    click.echo(f"wrote {out}: {len(w)} samples x {steps} strengths {lo:g}..{hi:g} along {d.name}{where}")


def _z_to_w(G, z, truncation):
    """Z codes [..., z_dim] -> truncated W codes [..., w_dim] (the edit happened in Z)."""
    with torch.no_grad():
        return G.mapping(z.reshape(-1, z.shape[-1]), truncation_psi=truncation, update_w_avg=False)[:, 0].reshape(
            *z.shape[:-1], G.w_dim)


def _region_columns(G, w, edited, region, components):
    """Images [N * S, 3, R, R] (rows: samples) of each column's edit (edited [N, S, (L,) D] - w)
    locked to `region` by regions.region_edit."""
    from latentedit.edit.regions import region_edit

    base = G.broadcast_w(w)                                                         # [N, L, D]
    S = edited.shape[1]
    columns = []
    with torch.no_grad(), click.progressbar(range(S), label=f"{S} region-locked edits ({region})") as bar:
        for j in bar:
            offset = G.broadcast_w(edited[:, j]) - base                             # [N, L, D]
            columns.append(region_edit(G, base, offset, region, components=components))
    return torch.stack(columns, 1).flatten(0, 1)
