"""`latentedit mask | transfer | layers`: edit masks and label-free part masks, component transfer
between faces, and attribute layers recomposited at any strength and colour.

    latentedit mask --direction smile --strength 2 --seeds 0-7 --out masks/      # where an edit acts
    latentedit mask --region mouth,eyes --seeds 0-7 --out parts/                 # part masks (or all)
    latentedit transfer --component mouth --source 3 --target 0-7 --out swap/
    latentedit layers --direction smile,beard --seeds 0-3 --strengths -2..2 --steps 5 \\
        --colour hair=200,40,40 --out layers.png                               # + layers.json (PSNR)

Masks are written as PNG (0..255) and .npy (float32 soft masks in [0, 1], bool binary masks,
one [R, R] array per image). Part masks come from clusters of the generator's features, fitted
when the command starts (--fit-samples, --clusters) and named by the model's face parser
(else the bundled default's).
"""
import json
import math
import time
from pathlib import Path

import click
import numpy as np
import torch

from latentedit.cli.options import (check_region_name, check_scale, component_options, fit_components, model_options,
                                    parse_seeds, parse_strength, parts_source)
from latentedit.errors import InputError
from latentedit.formats.atomic import write_bytes, write_text
from latentedit.formats.images import save_png, tile, to_uint8

CHUNK = 8  # images per generator pass (and per progress-bar step)


# ---------------------------------------------------------------------------------------------
# Helpers of the three commands


def _from_cli(name):
    ctx = click.get_current_context()
    return ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE


def latents_from_options(G, seeds, w_file, truncation, flag_seeds="--seeds", flag_w="--w-file"):
    """(W or W+ latents [N, ...], names) from seeds (truncated) or a latent file (as they are)."""
    from latentedit.formats.latents import read_latents

    if w_file:
        ws = torch.from_numpy(read_latents(w_file, w_dim=G.w_dim, num_ws=G.num_ws))
        return G.broadcast_w(ws), [f"{i:04d}" for i in range(len(ws))]
    seed_list = parse_seeds(seeds) if isinstance(seeds, str) else list(seeds)
    if len(seed_list) > 4096:
        raise InputError(f"{flag_seeds}: {len(seed_list)} seeds; at most 4096 per run")
    check_scale(truncation, "--truncation")
    return G.sample_w(seeds=seed_list, truncation=truncation), [f"seed{s:04d}" for s in seed_list]


def load_direction(name, model, bundle_path):
    """A W direction by name or path from --boundaries, else the model's bundle, else the default's."""
    return parts_source(model, bundle_path).direction(name).check(model.G, "w", generator_hash=model.generator_hash)


