"""The bundle generator's training curves: evaluations per snapshot, kept across sessions, as plots.

    python benchmarks/training_curves.py add --report REPORT.json --kimg 370 --note "bf16, warm start"
    python benchmarks/training_curves.py plot --log checkpoints/training/log.jsonl --out docs/training_curves.png
    python benchmarks/training_curves.py samples --model checkpoints/training/gan_v2 --kimg 530
    python benchmarks/training_curves.py snapshot --run runs/gan_v2   # all of a session's commit

`add` appends one point (a `latentedit evaluate generator` report of a snapshot, at its kimg) to
the curve file (default checkpoints/training/curve.json; points sorted by kimg, one per kimg,
sample count, width and arm: --arm names a branch of the recipe, e.g. the labels arm). `plot` draws
world-FID (with per-accessory FIDs where measured, log scale), precision / recall, the accessory
rates' gaps to the world's prior, and, from a run's log.jsonl, the losses
and training throughput, each against kimg. Needs matplotlib (not a dependency of the package).
`samples` puts a snapshot's seeds 0-31 (truncation 1.0, as `latentedit generate` makes them) above
docs/world_samples.png's world renders, in the same 8 x 4 layout (docs/training_vs_world.png).
`snapshot` does what a session commits of a run: its latest bundle and its last kept snapshots
(--best-of, a run's FID swings between snapshots; --bundle: one bundle alone), each converted to
fp16 and evaluated on --n samples with the figures recorded in its bundle.json and added to the
curve; the lowest world-FID replaces checkpoints/training/gan_v2 unless the committed snapshot
measured lower (--replace: regardless), with the run's log.jsonl up to it copied beside it and
both images redrawn. Pause the training first for a clean figure (kill -STOP / -CONT).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CURVE = ROOT / "checkpoints" / "training" / "curve.json"
COMMITTED = ROOT / "checkpoints" / "training" / "gan_v2"  # the line's committed snapshot
KINDS = ("frame_glasses", "sunglasses", "mask")
MAIN_WIDTH = "2048/128"  # channel_base / channel_max of the curve's first points (before widths were recorded)


def _width(bundle_dir):
    cfg = json.loads((Path(bundle_dir) / "bundle.json").read_text())["networks"]["G"]["config"]
    return f"{cfg['channel_base']}/{cfg['channel_max']}"


def _point_arm(point):
    """A curve point's (generator width, arm name); points from before widths were recorded are
    MAIN_WIDTH's, points without an arm the main line's ("")."""
    return point.get("width", MAIN_WIDTH), point.get("arm", "")


def _arms(points):
    """(label suffix, marker, points) per generator width and arm, the main line first."""
    arms = sorted({_point_arm(p) for p in points}, key=lambda a: (a != (MAIN_WIDTH, ""), a))
    return [("".join(f", {part}" for part in (w if w != MAIN_WIDTH else "", arm) if part), "oD^vs*"[i % 6],
             [p for p in points if _point_arm(p) == (w, arm)]) for i, (w, arm) in enumerate(arms)]


def load(path):
    return json.loads(Path(path).read_text()) if Path(path).exists() else {"points": []}


def add(args):
    report = json.loads(Path(args.report).read_text())
    if args.width is None:
        args.width = _width(COMMITTED) if (COMMITTED / "bundle.json").exists() else MAIN_WIDTH
    point = {"kimg": args.kimg, "n": report["n"], "truncation": report["truncation"], "note": args.note,
             "width": args.width, **({"arm": args.arm} if args.arm else {}),
             **{k: report.get(k) for k in ("world_fid", "kid", "precision", "recall", "kind_fid",
                                            "kind_fid_ratio_matched", "rate_gap_points", "rates_generated",
                                            "rates_prior")}}
    curve = load(args.curve)
    def key(p):  # arms share kimg marks
        return p["kimg"], p["n"], _point_arm(p)

    curve["points"] = [p for p in curve["points"] if key(p) != key(point)] + [point]
    curve["points"].sort(key=key)
    Path(args.curve).parent.mkdir(parents=True, exist_ok=True)
    Path(args.curve).write_text(json.dumps(curve, indent=1) + "\n")
    print(f"{args.curve}: {len(curve['points'])} points")


def _series(points, key, sub=None):
    xs, ys = [], []
    for p in points:
        v = p.get(key)
        v = v.get(sub) if isinstance(v, dict) and sub is not None else v
        if v is not None:
            xs.append(p["kimg"])
            ys.append(v)
    return xs, ys


def plot(args):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    points = load(args.curve)["points"]
    log = [json.loads(line) for line in Path(args.log).read_text().splitlines()] if args.log else []
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    arms = _arms(points)
    # Colour says what is measured, marker which arm: each named once (arms in the FID panel only),
    # so the legends stay off the curves.
    ax = axes[0, 0]
    colours = {"world": "C0", **{kind: f"C{i + 1}" for i, kind in enumerate(KINDS)}}
    for suffix, marker, arm in arms:
        for n in sorted({p["n"] for p in arm}):
            pts = [p for p in arm if p["n"] == n]
            style = dict(ls="-" if n >= 10000 else ":", mfc="white" if n < 10000 else None)
            ax.plot(*_series(pts, "world_fid"), marker, color=colours["world"], label=f"world-FID, n={n}{suffix}", **style)
            for kind in KINDS:
                xs, ys = _series(pts, "kind_fid", kind)
                if xs:
                    ax.plot(xs, ys, marker, ms=4, color=colours[kind], **style)
    for kind in KINDS:
        ax.plot([], [], "-", color=colours[kind], label=f"{kind} FID (same markers)")
    ax.axhline(5, color="grey", lw=0.8, ls=":", label="target 5")
    ax.set(xlabel="kimg", ylabel="FID (attribute-classifier features), log scale", yscale="log",
           title="FID vs world renders")
    ax.set_yticks([4, 5, 6, 8, 10, 15, 20, 30, 40])
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.legend(fontsize=6.5, ncol=2)
    ax = axes[0, 1]
    for i, (key, target) in enumerate((("precision", 0.70), ("recall", 0.40))):
        for j, (_, marker, arm) in enumerate(arms):
            ax.plot(*_series(arm, key), f"{marker}-", ms=4, color=f"C{i}", label=None if j else key)
        ax.axhline(target, color=f"C{i}", lw=0.8, ls=":", label=f"{key} target {target}")
    ax.set(xlabel="kimg", ylim=(0, 1), title="precision / recall (markers: arms, as in the FID panel)")
    ax.legend(fontsize=7, loc="lower right")
    ax = axes[1, 0]
    for i, kind in enumerate(KINDS):
        for j, (_, marker, arm) in enumerate(arms):
            ax.plot(*_series(arm, "rate_gap_points", kind), f"{marker}-", ms=4, color=f"C{i}", label=None if j else kind)
    for bound in (-3, 3):
        ax.axhline(bound, color="grey", lw=0.8, ls=":")
    ax.set(xlabel="kimg", ylabel="generated - world prior (points)",
           title="accessory rates (bar: within 3 points; markers: arms)")
    ax.legend(fontsize=7, loc="lower right")
    ax = axes[1, 1]
    if log:
        kimg = [e["kimg"] for e in log]
        for key in ("loss_G", "loss_D"):
            ax.plot(kimg, [e.get(key) for e in log], lw=0.8, label=key)
        ax.set(xlabel="kimg", ylabel="loss", title="training (log.jsonl)")
        twin = ax.twinx()
        twin.plot(kimg, [e["img_per_s"] for e in log], color="black", lw=0.6, alpha=0.5, label="img/s")
        twin.set_ylabel("img/s (machine shared with other work)")
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")


def samples(args):
    import torch
    from PIL import Image, ImageDraw

    sys.path.insert(0, str(ROOT))
    from latentedit.formats import load_generator
    from latentedit.formats.images import tile, to_uint8

    G = load_generator(args.model).eval()
    with torch.no_grad():
        images = G.synthesize(G.sample_w(seeds=range(32)), noise_mode="const")
    world = Image.open(args.world).convert("RGB")
    ours = Image.fromarray(tile(to_uint8(images), 8, scale=world.width // (8 * G.img_resolution), pad=1))
    caption = 28
    sheet = Image.new("RGB", (max(ours.width, world.width), 2 * caption + ours.height + world.height), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((6, 8), f"generator in training, {args.kimg:g} kimg (seeds 0-31, truncation 1.0)", fill="black")
    sheet.paste(ours, (0, caption))
    shown = Path(os.path.relpath(Path(args.world).resolve(), ROOT)).as_posix()
    draw.text((6, caption + ours.height + 8), f"world renders ({shown})", fill="black")
    sheet.paste(world, (0, 2 * caption + ours.height))
    sheet.save(args.out)
    print(f"wrote {args.out} ({sheet.width} x {sheet.height})")


def _candidates(run, bundle, best_of):
    """The bundles a snapshot chooses from: --bundle alone, else the run's latest bundle/ and its
    kept snapshots (snapshots/NNNNNNk), newest first, best_of of different kimg."""
    if bundle:
        return [Path(bundle)]
    kept = sorted((run / "snapshots").glob("*k"))[::-1] if (run / "snapshots").is_dir() else []
    chosen = {}
    for folder in [run / "bundle", *kept]:
        if len(chosen) == best_of:
            break
        if (folder / "bundle.json").exists():  # the manifest is written last: without it, an interrupted export
            chosen.setdefault(round(_kimg(folder)), folder)  # the latest bundle is often also the last kept
    return list(chosen.values())


def _fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _kimg(bundle_dir):
    return json.loads((bundle_dir / "bundle.json").read_text())["provenance"]["kimg"]


def snapshot(args):
    run, dst = Path(args.run), COMMITTED
    if args.best_of < 1:
        _fail("--best-of must be at least 1")
    committed = dst / "bundle.json"
    committed_fig = json.loads(committed.read_text())["figures"].get("generator") if committed.exists() else None
    if committed_fig and committed_fig.get("n") != args.n and not args.replace:
        _fail(f"the committed snapshot was measured on n={committed_fig.get('n')}: evaluate at that --n "
              "to compare, or pass --replace")
    cli = [sys.executable, "-m", "latentedit"]
    evaluated = []  # (world_fid, exact kimg, fp16 folder)
    candidates = _candidates(run, args.bundle, args.best_of)
    if not candidates:
        _fail(f"{run} holds no finished bundle (bundle/ or snapshots/*k with bundle.json)")
    for source in candidates:
        exact_kimg = _kimg(source)
        fresh, report = dst.with_name(f"{dst.name}_{round(exact_kimg)}k"), dst.with_name(f"metrics_{round(exact_kimg)}k.json")
        shutil.rmtree(fresh, ignore_errors=True)
        subprocess.run([*cli, "convert", str(source), str(fresh), "--fp16"], check=True)
        subprocess.run([*cli, "evaluate", "generator", "--model", str(fresh), "--evaluators",
                        str(ROOT / "checkpoints" / "default"), "--n", str(args.n), "--no-floor", "--record",
                        "--threads", str(args.threads), "--out", str(report)], check=True)
        fid = json.loads(report.read_text())["world_fid"]
        print(f"{source}: {exact_kimg:g} kimg, world-FID {fid:.2f}")
        add(argparse.Namespace(report=report, kimg=float(round(exact_kimg)), curve=args.curve,
                               note=args.note or "fp16 snapshot", width=_width(source), arm=None))
        report.unlink()
        evaluated.append((fid, exact_kimg, fresh))
    fid, exact_kimg, best = min(evaluated, key=lambda e: e[0])
    committed_fid = committed_fig["world_fid"] if committed_fig else None
    for _, _, folder in evaluated:
        if folder != best or (committed_fid is not None and fid >= committed_fid and not args.replace):
            shutil.rmtree(folder)
    if not best.exists():
        print(f"kept the committed snapshot (world-FID {committed_fid:.2f}): the best candidate, "
              f"{exact_kimg:g} kimg, measured {fid:.2f}; its points are on the curve")
        plot(argparse.Namespace(curve=args.curve, log=dst.parent / "log.jsonl", out=ROOT / "docs" / "training_curves.png"))
        return
    # The log up to the snapshot: a run continued from it (--init-from) appends from there on. Read
    # first, so that a line torn by a running training fails before anything is replaced.
    lines = (run / "log.jsonl").read_text().splitlines()
    kept = [line for line in lines if json.loads(line)["kimg"] <= exact_kimg + 1e-6]
    shutil.rmtree(dst, ignore_errors=True)  # a fresh folder: no figures of the previous snapshot stay
    best.rename(dst)
    print(f"committed {exact_kimg:g} kimg (world-FID {fid:.2f}) as {dst.relative_to(ROOT)}")
    (dst.parent / "log.jsonl").write_text("".join(line + "\n" for line in kept))
    plot(argparse.Namespace(curve=args.curve, log=dst.parent / "log.jsonl", out=ROOT / "docs" / "training_curves.png"))
    samples(argparse.Namespace(model=dst, kimg=float(round(exact_kimg)), world=ROOT / "docs" / "world_samples.png",
                               out=ROOT / "docs" / "training_vs_world.png"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--curve", default=str(CURVE))
    sub = ap.add_subparsers(dest="command", required=True)
    a = sub.add_parser("add")
    a.add_argument("--report", required=True)
    a.add_argument("--kimg", type=float, required=True)
    a.add_argument("--note", default="")
    a.add_argument("--width", default=None, help="the generator's channel_base/channel_max: each width is its own "
                   "arm on the plot (default: the committed snapshot's, checkpoints/training/gan_v2)")
    a.add_argument("--arm", default=None, help="the recipe's branch, its own series on the plot (e.g. 'labels'); "
                   "default: the main line")
    p = sub.add_parser("plot")
    p.add_argument("--log", default=None, help="a run's log.jsonl (losses and img/s per snapshot)")
    p.add_argument("--out", default="docs/training_curves.png")
    q = sub.add_parser("samples")
    q.add_argument("--model", required=True, help="the snapshot's bundle folder")
    q.add_argument("--kimg", type=float, required=True)
    q.add_argument("--world", default="docs/world_samples.png")
    q.add_argument("--out", default="docs/training_vs_world.png")
    r = sub.add_parser("snapshot")
    r.add_argument("--run", required=True, help="the training run's folder (its bundle/ and log.jsonl)")
    r.add_argument("--bundle", default=None, help="evaluate this bundle alone (e.g. a kept snapshot) "
                   "instead of the run's latest ones")
    r.add_argument("--best-of", type=int, default=3, help="candidates: the run's latest bundle/ and its "
                   "last N-1 kept snapshots (snapshots/); the lowest world-FID is committed")
    r.add_argument("--replace", action="store_true", help="commit the best candidate even when the "
                   "committed snapshot measured better")
    r.add_argument("--n", type=int, default=10000)
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--note", default="")
    args = ap.parse_args()
    {"add": add, "plot": plot, "samples": samples, "snapshot": snapshot}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
