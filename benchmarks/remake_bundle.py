"""Remake a bundle for a new generator: everything tied to the generator, warm-started from the old
bundle's networks, in one resumable command.

    python benchmarks/remake_bundle.py --generator checkpoints/training/gan_v2 --old checkpoints/default \
        --out runs/remake/bundle --runs runs/remake --threads 1

Steps, in order (each skipped when its result is already in --out, so a stopped remake continues
where it stopped; the training steps resume their run folders under --runs):
  assemble    G and D of --generator (fp16 as stored) + the evaluators of --old (attributes,
              identity, parser, face3d) into --out
  boundaries  `latentedit boundary train --attribute all --n 20000` (InterfaceGAN) on the new G
  encoder     `latentedit train encoder --init-from OLD --steps 3000 --weight mse=16 --weight l1=4
              --weight delta=0 --weight latent=0.1 --real-fraction 0.75 --lr 2e-5`, exported (fp16),
              then a second run of 3000 steps from it with `--weight identity=1 --seed 1` added
              (`--init-from OUT`), exported
  offsets     `latentedit train offset --init-from OLD`: mask 1200 steps with the prior
              conditioned on sunglasses, frame glasses 1000 with half of each batch the encoder's
              codes of world renders (so it needs the encoder first) and the see-through term at
              24, sunglasses 1200 with the identity loss at 3x; for a generator trained with world
              labels, each with the realism term at 0.5 under the conditional D's label for the
              kind, frame glasses along the generator's own frames label to distance 4,
              composited with the share, contrast and footprint terms, and masks along theirs
              to 2.5, composited with the crisp and eyes terms, unconditioned (`LABELLED`);
              each exported (fp16);
              with --parallel the three train at once, one single-thread process each
  measure     benchmarks/synthesize_world.py (--n-measure codes, 1000 by default, at d = 3 only:
              the prior's training distance)
              and benchmarks/encoder_world.py (--n 200, the encoder's rows only: projection's 300
              steps per render took longer than the remake),
              reports as JSON under --runs, and the bundle's picture sheets (--sheets)
The condition and inverted fraction are the 300 kimg remake's choices, the step counts the 940 kimg
remake's (500-600 warm steps left identity at 0.59-0.80 there), the sunglasses identity weight the
2026-12-03 fine-tune's (identity 0.823 -> 0.909), the see-through weight the 2026-12-04 frames
fine-tune's (at the default 4 the frames judge rose only 0.06 -> 0.28 in 500 steps); see
checkpoints/README.md, Training.
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from latentedit.formats import bundle  # noqa: E402
from latentedit.formats.evaluators import add_evaluators, load_evaluators  # noqa: E402
from latentedit.world.labels import trained_labels  # noqa: E402

EVALUATORS = ("attributes", "identity", "parser", "face3d")
# kind -> (steps, extra flags) of its warm-started offset run
OFFSETS = {
    "mask": (1200, ["--condition", "sunglasses"]),
    "frame_glasses": (1000, ["--inverted-fraction", "0.5", "--weight", "see_through=24"]),
    "sunglasses": (1200, ["--weight", "identity=3"]),
}
# with a generator trained with world labels (train gan --labels), each kind's flags instead: the realism
# term at 0.5 under the conditional D's label for the kind, frame glasses moving along the generator's
# own frames label (2026-12-06 on the 3285 kimg generator, all judges: frames 0.783 -> 0.805, edit-FID
# 2.21x -> 1.79x the generator's own frames; sunglasses 0.947 -> 0.975; the label prior cost sunglasses
# 0.947 -> 0.913), and masks along the mask label, trained composited with the crisp term (2026-12-06,
# sixth session: all judges 0.007 -> 0.265, the glow turned to cloth) and, pasted as pixels, the eyes
# term (seventh session: 0.803 -> 0.873 in 600 steps over the same network pasted so untrained)
REALISM_LABEL = ["--weight", "realism=0.5", "--realism-label"]
# frame glasses trained as synthesize delivers them (lenses cleared) with the share, contrast and
# footprint terms (2026-12-06: all judges 0.827 -> 0.965)
FRAMES_COMPOSITED = ["--composite", "--weight", "share=4", "--weight", "contrast=4", "--weight", "footprint=16"]
LABELLED = {"frame_glasses": [*OFFSETS["frame_glasses"][1], "--prior", "label", "--distance", "4", *REALISM_LABEL,
                              *FRAMES_COMPOSITED],
            "sunglasses": [*OFFSETS["sunglasses"][1], *REALISM_LABEL],
            "mask": ["--prior", "label", "--distance", "2.5", "--composite", "--weight", "crisp=4", "--weight", "eyes=2",
                     *REALISM_LABEL]}


def _held(out):
    out = ROOT / out
    return set(bundle.read_manifest(out)["networks"]) if bundle.is_bundle(out) else set()


def _start(command, threads, log=None):
    # every command at --threads, whether or not it has a flag for it: on a CPU shared with
    # training, a process with more threads than its share stalls at every op's barrier
    print("$", " ".join(map(str, command[1:])), f"> {log}" if log else "", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    out = open(ROOT / log, "a") if log else None
    return subprocess.Popen(list(map(str, command)), cwd=ROOT, env=env, stdout=out, stderr=out)


def _wait(*processes):
    for p in processes:
        if p.wait():
            sys.exit(f"error: {' '.join(map(str, p.args[1:]))} exited with {p.returncode}")


def _run(command, threads):
    _wait(_start(command, threads))


def _cli(args, *command):
    _run([sys.executable, "-m", "latentedit", *command], args.threads)


def _training(args, name, command, steps, extra, threads, export=True, init_from=None):
    """The command line of a warm-started training run of `command` (encoder / offset), exported
    into the new bundle (export=False: trained only); warm-started from --old's network unless
    init_from names another bundle."""
    run = Path(args.runs) / name
    start = ["--resume"] if (ROOT / run / "state.json").exists() else ["--init-from", init_from or args.old]
    return [sys.executable, "-m", "latentedit", "train", command, *extra, "--bundle", args.out, "--out", run,
            "--steps", steps, "--threads", threads, *start] + (["--export", args.out] if export else [])


def _trained(args, name, command, steps, extra, init_from=None):
    _run(_training(args, name, command, steps, extra, args.threads, init_from=init_from), args.threads)


def assemble(args):
    if "G" in _held(args.out):
        return
    _cli(args, "convert", args.generator, args.out, "--fp16")
    old = bundle.read_manifest(ROOT / args.old)  # the evaluators' figures and provenance travel with them
    figures = {k: v for k, v in old.get("figures", {}).items() if k.split(".")[0] == "evaluator"}
    provenance = {k: v for k, v in old.get("provenance", {}).items() if k == "evaluators"}
    add_evaluators(ROOT / args.out, load_evaluators(ROOT / args.old, EVALUATORS), figures=figures, provenance=provenance)


def boundaries(args):
    folder = Path(args.out) / "boundaries"
    if all((ROOT / folder / f"{kind}.npy").exists() for kind in OFFSETS):
        return
    _cli(args, "boundary", "train", "--attribute", "all", "--model", args.out, "--evaluators", args.out, "--n", args.n_boundary,
         "--out", folder)


# three quarters of each batch world renders (2026-12-03); lr 2e-5, as a warm start from a converged
# encoder trains better than at 1e-4; pixels at 16x / 8x the default weights, no delta regulariser and
# the latent loss at 0.1: 1,000 such steps gave the converged encoder +0.6 dB on held-out renders where
# its own weighting gave +0.00 (2026-12-07, thirteenth session)
ENCODER_TRAINING = ["--weight", "mse=16", "--weight", "l1=4", "--weight", "delta=0", "--weight", "latent=0.1",
                    "--real-fraction", 0.75, "--lr", 2e-5]
# then a second run from that encoder with the identity loss at 1 (another seed, so other generated
# codes): the first run's 3,000 steps had cost identity 0.951 -> 0.935 (2026-12-07, thirteenth session)
IDENTITY_WEIGHT = 1
ENCODER_IDENTITY = [*ENCODER_TRAINING, "--weight", f"identity={IDENTITY_WEIGHT}", "--seed", 1]


def encoder(args):
    if "encoder" not in _held(args.out):
        _trained(args, "encoder", "encoder", args.encoder_steps, ENCODER_TRAINING)
    exported = bundle.read_manifest(ROOT / args.out)["provenance"]["encoder"]["config"]
    if args.encoder_identity_steps and exported["w_identity"] != IDENTITY_WEIGHT:  # the first run's: the second has not exported
        _trained(args, "encoder_identity", "encoder", args.encoder_identity_steps, ENCODER_IDENTITY, init_from=args.out)


def _labelled(out):
    """True when the bundle's generator was trained with world labels as W offsets."""
    manifest = bundle.read_manifest(ROOT / out)
    config = manifest["networks"]["G"]["config"]
    return bool(config.get("c_dim") and config.get("label_input") == "w_offset" and trained_labels(manifest))


