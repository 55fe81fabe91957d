"""Discrete attribute synthesis measured on the world: InterfaceGAN alone (the prior p) vs ours
(p + the fusion network's offset, composited into the origin inside the accessory's region as
`latentedit synthesize` does; `--no-composite`: G(w + p + offset) as it is), per accessory kind, on N
sampled W codes never used in training.

    python benchmarks/synthesize_world.py --model checkpoints/default --n 1000

Per kind and method: success (the attribute classifier's top class is the kind), seen_by_parser
(the face parser labels >= 30% of the accessory's expected region as the accessory: where the
template head wears it turned to the origin's view by the face3d evaluator; a second judge, since
the offset network trains against the classifier), both (success and seen), identity
similarity (cosine of the identity embedder between origin and edit), attributes kept (share of the
classifier's hair colour / hair style / beard / age heads whose top class the edit keeps; next to
the world's own value from bare faces to the same faces wearing the kind), MSE outside the accessory
region (the face parser's accessory classes on the edited image, dilated by 2 px; pixels in
[-1, 1]), realism (mean change of the discriminator's logit, edit minus origin) and edits/s.
Footprint (`latentedit.metrics.footprint`): the parser's accessory pixels over the expected region's,
passing at most 1.5x the world renders' median; all judges: success, seen and footprint (and for frame
glasses the frames judge: clear lenses that show the face behind them, also reported on the edits
with their lenses as the generator drew them, since `synthesize` clears them; for masks the edge judge,
`latentedit.metrics.edges`: cloth with the world's hard edge, not a haze).
The judges on the world: their pass rates on 200 world renders wearing the kind and on the same
faces bare (true and false positives). Edit-FID: the N edits vs N world renders wearing the kind
(the attribute classifier's features), next to the generator's own N faces of the kind against
the same renders (the ratio is the bundle issue's judge: <= 1.5x).

"At equal success": InterfaceGAN alone is also run over a sweep of target distances; its
identity and outside-MSE are interpolated (linearly in success) at our success rate. When the
sweep never reaches our success, its best-success point is reported instead and marked.
"""
import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from latentedit.edit.compositing import composited  # noqa: E402
from latentedit.edit.discrete import (ACCESSORY_KINDS, DiscreteSynthesizer, accessory_present,  # noqa: E402
                                      attributes_kept, expected_region, face_view, prior_basis, seen_in_region)
from latentedit.edit.losses import identity_loss  # noqa: E402
from latentedit.formats import load_networks  # noqa: E402
from latentedit.formats.evaluators import load_evaluators  # noqa: E402
from latentedit.edit.imaging import network_input  # noqa: E402
from latentedit.metrics.accessories import (frame_measures, frames_pass, see_through_error,  # noqa: E402
                                            world_frame_reference)
from latentedit.metrics.edges import edge_measures, edge_pass, world_edge_reference  # noqa: E402
from latentedit.metrics.fid import fid  # noqa: E402
from latentedit.metrics.footprint import (eye_pixels, eyes_pass, footprint, footprint_pass,  # noqa: E402
                                         world_eyes_reference, world_footprint_reference)
from latentedit.metrics.generator import generated_kind_features, kind_render_features  # noqa: E402
from latentedit.metrics.image import identity_similarity  # noqa: E402
from latentedit.world.templates import accessory_labels, accessory_region, on_accessory, world_wearing  # noqa: E402


def world_evaluators(model, arcface=None):
    """The bundle's attribute classifier, identity embedder and parser; with arcface (a
    model_ir_se50.pth) ArcFace is the identity network instead of the bundle's."""
    ev = load_evaluators(model, ["attributes", "parser", "face3d"] + ([] if arcface else ["identity"]))
    if arcface:
        ev["identity"] = identity_loss(arcface)
    return ev


def _world_reference(ev, name, resolution, compute):
    """A judge's world reference at `resolution`, measured once per evaluator set and resolution
    (kept in `ev`) by the same parser that judges the edits; compute(labeller)."""
    key = f"{name}_reference_{resolution}px"
    if key not in ev:
        ev[key] = compute(lambda x: ev["parser"](x).argmax(1))
    return ev[key]


