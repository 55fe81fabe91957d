"""Which of the generator's layers draw an accessory: style mixing from faces that wear it.

    python benchmarks/accessory_layers.py --model checkpoints/default --kinds mask --n 64

Donors are the generator's own faces (truncation 1.0) whose top class is the kind by the bundle's
classifier (for masks: without sunglasses, which the mask directions bring along);
origins are N held-out codes (truncation 0.7, the seeds synthesize_world.py edits). For each range
of W+ layers, the origin's code takes the donor's code in those layers, and the mixed face is
judged as an edit of the origin by synthesize_world.py's judges (success, seen, footprint, frames /
edge judge, all judges, identity). A range that carries the accessory at high identity is where an
edit can reach it without replacing the face; when only ranges that also carry the identity carry
the accessory, an offset network kept near the face cannot draw it (2026-12-04: masks). The
coarse layers also carry the head's pose, while the parser's judges (seen, footprint) look where
the accessory sits at the origin's view: for those ranges "all judges" reads low by the pose
change, success and identity do not. With
--mean-difference, the linear alternative in the same ranges: the mean W of the wearing donors minus
that of as many bare faces (no accessory), times each given scale.
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthesize_world import measure, summarise, world_evaluators  # noqa: E402

from latentedit.edit.discrete import ACCESSORY_KINDS, accessory_present  # noqa: E402
from latentedit.formats import load_networks  # noqa: E402

COLUMNS = ("success", "seen_by_parser", "fits", "frames", "crisp", "eyes_visible", "all_judges", "identity")


@torch.no_grad()
def donors(G, clf, kind, n, seed, batch=100, most=20_000):
    """(wearing, bare): W codes [n, w_dim] of the generator's faces whose top class is `kind` (masks:
    without sunglasses, which the mask directions bring along) and of faces wearing no accessory,
    from the codes of seeds seed, seed + 1, ... (at most `most` of them)."""
    wearing, bare, drawn = [], [], 0
    while min(sum(len(f) for f in found) for found in (wearing, bare)) < n:
        if drawn >= most:
            raise RuntimeError(f"fewer than {n} {kind} or bare faces in {most} samples")
        w = G.sample_w(batch, seed=seed + drawn, truncation=1.0)  # seeds seed + drawn ... + batch - 1
        drawn += batch
        worn = {k: accessory_present(clf, G.synthesize(w), k) for k in ACCESSORY_KINDS}
        keep = worn[kind] & ~worn["sunglasses"] if kind == "mask" else worn[kind]  # glasses: one head's classes
        wearing.append(w[keep])
        bare.append(w[~torch.stack(list(worn.values())).any(0)])
    return torch.cat(wearing)[:n], torch.cat(bare)[:n]


def layer_ranges(num_ws):
    """Coarse to fine, pairs and wider spans of W+ layers as (first, last + 1)."""
    pairs = [(i, min(i + 2, num_ws)) for i in range(0, num_ws, 2)]
    spans = [(0, 4), (2, 6), (4, 8), (4, num_ws), (0, num_ws)]
    return pairs + [s for s in spans if s not in pairs]


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="checkpoints/default")
    ap.add_argument("--kinds", default=",".join(ACCESSORY_KINDS))
    ap.add_argument("--n", type=int, default=64, help="origins (a multiple of 4: discriminator groups)")
    ap.add_argument("--seed", type=int, default=5_000_000, help="first seed of the origins (held out)")
    ap.add_argument("--donor-seed", type=int, default=91_000)
    ap.add_argument("--mean-difference", default="", type=lambda v: [float(x) for x in v.split(",") if x],
                    help="also add these multiples of the mean W difference, wearing minus bare, in each range (e.g. 1,2)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    nets = load_networks(args.model)
    G, D = nets.G.eval(), nets.D.eval()
    ev = world_evaluators(args.model)
    origins = G.broadcast_w(G.sample_w(args.n, seed=args.seed, truncation=0.7))
    x = G.synthesis(origins, noise_mode="const")
    for kind in args.kinds.split(","):
        wearing, bare = donors(G, ev["attributes"], kind, args.n, args.donor_seed)
        donor = G.broadcast_w(wearing)
        own = G.synthesis(donor, noise_mode="const")
        judged = summarise([measure(own, own, kind, ev, D)])  # the donors' own accessories, at their own views
        print(f"{kind}: {args.n} donors, as drawn: " + "  ".join(f"{k} {judged[k]:.2f}" for k in COLUMNS[:-1] if k in judged),
              flush=True)
        for lo, hi in layer_ranges(G.num_ws):
            edits = {"donor layers": origins.clone()}
            edits["donor layers"][:, lo:hi] = donor[:, lo:hi]
            for scale in args.mean_difference:  # a linear direction: wearing minus bare, mean W
                edits[f"mean difference x{scale:g} in layers"] = origins.clone()
                edits[f"mean difference x{scale:g} in layers"][:, lo:hi] += scale * (wearing.mean(0) - bare.mean(0))
            for name, codes in edits.items():
                judged = summarise([measure(x, G.synthesis(codes, noise_mode="const"), kind, ev, D)])
                print(f"  {name} {lo}-{hi - 1}: " + "  ".join(f"{k} {judged[k]:.2f}" for k in COLUMNS if k in judged),
                      flush=True)


if __name__ == "__main__":
    main()
