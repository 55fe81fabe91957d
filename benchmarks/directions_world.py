"""Directions measured: boundary training speed, the sparse-label curve, and (with a generator and
the evaluators) edit success and entanglement per world attribute, with and without conditioning.

    python benchmarks/directions_world.py --synthetic                       # no generator needed
    python benchmarks/directions_world.py --model checkpoints/default --evaluators runs/evaluators/bundle
    python benchmarks/directions_world.py --random-weights --evaluators runs/evaluators/bundle --n 2000

--synthetic: boundary training at 100k samples (ours vs sklearn SVC(kernel="linear")) on planted
512-d latents, and the sparse-label curve on a synthetic two-cluster manifold (ground truth known).
World mode: N sampled W codes scored by the attribute classifier -> one InterfaceGAN boundary per
attribute; on held-out codes, each boundary pushes samples across (negatives +s, positives -s):
success = share whose classifier label flips; entanglement = mean |change| of every other main
attribute's score; conditioned = the boundary made orthogonal to the two main attributes whose
boundaries are closest to it. Then the sparse-label curve with classifier labels, and SeFa /
GANSpace directions named by the classifier.
"""
import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from latentedit.edit.boundaries import score_latents, sample_latents, train_boundary  # noqa: E402
from latentedit.edit.sparse import sparse_boundary  # noqa: E402

MAIN = ["eyeglasses", "sunglasses", "mask", "hat", "beard", "smile", "age"]
LABELS = (10, 30, 100, 300, 1000)
SPARSE_METHODS = ("spreading", "self_training", "labels_only")


def planted(n, d=512, noise=1.0, seed=0):
    rng = np.random.RandomState(seed)
    normal = rng.randn(d)
    normal /= np.linalg.norm(normal)
    x = rng.randn(n, d) * rng.uniform(0.5, 2.0, d) + rng.randn(d) * 3
    return x.astype(np.float32), (x @ normal + noise * rng.randn(n))[:, None].astype(np.float32), normal


def two_clusters(n, d=512, seed=0):
    rng = np.random.RandomState(seed)
    y = rng.rand(n) < 0.5
    x = rng.randn(n, d) * 0.7
    x[:, 1:6] *= 4
    x[:, 0] += np.where(y, 2.5, -2.5)
    axis = np.eye(d)[0]
    return x, y.astype(float), axis


def timed(f, *a, **k):
    t0 = time.perf_counter()
    out = f(*a, **k)
    return out, time.perf_counter() - t0


def boundary_timing(n, kernel_max):
    x, s, normal = planted(n)
    rows = []
    for ratio in (0.02, 0.5):
        fast = train_boundary(x, s, ratio=ratio)
        row = {"samples": n, "ratio": ratio, "train_per_class": fast.n_train, "solver": fast.solver,
               "linear_s": round(fast.seconds, 3),
               "linear_cos_truth": float(fast.normal[0] @ normal), "val_acc": fast.val_accuracy}
        if 2 * fast.n_train <= kernel_max:
            ref = train_boundary(x, s, ratio=ratio, solver="kernel")
            row.update(kernel_s=round(ref.seconds, 3), cos_linear_kernel=float(fast.normal[0] @ ref.normal[0]))
        rows.append(row)
        print(json.dumps(row))
    for m in (5000, 10000):  # where SVC still finishes at ratio 0.5: its growth with N
        sub = train_boundary(x[:m], s[:m], ratio=0.5, solver="kernel")
        fast = train_boundary(x[:m], s[:m], ratio=0.5)
        row = {"samples": m, "ratio": 0.5, "train_per_class": sub.n_train, "solver": fast.solver,
               "linear_s": round(fast.seconds, 3),
               "kernel_s": round(sub.seconds, 3), "cos_linear_kernel": float(fast.normal[0] @ sub.normal[0])}
        rows.append(row)
        print(json.dumps(row))
    return rows


def sparse_curve(x, y, x_test, y_test, truth=None, trials=5, seed=0):
    """Accuracy / cosine (to the all-labels boundary, and to `truth`) vs number of labels."""
    full = sparse_boundary(x, y, x[:1], method="labels_only")
    rows = []
    for n_lab in [k for k in LABELS if k < len(x)]:
        rng = np.random.RandomState(seed + n_lab)
        acc = {m: [] for m in SPARSE_METHODS}
        cos = {m: [] for m in SPARSE_METHODS}
        cos_t = {m: [] for m in SPARSE_METHODS}
        for _ in range(trials):
            idx = rng.choice(len(x), n_lab, replace=False)
            if y[idx].min() == y[idx].max():
                continue
            rest = np.setdiff1d(np.arange(len(x)), idx)
            for m in SPARSE_METHODS:
                b = sparse_boundary(x[idx], y[idx], x[rest], method=m)
                acc[m].append(b.accuracy(x_test, y_test))
                cos[m].append(float(b.normal[0] @ full.normal[0]))
                if truth is not None:
                    cos_t[m].append(float(b.normal[0] @ truth))
        if not acc["labels_only"]:
            continue  # every draw had one class only
        row = {"labels": n_lab, "trials": len(acc["labels_only"])}
        for m in SPARSE_METHODS:
            row[m] = {"accuracy": float(np.mean(acc[m])), "cos_full": float(np.mean(cos[m]))}
            if truth is not None:
                row[m]["cos_truth"] = float(np.mean(cos_t[m]))
        rows.append(row)
        print(json.dumps(row))
    return {"full_accuracy": full.accuracy(x_test, y_test),
            "full_cos_truth": float(full.normal[0] @ truth) if truth is not None else None, "rows": rows}


