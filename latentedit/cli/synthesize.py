"""`latentedit synthesize`: SD-GAN discrete attribute synthesis (put on frame glasses, sunglasses or
a surgical mask) for sampled or given latent codes, into SD-GAN's output layout.

    latentedit synthesize --kind glasses --normal --n 16 --seed 0 --out out/frames
    latentedit synthesize --kind mask --w-file w.json [--interface-file prior.json] --out out/masks
    latentedit synthesize --kind mask --input me.png --out out/me     # a photo, via the encoder

The output folder:

    origins/0000.png ...              G(w)                 the input faces
    interfacegan_origins/0000.png ... G(w + p)             InterfaceGAN's prior alone
    predict_images/0000.png ...       G(w + p + offset)    the result, composited into the origin
                                                           inside the accessory's region (below)
    grid.png                          contact sheet: one row per sample (the first 16),
                                      columns origin | prior only | result
    latents.json                      the input codes w, SD-GAN JSON {"0": [w_dim floats], ...}
                                      (with --input: the inverted W+ codes, {"0": [[w_dim floats]
                                      x num_ws], ...}; origins/ then holds their reconstructions)
    inverted_latents.npy              with --input only: [N, num_ws, w_dim] the inverted codes,
                                      written before any image; a resumed run reuses them
    interface.json                    the priors p used, SD-GAN JSON (a valid --interface-file)
    predict_latents.npy               [N, num_ws, w_dim] the W+ codes of predict_images
    manifest.json                     kind, model, template, settings and, per image, w, p,
                                      |p|, |offset| per W+ layer and the signed distances from
                                      the boundary before and after the prior
    records/0000.npy ...              per image [1 + num_ws, w_dim]: p, then the offset
    run.json                          the settings; a re-run with the same settings resumes

With our bundles the result is composited (`--composite`, the default): inside the accessory's
expected region (the template head's, turned to the face's view by the 3D encoder) the edit
replaces the origin, glasses by their synthesis features from the 16 x 16 block up, feathered,
masks by their pixels with a hard edge, their top edge lowered clear of the eyes the bundle's
face parser reads, so that the face outside it stays the origin's; frame glasses' lenses (the holes
their frame encloses, as the parser reads it) show the face behind them under a clear lens's tint
(`latentedit.edit.compositing`); `--no-composite` writes G(w + p + offset) as it is.
predict_latents.npy holds w + p + offset either way.

A re-run into the same folder with the same settings redoes only the images whose record or any
of whose three PNGs is missing, then rebuilds the grid, the latent files and the manifest from the
records; other settings are refused. Every file is written atomically.
"""
import os
from pathlib import Path

import click
import numpy as np
import torch

from latentedit.cli.inputs import input_encoder, read_aligned_inputs, read_inputs, warning_lines, write_pasted
from latentedit.cli.options import (MAX_IMAGES, check_input_options, check_scale, input_options, sampled_seeds,
                                   threads_option)
from latentedit.errors import InputError
from latentedit.formats.files import file_sha256

GRID_SAMPLES = 16
PRIOR_ALIGNMENT_WARNING = 0.5  # priors of the kind's own boundary have |cosine| 1 with it; another kind's, near 0


def _inverted_codes(path, images, G, mode, encoder, steps, batch_size):
    """W+ codes [N, num_ws, w_dim] of the --input images: read back from `path` when an earlier run
    of the same settings left them (the resume check has passed), else inverted and saved there."""
    from latentedit.cli.inputs import invert_inputs
    from latentedit.formats.latents import read_earlier_array, write_latents

    shape = (len(images), G.num_ws, G.w_dim)
    if path.exists():
        codes = read_earlier_array(path, shape, "inverted codes")
        click.echo(f"reusing the inverted codes of {path}")
        return torch.from_numpy(codes)
    codes = invert_inputs(images, G, mode, encoder, steps, batch_size=batch_size).cpu()
    write_latents(path, codes.numpy())
    return codes


def _sdgan_bundle(model_path, kind, input_paths, template):
    """Whether --model is a bundle of SD-GAN's released set holding `kind` (then test.py's maths run)."""
    from latentedit.formats.sdgan import sdgan_kinds

    kinds = sdgan_kinds(model_path)
    if not kinds:
        return False
    if kind not in kinds:
        raise InputError(f"{model_path}: SD-GAN bundle has fusion networks for {', '.join(kinds)}, not {kind}")
    if input_paths or template is not None:
        raise InputError("--input and --template do not apply to SD-GAN bundles (templates are converted in)")
    return True


@click.command()
@threads_option
@click.option("--kind", required=True,
              help="mask | glasses (with --normal: frame glasses, without: sunglasses) | frame_glasses | sunglasses.")
