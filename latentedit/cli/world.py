"""`latentedit world ...`: the synthetic 3D face world."""
import os

import click

from latentedit.errors import InputError


@click.group()
def world():
    """The synthetic 3D face world."""


@world.command()
@click.option("--n", "n", type=int, default=64, show_default=True, help="number of faces")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", required=True, help="grid .png, or a folder for one PNG per face")
@click.option("--labels", is_flag=True, help="also write colour-coded label maps")
@click.option("--resolution", type=int, default=64, show_default=True)
@click.option("--glasses", type=click.Choice(["none", "frame", "sun"]), default=None,
              help="force glasses (default: sampled)")
@click.option("--mask", type=click.Choice(["none", "on"]), default=None, help="force a mask")
@click.option("--hat", type=click.Choice(["none", "on"]), default=None, help="force a hat")
@click.option("--p-glasses", type=float, default=None, help="probability of frame glasses")
@click.option("--p-sunglasses", type=float, default=None, help="probability of sunglasses")
@click.option("--p-mask", type=float, default=None, help="probability of a surgical mask")
@click.option("--p-hat", type=float, default=None, help="probability of a hat")
@click.option("--scale", type=int, default=1, show_default=True, help="grid upscaling (nearest)")
@click.option("--cols", type=int, default=8, show_default=True, help="grid columns")
def render(n, seed, out, labels, resolution, glasses, mask, hat, p_glasses, p_sunglasses, p_mask,
           p_hat, scale, cols):
    """Render N faces of SEED as a grid PNG (or a folder of PNGs), with label maps."""
    from latentedit import world as W
    from latentedit.formats.images import save_png, tile, to_uint8
    from latentedit.world.grid import colorize

    if not 1 <= n <= 100_000:
        raise InputError(f"--n must be in [1, 100000], not {n}")
    if not 1 <= scale <= 16 or not 1 <= cols <= 256:
        raise InputError("--scale must be in [1, 16] and --cols in [1, 256]")
    as_grid = out.lower().endswith(".png")
    folder = os.path.dirname(os.path.abspath(out)) if as_grid else os.path.abspath(out)
    if as_grid and not os.path.isdir(folder):
        raise InputError(f"--out: folder {folder} does not exist")
    if not as_grid:
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise InputError(f"--out: {folder} is a file, not a folder")
        if not os.path.isdir(os.path.dirname(folder)):
            raise InputError(f"--out: parent folder of {folder} does not exist")
        os.makedirs(folder, exist_ok=True)
    overrides = {k: v for k, v in (("glasses", glasses), ("mask", mask), ("hat", hat)) if v}
    overrides.update({k: v for k, v in (("p_glasses", p_glasses), ("p_sunglasses", p_sunglasses),
                                        ("p_mask", p_mask), ("p_hat", p_hat)) if v is not None})
    chunks = []
    for start in range(0, n, 256):  # bounded memory for large N
        batch = W.sample(min(256, n - start), seed=seed, resolution=resolution, start=start,
                         **overrides)
        chunks.append((to_uint8(batch.image), colorize(batch.labels) if labels else None))
    if as_grid:
        import numpy as np

        images = np.concatenate([c[0] for c in chunks])
        save_png(out, tile(images, min(cols, n), scale, pad=1))
        written = [out]
        if labels:
            lab_path = out[:-4] + "_labels.png"
            save_png(lab_path, tile(np.concatenate([c[1] for c in chunks]), min(cols, n), scale, pad=1))
            written.append(lab_path)
        click.echo(" ".join(written))
    else:
        i = 0
        for images, label_maps in chunks:
            for j in range(len(images)):
                save_png(os.path.join(folder, f"{i:04d}.png"), images[j])
                if labels:
                    save_png(os.path.join(folder, f"{i:04d}_labels.png"), label_maps[j])
                i += 1
        click.echo(f"{n} faces -> {folder}")
