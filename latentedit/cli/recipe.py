"""`latentedit replay RECIPE.json --out image.png`: the image of a studio recipe, computed by the
same function the studio server uses (latentedit.studio.recipe.run_recipe)."""
from pathlib import Path

import click

from latentedit.errors import InputError


@click.command()
@click.argument("recipe_path", type=click.Path())
@click.option("--out", required=True, type=click.Path(), help="The image (.png).")
@click.option("--model", "model_path", type=click.Path(), default=None,
              help="Model to replay with; its generator must match the recipe's. Needed unless the recipe's "
                   "model.path is \"default\" or a path inside the recipe's folder.")
@click.option("--latents-out", type=click.Path(), default=None,
              help="Also write the edited code [1, L, D] (.json SD-GAN or .npy).")
@click.option("--threads", type=int, default=None,
              help="CPU threads (default: the recipe's render.threads, which bit-exact replay needs).")
def replay(recipe_path, out, model_path, latents_out, threads):
    """Reproduce the image of a recipe saved by `latentedit studio`.

    \b
    The model: --model when given; else the recipe's model.path, honoured only when it is
    "default" (the bundled model) or a relative path inside the recipe's own folder (links
    resolved). Any other model.path (absolute, or leading out of the folder) is not opened,
    whatever it names: pass that model with --model. The whole recipe is checked against the
    model before anything is applied or rendered."""
    from latentedit.formats.atomic import write_bytes
    from latentedit.model import load_model
    from latentedit.runtime import check_threads, set_threads
    from latentedit.studio.context import RecipeContext
    from latentedit.studio.recipe import encode_png, latents_bytes, read_recipe, recipe_model_path, run_recipe

    out = Path(out)
    if out.suffix.lower() != ".png":
        raise InputError(f"--out must be a .png file, got {out}")
    if latents_out is not None and Path(latents_out).suffix not in (".json", ".npy"):
        raise InputError(f"--latents-out must end in .json or .npy, got {latents_out}")
    if threads is not None:
        check_threads(threads)
    recipe = read_recipe(recipe_path)
    if model_path is not None:
        path = Path(model_path)  # load_networks refuses a FIFO or device before opening it
    else:
        path = recipe_model_path(recipe, recipe_path)
    ctx = RecipeContext(load_model(path))  # None: the bundled model
    ctx.normalize(recipe)  # every field checked (render.threads too) before anything is applied
    if threads is None:
        threads = (recipe.get("render") or {}).get("threads", 1)
    set_threads(threads)
    res = run_recipe(recipe, ctx.G, ctx.bundle, ctx)
    write_bytes(out, encode_png(res.image))
    if latents_out is not None:
        write_bytes(latents_out, latents_bytes(res.latents, Path(latents_out).suffix[1:])[0])
    click.echo(f"wrote {out}" + (f" and {latents_out}" if latents_out else ""))
