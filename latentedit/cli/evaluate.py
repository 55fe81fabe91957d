"""`latentedit evaluate generator`: world-FID / KID / precision-recall, attribute rates and
classifier confidence of a generator's samples, against world renders."""
import json
from pathlib import Path

import click

from latentedit.cli.options import check_count, check_scale, parts_source, threads_option
from latentedit.errors import FormatError


@click.group()
def evaluate():
    """Measure models against the synthetic world."""


@evaluate.command()
@click.option("--model", "model_path", type=click.Path(), default=None,
              help="Bundle folder, rosinality .pt or NVlabs .pkl (default: the bundled model).")
@click.option("--evaluators", "evaluators_path", type=click.Path(), default=None,
              help="Bundle holding the evaluators (default: --model if it holds them, else the bundled model).")
@click.option("--n", type=int, default=10000, show_default=True, help="Generated (and reference) images.")
@click.option("--truncation", type=float, default=1.0, show_default=True)
@click.option("--batch", type=int, default=100, show_default=True)
@click.option("--no-floor", is_flag=True, help="Skip the real-vs-real floor (halves the renders).")
@click.option("--out", type=click.Path(), default="metrics.json", show_default=True, help="JSON report.")
@threads_option
@click.option("--record", is_flag=True, help="Also store the report in the model bundle's figures.")
def generator(model_path, evaluators_path, n, truncation, batch, no_floor, out, record):
    """World-FID, KID, precision / recall, attribute rates and confidence of generated samples."""
    from latentedit.formats import bundle
    from latentedit.formats.atomic import write_text
    from latentedit.formats.evaluators import EVALUATOR_KINDS
    from latentedit.model import load_model
    from latentedit.metrics import evaluate_generator

    check_count(n, "--n")
    check_scale(truncation, "--truncation")
    model = load_model(model_path)
    G = model.G.eval()
    source = parts_source(model, evaluators_path, "attributes")  # --evaluators, the model's bundle, the default's
    if not source.has("attributes"):
        raise FormatError(f"no attribute classifier found in {[str(source.parts)] if source.parts else []}; "
                          "pass --evaluators BUNDLE (see `latentedit train evaluators`)")
    held = bundle.read_manifest(source.parts)["networks"]
    evaluators = source.evaluators([name for name, e in held.items() if e.get("kind") in EVALUATOR_KINDS])
    report = evaluate_generator(G, evaluators, n=n, truncation=truncation, batch=batch, floor=not no_floor,
                                progress=click.echo)
    write_text(Path(out), json.dumps(report, indent=1) + "\n")
    if record:
        if model.parts is None:
            raise FormatError(f"--record needs the model to be a bundle folder, not {model.source}")
        bundle.update_manifest(model.parts, figures={"generator": report})
    click.echo(f"world-FID {report['world_fid']:.3f}" +
               (f" (real-vs-real floor {report['world_fid_floor']:.3f})" if "world_fid_floor" in report else "") +
               f"  KID {report['kid']:.4f}  precision {report['precision']:.3f}  recall {report['recall']:.3f}")
    click.echo(f"confidence generated {report['confidence_generated']:.3f} / real {report['confidence_real']:.3f}"
               f" = {report['confidence_ratio']:.3f}")
    for k, v in report["rates_generated"].items():
        click.echo(f"  {k:14s} generated {100 * v:5.1f}%  prior {100 * report['rates_prior'][k]:5.1f}%  "
                   f"(classifier on renders {100 * report['rates_real_classifier'][k]:5.1f}%)")
    for k, v in report["kind_fid"].items():
        floor, counts = report.get("kind_fid_floor", {}).get(k), report["kind_counts"][k]
        ratio, matched = (("-" if r is None else f"{r:.2f}x") for r in
                          (report["kind_fid_ratio"][k], report["kind_fid_ratio_matched"][k]))
        figure = "-" if v is None else f"{v:.3f} ({ratio} overall, {matched} at these counts)"
        click.echo(f"  {k:14s} FID {figure}: {counts['generated']} generated vs {counts['renders']} renders"
                   + ("" if floor is None else f", floor {floor:.3f}"))
    click.echo("precision by kind (share inside the world's manifold): " + ", ".join(
        f"{k} {'-' if v is None else f'{v:.3f}'}" for k, v in report["kind_precision"].items()))
    click.echo(f"wrote {out}")
