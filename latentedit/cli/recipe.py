"""`latentedit replay RECIPE.json --out image.png`: the image of a studio recipe, computed by the
same function the studio server uses (latentedit.studio.recipe.run_recipe)."""
from pathlib import Path

import click

from latentedit.errors import InputError


@click.command()
@click.argument("recipe_path", type=click.Path())
@click.option("--out", required=True, type=click.Path(), help="The image (.png).")
@click.option("--model", "model_path", type=click.Path(), default=None,
              help="Model to replay with (default: the one the recipe names); its generator must match the recipe's.")
@click.option("--latents-out", type=click.Path(), default=None,
              help="Also write the edited code [1, L, D] (.json SD-GAN or .npy).")
@click.option("--threads", type=int, default=None,
              help="CPU threads (default: the recipe's render.threads, which bit-exact replay needs).")
def replay(recipe_path, out, model_path, latents_out, threads):
    """Reproduce the image of a recipe saved by `latentedit studio`."""
    from latentedit.formats import DEFAULT_BUNDLE, bundle, load_generator
    from latentedit.formats.atomic import write_bytes
    from latentedit.runtime import set_threads
    from latentedit.studio.recipe import encode_png, latents_bytes, read_recipe, RecipeContext, run_recipe

    out = Path(out)
    if out.suffix.lower() != ".png":
        raise InputError(f"--out must be a .png file, got {out}")
    if latents_out is not None and Path(latents_out).suffix not in (".json", ".npy"):
        raise InputError(f"--latents-out must end in .json or .npy, got {latents_out}")
    recipe = read_recipe(recipe_path)
    if model_path is None:
        named = (recipe.get("model") or {}).get("path") if isinstance(recipe.get("model"), dict) else None
        model_path = None if named in (None, "default") else named
    if threads is None:
        threads = (recipe.get("render") or {}).get("threads", 1) if isinstance(recipe.get("render"), dict) else 1
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise InputError(f"threads must be an integer >= 1, got {threads!r}")
    set_threads(threads)  # bounded: far past the cores OpenMP crashes
    path = Path(model_path) if model_path is not None else DEFAULT_BUNDLE
    G = load_generator(path)
    bundle_path = path if bundle.is_bundle(path) else None
    ctx = RecipeContext(G, bundle_path, model_path)
    res = run_recipe(recipe, G, bundle_path, ctx)
    write_bytes(out, encode_png(res.image))
    if latents_out is not None:
        write_bytes(latents_out, latents_bytes(res.latents, Path(latents_out).suffix[1:])[0])
    click.echo(f"wrote {out}" + (f" and {latents_out}" if latents_out else ""))