def frame_reference(ev, resolution):
    """The frames judge's reference: world renders' lens clarity / frame share / frame contrast."""
    return _world_reference(ev, "frame", resolution,
                            lambda labeller: world_frame_reference(labeller, resolution=resolution))


def footprint_reference(kind, ev, resolution):
    """The footprint judge's reference for `kind`: world renders' median footprint (face3d views)."""
    return _world_reference(ev, f"footprint_{kind}", resolution, lambda labeller: world_footprint_reference(
        kind, labeller, lambda x: face_view(ev["face3d"], x), resolution=resolution))


def edge_reference(ev, resolution):
    """The mask edge judge's reference: world renders' median edge crispness and contrast."""
    return _world_reference(ev, "edge", resolution,
                            lambda labeller: world_edge_reference("mask", labeller, resolution=resolution))


def eyes_reference(ev, resolution):
    """The mask eyes judge's reference: world renders' median eye pixels."""
    return _world_reference(ev, "eyes", resolution,
                            lambda labeller: world_eyes_reference(labeller, resolution=resolution))


@torch.no_grad()
def measure(x, y, kind, ev, D, dilate=2, expected=None, behind=None):
    """Per-sample metrics of edits y of origins x (both [N, 3, R, R]); `expected`: x's
    `expected_region`, when the caller has it (one render of the regions per set of origins);
    `behind`: the faces frames' lenses should show (`DiscreteSynthesizer.behind`; default x)."""
    labels = ev["parser"](y).argmax(1)
    region = on_accessory(labels, kind)[:, None].float()
    expected = expected_region(ev["face3d"], kind, x) if expected is None else expected
    seen = seen_in_region(labels, kind, expected)
    region = F.max_pool2d(region, 2 * dilate + 1, stride=1, padding=dilate)
    keep = 1 - region
    mse_out = ((y - x) ** 2 * keep).sum((1, 2, 3)) / (keep.sum((1, 2, 3)) * 3).clamp(min=1)
    success = accessory_present(ev["attributes"], y, kind)
    size = footprint(labels, kind, expected)  # the accessory is the world's size, not a smear beyond it
    fits = footprint_pass(size, footprint_reference(kind, ev, y.shape[-1]))
    out = {"success": success.float(), "seen_by_parser": seen.float(), "both": (success & seen).float(),
           "identity": identity_similarity(y, x, ev["identity"]),
           "attributes_kept": attributes_kept(ev["attributes"], x, y),
           "mse_outside": mse_out,
           "realism": (D(y) - D(x)).flatten(),
           "footprint": size.nan_to_num(0), "fits": fits.float(), "all_judges": (success & seen & fits).float()}
    if kind == "frame_glasses":  # the third judge: thin frames around clear lenses, not a dark band
        frame = frame_measures(y, labels)
        see_through = see_through_error(y, x if behind is None else behind, labels)  # the lenses show the face
        ref = frame_reference(ev, y.shape[-1])
        frames = frames_pass(frame, ref, see_through)
        out.update(frames=frames.float(), all_judges=(success & seen & fits & frames).float(),
                   lens_clarity_ratio=frame["clarity"].nan_to_num(0) / ref["clarity"],
                   frame_share_ratio=frame["share"].nan_to_num(1) / ref["share"],
                   frame_contrast_ratio=frame["contrast"].nan_to_num(0) / ref["contrast"],
                   see_through=see_through.nan_to_num(1))
    if kind == "mask":  # the third judge: cloth with a hard edge, not a haze fading into the skin
        crispness, contrast = edge_measures(y, labels, accessory_labels(kind))
        ref = edge_reference(ev, y.shape[-1])
        crisp = edge_pass(crispness, contrast, ref)
        # and the eyes left visible, not a blob over the whole face (glasses frames excepted)
        sees = eyes_pass(labels, eyes_reference(ev, y.shape[-1]))
        out.update(crisp=crisp.float(), eyes_visible=sees.float(),
                   all_judges=(success & seen & fits & crisp & sees).float(),
                   crispness_ratio=crispness.nan_to_num(0) / ref["crispness"],
                   contrast_ratio=contrast.nan_to_num(0) / ref["contrast"],
                   eyes_ratio=eye_pixels(labels) / eyes_reference(ev, y.shape[-1]))
    return out


