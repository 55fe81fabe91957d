"""Who wears each accessory: the other attributes of a generator's faces of each kind against the
world's, and the per-kind FID at the world's mix of them.

    python benchmarks/kind_mix.py --models checkpoints/default checkpoints/training/gan_v2 --n 10000 \
        --json mix.json --plot docs/kind_mix.png

The per-kind FID (`latentedit evaluate generator`) compares the generated faces the classifier
gives kind K with world renders wearing K. The world draws accessories independently of hair,
age and beard; a generator can learn correlations the world does not have (sunglasses on long
hair), and in the classifier's feature space, which encodes those attributes, the per-kind FID
counts them beside how the faces are drawn. This separates the two. Per model and kind: the
classifier's class shares of every other head on the generated faces of the kind and on the world
renders wearing it (total variation distance, TV, per head; and per head on all faces), and the
per-kind FID with the generated faces importance-weighted to the world's mix over --mix-heads
(each face's weight: the world's share / the generated share of its cell of labels; by default
hair style, age, beard and the other accessory), its ratio taken to the overall FID with every
generated face weighted the same way (the mix heads and the accessories), at the same effective
sample count (FID's small-sample bias), averaged over 5 subsets. Where the weights cannot be
trusted (under 100 effective samples, or over 5% of the world's faces in cells the generator never
drew) the world-mix figures are left out. The same samples as the evaluation: codes 0 .. n-1 at
truncation 1.0, the reference renders of `latentedit.metrics.generator`; the per-kind FID as
drawn and its ratio are `latentedit evaluate generator`'s `kind_fid` and `kind_fid_ratio_matched`.
"""
import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from latentedit.errors import LatentEditError  # noqa: E402
from latentedit.formats import load_networks  # noqa: E402
from latentedit.formats.atomic import atomic_path, write_text  # noqa: E402
from latentedit.formats.evaluators import load_evaluators  # noqa: E402
from latentedit.metrics.fid import fid  # noqa: E402
from latentedit.metrics.generator import (ACCESSORIES, RATES, fid_at_counts, generated_features,  # noqa: E402
                                          render_features)

# Below / above these the weights cannot be trusted and the world-mix figures are left out
MIN_EFFECTIVE_N, MAX_UNREACHED = 100, 0.05


def cell_of(labels, heads, sizes):
    """One integer [N] per sample for its labels on `heads` (class counts `sizes`)."""
    key = torch.zeros_like(labels[heads[0]])
    for head in heads:
        key = key * sizes[head] + labels[head]
    return key


def mix_weights(drawn, target):
    """Importance weights [N] for cells `drawn` (ints [N]) that give each cell its share in `target`
    (ints [M]): target share / drawn share (0 in cells the target lacks); also the target's share
    in cells absent from `drawn` (the mix left unreached: no weight can give it them)."""
    w = torch.zeros(len(drawn), dtype=torch.float64)
    for cell in torch.unique(drawn):
        here = drawn == cell
        w[here] = (target == cell).double().mean() / here.double().mean()
    return w, float((~torch.isin(target, drawn)).double().mean())


def effective_n(w):
    """Kish's effective sample size of importance weights w: (sum w)^2 / sum w^2."""
    return float(w.sum() ** 2 / (w ** 2).sum())


def shares(labels, n_classes):
    return torch.bincount(labels, minlength=n_classes).double() / max(len(labels), 1)


def total_variation(a, b, n_classes):
    return 0.5 * float((shares(a, n_classes) - shares(b, n_classes)).abs().sum())


def _overall_at_world_mix(f_real, f_gen, w_all, n_real, n_eff, repeats, seed=0):
    """The overall FID with all generated faces weighted to the world's joint mix (w_all), on random
    subsets whose effective n is about n_eff against n_real renders, averaged over `repeats`: the
    like-for-like denominator of a kind's FID at the world's mix (both sides' mix corrected)."""
    if not w_all.sum() > 0:
        return None
    g = torch.Generator().manual_seed(seed)
    m = min(len(f_gen), max(2, round(n_eff * len(f_gen) / effective_n(w_all))))
    values = []
    for _ in range(repeats):
        pick = torch.randperm(len(f_gen), generator=g)[:m]
        if int((w_all[pick] > 0).sum()) < 2:
            continue
        real = torch.randperm(len(f_real), generator=g)[:n_real]
        values.append(fid(f_real[real], f_gen[pick], weights_b=w_all[pick]))
    return sum(values) / len(values) if values else None