@click.option("--normal", is_flag=True, help="With --kind glasses: frame (normal) glasses instead of sunglasses.")
@click.option("--n", "n", type=int, default=None,
              help=f"Number of samples from seeds [default: 16; at most {MAX_IMAGES:,} per run].")
@click.option("--seed", type=int, default=None, help="First seed; sample i uses seed + i [default: 0].")
@click.option("--w-file", type=click.Path(), default=None,
              help="Latent codes instead of seeds: SD-GAN JSON {\"0\": [w_dim floats], ...} "
                   "or .npy [N, w_dim] / [N, L, w_dim].")
@click.option("--interface-file", type=click.Path(), default=None,
              help="Per-sample priors p (SD-GAN's interface file, same format, [N, w_dim]) for --w-file; "
                   "default: from the kind's boundary.")
@click.option("--truncation", type=float, default=0.7,
              help="Truncation psi of the seeds [default: 0.7]. SD-GAN bundles: test.py's psi on every image, "
                   "seeds or --w-file codes [default: the bundle's, 0.5].")
@click.option("--template", type=click.Path(), default=None,
              help="Accessory template image instead of the bundle's (the accessory on white).")
@click.option("--model", "model_path", type=click.Path(), default=None,
              help="Bundle folder with the generator and the kind's offset network (default: the bundled model).")
@input_options
@click.option("--mean-latent", "mean_source", type=click.Choice(["latent_avg", "sampled"]), default=None,
              help="SD-GAN bundles: the truncation's mean latent, the file's latent_avg or the mean of "
                   "--mean-samples mapped z from --mean-seed [default: the stored choice, latent_avg].")
@click.option("--mean-samples", type=int, default=None, help="SD-GAN bundles, --mean-latent sampled [default: 4096].")
@click.option("--mean-seed", type=int, default=0, show_default=True, help="SD-GAN bundles, --mean-latent sampled.")
@click.option("--normalize-output", is_flag=True,
              help="SD-GAN bundles: stretch each PNG by its own min / max, as test.py's save_image(normalize=True).")
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True,
              help="SD-GAN bundles: the generator's and the fusion network's convolutions in bf16 (about 2x "
                   "faster on CPUs with AVX-512 BF16 or AMX; images >= 40 dB PSNR from fp32's; fp32, with a note, "
                   "where bf16 measures slower, e.g. AVX2 only).")
@click.option("--composite/--no-composite", default=True, show_default=True,
              help="Our bundles: composite the result into the origin inside the accessory's region (glasses in "
                   "feature space from the 16 x 16 block up, masks as pixels; frame glasses' lenses show the face "
                   "behind them), so that the face around it stays the origin's; --no-composite: G(w + p + offset) "
                   "as it is.")
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--out", required=True, type=click.Path(),
              help="Output folder: origins/, interfacegan_origins/, predict_images/, grid.png, manifest.json, ...")
