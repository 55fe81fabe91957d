"""The edit judges on the generator's own accessories: can it draw what its edits are asked to?

    python benchmarks/own_accessories.py --models checkpoints/default checkpoints/training/gan_v2 --n 200

An edit cannot be crisper than what the generator draws: at 2200 kimg its own masked faces passed
the mask edge judge 42% (benchmarks/RESULTS.md, "Why"), so no offset network reached the bar. This
measures that ceiling per generator, the question a remake of the bundle rests on. For each model
and kind: the first N faces of codes seed, seed + 1, ... (truncation 1.0, the generator's own
distribution, as the per-kind FID draws them) that the evaluators' classifier gives the kind,
judged as synthesize_world.py judges edits with each face as its own origin: seen by the parser,
footprint, the frames judge (clarity, share, contrast; its see-through term compares with a bare
origin and passes trivially here), the mask edge and eyes judges (crispness, contrast; the eyes
left visible), all judges. Beside them the same judges on N world renders wearing the kind (other
attributes at their priors: the per-kind FID's reference): what a generator drawing the world's
accessories reaches. --sheet: per kind, a row of world renders, then a row per model; green border
all judges pass, red fail.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthesize_world import measure, world_evaluators  # noqa: E402

from latentedit.edit.discrete import ACCESSORY_KINDS  # noqa: E402
from latentedit.formats import load_networks  # noqa: E402
from latentedit.formats.images import save_png, tile, to_uint8  # noqa: E402
from latentedit.metrics.generator import generated_kind_images, kind_render_images  # noqa: E402

JUDGES = ("seen_by_parser", "fits", "frames", "crisp", "eyes_visible", "all_judges")
RATIOS = ("frame_contrast_ratio", "lens_clarity_ratio", "crispness_ratio", "contrast_ratio", "eyes_ratio")


def no_realism(x):  # measure's realism column (D, edit minus origin) is moot for a face against itself
    return torch.zeros(len(x))


@torch.no_grad()
def judged(faces, kind, ev, batch=100):
    """Per-face judges of `faces` [N, 3, R, R], each its own origin."""
    parts = [measure(x, x, kind, ev, no_realism) for x in faces.split(batch)]
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def summary(per_face):
    out = {k: float(per_face[k].mean()) for k in JUDGES if k in per_face}
    out.update({f"median_{k}": float(per_face[k].median()) for k in RATIOS if k in per_face})
    return out


BORDER = 2  # pixels of a sheet tile's pass / fail border


def bordered(faces, passed, width=BORDER):
    """uint8 tiles of faces with a green (passed) or red border."""
    colour = torch.where(passed[:, None], torch.tensor([-1.0, 1.0, -1.0]), torch.tensor([1.0, -1.0, -1.0]))
    out = colour[:, :, None, None].expand(-1, -1, faces.shape[2] + 2 * width, faces.shape[3] + 2 * width).clone()
    out[:, :, width:-width, width:-width] = faces
    return to_uint8(out)


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", required=True, help="bundles with a generator")
    ap.add_argument("--evaluators", default="checkpoints/default", help="bundle with attributes, parser, face3d")
    ap.add_argument("--kinds", default=",".join(ACCESSORY_KINDS))
    ap.add_argument("--n", type=int, default=200, help="faces per model and kind")
    ap.add_argument("--seed", type=int, default=0, help="first code (the per-kind FID's are 0 ...)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    ap.add_argument("--sheet", default=None, help="PNG: 8 faces per row, per kind the world then each model")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ev = world_evaluators(args.evaluators)
    clf = ev["attributes"].eval()
    generators = {m: load_networks(m).G.eval() for m in args.models}
    results, rows = {}, []
    for kind in args.kinds.split(","):
        faces = {"world renders": (kind_render_images(kind, args.n, resolution=clf.cfg.image_size), args.n)}
        for name, G in generators.items():
            faces[name] = generated_kind_images(G, clf, kind, args.n, truncation=1.0, seed=args.seed)
        for name, (x, drawn) in faces.items():
            if not len(x):  # a blank row keeps the sheet's rows one per model
                results.setdefault(kind, {})[name] = {"faces": 0, "codes_drawn": drawn}
                print(f"{kind:13s} {name:40s} no face of the kind in {drawn} codes", flush=True)
                rows.append(np.full((1, x.shape[2] + 2 * BORDER, x.shape[3] + 2 * BORDER, 3), 255, dtype=np.uint8))
                continue
            per_face = judged(x, kind, ev)
            results.setdefault(kind, {})[name] = {**summary(per_face), "faces": len(x), "codes_drawn": drawn}
            print(f"{kind:13s} {name:40s} " + "  ".join(f"{k} {v:.3f}" for k, v in summary(per_face).items())
                  + f"  ({len(x)} faces of {drawn})", flush=True)
            rows.append(bordered(x[:8], per_face["all_judges"][:8].bool()))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    if args.sheet:
        sheet = [F.pad(torch.from_numpy(r), (0, 0, 0, 0, 0, 0, 0, 8 - len(r)), value=255) for r in rows]
        save_png(args.sheet, tile(torch.cat(sheet).numpy(), 8, scale=2, pad=2))


if __name__ == "__main__":
    main()