def _ratio(value, reference):
    return None if value is None or not reference else value / reference


def kind_mix(gen, world, truth, names, mix_heads, repeats=5):
    """Per accessory kind: counts, the class shares and total variation of every other head, and
    the per-kind FID as drawn (its ratio to the overall FID at matching counts, as
    `kind_fid_ratio_matched`) and at the world's mix over mix_heads (its ratio to the overall FID
    with every generated face weighted to the world's mix over mix_heads and the accessory heads,
    at the same effective n; None where the weights cannot be trusted: fewer than MIN_EFFECTIVE_N
    effective samples, or more than MAX_UNREACHED of the world's faces in cells never drawn)."""
    (f_gen, l_gen), (f_real, l_real) = gen, world
    sizes = {h: len(c) for h, c in names.items()}
    overall_heads = list(dict.fromkeys(mix_heads + [RATES[k][0] for k in ACCESSORIES]))
    w_all, _ = mix_weights(cell_of(l_gen, overall_heads, sizes), cell_of(l_real, overall_heads, sizes))
    cells_gen, cells_real = cell_of(l_gen, mix_heads, sizes), cell_of(l_real, mix_heads, sizes)
    out = {"all_faces_tv": {h: total_variation(l_gen[h], l_real[h], len(c)) for h, c in names.items()},
           "kinds": {}}
    for kind in ACCESSORIES:
        own_head, c = RATES[kind]
        kg, kr = l_gen[own_head] == c, truth[kind]
        ng, nr = int(kg.sum()), int(kr.sum())
        r = out["kinds"][kind] = {"counts": {"generated": ng, "renders": nr}}
        if ng < 2 or nr < 2:
            continue
        r["heads"] = {head: {"generated": dict(zip(classes, shares(l_gen[head][kg], len(classes)).tolist())),
                             "world": dict(zip(classes, shares(l_real[head][kr], len(classes)).tolist())),
                             "tv": total_variation(l_gen[head][kg], l_real[head][kr], len(classes))}
                      for head, classes in names.items() if head != own_head}
        w, unreached = mix_weights(cells_gen[kg], cells_real[kr])
        as_drawn = fid(f_real[kr], f_gen[kg])
        r.update(kind_fid=as_drawn, ratio_matched=_ratio(as_drawn, fid_at_counts(f_real, nr, f_gen, ng)),
                 world_share_unreached=unreached, generated_share_dropped=float((w == 0).double().mean()),
                 max_weight=float(w.max()), effective_n=effective_n(w) if w.sum() > 0 else 0.0,
                 kind_fid_world_mix=None, ratio_world_mix=None)
        if r["effective_n"] < MIN_EFFECTIVE_N or unreached > MAX_UNREACHED:
            continue
        r["kind_fid_world_mix"] = fid(f_real[kr], f_gen[kg], weights_b=w)
        r["ratio_world_mix"] = _ratio(r["kind_fid_world_mix"], _overall_at_world_mix(
            f_real, f_gen, w_all, nr, r["effective_n"], repeats))
    return out


def _format_ratio(ratio):
    return "-" if ratio is None else f"{ratio:.2f}x"


def print_report(name, report):
    print(f"== {name} (TV on all faces: " + ", ".join(f"{h} {v:.2f}" for h, v in report["all_faces_tv"].items()) + ")")
    for kind, r in report["kinds"].items():
        if "kind_fid" not in r:
            print(f"  {kind}: too few faces ({r['counts']})")
            continue
        worst = sorted(r["heads"].items(), key=lambda kv: -kv[1]["tv"])[:3]
        at_mix = ("- (weights not trusted)" if r["kind_fid_world_mix"] is None else
                  f"{r['kind_fid_world_mix']:.2f} ({_format_ratio(r['ratio_world_mix'])})")
        print(f"  {kind:13s} n {r['counts']['generated']} / {r['counts']['renders']}: FID {r['kind_fid']:.2f} "
              f"({_format_ratio(r['ratio_matched'])}); at the world's mix {at_mix}; effective n {r['effective_n']:.0f}, "
              f"max weight {r['max_weight']:.1f}, world unreached {r['world_share_unreached']:.3f}, generated "
              f"dropped {r['generated_share_dropped']:.3f}; TV within kind: "
              + ", ".join(f"{h} {v['tv']:.2f}" for h, v in worst))


