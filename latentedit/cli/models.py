"""`latentedit generate | info | convert`: images from a model, what a model file holds, format conversion."""
import json
from pathlib import Path

import click
import torch

from latentedit.cli.options import (MAX_IMAGES, MAX_SCALE, check_mapping_lr_mul, check_scale, model_options,
                                   parse_seeds, progress_bar, threads_option)
from latentedit.errors import InputError
from latentedit.formats import bundle, load_networks, save_networks
from latentedit.formats.latents import read_latents
from latentedit.models.stylegan2 import NOISE_MODES, with_class, z_from_seeds
from latentedit.runs import generate_images


def _class_label(G, class_idx, z):
    """The label [N, c_dim] of --class for the latents z (None: the generator's own, drawn from z,
    or none)."""
    if class_idx is None:
        if G.c_dim and G.cfg.label_prior is None:
            raise InputError(f"this generator is conditional ({G.c_dim} classes): pick one with --class 0..{G.c_dim - 1}")
        return None
    if not G.c_dim:
        raise InputError("--class applies to conditional generators; this one is unconditional (c_dim 0)")
    if not 0 <= class_idx < G.c_dim:
        raise InputError(f"--class must be in 0..{G.c_dim - 1} (the generator's classes), got {class_idx}")
    if G.cfg.label_prior is None:
        c = torch.zeros([len(z), G.c_dim])
        c[:, class_idx] = 1
        return c
    # labels drawn from z: the class's group is set, the other groups keep each seed's own
    return with_class(G.mapping.labels_from_z(z), G.cfg.label_prior, class_idx)


@click.command()
@threads_option
@model_options
@click.option("--seeds", default="0-15", show_default=True,
              help=f"Seeds: 0-15 or 1,5,7-9 (at most {MAX_IMAGES:,} per run).")
@click.option("--w-file", type=click.Path(), default=None, help="Latents (.json SD-GAN / .npy) instead of seeds.")
@click.option("--truncation", type=float, default=1.0, show_default=True,
              help=f"Truncation psi (|psi| <= {MAX_SCALE:g}).")
@click.option("--truncation-cutoff", type=int, default=None, help="Truncate only the first N W+ layers (0..num_ws).")
@click.option("--class", "class_idx", type=int, default=None,
              help="Conditional generators: the class label's index (its one-hot label, as NVlabs' gen_images "
                   "--class). A generator that draws its labels from z (trained with --labels) needs none; "
                   "given, it sets that class's group and each seed keeps its other labels.")
@click.option("--noise-mode", type=click.Choice(NOISE_MODES), default="const", show_default=True)
@click.option("--batch-size", type=int, default=4, show_default=True)
@click.option("--out", required=True, type=click.Path(), help="A folder (one PNG per image + grid.png) or a .png grid.")
def generate(model_choice, seeds, w_file, truncation, truncation_cutoff, class_idx, noise_mode, batch_size, out):
    """Generate images from seeds or a latent file.

    A re-run into the same folder resumes; under torchrun the batches are split over the processes
    (latentedit.runs), which together write the files of one run."""
    if batch_size < 1:
        raise InputError("--batch-size must be >= 1")
    check_scale(truncation, "--truncation")
    if w_file and (truncation != 1.0 or truncation_cutoff is not None or class_idx is not None):
        raise InputError("--truncation and --class apply to seeds; latents from --w-file are used as they are")
    seed_list = None if w_file else parse_seeds(seeds)  # checked before the model loads
    G = model_choice.load().G
    if truncation_cutoff is not None and not 0 <= truncation_cutoff <= G.num_ws:
        raise InputError(f"--truncation-cutoff must be in 0..{G.num_ws} (the generator's W+ layers), "
                         f"got {truncation_cutoff}")
    if w_file:
        ws = torch.from_numpy(read_latents(w_file, w_dim=G.w_dim, num_ws=G.num_ws))
        names = [f"{i:04d}" for i in range(len(ws))]
    else:
        names = [f"seed{s:04d}" for s in seed_list]
        with torch.no_grad():
            z = z_from_seeds(seed_list, G.z_dim)
            ws = G.mapping(z, _class_label(G, class_idx, z), truncation_psi=truncation,
                           truncation_cutoff=truncation_cutoff, update_w_avg=False)
    settings = {"model": model_choice.label, **({"class": class_idx} if class_idx is not None else {}),
                "weights_seed": model_choice.weights_seed if model_choice.random_weights else None,
                "resolution": G.img_resolution, "w_file": str(w_file) if w_file else None,
                "truncation": truncation, "truncation_cutoff": truncation_cutoff, "noise_mode": noise_mode}
    written, grid_path = generate_images(G, ws, out, names, batch_size, noise_mode, settings, progress_bar)
    if grid_path is not None:  # rank 0 of a torchrun run reports it
        if Path(out).suffix.lower() == ".png":
            click.echo(f"wrote the grid {grid_path} of {len(names)} images")
        else:
            click.echo(f"wrote {len(names)} images to {Path(out)}/ and the grid {grid_path}")


