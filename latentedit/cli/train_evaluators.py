"""`latentedit train evaluators`: the attribute classifier, identity embedder, face parser and
unsup3d-layout 3D encoder on world renders (resumable; single process or torchrun)."""
import click

from latentedit.errors import InputError
from latentedit.cli.options import threads_option
from latentedit.train.evaluators import EVALUATOR_NAMES


@click.command()
@click.option("--out", required=True, type=click.Path(), help="Run folder: one sub-folder per evaluator, pools, bundle/.")
@click.option("--kind", "kinds", multiple=True, type=click.Choice(EVALUATOR_NAMES + ("all",)),
              default=("all",), show_default=True, help="Which evaluators (repeatable).")
@click.option("--steps", type=int, default=None, help="Optimizer steps (default per evaluator).")
@click.option("--batch", type=int, default=64, show_default=True, help="Total over all processes.")
@click.option("--lr", type=float, default=None, help="Default per evaluator.")
@click.option("--n-train", type=int, default=6000, show_default=True, help="Training identities (2 views each).")
@click.option("--n-eval", type=int, default=500, show_default=True, help="Held-out identities.")
@click.option("--eval-every", type=int, default=250, show_default=True)
@click.option("--export", "export_path", type=click.Path(), default=None,
              help="Add the trained evaluators to this bundle folder (default: OUT/bundle).")
@click.option("--resume/--no-resume", default=True, show_default=True, help="Continue runs found in OUT.")
@threads_option
def evaluators(out, kinds, steps, batch, lr, n_train, n_eval, eval_every, export_path, resume):
    """Train evaluators: `latentedit train evaluators --out runs/evaluators [--kind parser]`."""
    from pathlib import Path

    from latentedit.train.distributed import init_distributed, rank
    from latentedit.train.evaluators import export_evaluators, train_evaluator

    init_distributed("gloo")  # under torchrun: one CPU process per rank
    kinds = EVALUATOR_NAMES if "all" in kinds else tuple(dict.fromkeys(kinds))
    default_steps = {"attributes": 2500, "identity": 2000, "parser": 700, "face3d": 900}
    if steps is not None and steps < 1:
        raise InputError("--steps must be positive")
    for kind in kinds:
        metrics = train_evaluator(kind, out, steps=steps or default_steps[kind], batch=batch, lr=lr,
                                  n_train=n_train, n_eval=n_eval, eval_every=eval_every, resume=resume,
                                  progress=click.echo)
        click.echo(f"{kind}: " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    if rank() == 0:
        dst = export_path or str(Path(out) / "bundle")
        names = export_evaluators(out, dst)
        click.echo(f"exported {names} to {dst}")
