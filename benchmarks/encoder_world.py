"""Inversion measured on held-out world renders: the bundled encoder, projection from w_avg and
hybrid (projection from the encoder's code), side by side in one run.

    python benchmarks/encoder_world.py --model checkpoints/default --n 200 --steps 300 --sheet docs/encoder_samples.png

The renders are samples 0..n-1 of world seed --seed (the encoder trains on seed 0's stream; the
evaluators and the generator never saw these). Per mode (all in W+, constant noise):

- reconstruction: PSNR / SSIM against the render, identity similarity (cosine of the identity
  embedder), attribute agreement (share of the classifier's heads whose top class is the same on
  render and reconstruction, and per head), seconds per image;
- hybrid at 1/16, 1/8 and 1/4 of the projection's steps (each its own full schedule, with
  `invert`'s hybrid settings), to see how few steps reach the projection's final PSNR (bar: <= 1/4);
- editability (e4e's latent editing consistency, encoder mode): w = E(x); w' = w + s n; re-invert
  E(G(w')); undo the edit: w'' = E(G(w')) - s n. LEC = mean ||w'' - w||_2 over the flattened W+
  code, reported next to the edit's own size ||s n|| (= |s| sqrt(num_ws) for a unit W direction)
  and next to its floor, s = 0 (re-encoding the reconstruction), and the PSNR of G(w'') against G(w);
- accessory synthesis on inverted renders (the encoder's codes -> `DiscreteSynthesizer`) vs on
  sampled W codes (truncation 0.7, as in synthesize_world.py): classifier success and parser
  agreement (bar: >= 0.9x the sampled success).
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from generator_speed import machine_description  # noqa: E402
from synthesize_world import measure, summarise, world_evaluators  # noqa: E402

from latentedit import world  # noqa: E402
from latentedit.edit.directions import Direction  # noqa: E402
from latentedit.edit.discrete import ACCESSORY_KINDS, DiscreteSynthesizer  # noqa: E402
from latentedit.edit.imaging import resize  # noqa: E402
from latentedit.edit.inversion import encode_images, invert, load_encoder, reconstruct  # noqa: E402
from latentedit.formats import load_networks  # noqa: E402
from latentedit.formats.images import save_png, tile, to_uint8  # noqa: E402
from latentedit.metrics.image import identity_similarity, psnr, ssim  # noqa: E402


@torch.no_grad()
def reconstruction_metrics(x, y, ev):
    """Per-sample PSNR, SSIM, identity cosine and attribute agreement of reconstructions y of x."""
    clf, idn = ev["attributes"], ev["identity"]
    px, py = clf(resize(x, clf.cfg.image_size)), clf(resize(y.clamp(-1, 1), clf.cfg.image_size))
    same = {h: (px[h].argmax(1) == py[h].argmax(1)).float() for h in clf.cfg.heads}
    return {"psnr": psnr(y, x), "ssim": ssim(y.clamp(-1, 1), x), "identity": identity_similarity(x, y, idn),
            "attribute_agreement": torch.stack(list(same.values()), 1).mean(1),
            **{f"agree_{h}": v for h, v in same.items()}}


def run_inversion(G, x, mode, steps, encoder, ev, batch, seed):
    """`latentedit.invert` in mode project / hybrid (the API path, with its per-mode settings), in
    batches; hybrid's time includes its encoder pass."""
    codes, t0 = [], time.perf_counter()
    for i in range(0, len(x), batch):
        codes.append(invert(x[i:i + batch], mode=mode, G=G, evaluators=ev, encoder=encoder, space="w+",
                            steps=steps, seed=seed))
        print(f"    {mode} {steps} steps: {min(i + batch, len(x))}/{len(x)}", flush=True)
    return torch.cat(codes), time.perf_counter() - t0


@torch.no_grad()
def editability(encoder, G, codes, direction, strength):
    """LEC: ||E(G(w + s n)) - s n - w|| per sample, the edit's size, and PSNR(G(w''), G(w))."""
    edit = direction.as_wplus(G.num_ws).to(codes) * strength                 # [L, D]
    edited = G.synthesis(codes + edit, noise_mode="const")
    undone = encode_images(encoder, G, edited) - edit
    lec = (undone - codes).flatten(1).norm(dim=1)
    back = psnr(G.synthesis(undone, noise_mode="const"), G.synthesis(codes, noise_mode="const"))
    return {"lec": float(lec.mean()), "edit_size": float(edit.norm()),
            "relative_lec": float(lec.mean() / edit.norm()) if strength else None,
            "psnr_undone_vs_inverted": float(back.mean())}