def offsets(args):
    labelled = LABELLED if _labelled(args.out) else {}
    todo = {kind: (args.offset_steps or steps, ["--kind", kind, *labelled.get(kind, extra)])
            for kind, (steps, extra) in OFFSETS.items() if f"offset_{kind}" not in _held(args.out)}
    if args.parallel and len(todo) > 1:
        # one single-thread process per kind (1.2x the throughput of one run on two threads at a
        # time, 2 cores); exported one at a time below (bundle.json is read, changed and rewritten)
        _wait(*[_start(_training(args, f"offset_{kind}", "offset", *run, 1, export=False), 1,
                       log=Path(args.runs) / f"offset_{kind}.log") for kind, run in todo.items()])
    for kind, run in todo.items():
        _trained(args, f"offset_{kind}", "offset", *run)


def measure(args):
    runs = ROOT / args.runs
    synth, enc = runs / "synthesize_world.json", runs / "encoder_world.json"
    sheets = Path(args.sheets).resolve() if args.sheets else runs  # the commands run in ROOT
    # a report of another --n-measure is not this call's measurement: redone
    if not synth.exists() or json.loads(synth.read_text()).get("n") != args.n_measure:
        _run([sys.executable, "benchmarks/synthesize_world.py", "--model", args.out, "--n", args.n_measure,
              "--distances", 3, "--threads", args.threads, "--json", synth], args.threads)
    if not enc.exists():
        _run([sys.executable, "benchmarks/encoder_world.py", "--model", args.out, "--n", 200, "--steps", 0,
              "--threads", args.threads, "--json", enc, "--sheet", sheets / "encoder_samples.png"], args.threads)
    if not (sheets / "synthesize_samples.png").exists():
        synthesis_sheet(ROOT / args.out, sheets / "synthesize_samples.png")
    if not (sheets / "default_samples.png").exists():
        _cli(args, "generate", "--model", args.out, "--seeds", "0-31", "--truncation", "0.7", "--out", sheets / "default_samples.png")
    print(json.dumps({"synthesize_world": str(synth), "encoder_world": str(enc), "sheets": str(sheets)}, indent=1))


