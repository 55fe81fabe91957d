"""`latentedit train ...`: training runs (single process, or one process per rank under torchrun)."""

import dataclasses

import click

from latentedit.cli.options import threads_option
from latentedit.errors import InputError


@click.group()
def train():
    """Train networks on the synthetic world."""


@train.command()
@click.option("--out", required=True, type=click.Path(), help="Run folder: state, samples, log, bundle/.")
@click.option("--resolution", type=int, default=64, show_default=True)
@click.option("--channel-base", type=int, default=4096, show_default=True)
@click.option("--channel-max", type=int, default=256, show_default=True)
@click.option("--d-channel-base", type=int, default=None,
              help="The discriminator's channel_base, when it should differ from G's (default: --channel-base); "
                   "a wider D than a warm start's is widened as the same function.")
@click.option("--n-mlp", type=int, default=8, show_default=True)
@click.option("--batch", type=int, default=32, show_default=True, help="Total over all processes.")
@click.option("--kimg", type=float, default=500, show_default=True, help="Train until this many thousand reals.")
@click.option("--snapshot-kimg", type=float, default=10, show_default=True,
              help="State, latest bundle (bundle/) and samples every this many kimg.")
@click.option("--keep-kimg", type=float, default=50, show_default=True,
              help="Also keep the bundle in snapshots/NNNNNNk at the first snapshot on or past every this "
                   "many kimg (FID swings between snapshots: evaluate the kept ones and pick); 0: keep none. "
                   "Not saved with the run: give it again on --resume.")
@click.option("--r1-gamma", type=float, default=None,
              help="R1 weight; default: 0.0002 * resolution^2 / batch. Given with --resume, changes it from there on.")
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True,
              help="bf16: the generator's bf16 compute path and bf16 autocast for D (1.6x a step on AMD Zen 4; "
                   "fp32 instead, with a note, on CPUs where bf16 measures slower, e.g. AVX2 only). "
                   "Given with --resume, switches a run's precision from there on.")
@click.option("--bf16", is_flag=True, hidden=True, help="Same as --precision bf16.")
@click.option("--lr", type=float, default=0.0025, show_default=True,
              help="Adam learning rate of G and D. Given with --resume, changes it from there on (a late-training decay).")
@click.option("--ema-kimg", type=float, default=None,
              help="Half-life of the generator EMA in thousand images (default: batch * 10 / 32). "
                   "Given with --resume, changes it from there on.")
@click.option("--world-prior", "world_prior", multiple=True, metavar="NAME=P",
              help="Sampling probability of the training renders, e.g. p_glasses=0.24 (names: p_glasses "
                   "frame glasses, p_sunglasses, p_mask, p_hat, p_beard; repeatable). A generator that draws "
                   "an accessory less often than the world can be shown it more often. Given with --resume, "
                   "replaces the run's set from there on.")
@click.option("--labels", default="", metavar="GROUP,...",
              help="Train conditioned on these world labels (glasses, mask, hat, beard, hair_style; comma-"
                   "separated): G draws each face's label from its z at the prior, D sees every image's label "
                   "(a projection discriminator). An unconditional --init-from bundle gains the label inputs "
                   "as the same function. Default: unconditional.")
@click.option("--label-lr-mul", type=float, default=1.0, show_default=True,
              help="With --labels: the label tensors' learning rate (G's per-class W offsets, D's label projection) "
                   "over --lr; a warm start's label inputs start at zero. Given with --resume, changes it from there on.")
@click.option("--label-probe", type=click.IntRange(min=0), default=0, show_default=True, metavar="N",
              help="With --labels and an unconditional --init-from bundle: D's new label projection starts as a "
                   "linear probe of its own features on N world renders (e.g. 2048) instead of zero, so that D "
                   "scores each face's label from the first step (latentedit/train/label_probe.py).")
@click.option("--label-pair-weight", type=float, default=0.0, show_default=True,
              help="With --labels: weight of a term asking a code drawn with one accessory label switched "
                   "(glasses, mask, hat, beard) to stay the same face outside the accessory "
                   "(latentedit/train/label_pairs.py); 0: off. Given with --resume, changes it from there on.")
@click.option("--resume", is_flag=True, help="Continue from the run folder's last state.")
@click.option("--init-from", type=click.Path(), default=None,
              help="Warm start from a bundle with G and D (e.g. checkpoints/default); fresh optimiser state. "
                   "A bundle narrower than --channel-base / --channel-max (or without --labels) is widened so "
                   "that G starts as the same function (latentedit/train/widen.py).")