def compare_optimisation(args, G, x, encoder, ev, res, report):
    """The projection and hybrid rows beside the encoder's, and how the encoder's speed and hybrid's
    steps compare with projection."""
    proj_codes, t = run_inversion(G, x, "project", args.steps, None, ev, args.batch, 0)
    report("project", proj_codes, t, args.steps)
    for f in [int(v) for v in args.fractions.split(",")]:
        steps = max(args.steps // f, 1)
        codes, t = run_inversion(G, x, "hybrid", steps, encoder, ev, args.batch, 0)
        report(f"hybrid_1/{f}", codes, t, steps)
    modes = res["modes"]
    res["encoder_speedup_vs_project"] = modes["project"]["s_per_image"] / modes["encoder"]["s_per_image"]
    reached = [k for k in modes if k.startswith("hybrid") and modes[k]["psnr"] >= modes["project"]["psnr"]]
    res["hybrid_fewest_steps_reaching_project_psnr"] = min((modes[k]["steps"] for k in reached), default=None)
    print(f"encoder {res['encoder_speedup_vs_project']:.0f}x faster than projection; hybrid reaches the projection's "
          f"PSNR at {res['hybrid_fewest_steps_reaching_project_psnr']} of {args.steps} steps", flush=True)


def mean_dict(d):
    return {k: float(v.float().mean()) for k, v in d.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="checkpoints/default", help="bundle with G, D, evaluators, encoder, offsets")
    ap.add_argument("--n", type=int, default=200, help="held-out world renders")
    ap.add_argument("--seed", type=int, default=4_000_000, help="world seed of the held-out renders")
    ap.add_argument("--steps", type=int, default=300, help="projection steps (from w_avg); 0: the encoder alone")
    ap.add_argument("--fractions", default="16,8,4", help="hybrid runs at steps / each of these")
    ap.add_argument("--directions", default="smile,age,hair_color_blond", help="edits for the LEC protocol")
    ap.add_argument("--strength", type=float, default=3.0)
    ap.add_argument("--kinds", default=",".join(ACCESSORY_KINDS))
    ap.add_argument("--batch", type=int, default=40, help="a multiple of 4 (discriminator groups)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--sheet", default=None, help="PNG: 8 renders, their reconstructions per mode, then the "
                                                  "accessories synthesized on the inverted renders")
    ap.add_argument("--arcface", default=None, help="model_ir_se50.pth: ArcFace for the identity column")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    nets = load_networks(args.model)
    G, D = nets.G.eval(), nets.D.eval()
    ev = world_evaluators(args.model, args.arcface)
    encoder = load_encoder(args.model, G)
    x = world.sample(args.n, seed=args.seed, resolution=G.img_resolution).image
    res = {"machine": machine_description(), "n": args.n, "seed": args.seed, "steps": args.steps, "modes": {}}

    codes_of = {}

    def report(name, codes, seconds, steps):
        codes_of[name] = codes[:8]
        m = mean_dict(reconstruction_metrics(x, reconstruct(G, codes), ev))
        res["modes"][name] = {**m, "steps": steps, "s_per_image": seconds / args.n}
        print(f"{name}: PSNR {m['psnr']:.2f} dB  SSIM {m['ssim']:.4f}  identity {m['identity']:.3f}  attributes "
              f"{m['attribute_agreement']:.3f}  {seconds / args.n * 1e3:.2f} ms/image", flush=True)

    encode_images(encoder, G, x[:8])  # warm-up
    t0 = time.perf_counter()
    enc_codes = encode_images(encoder, G, x, batch_size=args.batch)
    report("encoder", enc_codes, time.perf_counter() - t0, 0)
    if args.steps:
        compare_optimisation(args, G, x, encoder, ev, res, report)

    res["editability"] = {}
    for name in args.directions.split(","):
        d = Direction.load(name, bundle=args.model)
        if not res["editability"]:  # s = 0: re-encoding the reconstruction alone, the floor of the LEC
            res["editability"]["no edit"] = e = editability(encoder, G, enc_codes, d, 0.0)
            print(f"LEC without an edit (E(G(E(x))) vs E(x)): {e['lec']:.3f}; PSNR "
                  f"{e['psnr_undone_vs_inverted']:.2f} dB", flush=True)
        res["editability"][name] = e = editability(encoder, G, enc_codes, d, args.strength)
        print(f"LEC {name} s={args.strength}: {e['lec']:.3f} (edit size {e['edit_size']:.2f}, relative "
              f"{e['relative_lec']:.3f}); undone vs inverted PSNR {e['psnr_undone_vs_inverted']:.2f} dB", flush=True)

    sampled = G.sample_w(args.n, seed=5_000_000, truncation=0.7)
    res["synthesize"], sheet = {}, [x[:8]] + [reconstruct(G, codes_of[k]) for k in codes_of]
    for kind in args.kinds.split(","):
        synth = DiscreteSynthesizer.load(kind, bundle=args.model, G=G)
        out = {}
        for label, codes in (("inverted", enc_codes), ("sampled", sampled)):
            parts = []
            for i in range(0, len(codes), args.batch):
                r = synth(codes[i:i + args.batch], batch_size=args.batch)
                parts.append(measure(r.origin, r.image, kind, ev, D))
                if label == "inverted" and i == 0:
                    sheet.append(r.image[:8])
            out[label] = summarise(parts)
        out["ratio"] = out["inverted"]["success"] / max(out["sampled"]["success"], 1e-9)
        res["synthesize"][kind] = out
        print(f"synthesize {kind}: success inverted {out['inverted']['success']:.3f} vs sampled "
              f"{out['sampled']['success']:.3f} (ratio {out['ratio']:.3f}); parser sees it "
              f"{out['inverted']['seen_by_parser']:.3f} vs {out['sampled']['seen_by_parser']:.3f}; identity "
              f"{out['inverted']['identity']:.3f} vs {out['sampled']['identity']:.3f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    if args.sheet:
        save_png(args.sheet, tile(to_uint8(torch.cat(sheet).clamp(-1, 1)), 8, scale=2, pad=2))
        print(f"sample sheet ({', '.join(['renders', *codes_of, *res['synthesize']])} by rows): {args.sheet}")


if __name__ == "__main__":
    main()