def synthesize(kind, normal, n, seed, w_file, interface_file, truncation, template, model_path, input_paths,
               invert_mode, invert_steps, encoder_path, align, mean_source, mean_samples, mean_seed,
               normalize_output, precision, composite, batch_size, out):
    """Put an accessory (frame glasses, sunglasses, a mask) on faces: SD-GAN's prior + offset edit.

    Writes OUT/origins/, OUT/interfacegan_origins/, OUT/predict_images/ ({i:04d}.png), latents.json,
    interface.json, predict_latents.npy and manifest.json, and with our bundles grid.png (rows:
    samples, columns: origin | prior only | result; SD-GAN's test.py writes no grid, nor do we for
    its bundles). A re-run with the same settings resumes.
    With --input IMG|DIR the codes are the images' inversions (--invert-mode, default encoder);
    with --align too, the inputs are photos: OUT/aligned/ holds their FFHQ-aligned faces and
    OUT/pasted/ each result pasted back into its photo."""
    from latentedit.cli.options import progress_bar
    from latentedit.edit.outputs import FOLDERS, short_floats
    from latentedit.edit.discrete import prior_alignment, resolve_kind, signed_distance
    from latentedit.formats import bundle
    from latentedit.model import default_parts, load_model
    from latentedit.formats.images import save_png, tile, to_uint8
    from latentedit.formats.latents import read_latents, read_priors
    from latentedit.runs import check_settings, read_earlier_png, synthesize_images
    from latentedit.formats.sdgan import offset_network_name

    resolved = resolve_kind(kind, normal)
    ctx = click.get_current_context()
    if batch_size < 1:
        raise InputError("--batch-size must be >= 1")
    if model_path is not None and _sdgan_bundle(model_path, resolved, input_paths, template):
        from latentedit.cli.sdgan import synthesize_sdgan

        if ctx.get_parameter_source("composite") == click.core.ParameterSource.COMMANDLINE:
            raise InputError("--composite / --no-composite are for our bundles; SD-GAN bundles run test.py's maths")
        given = ctx.get_parameter_source("truncation") == click.core.ParameterSource.COMMANDLINE
        return synthesize_sdgan(model_path, kind, normal, n, seed, w_file, interface_file,
                                truncation if given else None, mean_source, mean_samples, mean_seed, normalize_output,
                                precision, batch_size, out)
    if mean_source or mean_samples is not None or normalize_output or precision != "fp32":
        raise InputError("--mean-latent, --mean-samples, --normalize-output and --precision are for SD-GAN bundles "
                         "(made by `latentedit convert ... --sdgan-fusion`)")
    check_input_options(input_paths, invert_steps)
    if input_paths and w_file is not None:
        raise InputError("pass either --w-file or --input (images to invert), not both")
    if w_file is not None or input_paths:
        given = f"--w-file {w_file}" if w_file is not None else "--input"
        for name, value in (("--n", n), ("--seed", seed)):
            if value is not None:
                raise InputError(f"{name} is for sampling from seeds; the codes come from {given}")
        if ctx.get_parameter_source("truncation") == click.core.ParameterSource.COMMANDLINE:
            raise InputError(f"--truncation applies to seeds; codes from {given} are used as they are")
    else:
        if interface_file is not None:
            raise InputError("--interface-file gives one prior per code: pass --w-file too (or --input images)")
        n, seed = sampled_seeds(n, seed)
        check_scale(truncation, "--truncation")
    model = Path(model_path) if model_path is not None else default_parts()
    if model is None or not bundle.is_bundle(model):
        raise InputError(f"{model}: synthesize needs a bundle folder (it holds the offset networks); "
                         "convert a checkpoint with `latentedit convert` and train one with `latentedit train offset`")
    loaded = load_model(model)
    G = loaded.G
    input_files = encoder = encoder_sha = None
    priors = None
    if w_file is not None:
        w = torch.from_numpy(read_latents(w_file, w_dim=G.w_dim, num_ws=G.num_ws))
        N = len(w)
    elif input_paths:
        with warning_lines():
            if align:
                input_files, images, alignments, photos = read_aligned_inputs(input_paths, G.img_resolution)
                crops = to_uint8(images)  # kept: `images` is reused below
            else:
                input_files, images = read_inputs(input_paths, G.img_resolution)
        encoder, encoder_sha = input_encoder(invert_mode, encoder_path, loaded)
        w = None  # inverted below, once the folder is known to resume this run (or is new)
        N = len(input_files)
    else:
        w = G.sample_w(n, seed=seed, truncation=truncation)
        N = len(w)
    if interface_file is not None:
        source = f"of {N} --input images" if input_paths else None
        priors = torch.from_numpy(read_priors(interface_file, N, G.w_dim, source))
    synth = loaded.synthesizer(resolved, template=template, composite=composite)
    alignment = None if priors is None else prior_alignment(priors, synth.prior_direction)
    if alignment is not None and alignment < PRIOR_ALIGNMENT_WARNING:
        click.echo(f"warning: the --interface-file priors point away from the {resolved} prior's direction "
                   f"(mean |cosine| {alignment:.2f}): were they made for another kind?", err=True)
    networks = bundle.read_manifest(model)["networks"]
    entry = networks[offset_network_name(resolved)]

    out = Path(out)
    settings = {"command": "synthesize", "kind": resolved, "model": str(model_path or "default"),
                "generator_sha256": networks["G"]["sha256"],
                "offset_network_sha256": entry["sha256"],
                "template": str(template) if template is not None else None,
                "template_sha256": file_sha256(template) if template is not None else None,
                "w_file": str(w_file) if w_file is not None else None,
                "w_sha256": file_sha256(w_file) if w_file is not None else None,
                "interface_file": str(interface_file) if interface_file is not None else None,
                "interface_sha256": file_sha256(interface_file) if interface_file is not None else None,
                "n": N, "seed": seed, "truncation": truncation if w_file is None and not input_paths else None,
                "noise_mode": "const"}
    if batch_size != 16:  # the batches' composition shapes the float sums; 16 (the default) unrecorded so
        settings["batch_size"] = batch_size  # that folders of earlier versions still resume
    if composite:  # only then, so that folders of earlier versions (not composited) resume with --no-composite;
        settings["composite"] = synth.compositing_record()  # the how: images composited otherwise differ
    replacing = synth.replacing_record()
    if replacing is not None:  # frames over sunglasses: folders made under another rule hold other images
        settings["replaces"] = replacing
    if input_paths:  # only then, so that folders of earlier versions still resume
        settings.update({"input": [str(f) for f in input_files], "input_sha256": [file_sha256(f) for f in input_files],
                         "invert_mode": invert_mode,
                         "invert_steps": invert_steps if invert_mode != "encoder" else None,
                         "encoder": str(encoder_path or model) if encoder is not None else None,
                         "encoder_sha256": encoder_sha})
        if align:  # only then, as above
            settings["align"] = True
    if input_paths and int(os.environ.get("WORLD_SIZE", 1)) > 1:
        raise InputError("--input runs in one process: invert the images first (`latentedit invert`), "
                         "then split the run over processes with --w-file")
    if input_paths:
        check_settings(out, settings)  # before the inversion, whose codes the folder keeps
        w = _inverted_codes(out / "inverted_latents.npy", images, G, invert_mode, encoder, invert_steps, batch_size)
    ws = G.broadcast_w(w)

    def compute(batch):
        return synth(ws[batch], None if priors is None else priors[batch], batch_size=len(batch))

    outputs, run, tiles = synthesize_images(compute, N, out, batch_size, settings, grid=GRID_SAMPLES,
                                            progress=progress_bar,
                                            label=f"synthesizing {{todo}} of {{count}} images ({resolved})")
    if not run.finish():
        return
    # Everything below is rebuilt from the records and the PNGs, whichever run wrote them.
    p, offset = outputs.load_records(G.num_ws, G.w_dim, priors)
    final = ws + p[:, None] + offset  # the same sum, in the same order, as DiscreteSynthesizer
    shown = range(min(N, GRID_SAMPLES))
    arrays = [tiles[i, c] if (i, c) in tiles else read_earlier_png(outputs.image(i, c), G.img_resolution)
              for i in shown for c in range(3)]
    save_png(out / "grid.png", tile(np.stack(arrays), 3, pad=2))
    outputs.write_latents(w.numpy(), p.numpy(), final.numpy())
    names = outputs.names
    if align:  # rebuilt from the PNGs like the grid: the photos are read (and their faces found) every run
        for i in range(N):
            save_png(out / "aligned" / f"{names[i]}.png", crops[i])
            write_pasted(out / "pasted" / f"{names[i]}.png", photos[i],
                         read_earlier_png(outputs.image(i, 2), G.img_resolution), alignments[i])

    before = signed_distance(ws, synth.normal, synth.intercept)
    after = signed_distance(ws + p[:, None], synth.normal, synth.intercept)
    images = []
    for i in range(N):
        images.append({
            "index": i, "seed": None if w_file is not None or input_paths else seed + i,
            **({"input": str(input_files[i])} if input_paths else {}),
            "files": {folder: f"{folder}/{names[i]}.png"
                      for folder in FOLDERS + (("aligned", "pasted") if align else ())},
            "prior_norm": round(float(p[i].norm()), 6),
            "offset_norm": [round(float(v), 6) for v in offset[i].norm(dim=1)],
            "distance_before": round(float(before[i]), 6), "distance_after": round(float(after[i]), 6),
            "w": short_floats(w[i].numpy()), "prior": short_floats(p[i].numpy())})
    net_cfg = entry.get("config", {})
    manifest = {
        "format": "latentedit-synthesis", "version": 1, "kind": resolved, "requested_kind": kind,
        "normal": normal, "model": str(model),
        "template": str(template) if template is not None else f"{model}/{net_cfg.get('template')}",
        "offset_network": {"name": offset_network_name(resolved), "sha256": entry["sha256"],
                           "boundary": net_cfg.get("prior", {}).get("boundary"),
                           "intercept": synth.intercept, "distance": synth.distance,
                           "generator": net_cfg.get("generator")},
        "settings": {k: v for k, v in settings.items() if k != "command"},
        "generator": {"resolution": G.img_resolution, "num_ws": G.num_ws, "w_dim": G.w_dim},
        "latents": {"inputs": "latents.json", "priors": "interface.json", "edited": "predict_latents.npy",
                    "edited_is": "w + prior + offset, [N, num_ws, w_dim]" + (
                        "; predict_images are G of them composited into the origin" if composite else ""),
                    **({"inverted": "inverted_latents.npy", "inverted_by": invert_mode} if input_paths else {})},
        "grid": {"file": "grid.png", "rows": f"samples 0..{len(shown) - 1}",
                 "columns": ["origin", "prior only", "prior + offset" + (", composited" if composite else "")]},
        "composite": {**synth.compositing_record(),
                      "region": "the accessory's expected region at the origin's view"
                      + (", lowered clear of its eyes" if synth.compositing.eye_clearance else "")
                      + ("; the lenses its frame encloses show the face behind them"
                         if synth.compositing.clear_lenses else "")} if composite else None,
        "count": N, "images": images}
    outputs.write_manifest(manifest)
    click.echo(f"wrote {N} x 3 images ({resolved}, {len(run.left)} new) to {out}/ with grid.png and manifest.json")
