"""Who wears each accessory: the other attributes of a generator's faces of each kind against the
world's, and the per-kind FID at the world's mix of them.

    python benchmarks/kind_mix.py --models checkpoints/default checkpoints/training/gan_v2 --n 10000

The per-kind FID (`latentedit evaluate generator`) compares the generated faces the classifier
gives kind K with world renders wearing K. The world draws accessories independently of hair,
age and beard; a generator can learn correlations the world does not have (sunglasses on long
hair), and in the classifier's feature space, which encodes those attributes, the per-kind FID
counts them beside how the faces are drawn. This separates the two. Per model and kind: the
classifier's class shares of every other head on the generated faces of the kind and on the world
renders wearing it (total variation distance per head, and on all faces for comparison), and the
per-kind FID with the generated faces importance-weighted to the world's mix over --mix-heads
(each face's weight: the world's share / the generated share of its cell of labels), beside its
ratio to the overall FID at the effective sample count (FID's small-sample bias, as
`kind_fid_ratio_matched` does). The same samples as the evaluation: codes 0 .. n-1 at truncation
1.0, the reference renders of `latentedit.metrics.generator`.
"""
import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from latentedit.errors import LatentEditError  # noqa: E402
from latentedit.formats import load_networks  # noqa: E402
from latentedit.formats.atomic import write_text  # noqa: E402
from latentedit.formats.evaluators import load_evaluators  # noqa: E402
from latentedit.metrics.fid import fid  # noqa: E402
from latentedit.metrics.generator import (ACCESSORIES, RATES, fid_at_counts, generated_features,  # noqa: E402
                                          render_features)


def cell_of(labels, heads, sizes):
    """One integer [N] per sample for its labels on `heads` (class counts `sizes`)."""
    key = torch.zeros_like(labels[heads[0]])
    for head in heads:
        key = key * sizes[head] + labels[head]
    return key


def mix_weights(drawn, target):
    """Importance weights [N] for cells `drawn` (ints [N]) that give each cell its share in `target`
    (ints [M]): target share / drawn share; cells absent from `drawn` cannot be given weight, so
    also returns the target's share in them (the mix left unreached)."""
    w = torch.zeros(len(drawn), dtype=torch.float64)
    for cell in torch.unique(drawn):
        here = drawn == cell
        w[here] = (target == cell).double().mean() / here.double().mean()
    return w, float((~torch.isin(target, drawn)).double().mean())


def shares(labels, n_classes):
    return torch.bincount(labels, minlength=n_classes).double() / max(len(labels), 1)


def total_variation(a, b, n_classes):
    return 0.5 * float((shares(a, n_classes) - shares(b, n_classes)).abs().sum())


def kind_mix(gen, world, truth, names, mix_heads):
    """Per accessory kind: counts, the class shares and total variation of every other head, the
    per-kind FID as drawn and at the world's mix over mix_heads, each with its ratio to the overall
    FID at matching counts."""
    (f_gen, l_gen), (f_real, l_real) = gen, world
    sizes = {h: len(c) for h, c in names.items()}
    out = {}
    for kind in ACCESSORIES:
        own_head, c = RATES[kind]
        kg, kr = l_gen[own_head] == c, truth[kind]
        ng, nr = int(kg.sum()), int(kr.sum())
        if ng < 2 or nr < 2:
            out[kind] = {"counts": {"generated": ng, "renders": nr}}
            continue
        heads = {}
        for head, classes in names.items():
            if head == own_head:
                continue
            heads[head] = {"generated": dict(zip(classes, shares(l_gen[head][kg], len(classes)).tolist())),
                           "world": dict(zip(classes, shares(l_real[head][kr], len(classes)).tolist())),
                           "tv": total_variation(l_gen[head][kg], l_real[head][kr], len(classes)),
                           "tv_all_faces": total_variation(l_gen[head], l_real[head], len(classes))}
        w, unreached = mix_weights(cell_of({h: v[kg] for h, v in l_gen.items()}, mix_heads, sizes),
                                   cell_of({h: v[kr] for h, v in l_real.items()}, mix_heads, sizes))
        as_drawn = fid(f_real[kr], f_gen[kg])
        out[kind] = {"counts": {"generated": ng, "renders": nr}, "heads": heads, "kind_fid": as_drawn,
                     "ratio": as_drawn / fid_at_counts(f_real, nr, f_gen, ng), "world_share_unreached": unreached,
                     "kind_fid_world_mix": None, "effective_n": 0.0, "ratio_world_mix": None}
        if int((w > 0).sum()) >= 2:  # else the generated faces share fewer than two of the world's cells
            n_eff = float(w.sum() ** 2 / (w ** 2).sum())
            at_mix = fid(f_real[kr], f_gen[kg], weights_b=w)
            out[kind].update(kind_fid_world_mix=at_mix, effective_n=n_eff,
                             ratio_world_mix=at_mix / fid_at_counts(f_real, nr, f_gen, max(2, round(n_eff))))
    return out


def print_report(name, report):
    print(f"== {name}")
    for kind, r in report.items():
        if "kind_fid" not in r:
            print(f"  {kind}: too few faces ({r['counts']})")
            continue
        worst = sorted(r["heads"].items(), key=lambda kv: -kv[1]["tv"])[:3]
        at_mix = ("-" if r["kind_fid_world_mix"] is None else
                  f"{r['kind_fid_world_mix']:.2f} ({r['ratio_world_mix']:.2f}x, effective n {r['effective_n']:.0f})")
        print(f"  {kind:13s} n {r['counts']['generated']} / {r['counts']['renders']}: FID {r['kind_fid']:.2f} "
              f"({r['ratio']:.2f}x); at the world's mix {at_mix}, world share unreached {r['world_share_unreached']:.3f}; "
              "TV within kind (all faces): " + ", ".join(f"{h} {v['tv']:.2f} ({v['tv_all_faces']:.2f})" for h, v in worst))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", required=True, help="bundle folders with G")
    ap.add_argument("--evaluators", default="checkpoints/default", help="bundle with the attribute classifier")
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--mix-heads", default="hair_style,age,beard",
                    help="classifier heads whose joint mix the weighted per-kind FID matches to the world's")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None, help="write the reports here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        clf = load_evaluators(args.evaluators, ["attributes"])["attributes"]
        names, mix_heads = clf.cfg.heads, args.mix_heads.split(",")
        unknown = [h for h in mix_heads if h not in names]
        if unknown:
            raise LatentEditError(f"--mix-heads: unknown head {', '.join(unknown)} (heads: {', '.join(names)})")
        if args.n < 10:
            raise LatentEditError(f"--n must be >= 10, got {args.n}")
        generators = {m: load_networks(m).G.eval().float() for m in args.models}
    except (LatentEditError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    f_real, l_real, truth = render_features(clf, args.n)
    reports = {}
    for model, G in generators.items():
        reports[model] = kind_mix(generated_features(G, clf, args.n), (f_real, l_real), truth, names, mix_heads)
        print_report(model, reports[model])
    if args.json:
        write_text(args.json, json.dumps({"n": args.n, "mix_heads": mix_heads, "reports": reports}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