def synthetic(args):
    report = {"timing": boundary_timing(args.timing_n, args.kernel_max)}
    x, y, axis = two_clusters(args.pool)
    xt, yt, _ = two_clusters(5000, seed=99)
    report["sparse"] = sparse_curve(x, y, xt, yt, truth=axis)
    return report


@torch.no_grad()
def edit_effects(G, clf, d, w, scores0, attr, strength):
    """Flip rate of `attr` and mean |score change| of every other main attribute."""
    label = scores0[attr] >= 0.5
    sign = torch.from_numpy(np.where(label, -1.0, 1.0)).float()[:, None]
    moved = score_latents(G, clf, (torch.from_numpy(w) + strength * sign * d.vector).numpy())
    flipped = (moved[attr] >= 0.5) != label
    return {"success": float(flipped.mean()),
            "entanglement": {k: float(np.abs(moved[k] - scores0[k]).mean()) for k in MAIN if k != attr}}


def world(args):
    from latentedit.formats import load_generator
    from latentedit.formats.directions import generator_hash
    from latentedit.formats.evaluators import load_evaluators
    from latentedit.models.stylegan2 import Generator, GeneratorConfig
    from latentedit.edit.discover import ganspace, name_directions, sefa

    if args.random_weights:
        torch.manual_seed(0)
        G = Generator(GeneratorConfig(resolution=64, channel_base=2048, channel_max=128)).eval()
    else:
        G = load_generator(args.model).eval()
    clf = load_evaluators(args.evaluators, ["attributes"])["attributes"].eval()
    gh = generator_hash(G)
    report = {"generator": "random weights (64 px, channel_base 2048)" if args.random_weights else str(args.model),
              "samples": args.n}
    w, _ = timed(sample_latents, G, args.n, "w", 0)
    table, t = timed(score_latents, G, clf, w)
    report["scoring_img_per_s"] = args.n / t
    boundaries, train_s = {}, {}
    for name in sorted(table):
        b = train_boundary(w, table[name][:, None], ratio=args.ratio)
        boundaries[name] = b.direction(space="w", generator=gh, name=name)
        train_s[name] = {"seconds": round(b.seconds, 3), "val_accuracy": b.val_accuracy}
        if args.boundaries_out:
            boundaries[name].save(Path(args.boundaries_out) / f"{name}.npy")
    report["boundaries"] = train_s
    w_eval = sample_latents(G, args.eval_n, "w", 1)
    s_eval = score_latents(G, clf, w_eval)
    edits = {}
    for attr in MAIN:
        d = boundaries[attr]
        conds = sorted((k for k in MAIN if k != attr), key=lambda k: -abs(d.dot(boundaries[k])))[:2]
        dc = d.orthogonal_to(*[boundaries[k] for k in conds])
        edits[attr] = {"conditioned_on": conds}
        for s in args.strengths:
            edits[attr][f"s={s:g}"] = {"plain": edit_effects(G, clf, d, w_eval, s_eval, attr, s),
                                       "conditioned": edit_effects(G, clf, dc, w_eval, s_eval, attr, s)}
        print(attr, json.dumps(edits[attr]))
    report["edits"] = edits
    report["sparse"] = {}
    for attr in args.sparse_attributes:
        y = (table[attr] >= 0.5).astype(float)
        if y.min() == y.max():
            report["sparse"][attr] = "one class only in the samples"
            continue
        report["sparse"][attr] = sparse_curve(w.astype(np.float64), y, w_eval, (s_eval[attr] >= 0.5).astype(float))
    for method, find in (("sefa", lambda: sefa(G, 10)), ("ganspace", lambda: ganspace(G, 10, n=min(args.n, 20000)))):
        (dirs, t) = timed(find)
        named, tn = timed(name_directions, G, clf, dirs)
        report[method] = {"seconds": round(t, 3), "naming_seconds": round(tn, 1),
                          "names": [d.name for d in named]}
        print(method, report[method])
    return report


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--synthetic", action="store_true", help="Timing + sparse-label curve without a generator.")
    p.add_argument("--model", default="checkpoints/default")
    p.add_argument("--random-weights", action="store_true", help="A random 64 px generator (smoke run).")
    p.add_argument("--evaluators", default="runs/evaluators/bundle")
    p.add_argument("--n", type=int, default=20000, help="World: sampled codes for the boundaries.")
    p.add_argument("--ratio", type=float, default=0.02)
    p.add_argument("--eval-n", type=int, default=500)
    p.add_argument("--strengths", type=lambda s: [float(v) for v in s.split(",")], default=[1.0, 2.0, 3.0])
    p.add_argument("--sparse-attributes", type=lambda s: s.split(","), default=["smile", "eyeglasses"])
    p.add_argument("--boundaries-out", default=None, help="World: write every boundary here (bundle boundaries/).")
    p.add_argument("--timing-n", type=int, default=100000)
    p.add_argument("--kernel-max", type=int, default=20000, help="Largest training set given to SVC.")
    p.add_argument("--pool", type=int, default=20000, help="Synthetic: labelled-or-not pool for the curve.")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="JSON report.")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    report = synthetic(args) if args.synthetic else world(args)
    report["machine"] = {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
                         "threads": args.threads}
    text = json.dumps(report, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
