"""Does a generator trained with world labels (`latentedit train gan --labels ...`) draw what its
label says? Per label column, the attribute classifier's rate of that class on the same codes with
the column's group forced to it ("on"), forced to no class ("off"; for hair style, where every
face has one, the seed's own label instead), and as drawn ("own"), beside the world's prior; and
("kept") the share of the codes the forced label moved that keep their hair colour, hair style and
age class, which the world draws independently of every label (noise alone keeps ~0.95).

    python benchmarks/label_adherence.py --model runs/gan_cond/snapshots/002950k --n 500 --json adherence.json

`--training-g RUN` measures the run's training generator (`RUN/state.safetensors`, the weights Adam
steps) in the architecture of `--model` (e.g. RUN/bundle): the EMA generator trails the label
offsets by its half-life, 40 kimg in the bundle's recipe, so early adherence shows there first.
`--sheet PNG` draws the first codes as drawn and with each accessory's label on, to look at;
`--discriminator` also asks whether D knows the labels G should follow (`label_margin`).
`--guidance S` scales the W move a label makes (from the code's own label to the forced one) by S:
does a longer offset reach the codes the learnt one misses, and at what cost (look at `--sheet`)?

An unconditional start (zero W offsets) gives on = off = own; a generator that follows its labels
gives on near the classifier's rate on world renders of the class (~0.9-1.0) and off near 0.
Codes are seeds 100000 .. 100000 + n - 1 at truncation 1.0, noise const.
"""
import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from latentedit.edit.imaging import resize  # noqa: E402
from latentedit.errors import InputError, LatentEditError  # noqa: E402
from latentedit.formats import load_networks  # noqa: E402
from latentedit.formats.atomic import write_text  # noqa: E402
from latentedit.formats.evaluators import load_evaluators  # noqa: E402
from latentedit.metrics.generator import RATES  # noqa: E402
from latentedit.models.evaluators import ATTRIBUTE_HEADS  # noqa: E402
from latentedit.models.stylegan2 import group_span, label_spans, with_class, z_from_seeds  # noqa: E402
from latentedit.world.labels import label_names, label_prior, trained_labels  # noqa: E402

FIRST_SEED = 100_000
KEPT_HEADS = ("hair_color", "hair_style", "age")  # attributes the world draws independently of the labels
COLUMN_CLASS = {"frame": RATES["frame_glasses"], "sun": RATES["sunglasses"], "mask": RATES["mask"],
                "hat": RATES["hat"], "beard": RATES["beard"]}


def classifier_class(column):
    """(head, class index) of the attribute classifier that a label column names."""
    if column.startswith("hair_style="):
        return "hair_style", ATTRIBUTE_HEADS["hair_style"].index(column.split("=", 1)[1])
    return COLUMN_CLASS[column]


def guided_ws(G, z, c, own, guidance=1.0):
    """W+ codes of z under labels c with the W move from the codes' own labels to c scaled by
    `guidance` (1: G.mapping(z, c) as trained)."""
    ws = G.mapping(z, c)
    if guidance == 1.0:
        return ws
    move = G.mapping.label_offset(c) - G.mapping.label_offset(own)
    return ws + (guidance - 1.0) * move[:, None]


@torch.no_grad()
def adherence(G, clf, labels, n, batch=100, guidance=1.0):
    columns, prior = label_names(labels), G.cfg.label_prior
    rates = [p for group in prior for p in group]
    z = z_from_seeds(range(FIRST_SEED, FIRST_SEED + n), G.z_dim)
    own = G.mapping.labels_from_z(z)

    def predicted(c):  # the classifier's class per head [n] of the codes under labels c
        parts = []
        for zb, cb, ob in zip(z.split(batch), c.split(batch), own.split(batch)):
            x = G.synthesis(guided_ws(G, zb, cb, ob, guidance), noise_mode="const").float().clamp(-1, 1)
            parts.append({h: v.argmax(1) for h, v in clf.classify(clf.features(resize(x, clf.cfg.image_size))).items()})
        return {h: torch.cat([p[h] for p in parts]) for h in parts[0]}

    as_drawn, report = predicted(own), {}
    for (start, end), name in zip(label_spans(prior), labels):
        for col in range(start, end):
            head, k = classifier_class(columns[col])
            on, off = with_class(own, prior, col), own.clone()
            off[:, start:end] = 0
            on_pred, moved = predicted(on), (on != own).any(1)
            report[columns[col]] = {
                "on": float((on_pred[head] == k).float().mean()), "own": float((as_drawn[head] == k).float().mean()),
                "prior": rates[col],
                "off": None if name == "hair_style" else float((predicted(off)[head] == k).float().mean()),
                # the rest of the face: codes the label moved keeping the class they are drawn with
                "kept": {h: float((on_pred[h] == as_drawn[h])[moved].float().mean()) if moved.any() else None
                         for h in KEPT_HEADS if h != head}}
    return report