@threads_option
def gan(out, resolution, channel_base, channel_max, d_channel_base, n_mlp, batch, kimg, snapshot_kimg, keep_kimg, r1_gamma,
        precision, bf16, lr, ema_kimg, world_prior, labels, label_lr_mul, label_probe, label_pair_weight, resume,
        init_from):
    """StyleGAN2 on world renders: `latentedit train gan --out runs/NAME [--resume]`."""
    from latentedit.runtime import fast_precision
    from latentedit.train.distributed import init_distributed
    from latentedit.train.gan import GANConfig, GANTrainer
    from latentedit.train.state import check_new_run, run_config, start_run

    check_new_run(out, resume)
    if label_probe and not init_from and not resume:
        raise InputError("--label-probe fits a warm start's new label projection: give --init-from an unconditional bundle")
    if snapshot_kimg <= 0 or kimg <= 0:
        raise InputError("--kimg and --snapshot-kimg must be positive")
    if keep_kimg < 0:
        raise InputError("--keep-kimg must be 0 (keep none) or positive")
    given = dict(resolution=resolution, channel_base=channel_base, channel_max=channel_max,
                 d_channel_base=d_channel_base, n_mlp=n_mlp,
                 batch=batch, r1_gamma=r1_gamma, bf16=bf16 or precision == "bf16", lr=lr, ema_kimg=ema_kimg,
                 world_overrides=_world_prior(world_prior),
                 labels=[name.strip() for name in labels.split(",") if name.strip()], label_lr_mul=label_lr_mul,
                 label_probe=label_probe, label_pair_weight=label_pair_weight)
    asked = _asked(dict(given, precision=precision, world_prior=world_prior))
    if "world_prior" in asked:
        asked.add("world_overrides")
    if "precision" in asked:  # --precision sets the config's bf16
        asked.add("bf16")
    # Precision, lr, EMA, R1 weight, the renders' prior and the label rate / pair weight may change on
    # resume: the data stream's seed and position, latents and schedule stay the run's.
    cfg = run_config(GANConfig, out, given, asked, resume,
                     changes=("bf16", "lr", "ema_kimg", "r1_gamma", "world_overrides", "label_lr_mul",
                              "label_pair_weight"),
                     what="GAN-training")
    rank, world_size, device = init_distributed()
    # bf16 is asked for speed: where the CPU has no bf16 arithmetic it is the slower path, so this
    # machine computes in fp32 (the log says so) while config.json keeps bf16 for the next machine.
    bf16 = fast_precision("bf16" if cfg.bf16 else "fp32", device, note=lambda text: click.echo(text, err=True))
    trainer = GANTrainer(cfg, out, device=device, rank=rank, world_size=world_size, bf16=bf16 == "bf16")
    if start_run(trainer, resume, init_from) and rank == 0:
        click.echo(f"resumed at {trainer.nimg / 1000:.1f} kimg")
    if getattr(trainer, "label_probe_accuracy", None) and rank == 0:
        click.echo("label probe: D's projection fitted, accuracy per group on its renders (in-sample) "
                   + ", ".join(f"{name} {a:.3f}" for name, a in zip(cfg.labels, trainer.label_probe_accuracy)))
    elif label_probe and init_from and not resume and rank == 0:
        click.echo("note: --label-probe skipped: the bundle's D already has a label projection", err=True)
    trainer.train(kimg, snapshot_kimg=snapshot_kimg, progress=click.echo, keep_kimg=keep_kimg)


# -- shared by the offset and encoder runs: a run folder of one trainer over a bundle -------------

def _open_run(out, resume, steps, snapshot, bundle_path):
    """Checks the flags common to bundle-based runs; returns the source bundle folder."""
    from latentedit.train.state import open_bundle_run

    return open_bundle_run(out, resume, steps, snapshot, bundle_path)


def _world_prior(pairs):
    """--world-prior NAME=P pairs -> {NAME: P} (GANConfig checks the names and values)."""
    return _number_pairs("--world-prior", pairs, "NAME=VALUE, e.g. p_glasses=0.24")


def _number_pairs(option, pairs, form):
    """NAME=VALUE pairs of `option` -> {NAME: float VALUE}; one error line (saying `form`) for a
    malformed pair."""
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not (sep and name):
            raise InputError(f"{option} {pair!r}: expected {form}")
        try:
            out[name] = float(value)
        except ValueError:
            raise InputError(f"{option} {pair!r}: {value!r} is not a number") from None
    return out


def _asked(given, *always):
    """The names in `given` set on the command line (not left at their defaults), and `always`."""
    ctx = click.get_current_context()
    commandline = click.core.ParameterSource.COMMANDLINE
    return {name for name in given if ctx.get_parameter_source(name) == commandline} | set(always)


