"""Options and parsers shared by the commands: the model (--model / --random-weights, handed to a
command as one ModelChoice that loads a latentedit.Model), counts, scales, seeds and strengths,
images to invert (--input ...), and the part clusters of regions (--fit-samples, --clusters).
Command modules import from here (and from cli/inputs.py), never from each other."""
import functools
from pathlib import Path

import click

from latentedit.errors import InputError

MAX_IMAGES = 1_000_000  # images (or samples) one run may make: a typo like --n 100000000 fails at once
MAX_SCALE = 100.0  # |truncation|, |strength|: far past any useful edit, well before float overflow


# ---------------------------------------------------------------------------------------------
# Counts, scales, seeds, strengths


def check_count(n, name="--n", maximum=MAX_IMAGES):
    """A sample / image count in 1..maximum, checked before any work starts."""
    if not 1 <= n <= maximum:
        raise InputError(f"{name} must be in 1..{maximum:,} per run, got {n:,}")
    return n


def check_scale(value, name):
    """A truncation psi or edit strength: finite and at most MAX_SCALE in size."""
    if not abs(value) <= MAX_SCALE:  # also refuses NaN
        raise InputError(f"{name} must be a number in -{MAX_SCALE:g}..{MAX_SCALE:g}, got {value:g}")
    return value


def check_mapping_lr_mul(value, name="--mapping-lr-mul"):
    if value is not None and not 0 < value <= MAX_SCALE:
        raise InputError(f"{name} must be in (0, {MAX_SCALE:g}] (rosinality's --lr_mlp, usually 0.01), got {value:g}")
    return value


def parse_seeds(text, name="--seeds"):
    """'0-15' / '1,5,7-9' -> [0, ..., 15] / [1, 5, 7, 8, 9]; at most MAX_IMAGES seeds."""
    seeds = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = (int(v) for v in part.split("-", 1))
                if lo > hi:
                    raise ValueError(part)
                if len(seeds) + hi - lo + 1 > MAX_IMAGES:  # before building the list
                    raise InputError(f"{name} {text!r} names {len(seeds) + hi - lo + 1:,} seeds; "
                                     f"at most {MAX_IMAGES:,} per run")
                seeds.extend(range(lo, hi + 1))
            else:
                seeds.append(int(part))
    except InputError:
        raise
    except ValueError:
        raise InputError(f"{name} must look like 0-15 or 1,5,7-9, got {text!r}") from None
    if len(seeds) > MAX_IMAGES:
        raise InputError(f"{name} names {len(seeds):,} seeds; at most {MAX_IMAGES:,} per run")
    if not seeds or any(s < 0 or s >= 2 ** 32 for s in seeds):
        raise InputError(f"--seeds must be non-empty and in [0, 2^32), got {text!r}")
    return seeds


def sampled_seeds(n, seed, default_n=16):
    """(n, first seed) of --n / --seed (None: 16 codes from seed 0): n in 1..MAX_IMAGES and the
    seeds seed..seed+n-1 in [0, 2^32)."""
    n, seed = default_n if n is None else n, 0 if seed is None else seed
    check_count(n, "--n")
    if not 0 <= seed or seed + n > 2 ** 32:
        raise InputError(f"seeds {seed}..{seed + n - 1} must lie in [0, 2^32)")
    return n, seed


def parse_strength(text, name="--strength"):
    """'-3..3' -> (-3.0, 3.0); '2' -> (2.0, 2.0); each end finite and within +-MAX_SCALE."""
    try:
        lo, sep, hi = text.partition("..")
        lo, hi = float(lo), float(hi if sep else lo)
    except ValueError:
        raise InputError(f"{name} must look like -3..3 or 2, got {text!r}") from None
    return check_scale(lo, name), check_scale(hi, name)


# ---------------------------------------------------------------------------------------------
# The model


class ModelChoice:
    """What --model / --random-weights chose (the flags checked at once); `load()` makes the
    latentedit.Model, after the command's own cheap checks."""

    def __init__(self, path, random_weights, resolution, channel_base, channel_max, weights_seed, mapping_lr_mul):
        check_mapping_lr_mul(mapping_lr_mul)
        if random_weights and path:
            raise InputError("pass either --model or --random-weights, not both")
        self.path, self.random_weights, self.weights_seed = path, random_weights, weights_seed
        self.architecture = {"resolution": resolution, "channel_base": channel_base, "channel_max": channel_max}
        self.mapping_lr_mul = mapping_lr_mul

    @property
    def label(self):
        """How run records name the model: its --model path, "random" or "default"."""
        return str(self.path or ("random" if self.random_weights else "default"))

    def load(self, default_path=None):
        """The Model: a random generator, --model, else `default_path` (e.g. an encoder checkpoint
        that holds its generator), else the bundled default."""
        from latentedit.model import Model, load_model

        if self.random_weights:
            from latentedit.models.stylegan2 import Generator, GeneratorConfig
            from latentedit.runtime import seeded

            with seeded(self.weights_seed):
                G = Generator(GeneratorConfig(**self.architecture))
            return Model(G.eval(), source=f"random-weights(seed={self.weights_seed})")
        overrides = {"mapping_lr_multiplier": self.mapping_lr_mul} if self.mapping_lr_mul is not None else None
        return load_model(self.path if self.path is not None else default_path, overrides=overrides)


