"""Which generated faces does precision count against? `evaluate generator`'s precision is the share of
generated faces inside the world's manifold (the union of each render's ball out to its 3rd-nearest
render, in the attribute classifier's features; Kynkaenniemi et al. 2019). This draws the faces
farthest outside it beside faces well inside, to look at, and prints precision and recall per
truncation (the same samples `latentedit evaluate generator --truncation PSI` measures), and per class of
the classifier's hair style, hair colour, age, glasses and beard heads.

    python benchmarks/precision_outliers.py --model checkpoints/default --n 10000 --sheet docs/precision_outliers.png

A face's "reach" is min over renders j of d(face, render j) / radius j: <= 1 inside, and the larger
the farther out. The sheet's rows: the 16 largest reaches at the first truncation (top two rows), then
16 faces with reach at most 0.8; their reaches are printed and kept in --json.
"""
import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from latentedit.formats import load_generator  # noqa: E402
from latentedit.formats.evaluators import load_evaluators  # noqa: E402
from latentedit.formats.images import save_png, tile, to_uint8  # noqa: E402
from latentedit.metrics.fid import _knn_radii, precision_recall  # noqa: E402
from latentedit.metrics.generator import REAL_SEED, _generated, generated_features, render_features  # noqa: E402


# heads whose classes get their own precision: is one kind of face the one outside?
GROUPED = ("hair_style", "hair_color", "age", "glasses", "beard")


def by_class(f_real, f_other, labels, clf):
    """Precision and recall of f_other against f_real, and precision per class of GROUPED (printed)."""
    groups = {f"{head}={name}": labels[head] == c for head in GROUPED for c, name in enumerate(clf.cfg.heads[head])}
    precision, recall, per_class = precision_recall(f_real, f_other, groups=groups)
    share = {k: m.float().mean().item() for k, m in groups.items()}
    print(f"  precision {precision:.3f}  recall {recall:.3f}; by the classifier's class (precision, share of the "
          "faces): " + ", ".join(f"{k} {v:.2f} ({share[k]:.2f})" for k, v in per_class.items() if v is not None))
    return {"precision": precision, "recall": recall, "precision_by_class": per_class, "share_by_class": share}


def reach(real, fake, k=3, chunk=2048):
    """Per fake row: min_j d(fake, real_j) / (real_j's distance to its k-th nearest real row)."""
    radii = _knn_radii(real, k).clamp_min(1e-12)
    return torch.cat([(torch.cdist(fake[i:i + chunk], real) / radii[None]).min(1).values
                      for i in range(0, len(fake), chunk)])


def faces(G, indices, truncation, batch, n):
    """The generated faces of sample indices, drawn by the call evaluate_generator drew them with
    (`_generated`, its seeds in batches of `batch` up to n), so they are those samples to the bit."""
    drawn = {start: _generated(G, min(batch, n - start), start, truncation, G.img_resolution)
             for start in sorted({i // batch * batch for i in indices})}
    return torch.stack([drawn[i // batch * batch][i % batch] for i in indices])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="checkpoints/default")
    ap.add_argument("--evaluators", default=None, help="bundle with the attribute classifier (default: --model)")
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--truncations", default="1.0", help="comma-separated; the sheet is drawn at the first")
    ap.add_argument("--batch", type=int, default=100, help="evaluate generator's batch (seeds are drawn per batch)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--floor", action="store_true", help="also a second set of renders (seed + 1) against the first")
    ap.add_argument("--sheet", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    G = load_generator(args.model).eval()
    clf = load_evaluators(args.evaluators or args.model, ["attributes"])["attributes"].eval()
    f_real = render_features(clf, args.n, batch=args.batch)[0].float()
    report = {"model": Path(args.model).name, "n": args.n, "truncation": {}}
    if args.floor:  # a second set of renders against the first: what the measure gives the world itself
        f_other, labels = render_features(clf, args.n, seed=REAL_SEED + 1, batch=args.batch)[:2]
        print("renders against renders:", flush=True)
        report["floor"] = by_class(f_real, f_other, labels, clf)
    for i, psi in enumerate(float(t) for t in args.truncations.split(",")):
        f_gen, labels = generated_features(G, clf, args.n, truncation=psi, batch=args.batch)
        f_gen = f_gen.float()
        print(f"generated at truncation {psi}:", flush=True)
        report["truncation"][psi] = by_class(f_real, f_gen, labels, clf)
        if i == 0 and args.sheet:
            r = reach(f_real, f_gen)
            outside = r.argsort(descending=True)[:16].tolist()
            inside = torch.nonzero(r <= 0.8).flatten()[:16].tolist()
            report["sheet"] = {"outside_reach": [round(float(r[j]), 2) for j in outside],
                               "inside_reach": [round(float(r[j]), 2) for j in inside]}
            print("farthest outside, reach:", report["sheet"]["outside_reach"])
            save_png(args.sheet, tile(to_uint8(faces(G, outside + inside, psi, args.batch, args.n)), 8, scale=2, pad=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