@torch.no_grad()
def judges_on_world(kind, ev, D, resolution, n=200, seed=9_100_000):
    """{"wearing", "bare"}: the judges' pass rates (success, seen_by_parser, frames, ...) on n world
    renders wearing the kind and on the same faces without any accessory: a judge that fails the
    world's own accessories, or passes bare faces, is wrong before any edit is measured. "wearing"
    also holds attributes_kept from the bare faces to the same faces wearing the kind: the value
    an edit that changes nothing but the accessory would reach."""
    faces = {name: world_wearing(wear, n, seed, resolution).image for name, wear in (("wearing", kind), ("bare", None))}
    out, keys = {}, ("success", "seen_by_parser", "fits", "frames", "crisp", "eyes_visible", "all_judges", "both")
    # "wearing" is the world's own edit, from the bare faces to the same faces wearing the kind
    for name, extra in (("wearing", ("attributes_kept",)), ("bare", ())):
        judged = measure(faces["bare"], faces[name], kind, ev, D)
        out[name] = {k: float(judged[k].mean()) for k in keys + extra if k in judged}
    return out


@torch.no_grad()
def judge_sheet(path, ev, resolution, n=8, seed=9_100_000):
    """The parser judge's expected region on world renders wearing frame glasses / sunglasses: per
    kind, rows of the renders, the frontal head's region (red, the judge before 2026-12-02) and the
    region at each face's view by the face3d evaluator (green), over the render."""
    from latentedit.formats.images import save_png, tile, to_uint8

    rows = []
    for kind in ("frame_glasses", "sunglasses"):
        x = world_wearing(kind, n, seed, resolution).image
        regions = (accessory_region(kind, resolution).expand(n, -1, -1), expected_region(ev["face3d"], kind, x))
        rows.append(x)
        for region, colour in zip(regions, ((1.0, -1.0, -1.0), (-1.0, 1.0, -1.0))):
            tint = torch.tensor(colour)[None, :, None, None].expand_as(x)
            rows.append(torch.where(region[:, None], 0.45 * x + 0.55 * tint, x))
    save_png(path, tile(to_uint8(torch.cat(rows)), n, scale=3, pad=2))


def summarise(parts):
    return {k: float(torch.cat([p[k] for p in parts]).mean()) for k in parts[0]}


@torch.no_grad()
def run_kind(kind, synth, G, D, ev, w, distances, batch, own_codes):
    ours, prior_only, regions, t_ours, feats = [], [], [], 0.0, {"ours": [], "prior": []}
    as_drawn = []  # frames: the edits with their lenses as the generator drew them (not cleared)
    clears_lenses = synth.composite and synth.compositing.clear_lenses
    clf = ev["attributes"]
    for i in range(0, len(w), batch):
        c = w[i:i + batch]
        t0 = time.perf_counter()
        out = synth(c, batch_size=batch)
        t_ours += time.perf_counter() - t0
        regions.append(expected_region(ev["face3d"], kind, out.origin))  # the sweep below edits the same origins
        behind = synth.behind(c, out.origin)  # frames: with sunglasses taken off
        ours.append(measure(out.origin, out.image, kind, ev, D, expected=regions[-1], behind=behind))
        prior_only.append(measure(out.origin, out.prior_image, kind, ev, D, expected=regions[-1], behind=behind))
        if clears_lenses:
            drawn = composited(G, G.broadcast_w(c), out.latents, regions[-1], kind)[0]  # no parser: not cleared
            as_drawn.append(measure(out.origin, drawn, kind, ev, D, expected=regions[-1], behind=behind))
        feats["ours"].append(clf.features(network_input(out.image, clf.cfg.image_size)))
        feats["prior"].append(clf.features(network_input(out.prior_image, clf.cfg.image_size)))
    res = {"ours": {**summarise(ours), "edits_per_s": len(w) / t_ours},
           "prior": summarise(prior_only), "distance": synth.distance, "sweep": []}
    if as_drawn:
        res["ours_lenses_as_drawn"] = summarise(as_drawn)
    res["edit_fid"] = edit_fid(kind, G, clf, {k: torch.cat(v) for k, v in feats.items()}, **own_codes)
    res["judges_on_world"] = judges_on_world(kind, ev, D, G.img_resolution)
    for d in distances:
        parts, t = [], 0.0
        for i, expected in zip(range(0, len(w), batch), regions):
            c = w[i:i + batch]
            t0 = time.perf_counter()
            x = G.synthesize(c)
            y = G.synthesize(c + prior_basis(c, synth.normal, synth.intercept, d))
            t += time.perf_counter() - t0
            parts.append(measure(x, y, kind, ev, D, expected=expected))
        res["sweep"].append({"distance": d, **summarise(parts), "edits_per_s": len(w) / t})
        print(f"  {kind} InterfaceGAN d={d}: " + "  ".join(f"{k} {v:.4f}" for k, v in res["sweep"][-1].items()
                                                          if k != "distance"), flush=True)
    res["at_equal_both"] = equal_success(res["sweep"], res["ours"]["both"], key="both")
    res["at_equal_success"] = equal_success(res["sweep"], res["ours"]["success"])
    return res