@click.command()
@click.argument("path", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(path, as_json):
    """What a model file holds: format, architecture, parameter counts, w_avg."""
    nets = load_networks(path)
    report = {"path": str(path), "format": nets.format, **nets.info}
    for name in ("G", "D"):
        net = getattr(nets, name)
        if net is not None:
            report[name] = {"config": net.cfg.to_dict(), "parameters": sum(p.numel() for p in net.parameters())}
    if nets.G is not None:
        report["G"]["num_ws"] = nets.G.num_ws
        report["G"]["w_avg_norm"] = round(float(nets.G.w_avg.norm()), 4)
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
        return
    click.echo(f"{report['path']}: {report['format']}")
    for key, value in report.items():
        if key in ("G", "D"):
            cfg = value["config"]
            click.echo(f"  {key}: {value['parameters']:,} parameters, {cfg['resolution']} px, "
                       f"channel_base={cfg['channel_base']} channel_max={cfg['channel_max']}, "
                       f"fp16 resolutions={cfg['num_fp16_res']}, conv_clamp={cfg['conv_clamp']}")
            if key == "G":
                click.echo(f"     z_dim={cfg['z_dim']} w_dim={cfg['w_dim']} n_mlp={cfg['n_mlp']} "
                           f"num_ws={value['num_ws']} |w_avg|={value['w_avg_norm']}")
            if cfg.get("c_dim") and key == "G":
                labels = f"drawn from z at {cfg['label_prior']}" if cfg.get("label_prior") else "given (--class)"
                click.echo(f"     conditional: c_dim={cfg['c_dim']} label_input={cfg.get('label_input', 'embed')}, "
                           f"labels {labels}")
            elif cfg.get("c_dim"):
                click.echo(f"     conditional: c_dim={cfg['c_dim']} (a label projection)")
        elif key not in ("path", "format"):
            click.echo(f"  {key}: {value}")


@click.command()
@click.argument("src", type=click.Path())
@click.argument("dst", type=click.Path())
@click.option("--fp16", is_flag=True, help="Store bundle weights in fp16 (half the size).")
@click.option("--mapping-lr-mul", type=float, default=None,
              help="Mapping lr multiplier, for rosinality files trained with a non-default --lr_mlp.")
@click.option("--unsup3d", "unsup3d_path", type=click.Path(), default=None,
              help="SD-GAN's set: unsup3d checkpoint030.pth (the 3D encoder, run as SD-GAN's Demo).")
@click.option("--sdgan-fusion", "sdgan_fusions", multiple=True, metavar="KIND=PATH",
              help="SD-GAN's set: a fusion checkpoint_latest.pt for KIND (mask | sunglasses (or glasses) | "
                   "frame_glasses); repeat per kind.")
@click.option("--sdgan-templates", type=click.Path(), default=None,
              help="SD-GAN's set: the templates/ folder (mask/, glasses/, frame_glasses/ of RGBA PNGs).")
def convert(src, dst, fp16, mapping_lr_mul, unsup3d_path, sdgan_fusions, sdgan_templates):
    """Convert SRC (bundle / rosinality .pt / NVlabs .pkl) to DST (bundle folder or rosinality .pt).

    With --unsup3d, --sdgan-fusion and --sdgan-templates, DST is one bundle of SD-GAN's released
    set, which `latentedit synthesize --model DST` runs with SD-GAN's test.py maths."""
    check_mapping_lr_mul(mapping_lr_mul)
    fusions = {}
    for item in sdgan_fusions:
        kind, sep, path = item.partition("=")
        if not sep or not kind or not path:
            raise InputError(f"--sdgan-fusion must look like KIND=PATH, got {item!r}")
        from latentedit.formats.sdgan import sdgan_kind

        if sdgan_kind(kind) in map(sdgan_kind, fusions):
            raise InputError(f"--sdgan-fusion given twice for {sdgan_kind(kind)}")
        fusions[kind] = path
    if fusions or unsup3d_path or sdgan_templates:
        if not (fusions and unsup3d_path and sdgan_templates):
            raise InputError("SD-GAN's set needs all of --unsup3d, --sdgan-fusion KIND=PATH and --sdgan-templates")
        if Path(dst).suffix:
            raise InputError(f"{dst}: SD-GAN's set converts into a bundle folder (a path without a suffix)")
    overrides = {"mapping_lr_multiplier": mapping_lr_mul} if mapping_lr_mul is not None else None
    nets = load_networks(src, overrides)
    release = None
    if fusions:  # every part read and checked before DST is touched
        from latentedit.cli.inputs import warning_lines
        from latentedit.formats.sdgan import convert_sdgan_release, read_sdgan_release

        if nets.G is None:
            raise InputError(f"{src}: holds no generator, which SD-GAN's set needs")
        with warning_lines():  # a template folder's other files skipped, a template resized
            release = read_sdgan_release(unsup3d_path, fusions, sdgan_templates, nets.G.cfg)
    save_networks(nets, dst, fp16=fp16)
    held = "+".join(n for n in ("G", "D") if getattr(nets, n) is not None)
    if release is not None:
        kinds = convert_sdgan_release(dst, release)
        counts = {kind: len(release["fusions"][kind][1]) for kind in kinds}  # sample i uses template i mod K
        held += " + unsup3d + SD-GAN fusion (" + ", ".join(
            f"{kind}: {k} template{'s' if k > 1 else ''}" for kind, k in counts.items()) + ")"
    kept = sorted(set(bundle.read_manifest(dst)["networks"]) - {"G", "D"}) if bundle.is_bundle(dst) and not fusions else []
    click.echo(f"converted {nets.format} ({held}) -> {dst}" + (f" (kept its {', '.join(kept)})" if kept else ""))
    left = sorted(set(bundle.read_manifest(src)["networks"]) - {"G", "D"} - set(kept)) if nets.format == "bundle" else []
    if left and not fusions:
        click.echo(f"note: only G and D are converted; {src}'s {', '.join(left)} (and its boundaries/, templates/) "
                   "stay there: copy the folder and convert it into itself to keep them")