def mask_uint8(m):
    """Masks [N, 1, R, R] in [0, 1] -> uint8 [N, R, R, 1]."""
    return (m.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def mask_rgb(m):
    """Masks [N, 1, R, R] in [0, 1] -> uint8 [N, R, R, 3] (grey), for grids of RGB tiles."""
    return np.repeat(mask_uint8(m), 3, axis=-1)


def overlay(images, mask, colour=(255, 40, 40), opacity=0.6):
    """uint8 [N, R, R, 3] images tinted by colour where masks [N, 1, R, R] are on."""
    a = opacity * mask.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()   # [N, R, R, 1]
    out = images.astype(np.float32) * (1 - a) + np.asarray(colour, np.float32) * a
    return out.round().clip(0, 255).astype(np.uint8)


def label_colours(components):
    """uint8 [k, 3]: each cluster in the colour of its region's parser label (the world's label
    palette); unnamed clusters in shades of grey."""
    from latentedit.edit.regions import PARTS
    from latentedit.world.params import LABEL_COLORS, LABEL_ID

    k = components.k
    pal = np.stack([np.full(3, 40 + (150 * i) // max(k - 1, 1), np.uint8) for i in range(k)])
    for name, ids in components.names.items():
        label = PARTS[name][0]
        pal[ids] = LABEL_COLORS[LABEL_ID[label]].numpy() if label in LABEL_ID else (255, 0, 255)
    return pal


def save_npy(path, array):
    import io

    buf = io.BytesIO()
    np.save(buf, array)
    write_bytes(path, buf.getvalue())


def write_json(path, data):
    write_text(path, json.dumps(data, indent=1, allow_nan=False) + "\n")


def _chunks(n, size=CHUNK):
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


# ---------------------------------------------------------------------------------------------
# latentedit mask


@click.command()
@model_options
@click.option("--direction", default=None, help="Edit masks: a bundle boundary name (smile, ...) or a .npy path.")
@click.option("--strength", type=float, default=2.0, show_default=True, help="Edit masks: w -> w + S * direction.")
@click.option("--region", default=None,
              help="Part masks instead: a region (mouth, eyes, left_eye, hair, ...), several (mouth,nose) or 'all'.")
@click.option("--seeds", default="0-7", show_default=True, help="Seeds: 0-7 or 1,5,7-9.")
@click.option("--w-file", type=click.Path(), default=None, help="Latents (.json SD-GAN / .npy) instead of seeds.")
@click.option("--truncation", type=float, default=0.7, show_default=True, help="Truncation psi of the seeds.")
@click.option("--boundaries", "bundle_path", type=click.Path(), default=None,
              help="Bundle whose boundaries/ holds named directions (default: --model, else the bundled model).")
@component_options
@click.option("--out", required=True, type=click.Path(), help="Output folder.")
def mask(model_choice, direction, strength, region, seeds, w_file, truncation, bundle_path, fit_samples, clusters, out):
    """Masks from the generator alone: where an edit acts (--direction), or face parts (--region).

    --direction: per image NAME.png (before), NAME_edited.png, NAME_soft.png / .npy (soft edit mask),
    NAME_binary.png / .npy (agreement threshold), NAME_overlay.png; grid.png (rows: images; columns:
    before, edited, soft, binary, overlay) and masks.json (thresholds and areas).

    --region: per image NAME.png, NAME_labels.png / .npy (the cluster label map, coloured by part),
    NAME_REGION.png / .npy and NAME_REGION_overlay.png per region; grid.png (image, label map, one
    overlay per region) and parts.json (the clusters and their names)."""
    if bool(direction) == bool(region):
        raise InputError("pass either --direction (edit masks) or --region (part masks)")
    if w_file and _from_cli("seeds"):
        raise InputError("pass either --seeds or --w-file")
    if w_file and _from_cli("truncation"):
        raise InputError("--truncation applies to seeds; latents from --w-file are used as they are")
    if region and _from_cli("strength"):
        raise InputError("--strength applies to --direction")
    if direction and (_from_cli("fit_samples") or _from_cli("clusters")):
        raise InputError("--fit-samples / --clusters apply to --region")
    if check_scale(strength, "--strength") == 0:
        raise InputError(f"--strength must be a non-zero number, got {strength}")
    names_regions = None
    if region:
        names_regions = [r.strip() for r in region.split(",") if r.strip()]
        if not names_regions:
            raise InputError("--region is empty")
        if names_regions != ["all"]:
            for r in names_regions:
                check_region_name(r)
    model = model_choice.load()
    G = model.G.eval()
    d = load_direction(direction, model, bundle_path) if direction else None
    ws, names = latents_from_options(G, seeds, w_file, truncation)
    out = Path(out)
    settings = {"model": model_choice.label,
                "seeds": None if w_file else seeds, "w_file": str(w_file) if w_file else None,
                "truncation": None if w_file else truncation}
    if d is not None:
        _edit_masks(G, ws, names, d, strength, out, settings)
    else:
        _part_masks(G, ws, names, names_regions, fit_components(model, fit_samples, clusters), out, settings)


def _edit_masks(G, ws, names, d, strength, out, settings):
    from latentedit.edit.layers import AttributeLayers

    rows, records = [], []
    with click.progressbar(_chunks(len(ws)), label=f"edit masks of {len(ws)} images") as bar:
        for sl in bar:
            lay = AttributeLayers(G, ws[sl], {"edit": d}, s_ref=strength)
            before, edited = to_uint8(lay.base), to_uint8(lay.edited["edit"])
            soft, binary = lay.soft["edit"], lay.binary["edit"]
            over = overlay(before, soft)
            for j, name in enumerate(names[sl]):
                save_png(out / f"{name}.png", before[j])
                save_png(out / f"{name}_edited.png", edited[j])
                save_png(out / f"{name}_soft.png", mask_uint8(soft[j:j + 1])[0])
                save_png(out / f"{name}_binary.png", mask_uint8(binary[j:j + 1].float())[0])
                save_png(out / f"{name}_overlay.png", over[j])
                save_npy(out / f"{name}_soft.npy", soft[j, 0].cpu().numpy().astype(np.float32))
                save_npy(out / f"{name}_binary.npy", binary[j, 0].cpu().numpy())
                records.append({"name": name, "area": round(float(binary[j].float().mean()), 5),
                                "threshold": round(float(lay.threshold["edit"][j]), 5),
                                "soft_max": round(float(soft[j].max()), 5)})
            rows.append(np.stack([before, edited, mask_rgb(soft), mask_rgb(binary.float()), over], 1))
    save_png(out / "grid.png", tile(np.concatenate(rows).reshape(-1, *rows[0].shape[2:]), cols=5))
    write_json(out / "masks.json", {**settings, "direction": d.name, "strength": strength,
                                    "files": "NAME.png, NAME_edited.png, NAME_soft.png/.npy, NAME_binary.png/.npy, "
                                             "NAME_overlay.png; grid columns: before, edited, soft, binary, overlay",
                                    "images": records})
    click.echo(f"wrote edit masks of {len(names)} images ({d.name}, strength {strength:g}) and the grid "
               f"{out / 'grid.png'}")


def _part_masks(G, ws, names, regions, comps, out, settings):
    from latentedit.edit import regions as rg

    if regions == ["all"]:
        regions = [r for r in rg.REGIONS if r in comps.names]
        if "eyes" in comps.names:
            regions += ["left_eye", "right_eye"]
    else:
        for r in regions:
            part = "eyes" if r in rg.SIDES else r
            if part not in comps.names:
                raise InputError(f"--region {r}: no cluster was named {part!r} "
                                 f"(named: {', '.join(sorted(comps.names))}); try more --fit-samples / --clusters")
    pal = label_colours(comps)
    rows = []
    with click.progressbar(_chunks(len(ws)), label=f"part masks of {len(ws)} images") as bar, torch.no_grad():
        for sl in bar:
            w = ws[sl]
            images = to_uint8(G.synthesize(w))
            labels = comps.assign(G, w)                                         # [n, r, r]
            full = comps.labels(G, w) if labels.shape[-1] != G.img_resolution else labels
            label_img = pal[full.cpu().numpy()]                                 # [n, R, R, 3]
            tiles = [images, label_img]
            for j, name in enumerate(names[sl]):
                save_png(out / f"{name}.png", images[j])
                save_png(out / f"{name}_labels.png", label_img[j])
                save_npy(out / f"{name}_labels.npy", full[j].cpu().numpy().astype(np.int16))
            for r in regions:
                m = rg.region_mask(G, w, r, comps, labels)
                over = overlay(images, m)
                tiles.append(over)
                for j, name in enumerate(names[sl]):
                    save_png(out / f"{name}_{r}.png", mask_uint8(m[j:j + 1])[0])
                    save_png(out / f"{name}_{r}_overlay.png", over[j])
                    save_npy(out / f"{name}_{r}.npy", m[j, 0].cpu().numpy().astype(np.float32))
            rows.append(np.stack(tiles, 1))
    cols = 2 + len(regions)
    save_png(out / "grid.png", tile(np.concatenate(rows).reshape(-1, *rows[0].shape[2:]), cols=cols))
    write_json(out / "parts.json", {**settings, "regions": regions, "clusters": comps.k,
                                    "layer_resolutions": list(comps.resolutions),
                                    "named_clusters": comps.names,
                                    "parser_iou": {k: round(v, 4) for k, v in comps.iou.items()},
                                    "grid columns": ["image", "cluster labels"] + regions,
                                    "images": names})
    click.echo(f"wrote part masks ({', '.join(regions)}) of {len(names)} images and the grid {out / 'grid.png'}")


# ---------------------------------------------------------------------------------------------
# latentedit transfer


@click.command()
@model_options
@click.option("--component", required=True,
              help="What to transfer: left_eye, right_eye, eyes, nose, mouth, hair, accessory, ... (a region).")
@click.option("--source", default=None, help="Seed of the face giving the component.")
@click.option("--target", default=None, help="Seeds of the faces receiving it: 0-7 or 1,5,7-9.")
@click.option("--source-w", type=click.Path(), default=None,
              help="Source latents file (.json / .npy): one code, or one per target.")
@click.option("--target-w", type=click.Path(), default=None, help="Target latents file (.json / .npy).")
@click.option("--truncation", type=float, default=0.7, show_default=True, help="Truncation psi of the seeds.")
@component_options
@click.option("--out", required=True, type=click.Path(), help="Output folder.")
def transfer(model_choice, component, source, target, source_w, target_w, truncation, fit_samples, clusters, out):
    """Put the source face's component (mouth, an eye, ...) on the target faces, blending the
    generator's features inside the union of both faces' part masks (feathered).

    Writes per target NAME_target.png, NAME_source.png, NAME_result.png, NAME_mask.png / .npy (the
    blend mask, in [0, 1]); grid.png (rows: targets; columns: source, target, result, mask) and
    transfer.json."""
    from latentedit.edit import regions as rg

    check_region_name(component, "--component")
    if bool(source) == bool(source_w):
        raise InputError("pass either --source SEED or --source-w FILE")
    if bool(target) == bool(target_w):
        raise InputError("pass either --target SEEDS or --target-w FILE")
    if source_w and target_w and _from_cli("truncation"):
        raise InputError("--truncation applies to seeds; latents from --source-w / --target-w are used as they are")
    if source and len(parse_seeds(source)) != 1:
        raise InputError(f"--source takes one seed, got {source!r} (one source serves every target)")
    if target:
        parse_seeds(target)
    model = model_choice.load()
    G = model.G.eval()
    t, t_names = latents_from_options(G, target, target_w, truncation, "--target", "--target-w")
    s, s_names = latents_from_options(G, source, source_w, truncation, "--source", "--source-w")
    t, s = G.broadcast_w(t), G.broadcast_w(s)
    if len(s) not in (1, len(t)):
        raise InputError(f"--source-w holds {len(s)} codes for {len(t)} targets (one, or one per target)")
    if len(s) == 1:
        s, s_names = s.expand(len(t), -1, -1), s_names * len(t)
    if source_w:
        s_names = [f"source{n}" for n in s_names]
    comps = fit_components(model, fit_samples, clusters)
    part = "eyes" if component in rg.SIDES else component
    if part not in comps.names:
        raise InputError(f"--component {component}: no cluster was named {part!r} "
                         f"(named: {', '.join(sorted(comps.names))}); try more --fit-samples / --clusters")
    out = Path(out)
    rows, records = [], []
    with click.progressbar(_chunks(len(t)), label=f"transferring {component} to {len(t)} faces") as bar, \
            torch.no_grad():
        for sl in bar:
            ts, ss = t[sl], s[sl]
            result, m = rg.transfer_component(G, ts, ss, component, components=comps)
            result = to_uint8(result)
            tgt, src = to_uint8(G.synthesize(ts)), to_uint8(G.synthesize(ss))
            for j, name in enumerate(t_names[sl]):
                save_png(out / f"{name}_target.png", tgt[j])
                save_png(out / f"{name}_source.png", src[j])
                save_png(out / f"{name}_result.png", result[j])
                save_png(out / f"{name}_mask.png", mask_uint8(m[j:j + 1])[0])
                save_npy(out / f"{name}_mask.npy", m[j, 0].cpu().numpy().astype(np.float32))
                records.append({"target": name, "source": s_names[sl][j],
                                "mask_area": round(float(m[j].mean()), 5)})
            rows.append(np.stack([src, tgt, result, mask_rgb(m)], 1))
    save_png(out / "grid.png", tile(np.concatenate(rows).reshape(-1, *rows[0].shape[2:]), cols=4))
    write_json(out / "transfer.json", {
        "model": model_choice.label, "component": component,
        "source": source, "source_w": str(source_w) if source_w else None, "target": target,
        "target_w": str(target_w) if target_w else None, "truncation": None if source_w and target_w else truncation,
        "clusters": comps.k, "fit_samples": fit_samples, "pairs": records,
        "grid columns": ["source", "target", "result", "mask"]})
    click.echo(f"wrote {component} transferred onto {len(t)} faces to {out}/ and the grid {out / 'grid.png'}")


# ---------------------------------------------------------------------------------------------
# latentedit layers


def parse_colour_option(text):
    """'hair=200,40,40' -> ('hair', (200, 40, 40)); 'smile=none' -> ('smile', None)."""
    name, sep, value = text.partition("=")
    name = name.strip()
    bad = InputError(f"--colour must look like hair=200,40,40 (a layer or region = r,g,b in 0..255), got {text!r}")
    if not sep or not name:
        raise bad
    if value.strip().lower() == "none":
        return name, None
    try:
        rgb = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise bad from None
    if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
        raise bad
    return name, rgb


@click.command()
@model_options
@click.option("--direction", required=True,
              help="Directions, one layer each: smile,beard (bundle names or .npy paths).")
@click.option("--strengths", default="-2..2", show_default=True, help="Range of strengths (every layer), e.g. -2..2.")
@click.option("--steps", type=int, default=5, show_default=True, help="Columns of the grid.")
@click.option("--s-ref", type=float, default=1.0, show_default=True,
              help="The strength each layer is generated at (once); others are recomposited from it.")
@click.option("--colour", "colours", multiple=True,
              help="A grid row recoloured: LAYER_OR_REGION=R,G,B (0..255), e.g. hair=200,40,40. Repeatable.")
@click.option("--seeds", default="0-3", show_default=True, help="Seeds: 0-3 or 1,5,7-9.")
@click.option("--w-file", type=click.Path(), default=None, help="Latents (.json SD-GAN / .npy) instead of seeds.")
@click.option("--truncation", type=float, default=0.7, show_default=True, help="Truncation psi of the seeds.")
@click.option("--compare", is_flag=True, help="Add a row of regenerated images (the generator at each strength).")
@click.option("--boundaries", "bundle_path", type=click.Path(), default=None,
              help="Bundle whose boundaries/ holds named directions (default: --model, else the bundled model).")
@component_options
@click.option("--out", required=True, type=click.Path(), help="Grid PNG; the report goes to OUT with .json.")
def layers(model_choice, direction, strengths, steps, s_ref, colours, seeds, w_file, truncation, compare, bundle_path,
           fit_samples, clusters, out):
    """Attribute layers: each direction is generated once (at --s-ref) and becomes a mask and an
    appearance residual; the grid recomposites them without the generator.

    Grid: per image a row of strengths (every layer at that strength), then one row per --colour
    (that layer's or region's colour moved to R,G,B, shading kept), then with --compare the
    generator's own images at those strengths. OUT.json: PSNR (dB) of recomposited against
    regenerated images per strength (null = identical), and the time of one render."""
    from latentedit.edit import regions as rg
    from latentedit.edit.layers import AttributeLayers

    out = Path(out)
    if out.suffix.lower() != ".png":
        raise InputError(f"--out must be a .png file (the grid), got {out}")
    if steps < 1:
        raise InputError("--steps must be >= 1")
    if check_scale(s_ref, "--s-ref") == 0:
        raise InputError(f"--s-ref must be a non-zero number, got {s_ref}")
    if out.with_suffix(".json").is_dir():
        raise InputError(f"{out.with_suffix('.json')} is a folder; the report is written there: choose another --out")
    if w_file and _from_cli("seeds"):
        raise InputError("pass either --seeds or --w-file")
    if w_file and _from_cli("truncation"):
        raise InputError("--truncation applies to seeds; latents from --w-file are used as they are")
    lo, hi = parse_strength(strengths, "--strengths")
    tokens = [x.strip() for x in direction.split(",") if x.strip()]
    if not tokens:
        raise InputError("--direction is empty")
    colour_rows = [parse_colour_option(c) for c in colours]
    if not w_file:
        parse_seeds(seeds)
    model = model_choice.load()
    G = model.G.eval()
    edits = {}
    for tok in tokens:
        d = load_direction(tok, model, bundle_path)
        name = d.name or Path(tok).stem
        if name in edits:
            raise InputError(f"--direction names {name!r} twice")
        edits[name] = d
    for name, _ in colour_rows:
        if name not in edits and name not in rg.REGIONS:
            raise InputError(f"--colour {name}: not a layer ({', '.join(edits)}) or a region ({', '.join(rg.REGIONS)})")
    ws, names = latents_from_options(G, seeds, w_file, truncation)
    comps = None
    if any(name not in edits for name, _ in colour_rows):
        comps = fit_components(model, fit_samples, clusters)
    lay = AttributeLayers(G, ws, edits, components=comps, s_ref=s_ref)
    for name, _ in colour_rows:
        lay.region_mask(name)                          # a region nobody named fails here, before the work
    values = np.linspace(lo, hi, steps).tolist()
    per_row = 1 + len(colour_rows) + int(compare)
    cells = np.zeros([len(ws), per_row, steps, G.img_resolution, G.img_resolution, 3], np.uint8)
    psnr, render_s, renders = [], 0.0, 0
    rows = "1 row" if not colour_rows else f"{1 + len(colour_rows)} rows (natural + {len(colour_rows)} recoloured)"
    with click.progressbar(values, label=f"{len(values)} strengths x {rows}, {len(ws)} images") as bar:
        for j, v in enumerate(bar):
            for r, colour in enumerate([None] + colour_rows):
                t0 = time.perf_counter()
                img = lay.render(v, colours=None if colour is None else dict([colour]))
                render_s, renders = render_s + time.perf_counter() - t0, renders + 1
                cells[:, r, j] = to_uint8(img)
            regen = lay.regenerate(v)
            db = [None if math.isinf(x) else round(x, 3) for x in lay.psnr_vs_regenerated(v).tolist()]
            finite = [x for x in db if x is not None]
            psnr.append({"strength": round(v, 6), "mean_db": round(float(np.mean(finite)), 3) if finite else None,
                         "min_db": min(finite) if finite else None, "per_image_db": db})
            if compare:
                cells[:, -1, j] = to_uint8(regen)
    report = {
        "model": model_choice.label,
        "layers": list(edits), "s_ref": s_ref, "strengths": [round(v, 6) for v in values],
        "seeds": None if w_file else seeds, "w_file": str(w_file) if w_file else None,
        "truncation": None if w_file else truncation,
        "colours": [{"target": n, "rgb": list(c) if c else None} for n, c in colour_rows],
        "rows_per_image": ["layers"] + [f"colour {n}" for n, _ in colour_rows] + (["regenerated"] if compare else []),
        "psnr_recomposited_vs_regenerated": psnr,
        "render_ms": round(1000 * render_s / max(renders, 1), 4), "render_batch": len(ws),
        "note": "PSNR over images in [-1, 1] (peak-to-peak 2); null: identical images (strength 0)",
    }
    try:  # the report is made before either file is written: never a grid without its report
        report_text = json.dumps(report, indent=1, allow_nan=False) + "\n"
    except ValueError:
        raise InputError("the renders hold non-finite values (PSNR is NaN); "
                         "try smaller --strengths / --s-ref") from None
    save_png(out, tile(cells.reshape(-1, *cells.shape[3:]), cols=steps))
    write_text(out.with_suffix(".json"), report_text)
    summary = ", ".join(f"{p['strength']:g}: {p['mean_db'] if p['mean_db'] is not None else 'inf'}" for p in psnr)
    click.echo(f"wrote {out} ({len(ws)} images x {per_row} rows x {steps} strengths) and {out.with_suffix('.json')}; "
               f"PSNR recomposited vs regenerated (dB) {summary}")