def synthesis_sheet(out, path):
    """Rows: 8 origins (seed 0, truncation 0.7), then per kind InterfaceGAN's prior alone and prior +
    offset, composited (docs/synthesize_samples.png)."""
    import torch

    from latentedit.edit.discrete import DiscreteSynthesizer
    from latentedit.formats import load_generator
    from latentedit.formats.images import save_png, tile, to_uint8

    G = load_generator(out).eval()
    w = G.sample_w(8, seed=0, truncation=0.7)
    rows = []
    for kind in OFFSETS:  # mask, frame glasses, sunglasses, as the model card describes the rows
        result = DiscreteSynthesizer.load(kind, bundle=out, G=G)(w)
        rows += [result.origin] * (not rows) + [result.prior_image, result.image]
    save_png(path, tile(to_uint8(torch.cat(rows).clamp(-1, 1)), 8, scale=2, pad=2))


STEPS = {"assemble": assemble, "boundaries": boundaries, "encoder": encoder, "offsets": offsets, "measure": measure}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generator", required=True, help="bundle with the new G and D (e.g. a training snapshot)")
    ap.add_argument("--old", default=str(ROOT / "checkpoints" / "default"),
                    help="bundle whose evaluators are kept and whose encoder / offsets warm-start the new ones")
    ap.add_argument("--out", required=True, help="the new bundle folder")
    ap.add_argument("--runs", required=True, help="folder for the training runs and the reports")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n-boundary", type=int, default=20000)
    ap.add_argument("--n-measure", type=int, default=1000, help="held-out codes synthesize_world edits per kind")
    ap.add_argument("--encoder-steps", type=int, default=3000)
    ap.add_argument("--encoder-identity-steps", type=int, default=3000,
                    help="steps of the second encoder run, identity loss at 1 (0: none)")
    ap.add_argument("--offset-steps", type=int, default=None, help="every kind's steps (default: the table above)")
    ap.add_argument("--parallel", action="store_true",
                    help="train the offset networks at once, one single-thread process each (logs under --runs)")
    ap.add_argument("--sheets", default=None, help="folder for the picture sheets (default: --runs)")
    ap.add_argument("--only", default=",".join(STEPS), help="comma-separated steps to run (in order)")
    args = ap.parse_args()
    # paths relative to the repository, where the commands run: provenance records them as given
    args.out, args.old, args.generator = (os.path.relpath(Path(p).resolve(), ROOT) for p in (args.out, args.old, args.generator))
    args.runs = os.path.relpath(Path(args.runs).resolve(), ROOT)
    (ROOT / args.runs).mkdir(parents=True, exist_ok=True)
    for name in args.only.split(","):
        STEPS[name](args)


if __name__ == "__main__":
    sys.exit(main())