def _loss_weights(config_cls, pairs):
    """--weight NAME=VALUE pairs -> {"w_NAME": value} for the weights config_cls has."""
    known = sorted(f.name[2:] for f in dataclasses.fields(config_cls) if f.name.startswith("w_"))
    out = {}
    form = f"LOSS=VALUE with LOSS one of {', '.join(known)}"
    for pair in pairs:
        name = pair.partition("=")[0]
        if name not in known:
            raise InputError(f"--weight {pair!r}: expected {form}")
        value = _number_pairs("--weight", [pair], form)[name]
        if not value >= 0:
            raise InputError(f"--weight {pair!r}: a weight must be >= 0")
        out[f"w_{name}"] = value
    return out


def _lead():
    """True on the process that writes (rank 0; the only one without torchrun)."""
    from latentedit.train.distributed import rank

    return rank() == 0


def run_options(default_steps, default_snapshot, bundle_help, export_help):
    options = [
        click.option("--bundle", "bundle_path", type=click.Path(), default=None, help=bundle_help),
        click.option("--out", required=True, type=click.Path(), help="Run folder: state, samples, log."),
        click.option("--steps", type=int, default=default_steps, show_default=True,
                     help="Train until this step (resumed runs too)."),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--snapshot", type=int, default=default_snapshot, show_default=True,
                     help="Save state and samples every N steps."),
        threads_option,
        click.option("--resume", is_flag=True, help="Continue from the run folder's last state."),
        click.option("--init-from", type=click.Path(), default=None,
                     help="Warm start a new run from this bundle's trained network (e.g. the one made "
                          "for an earlier generator of the same GAN run); fresh optimiser state."),
        click.option("--export", "export_path", type=click.Path(), default=None, help=export_help),
    ]

    def wrap(f):
        for option in reversed(options):
            f = option(f)
        return f
    return wrap


@train.command()
@click.option("--kind", required=True,
              help="mask | frame_glasses | sunglasses (or SD-GAN's glasses, with --normal for frame glasses).")
@click.option("--normal", is_flag=True, help="With --kind glasses: frame (normal) glasses instead of sunglasses.")
@click.option("--batch", type=int, default=16, show_default=True, help="A multiple of 4.")
@click.option("--distance", type=float, default=3.0, show_default=True,
              help="The prior's target signed distance from the boundary plane.")
@click.option("--inverted-fraction", type=float, default=0.0, show_default=True,
              help="Share of each batch taken from the bundle encoder's codes of world renders (the codes "
                   "photos arrive with) instead of sampled W codes. Given with --resume, it changes the run's "
                   "share from then on (a fine-tune); without it a resumed run keeps its own.")
@click.option("--condition", multiple=True,
              help="A boundary in the bundle (repeatable) the prior's direction is made orthogonal to "
                   "(InterfaceGAN's conditional manipulation), e.g. sunglasses for a mask prior that also "
                   "brings sunglasses.")
@click.option("--prior", type=click.Choice(["boundary", "label"]), default="boundary", show_default=True,
              help="The prior moves each code along the boundary's normal, or along the generator's own label "
                   "vector for the kind (a generator trained with --labels) until the boundary's --distance.")
@click.option("--realism-label", is_flag=True,
              help="The realism term under the conditional discriminator's label for the kind (train gan --labels).")
@click.option("--composite", is_flag=True,
              help="Every loss judges the edit composited into the origin inside the accessory's region, as "
                   "`synthesize` delivers it (the face around it is then the origin's whatever the offset does).")
@click.option("--weight", "weights", multiple=True, metavar="LOSS=VALUE",
              help="A loss term's weight (repeatable), e.g. identity=3: class, visible, identity, attributes, "
                   "realism, outside, template, clarity, see_through, share and contrast (frame glasses), crisp "
                   "and eyes (masks), offset. A new run's setting.")
@run_options(1500, 250, "Bundle with G, D, the evaluators and the kind's boundary (default: the bundled model).",
             "After training, write the network, its template and prior into this bundle folder.")