@torch.no_grad()
def label_margin(D, labels, n, batch=32):
    """Does D's projection know the labels? Per yes / no column (an accessory, beard), on n world
    renders at the world's prior: D's logit with each render's own label minus with that column
    switched (on <-> off, the rest of its group cleared), for the renders wearing it and the rest
    (for frames / sunglasses: the rest are bare faces switched to it and the other kind's wearers).
    n: a multiple of 4 (D's minibatch-std groups)."""
    from latentedit import world
    from latentedit.world.labels import face_labels

    renders = world.sample(n, seed=FIRST_SEED, resolution=D.cfg.resolution)
    c = face_labels(renders.params, labels)
    columns, prior = label_names(labels), label_prior(labels)
    logits = lambda cc: torch.cat([D(x, cb) for x, cb in zip(renders.image.split(batch), cc.split(batch))])[:, 0]
    own, report = logits(c), {}
    for col, name in enumerate(columns):
        if name.startswith("hair_style="):
            continue
        wearing = c[:, col] == 1
        switched = with_class(c, prior, col)
        start, end = group_span(prior, col)
        switched[wearing, start:end] = 0
        margin = own - logits(switched)
        report[name] = {"wearing": margin[wearing].mean().item() if wearing.any() else None,
                        "not_wearing": margin[~wearing].mean().item() if (~wearing).any() else None,
                        "n_wearing": int(wearing.sum())}
    return report


@torch.no_grad()
def sheet(G, labels, path, columns=("frame", "sun", "mask", "beard"), n=8, guidance=1.0):
    """A contact sheet: the first n codes as drawn (top row), then one row per label column forced
    on (its group set to it; its W move scaled by `guidance`), 3x upscaled, so that what the
    classifier counts can be looked at."""
    from latentedit.formats.images import save_png, tile, to_uint8

    names, prior = label_names(labels), label_prior(labels)
    z = z_from_seeds(range(FIRST_SEED, FIRST_SEED + n), G.z_dim)
    own, rows = G.mapping.labels_from_z(z), []
    for name in (None, *[c for c in columns if c in names]):
        c = own if name is None else with_class(own, prior, names.index(name))
        rows.append(G.synthesis(guided_ws(G, z, c, own, guidance), noise_mode="const").float().clamp(-1, 1))
    save_png(path, tile(to_uint8(torch.cat(rows)), n, scale=3, pad=2))


def load_training_g(G, state_file):
    """Replace G's weights by the training generator's ("G." tensors) of a run's state file."""
    from safetensors import safe_open
    if not state_file.is_file():
        raise InputError(f"{state_file}: no training state there")
    with safe_open(str(state_file), "pt") as f:
        tensors = {k[2:]: f.get_tensor(k) for k in f.keys() if k.startswith("G.")}
    own = G.state_dict()
    if set(tensors) != set(own) or any(tensors[k].shape != own[k].shape for k in own):
        raise InputError(f"{state_file}: its generator does not match the bundle's architecture")
    G.load_state_dict({k: v.float() for k, v in tensors.items()})


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="A bundle trained with --labels.")
    ap.add_argument("--evaluators", default="checkpoints/default", help="Bundle holding the attribute classifier.")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None, help="Write the report here.")
    ap.add_argument("--sheet", default=None, help="Also write a contact sheet here (sheet()).")
    ap.add_argument("--discriminator", action="store_true",
                    help="Also D's label margin (label_margin) on as many world renders as --n.")
    ap.add_argument("--guidance", type=float, default=1.0,
                    help="Scale the W move of a forced label (on, off, the sheet) by this (1: as trained).")
    ap.add_argument("--training-g", default=None, metavar="RUN",
                    help="Measure RUN's training generator (its state.safetensors) instead of the bundle's EMA one.")
    args = ap.parse_args(argv)
    try:
        if args.n < 1 or (args.threads is not None and args.threads < 1):
            raise InputError("--n and --threads must be positive")
        if not args.guidance > 0 or args.guidance == float("inf"):
            raise InputError(f"--guidance must be a positive number, got {args.guidance}")
        if args.threads:
            torch.set_num_threads(args.threads)
        nets = load_networks(args.model)
        labels = trained_labels(nets.info)
        if nets.G is None or not nets.G.c_dim or nets.G.cfg.label_prior is None or not labels:
            raise InputError(f"{args.model}: not a generator trained with world labels (train gan --labels)")
        G = nets.G.float().eval()
        if args.training_g:
            load_training_g(G, Path(args.training_g) / "state.safetensors")
        report = {"model": Path(args.model).name, "generator": "training" if args.training_g else "ema",
                  "labels": labels, "n": args.n, "guidance": args.guidance,
                  "columns": adherence(G, load_evaluators(args.evaluators)["attributes"], labels, args.n,
                                       guidance=args.guidance)}
        if args.sheet:
            sheet(G, labels, args.sheet, guidance=args.guidance)
        if args.discriminator:
            if args.n % 4:
                raise InputError("--discriminator needs --n a multiple of 4 (D's minibatch-std groups)")
            if nets.D is None or not nets.D.cfg.c_dim:
                raise InputError(f"{args.model}: no conditional discriminator for --discriminator")
            report["discriminator_margin"] = label_margin(nets.D.float().eval(), labels, args.n)
    except LatentEditError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{'label':22s} {'on':>6s} {'off':>6s} {'own':>6s} {'prior':>6s}  kept with the label on")
    for col, r in report["columns"].items():
        off = "-" if r["off"] is None else f"{r['off']:.3f}"
        kept = "  ".join(f"{h} {'-' if v is None else f'{v:.3f}'}" for h, v in r["kept"].items())
        print(f"{col:22s} {r['on']:6.3f} {off:>6s} {r['own']:6.3f} {r['prior']:6.3f}  {kept}")
    for col, r in report.get("discriminator_margin", {}).items():
        wearing, rest = ("-" if v is None else f"{v:+.3f}" for v in (r["wearing"], r["not_wearing"]))
        print(f"D's margin, true label minus {col} switched: wearing {wearing} (n {r['n_wearing']}), not wearing {rest}")
    if args.json:
        write_text(args.json, json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
