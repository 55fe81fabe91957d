"""`latentedit train ...`: training runs (single process, or one process per rank under torchrun)."""
import json

import click
import torch

from latentedit.errors import InputError


@click.group()
def train():
    """Train networks on the synthetic world."""


@train.command()
@click.option("--out", required=True, type=click.Path(), help="Run folder: state, samples, log, bundle/.")
@click.option("--resolution", type=int, default=64, show_default=True)
@click.option("--channel-base", type=int, default=4096, show_default=True)
@click.option("--channel-max", type=int, default=256, show_default=True)
@click.option("--n-mlp", type=int, default=8, show_default=True)
@click.option("--batch", type=int, default=32, show_default=True, help="Total over all processes.")
@click.option("--kimg", type=float, default=500, show_default=True, help="Train until this many thousand reals.")
@click.option("--snapshot-kimg", type=float, default=10, show_default=True)
@click.option("--r1-gamma", type=float, default=None, help="Default: 0.0002 * resolution^2 / batch.")
@click.option("--bf16", is_flag=True, help="bf16 autocast for the main G and D passes.")
@click.option("--resume", is_flag=True, help="Continue from the run folder's last state.")
@click.option("--init-from", type=click.Path(), default=None,
              help="Warm start from a bundle with G and D (e.g. checkpoints/default); fresh optimiser state.")
@click.option("--threads", type=int, default=None, help="torch CPU threads per process.")
def gan(out, resolution, channel_base, channel_max, n_mlp, batch, kimg, snapshot_kimg, r1_gamma, bf16, resume,
        init_from, threads):
    """StyleGAN2 on world renders: `latentedit train gan --out runs/NAME [--resume]`."""
    from pathlib import Path

    from latentedit.train.gan import GANConfig, GANTrainer, init_distributed

    if threads:
        torch.set_num_threads(threads)
    if (Path(out) / "state.json").exists() and not resume:
        raise InputError(f"{out} already holds a run: pass --resume to continue it, or choose another --out")
    if snapshot_kimg <= 0 or kimg <= 0:
        raise InputError("--kimg and --snapshot-kimg must be positive")
    given = dict(resolution=resolution, channel_base=channel_base, channel_max=channel_max, n_mlp=n_mlp,
                 batch=batch, r1_gamma=r1_gamma, bf16=bf16)
    saved_path = Path(out) / "config.json"
    if resume and saved_path.exists():
        # A resumed run keeps its own configuration; a flag given on the command line must agree with it.
        saved = json.loads(saved_path.read_text())
        ctx = click.get_current_context()
        for name, value in given.items():
            explicit = ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
            if explicit and saved.get(name) != value:
                raise InputError(f"--{name.replace('_', '-')} {value} conflicts with the run's saved {saved.get(name)}")
        cfg = GANConfig(**saved)
    else:
        cfg = GANConfig(**given)
    rank, world_size, device = init_distributed()
    trainer = GANTrainer(cfg, out, device=device, rank=rank, world_size=world_size)
    if resume and trainer.resume():
        if rank == 0:
            click.echo(f"resumed at {trainer.nimg / 1000:.1f} kimg")
    elif init_from:
        trainer.init_from(init_from)
    trainer.train(kimg, snapshot_kimg=snapshot_kimg, progress=click.echo)