def offset(kind, normal, batch, distance, inverted_fraction, condition, prior, realism_label, composite, weights,
           bundle_path, out, steps, seed, snapshot, resume, init_from, export_path):
    """SD-GAN offset network for one accessory: `latentedit train offset --kind mask --out runs/NAME`."""
    from latentedit.edit.discrete import resolve_kind
    from latentedit.train.offset import OffsetConfig, OffsetTrainer
    from latentedit.train.state import run_config, train_run

    kind = resolve_kind(kind, normal)
    loss_weights = _loss_weights(OffsetConfig, weights)
    source = _open_run(out, resume, steps, snapshot, bundle_path)
    given = dict(kind=kind, batch=batch, distance=distance, seed=seed, condition=list(condition), prior=prior,
                 realism_label=realism_label, composite=composite, steps=steps, inverted_fraction=inverted_fraction)
    given.update(loss_weights)
    # a resumed run keeps its share of inverted codes unless the flag changes it (a fine-tune)
    cfg = run_config(OffsetConfig, out, given, _asked(given, "kind", "steps") | set(loss_weights), resume,
                     changes=("steps", "inverted_fraction"), what="offset-training")
    trainer = OffsetTrainer(cfg, source, out)
    figures = train_run(trainer, resume, init_from, click.echo, snapshot=snapshot)
    if export_path is not None and _lead():
        trainer.export(export_path, figures={f"offset.{kind}": figures})
        click.echo(f"exported offset_{kind} to {export_path}")


@train.command()
@click.option("--batch", type=int, default=16, show_default=True, help="Half generated images, half world renders.")
@run_options(20000, 500, "Bundle with G and the evaluators (attributes, identity) (default: the bundled model).",
             "After training, write the encoder into this bundle folder (network 'encoder').")
@click.option("--lpips", default=None, metavar="TRUNK.pth[:vgg|alex]",
              help="Perceptual loss LPIPS (torchvision's ImageNet trunk file; linear weights from the lpips "
                   "package) instead of the attribute classifier's features.")
@click.option("--arcface", type=click.Path(), default=None,
              help="Identity loss ArcFace IR-SE-50 (model_ir_se50.pth) instead of the identity embedder.")
@click.option("--real-fraction", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Share of each batch that is world renders (the rest: generated images with known codes).")
@click.option("--weight", "weights", multiple=True, metavar="LOSS=VALUE",
              help="A loss term's weight (repeatable), e.g. mse=4: mse, l1, perceptual, identity, attributes, "
                   "latent, delta, w0. A new run's setting.")
@click.option("--restyle", "restyle_steps", type=click.IntRange(0, 10), default=0, show_default=True,
              help="N > 0: a ReStyle encoder (sees the image and its current reconstruction) trained to "
                   "refine its codes N times per image; --init-from a one-pass encoder starts it as that one.")
@click.option("--width", type=click.FloatRange(0.25, 8), default=1.0, show_default=True,
              help="Multiplies the encoder's channel counts (2: 16 M parameters, about 4x its convolution "
                   "work). A new run's setting; --init-from a narrower encoder is widened, keeping what it does.")
@click.option("--lr", type=click.FloatRange(0, 1, min_open=True), default=1e-4, show_default=True,
              help="Adam's learning rate. A resumed run takes a new one given here (a decay: e.g. 2e-5 for "
                   "a converged run's last steps).")
def encoder(batch, bundle_path, out, steps, seed, snapshot, resume, init_from, export_path, lpips, arcface,
            real_fraction, weights, restyle_steps, width, lr):
    """Image -> W+ encoder (pSp / e4e, or ReStyle): `latentedit train encoder --out runs/NAME [--export BUNDLE]`."""
    from dataclasses import asdict

    from latentedit.models.encoder import EncoderConfig
    from latentedit.train.encoder import EncoderTrainConfig, EncoderTrainer
    from latentedit.train.state import run_config, train_run

    source = _open_run(out, resume, steps, snapshot, bundle_path)
    loss_weights = _loss_weights(EncoderTrainConfig, weights)
    given = dict(batch=batch, seed=seed, lpips=lpips, arcface=arcface, steps=steps, snapshot=snapshot,
                 real_fraction=real_fraction, restyle_steps=restyle_steps, lr=lr, **loss_weights)
    layout = EncoderConfig.small(width=width).to_dict()
    if width != 1:
        given["encoder"] = layout
    cfg = run_config(EncoderTrainConfig, out, given, _asked(given, "steps", "snapshot") | set(loss_weights), resume,
                     changes=("steps", "snapshot", "lr"), what="encoder-training")
    if "width" in _asked({"width": width}) and cfg.encoder["widths"] != layout["widths"]:  # a resumed run's layout
        raise InputError(f"--width {width:g} (widths {layout['widths']}) conflicts with the run's saved widths "
                         f"{cfg.encoder['widths']}")
    trainer = EncoderTrainer(cfg, source, out)
    figures = train_run(trainer, resume, init_from, click.echo)
    if export_path is not None and _lead():
        trainer.export(export_path, figures=figures)
        click.echo(f"exported the encoder (step {trainer.step}, {asdict(cfg)['encoder']['mode']}, "
                   f"progressive stage {trainer.encoder.progressive_stage}) to {export_path}")
