"""Regions measured on the bundled generator: label-free cluster masks against the face parser,
edit masks against the parser's changed labels, region-locked vs global edits, component
transfer, and attribute layers recomposited vs regenerated.

    python benchmarks/regions_world.py --model checkpoints/default --n 64 --json /tmp/regions_world.json

All images come from held-out latents (seeds 10000.., truncation 0.7; transfer sources from seeds
20000..); the components are fitted on seeds 0..63 (`component_clusters` defaults, the bundle's
parser used only to name the clusters). Pixels are in [-1, 1]; MSE is per pixel and channel.

1. masks: per part, IoU (pooled over samples) of region_mask > 0.5 and at the best threshold
   against the parser's labels of that part on the same image; the accessory also per kind, over
   the samples the classifier sees wearing it; empty = samples where the mask is empty at 0.5 (and,
   for reference, where the labels hold none of the part).
2. edit masks: IoU of the binary edit mask against the parser's changed-label region (pixels whose
   parser label differs before vs after the edit, dilated 1 px): with the agreement threshold of
   `threshold_mask`, with soft > 0.5, and with the best single threshold over a grid (oracle).
3. locality: region-locked (`region_edit`) vs global edit at the same strength. in = MSE to the
   unedited image inside the region (union of the cluster masks before and after, > 0.5); far =
   MSE outside the region grown by 8 px; ratio = far(global) / far(local) (the bar: >= 5).
4. transfer: `transfer_component` of a part from source to target (16 pairs). identity = cosine of
   the identity embedder between target and result (source vs target for reference); agreement =
   share of pairs whose classifier head (hair_color for hair, smile for mouth) of the result equals
   the source's class, against the same share for the unedited target.
5. layers: `AttributeLayers` (s_ref 1, default floor) for smile and beard: mean PSNR (dB) of the
   recomposited image against the regenerated one per strength, and render time for N = 1.
6. inverted renders (when the bundle has an encoder): the masks of 1. for the encoder's codes of
   held-out world renders (seed --render-seed) against the renders' exact label maps (accessory
   kinds from the world's attributes), and against the parser on the reconstructions.
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
from latentedit.edit import regions as rg  # noqa: E402
from latentedit.edit.directions import Direction  # noqa: E402
from latentedit.edit.discrete import ACCESSORY_KINDS, accessory_present  # noqa: E402
from latentedit.edit.inversion import load_encoder  # noqa: E402
from latentedit.formats.encoder import has_encoder  # noqa: E402
from latentedit.edit.layers import AttributeLayers  # noqa: E402
from latentedit.formats import load_networks  # noqa: E402
from latentedit.formats.evaluators import load_evaluators  # noqa: E402

PARTS = ("eyes", "left_eye", "right_eye", "brows", "nose", "mouth", "hair", "skin", "accessory")
STRENGTHS = (-2.0, -1.0, 0.5, 1.0, 2.0)


def iou(a, b):
    """Pooled IoU of boolean masks."""
    return float((a & b).sum() / (a | b).sum().clamp_min(1))


def grow(m, px):
    return F.max_pool2d(m.float(), 2 * px + 1, stride=1, padding=px) > 0.5


def mse(a, b, m):
    m = m.expand_as(a).float()
    return float(((a - b) ** 2 * m).sum() / m.sum().clamp_min(1))


def synth(G, ws, batch=16):
    with torch.no_grad():
        return torch.cat([G.synthesis(c, noise_mode="const", fast=False) for c in G.broadcast_w(ws).split(batch)])


def label_mask(parsed, lid, labels):
    return torch.isin(parsed, torch.tensor([lid[x] for x in labels]))[:, None]


@torch.no_grad()
def part_masks(G, comps, w, truth, lid, kinds=None):
    """Each part's soft cluster mask against label maps `truth` [N, R, R] (the parser's on generated
    images, the world's exact labels on inverted renders): pooled IoU at 0.5 and at the best
    threshold; with kinds ({accessory kind: bool [N]}), the accessory mask also per kind over the
    samples that wear it."""
    labels = comps.assign(G, w)
    grid = np.round(np.arange(0.05, 1.0, 0.05), 2)
    out = {}
    for name in PARTS:
        labs = rg.PARTS.get(name) or (rg.SIDES[name],)
        gt = label_mask(truth, lid, labs)
        part = "eyes" if name in rg.SIDES else name
        soft = rg.region_mask(G, w, name, comps, labels) if part in comps.names else torch.zeros(gt.shape)
        rows = {name: torch.ones(len(w), dtype=torch.bool)}
        if name == "accessory" and kinds:
            rows.update({f"accessory:{k}": sel for k, sel in kinds.items()})
        for key, sel in rows.items():
            sweep = [iou(soft[sel] > t, gt[sel]) for t in grid]
            b = int(np.argmax(sweep))
            out[key] = {"iou": iou(soft[sel] > 0.5, gt[sel]), "best": sweep[b], "best_threshold": float(grid[b]),
                        "empty": int(((soft[sel] > 0.5).sum((1, 2, 3)) == 0).sum()),
                        "truth_empty": int((gt[sel].sum((1, 2, 3)) == 0).sum()), "samples": int(sel.sum()),
                        "clusters": len(comps.names.get(part, []))}
    return out


def print_part_masks(title, masks):
    print(f"\n{title}\n{'part':24s} {'IoU.5':>6s} {'best':>6s} {'@t':>5s} {'empty':>6s} {'truth0':>6s} {'n':>4s} {'k':>3s}")
    for name, r in masks.items():
        print(f"{name:24s} {r['iou']:6.3f} {r['best']:6.3f} {r['best_threshold']:5.2f} {r['empty']:6d} "
              f"{r['truth_empty']:6d} {r['samples']:4d} {r['clusters']:3d}")


@torch.no_grad()
def inverted_renders(G, comps, encoder, parser, lid, n, seed):
    """Part masks of the encoder's codes of held-out world renders against the renders' exact labels;
    the same masks against the parser's labels of the reconstructions, to tell inversion error
    (reconstruction off the render) from mask error."""
    from latentedit import world
    from latentedit.edit.inversion import encode_images
    from latentedit.metrics.image import psnr

    batch = world.sample(n, seed=seed, resolution=G.img_resolution)
    ws = encode_images(encoder, G, batch.image)
    column = {k: world.ATTRIBUTES.index(a) for k, a in
              (("frame_glasses", "eyeglasses"), ("sunglasses", "sunglasses"), ("mask", "mask"))}
    kinds = {k: batch.attributes[:, c] > 0.5 for k, c in column.items()}
    rec = synth(G, ws)
    return {"psnr": float(psnr(rec, batch.image).mean()),
            "vs_world_labels": part_masks(G, comps, ws, batch.labels, lid, kinds),
            "vs_parser_on_reconstruction": part_masks(G, comps, ws, rg._parse(parser, rec), lid, kinds)}


@torch.no_grad()
def edit_masks(G, parser, w, edits):
    out = {}
    for label, d, s in edits:
        we = d.apply(w, s, G=G)
        x0, x1 = synth(G, w), synth(G, we)
        changed = grow((rg._parse(parser, x0) != rg._parse(parser, x1))[:, None], 1)
        f, i = rg.edit_cues(G, w, we)
        soft = rg.soft_from_cues(f, i)
        binary, t = rg.threshold_mask(soft, (f, i))
        grid = np.round(np.arange(0.02, 1.0, 0.02), 2)
        sweep = [iou(soft > g, changed) for g in grid]
        k = int(np.argmax(sweep))
        out[label] = {"agreement": iou(binary, changed), "fixed_0.5": iou(soft > 0.5, changed),
                      "best": sweep[k], "best_threshold": float(grid[k]),
                      "area_agreement": float(binary.float().mean()), "area_changed": float(changed.float().mean()),
                      "mean_threshold": float(t.mean())}
    return out


@torch.no_grad()
def locality(G, comps, w, edits):
    out = {}
    x0 = synth(G, w)
    for label, d, region, s in edits:
        we = d.apply(w, s, G=G)
        glob = synth(G, we)
        t0 = time.perf_counter()
        loc = torch.cat([rg.region_edit(G, c, d, region, s, components=comps) for c in w.split(16)])
        dt = time.perf_counter() - t0
        reg = torch.maximum(rg.region_mask(G, w, region, comps), rg.region_mask(G, we, region, comps)) > 0.5
        far = ~grow(reg, 8)
        r = {"in_global": mse(glob, x0, reg), "in_local": mse(loc, x0, reg),
             "far_global": mse(glob, x0, far), "far_local": mse(loc, x0, far),
             "region_area": float(reg.float().mean()), "far_area": float(far.float().mean()),
             "ms_per_image": 1e3 * dt / len(w)}
        r["ratio"] = r["far_global"] / max(r["far_local"], 1e-12)
        out[label] = r
    return out


@torch.no_grad()
def transfer(G, comps, ev, w_t, w_s):
    clf, emb = ev["attributes"], ev["identity"]
    size = clf.cfg.image_size

    def heads(x):
        x = x.clamp(-1, 1)
        if x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="area" if x.shape[-1] > size else "bilinear")
        return {k: v.argmax(1) for k, v in clf(x).items()}

    def ident(x):
        return F.normalize(emb(x.clamp(-1, 1)), dim=1)

    xt, xs = synth(G, w_t), synth(G, w_s)
    ht, hs, et, es = heads(xt), heads(xs), ident(xt), ident(xs)
    out = {}
    for region, head in (("mouth", "smile"), ("hair", "hair_color")):
        y, _ = rg.transfer_component(G, w_t, w_s, region, components=comps)
        hy, ey = heads(y), ident(y)
        out[region] = {"identity_target": float((ey * et).sum(1).mean()),
                       "identity_source": float((ey * es).sum(1).mean()),
                       "identity_source_vs_target": float((es * et).sum(1).mean()),
                       "head": head, "agree_result": float((hy[head] == hs[head]).float().mean()),
                       "agree_target_before": float((ht[head] == hs[head]).float().mean()),
                       "pairs": len(w_t)}
    return out


def _seconds(f, *args):
    t0 = time.perf_counter()
    f(*args)
    return time.perf_counter() - t0

def layers(G, w, bundle):
    out = {}
    for name in ("smile", "beard"):
        L = AttributeLayers(G, w, {name: Direction.load(name, bundle=bundle)}, s_ref=1.0)
        out[name] = {f"{s:+g}": float(L.psnr_vs_regenerated({name: s}).mean()) for s in STRENGTHS}
        out[name]["alpha_zero_share"] = float((L.alpha[name] == 0).float().mean())
    L1 = AttributeLayers(G, w[:1], {n: Direction.load(n, bundle=bundle) for n in ("smile", "beard")})
    strengths = {"smile": 2.0, "beard": -1.0}
    for _ in range(10):
        L1.render(strengths)
    ts = sorted(_seconds(L1.render, strengths) for _ in range(200))
    rg_ts = sorted(_seconds(L1.regenerate, strengths) for _ in range(10))
    out["render_ms_n1"] = {"median": 1e3 * ts[100], "p95": 1e3 * ts[190], "regenerate_median": 1e3 * rg_ts[5]}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="checkpoints/default", help="bundle with G and the evaluators")
    ap.add_argument("--n", type=int, default=64, help="held-out samples (transfer uses min(n, 16) pairs)")
    ap.add_argument("--truncation", type=float, default=0.7)
    ap.add_argument("--render-seed", type=int, default=4_000_000, help="world seed of the renders to invert")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_all = time.perf_counter()
    G = load_networks(args.model).G.eval()
    ev = load_evaluators(args.model, ["attributes", "identity", "parser"])
    parser = ev["parser"]
    lid = {n: i for i, n in enumerate(parser.cfg.labels)}
    t0 = time.perf_counter()
    comps = rg.component_clusters(G, parser=parser)
    fit_s = time.perf_counter() - t0
    w = G.sample_w(args.n, seed=10000, truncation=args.truncation)
    res = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
                      f"torch {torch.__version__}", "n": args.n, "truncation": args.truncation,
           "components": {"fit_s": fit_s, "names": {k: len(v) for k, v in comps.names.items()},
                          "naming_iou": dict(comps.iou)}}
    print(f"components fit {fit_s:.1f}s, named: {res['components']['names']}", flush=True)

    x = synth(G, w)
    kinds = {k: accessory_present(ev["attributes"], x, k) for k in ACCESSORY_KINDS}
    res["masks"] = part_masks(G, comps, w, rg._parse(parser, x), lid, kinds)
    print_part_masks(f"1. cluster masks vs the parser's labels ({args.n} held-out samples)", res["masks"])

    smile, mask, blond = (Direction.load(n, bundle=args.model) for n in ("smile", "mask", "hair_color_blond"))
    res["edit_masks"] = edit_masks(G, parser, w, [("smile x3", smile, 3.0), ("mask x3", mask, 3.0)])
    print(f"\n2. edit mask vs parser's changed labels (dilated 1 px)\n{'edit':10s} {'agree':>6s} {'t=0.5':>6s} "
          f"{'best':>6s} {'@t':>5s} {'area':>6s} {'chg':>6s}")
    for k, r in res["edit_masks"].items():
        print(f"{k:10s} {r['agreement']:6.3f} {r['fixed_0.5']:6.3f} {r['best']:6.3f} {r['best_threshold']:5.2f} "
              f"{r['area_agreement']:6.3f} {r['area_changed']:6.3f}")

    res["locality"] = locality(G, comps, w, [("smile x2 mouth", smile, "mouth", 2.0),
                                             ("smile x3 mouth", smile, "mouth", 3.0),
                                             ("blond x2 hair", blond, "hair", 2.0)])
    print(f"\n3. locality (MSE vs unedited)\n{'edit':15s} {'in glob':>8s} {'in loc':>8s} {'far glob':>9s} "
          f"{'far loc':>9s} {'ratio':>7s}")
    for k, r in res["locality"].items():
        print(f"{k:15s} {r['in_global']:8.4f} {r['in_local']:8.4f} {r['far_global']:9.5f} {r['far_local']:9.6f} "
              f"{r['ratio']:7.1f}")

    m = min(args.n, 16)
    w_s = G.sample_w(m, seed=20000, truncation=args.truncation)
    res["transfer"] = transfer(G, comps, ev, w[:m], w_s)
    print(f"\n4. transfer ({m} pairs)\n{'part':6s} {'id tgt':>7s} {'id src':>7s} {'src~tgt':>7s} {'head':>10s} "
          f"{'agree':>6s} {'before':>6s}")
    for k, r in res["transfer"].items():
        print(f"{k:6s} {r['identity_target']:7.3f} {r['identity_source']:7.3f} {r['identity_source_vs_target']:7.3f} "
              f"{r['head']:>10s} {r['agree_result']:6.3f} {r['agree_target_before']:6.3f}")

    res["layers"] = layers(G, w, args.model)
    print(f"\n5. attribute layers: PSNR recomposited vs regenerated (dB, {args.n} samples)\n{'edit':6s} "
          + " ".join(f"{s:+6g}" for s in STRENGTHS) + "  alpha=0")
    for k in ("smile", "beard"):
        r = res["layers"][k]
        print(f"{k:6s} " + " ".join(f"{r[f'{s:+g}']:6.1f}" for s in STRENGTHS) + f"  {r['alpha_zero_share']:.0%}")
    t = res["layers"]["render_ms_n1"]
    print(f"render N=1 (2 layers): median {t['median']:.3f} ms, p95 {t['p95']:.3f} ms; "
          f"regenerate {t['regenerate_median']:.1f} ms")
    if has_encoder(args.model):
        res["inverted"] = inverted_renders(G, comps, load_encoder(args.model, G), parser, lid, args.n,
                                           args.render_seed)
        print_part_masks(f"6. cluster masks of {args.n} inverted held-out world renders (world seed {args.render_seed}; "
                         f"reconstruction PSNR {res['inverted']['psnr']:.2f} dB) vs the exact world labels",
                         res["inverted"]["vs_world_labels"])
        print_part_masks("   the same masks vs the parser's labels of the reconstructions",
                         res["inverted"]["vs_parser_on_reconstruction"])
    else:
        print(f"\n6. skipped: {args.model} has no encoder to invert world renders with")
    res["wall_s"] = time.perf_counter() - t_all
    print(f"\nwall {res['wall_s']:.0f}s")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