def edit_fid(kind, G, clf, edit_features, seed, truncation):
    """Edited faces of `kind` vs world renders wearing it, in the classifier's feature space, beside
    the generator's own faces of that kind (the first N codes from `seed` that the classifier gives
    the kind, at the edits' truncation) against the same renders: equal sample sizes, so the ratio
    is free of FID's sample-size bias."""
    n = len(edit_features["ours"])
    world_f = kind_render_features(clf, kind, n)
    own_f, drawn = generated_kind_features(G, clf, kind, n, truncation=truncation, seed=seed)
    own = fid(world_f, own_f)
    out = {"generator_own": own, "own_samples": len(own_f), "own_codes_drawn": drawn}
    for method in ("ours", "prior"):
        out[method] = fid(world_f, edit_features[method])
        out[f"{method}_ratio"] = out[method] / own
    return out


def equal_success(sweep, target, key="success"):
    """InterfaceGAN's metrics at `key` (success, or both judges) = target, interpolated along the
    sweep (which runs in increasing distance; interpolation uses its part up to the best point)."""
    best_i = int(np.argmax([p[key] for p in sweep]))
    pts = sweep[:best_i + 1]
    names = ("distance", "success", "seen_by_parser", "both", "identity", "mse_outside", "realism")
    if pts[-1][key] < target:
        return {"reached": False, **{k: pts[-1][k] for k in names}}
    order = np.argsort([p[key] for p in pts], kind="stable")
    s = np.array([pts[i][key] for i in order])
    out = {"reached": True}
    for k in names:
        out[k] = float(np.interp(target, s, [pts[i][k] for i in order]))
    out[key] = target
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="checkpoints/default", help="bundle with G, D, evaluators, offset networks")
    ap.add_argument("--kinds", default=",".join(ACCESSORY_KINDS))
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--truncation", type=float, default=0.7)
    ap.add_argument("--seed", type=int, default=5_000_000, help="first seed of the sampled codes (held out)")
    ap.add_argument("--distances", default="1,2,3,4,5,6,8,10,12")
    ap.add_argument("--batch", type=int, default=40, help="a multiple of 4 (discriminator groups)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--arcface", default=None, help="model_ir_se50.pth: ArcFace for the identity column")
    ap.add_argument("--no-composite", action="store_true",
                    help="judge G(w + p + offset) as it is, not composited into the origin (the default)")
    ap.add_argument("--judge-sheet", default=None, help="PNG: the parser judge's expected regions on world renders")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    nets = load_networks(args.model)
    G, D = nets.G.eval(), nets.D.eval()
    ev = world_evaluators(args.model, args.arcface)
    if "frame_glasses" in args.kinds.split(","):
        ref = frame_reference(ev, G.img_resolution)
        print(f"world frame glasses (parser): lens clarity {ref['clarity']:.3f}, frame share {ref['share']:.3f}, "
              f"frame contrast {ref['contrast']:.3f}", flush=True)
    if args.judge_sheet:
        judge_sheet(args.judge_sheet, ev, G.img_resolution)
    w = G.sample_w(args.n, seed=args.seed, truncation=args.truncation)
    distances = [float(d) for d in args.distances.split(",")]
    results = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
                          f"torch {torch.__version__}", "n": args.n, "truncation": args.truncation,
               "composite": not args.no_composite, "kinds": {}}
    for kind in args.kinds.split(","):
        synth = DiscreteSynthesizer.load(kind, bundle=args.model, G=G, composite=not args.no_composite)
        own_codes = {"seed": args.seed + args.n, "truncation": args.truncation}  # disjoint from the edited codes
        results["kinds"][kind] = r = run_kind(kind, synth, G, D, ev, w, distances, args.batch, own_codes)
        o, p = r["ours"], r["prior"]
        print(f"{kind}: ours success {o['success']:.3f} seen {o['seen_by_parser']:.3f} both {o['both']:.3f} identity "
              f"{o['identity']:.3f} attributes kept {o['attributes_kept']:.3f} (world "
              f"{r['judges_on_world']['wearing']['attributes_kept']:.3f}) mse_out {o['mse_outside']:.4f} "
              f"realism {o['realism']:+.3f} "
              f"{o['edits_per_s']:.1f} edits/s | prior only (d={r['distance']}) success {p['success']:.3f} both "
              f"{p['both']:.3f} identity {p['identity']:.3f} mse_out {p['mse_outside']:.4f}", flush=True)
        print(f"  footprint judge: ours pass {o['fits']:.3f} footprint {o['footprint']:.2f}x the expected region "
              f"(world {footprint_reference(kind, ev, G.img_resolution):.2f}x), all judges {o['all_judges']:.3f} | "
              f"prior only pass {p['fits']:.3f} footprint {p['footprint']:.2f}x", flush=True)
        if "crisp" in o:
            print(f"  mask edge judge: ours pass {o['crisp']:.3f} crispness {o['crispness_ratio']:.3f}x world, contrast "
                  f"{o['contrast_ratio']:.3f}x world, eyes visible {o['eyes_visible']:.3f}, all judges "
                  f"{o['all_judges']:.3f} | prior only pass {p['crisp']:.3f} crispness {p['crispness_ratio']:.3f}x "
                  f"contrast {p['contrast_ratio']:.3f}x eyes visible {p['eyes_visible']:.3f}", flush=True)
        if "frames" in o:
            print(f"  frames judge: ours pass {o['frames']:.3f} all judges {o['all_judges']:.3f} lens clarity "
                  f"{o['lens_clarity_ratio']:.3f}x world, frame share {o['frame_share_ratio']:.3f}x world, frame "
                  f"contrast {o['frame_contrast_ratio']:.3f}x world, see-through {o['see_through']:.3f} | prior only "
                  f"pass {p['frames']:.3f} clarity {p['lens_clarity_ratio']:.3f}x see-through {p['see_through']:.3f}",
                  flush=True)
        if "ours_lenses_as_drawn" in r:  # what clearing the lenses hides: the generator's own lenses
            d = r["ours_lenses_as_drawn"]
            print(f"  the same edits with their lenses as drawn (not cleared): frames judge {d['frames']:.3f}, all "
                  f"judges {d['all_judges']:.3f}, lens clarity {d['lens_clarity_ratio']:.3f}x world, see-through "
                  f"{d['see_through']:.3f}", flush=True)
        print("  judges on 200 world renders wearing it / the same faces bare: " + ", ".join(
            f"{k} {v:.3f} / {r['judges_on_world']['bare'][k]:.3f}" for k, v in r["judges_on_world"]["wearing"].items()
            if k in r["judges_on_world"]["bare"]), flush=True)
        e = r["edit_fid"]
        print(f"  edit-FID vs world renders wearing it: ours {e['ours']:.3f} ({e['ours_ratio']:.2f}x the generator's "
              f"own {kind} faces, {e['generator_own']:.3f} on {e['own_samples']} of {e['own_codes_drawn']} codes), "
              f"prior only {e['prior']:.3f} ({e['prior_ratio']:.2f}x)", flush=True)
        for key in ("success", "both"):
            e = r["at_equal_success" if key == "success" else "at_equal_both"]
            print(f"  InterfaceGAN at {'equal' if e['reached'] else 'its best (lower)'} {key} {e[key]:.3f}: identity "
                  f"{e['identity']:.3f} mse_out {e['mse_outside']:.4f} realism {e['realism']:+.3f} "
                  f"(d={e['distance']:.2f})", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