def _label(model, report):
    kimg = report.get("kimg")
    return f"{kimg:.0f} kimg" if isinstance(kimg, (int, float)) else Path(model).name


def plot(reports, heads, path):
    """Bars per kind (columns) and head (rows): each class's share among the world renders wearing the
    kind and among each model's faces of the kind, the TV in the titles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(heads), len(ACCESSORIES), figsize=(4.2 * len(ACCESSORIES), 2.6 * len(heads)),
                             squeeze=False)
    width = 0.8 / (len(reports) + 1)
    for col, kind in enumerate(ACCESSORIES):
        for row, head in enumerate(heads):
            ax = axes[row, col]
            measured = [(m, r["kinds"][kind]["heads"][head]) for m, r in reports.items()
                        if head in r["kinds"][kind].get("heads", {})]
            if not measured:
                ax.set_axis_off()
                continue
            classes = list(measured[0][1]["world"])
            xs = range(len(classes))
            ax.bar([x - 0.4 + width / 2 for x in xs], [measured[0][1]["world"][c] for c in classes], width,
                   color="0.6", label="world renders")
            for i, (model, h) in enumerate(measured):
                ax.bar([x - 0.4 + width * (i + 1.5) for x in xs], [h["generated"][c] for c in classes], width,
                       color=f"C{i}", label=f"{_label(model, reports[model])} (TV {h['tv']:.2f})")
            ax.set_xticks(list(xs), classes, fontsize=7, rotation=30 if len(classes) > 3 else 0)
            ax.set_title(f"{head} of faces wearing {kind.replace('_', ' ')}", fontsize=9)
            ax.legend(fontsize=6)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    print(f"wrote {path}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", help="bundle folders with G")
    ap.add_argument("--replot", default=None, help="draw --plot from this --json report instead of measuring")
    ap.add_argument("--plot", default=None, help="write the class shares as bar charts here (needs matplotlib)")
    ap.add_argument("--evaluators", default="checkpoints/default", help="bundle with the attribute classifier")
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--mix-heads", default="hair_style,age,beard,glasses,mask",
                    help="classifier heads whose joint mix the weighted per-kind FID matches to the world's "
                         "(a kind's own head is constant within it)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None, help="write the reports here")
    args = ap.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        print(f"error: --threads must be >= 1, got {args.threads}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    for out in (args.json, args.plot):  # fail before measuring, not after
        try:
            if out:
                Path(out).parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            print(f"error: {out}: cannot write there ({e})", file=sys.stderr)
            return 2
    if args.replot:
        if not args.plot:
            print("error: --replot draws --plot: give both", file=sys.stderr)
            return 2
        try:
            saved = json.loads(Path(args.replot).read_text())
            reports, mix_heads = saved["reports"], saved["mix_heads"]
            for report in reports.values():
                report["kinds"]  # a report of this script's layout
        except (OSError, ValueError, KeyError, TypeError) as e:
            print(f"error: {args.replot}: not a kind_mix report ({e})", file=sys.stderr)
            return 2
        plot(reports, mix_heads, args.plot)
        return 0
    if not args.models:
        print("error: give --models (or --replot with --plot)", file=sys.stderr)
        return 2
    try:
        clf = load_evaluators(args.evaluators, ["attributes"])["attributes"]
        names, mix_heads = clf.cfg.heads, args.mix_heads.split(",")
        unknown = [h for h in mix_heads if h not in names]
        if unknown:
            raise LatentEditError(f"--mix-heads: unknown head {', '.join(unknown)} (heads: {', '.join(names)})")
        if args.n < 10:
            raise LatentEditError(f"--n must be >= 10, got {args.n}")
        networks = {m: load_networks(m) for m in args.models}
    except (LatentEditError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    f_real, l_real, truth = render_features(clf, args.n)
    reports = {}
    for model, nets in networks.items():
        reports[model] = kind_mix(generated_features(nets.G.eval().float(), clf, args.n), (f_real, l_real), truth,
                                  names, mix_heads)
        reports[model]["kimg"] = (nets.info or {}).get("provenance", {}).get("kimg")
        print_report(model, reports[model])
    if args.json:
        write_text(args.json, json.dumps({"n": args.n, "mix_heads": mix_heads, "reports": reports}, indent=1))
    if args.plot:
        plot(reports, mix_heads, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