def model_options(f):
    """--model PATH, or --random-weights with an architecture (for trying things out); the
    command gets them as one argument, `model_choice` (a ModelChoice)."""
    options = [
        click.option("--model", "model_path", type=click.Path(), default=None,
                     help="Bundle folder, rosinality .pt or NVlabs .pkl (default: the bundled model)."),
        click.option("--random-weights", is_flag=True, help="Use a randomly initialised generator."),
        click.option("--resolution", type=int, default=256, show_default=True, help="With --random-weights."),
        click.option("--channel-base", type=int, default=32768, show_default=True, help="With --random-weights."),
        click.option("--channel-max", type=int, default=512, show_default=True, help="With --random-weights."),
        click.option("--weights-seed", type=int, default=0, show_default=True, help="With --random-weights."),
        click.option("--mapping-lr-mul", type=float, default=None,
                     help="Mapping lr multiplier, for rosinality files trained with a non-default --lr_mlp."),
    ]

    @functools.wraps(f)
    def command(*args, model_path, random_weights, resolution, channel_base, channel_max, weights_seed,
                mapping_lr_mul, **kwargs):
        choice = ModelChoice(model_path, random_weights, resolution, channel_base, channel_max, weights_seed,
                             mapping_lr_mul)
        return f(*args, model_choice=choice, **kwargs)

    for option in reversed(options):
        command = option(command)
    return command


def parts_source(model, given=None, part=None):
    """The Model to ask for a part (directions, an evaluator): its parts from `given` (--boundaries /
    --evaluators BUNDLE), else the model itself when its bundle holds `part` (any bundle when part
    is None), else the bundled default's (a foreign or random generator borrows those)."""
    from latentedit.model import default_parts

    if given:
        return model.with_parts(given)
    if model.parts is not None and (part is None or model.has(part)):
        return model
    return model.with_parts(default_parts())


# ---------------------------------------------------------------------------------------------
# Images to invert (--input ...), shared by edit and synthesize


align_option = click.option(
    "--align", is_flag=True,
    help="Unaligned photos: find the face (dlib's 68 landmarks), crop it as FFHQ was aligned, and also write "
         "the result pasted back into the photo (needs `pip install 'latentedit[align]'`).")


def input_options(f):
    """--input IMG|DIR (repeatable), --invert-mode, --invert-steps, --encoder: edit the codes of images."""
    from latentedit.edit.inversion import MODES

    options = [
        click.option("--input", "input_paths", type=click.Path(), multiple=True,
                     help="Image file or folder (repeatable): invert these images and edit their codes."),
        click.option("--invert-mode", type=click.Choice(MODES), default="encoder", show_default=True,
                     help="How --input images are inverted (see `latentedit invert`)."),
        click.option("--invert-steps", type=int, default=300, show_default=True,
                     help="Optimisation steps of --invert-mode project / hybrid."),
        click.option("--encoder", "encoder_path", type=click.Path(), default=None,
                     help="Bundle holding the encoder for --input, or an e4e / pSp / ReStyle checkpoint "
                          "(default: the model bundle)."),
        align_option,
    ]
    for option in reversed(options):
        f = option(f)
    return f


def check_input_options(input_paths, invert_steps):
    """Refuses --invert-* / --encoder without --input, and bad --invert-steps."""
    ctx = click.get_current_context()
    if not input_paths:
        for name in ("invert_mode", "invert_steps", "encoder_path", "align"):
            if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE:
                flag = "--encoder" if name == "encoder_path" else "--" + name.replace("_", "-")
                raise InputError(f"{flag} applies to images given with --input")
    if invert_steps < 1:
        raise InputError(f"--invert-steps must be >= 1, got {invert_steps}")


def model_for_encoder(encoder_path):
    """The default --model when --encoder is a checkpoint file: an e4e / pSp / ReStyle file holds
    its decoder (None otherwise: the bundled model)."""
    return encoder_path if encoder_path is not None and Path(encoder_path).is_file() else None


# ---------------------------------------------------------------------------------------------
# Part clusters (regions), shared by mask, transfer, layers and edit --region


def component_options(f):
    """--fit-samples, --clusters: how the part clusters are fitted when the command starts."""
    options = [
        click.option("--fit-samples", type=int, default=64, show_default=True,
                     help="Part clusters: samples whose generator features are clustered."),
        click.option("--clusters", type=int, default=64, show_default=True,
                     help="Part clusters: k of the spherical k-means (named by the face parser)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def fit_components(model, fit_samples, clusters):
    """A named ComponentModel for model.G, as Model.components() fits it (the 32 and 64 px blocks
    where G has them, named by the model's own face parser, else the bundled default's), with
    --fit-samples samples and --clusters clusters."""
    if fit_samples < 1:
        raise InputError(f"--fit-samples must be >= 1, got {fit_samples}")
    if clusters < 2:
        raise InputError(f"--clusters must be >= 2, got {clusters}")
    from latentedit.edit import regions as rg

    parser = parts_source(model, part="parser").evaluator("parser")
    click.echo(f"fitting {clusters} part clusters on {fit_samples} samples ...")
    return rg.component_clusters(model.G, n_samples=fit_samples, k=clusters, layer_res=rg.component_layers(model.G),
                                 parser=parser)


def check_region_name(name, flag="--region"):
    from latentedit.edit.regions import REGIONS

    if name not in REGIONS:
        raise InputError(f"{flag}: unknown region {name!r}; known: {', '.join(REGIONS)}")
    return name


def progress_bar(items, label):
    """`latentedit.runs`' progress callback: a click progress bar on stderr."""
    with click.progressbar(list(items), label=label, file=None) as bar:
        yield from bar


def threads_option(f):
    """--threads N for a command: checked and applied before the command runs (runtime.set_threads);
    without it torch keeps its default (one thread per core)."""
    from latentedit.runtime import set_threads

    @functools.wraps(f)
    def command(*args, threads=None, **kwargs):
        set_threads(threads)
        return f(*args, **kwargs)
    return click.option("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's, one per core).")(command)
