"""latentedit studio: a local web page for editing faces, and the recipes that replay its edits.

    from latentedit.studio import Studio, make_server
    server = make_server(Studio(), "127.0.0.1", 8000)     # what `latentedit studio` runs
    server.serve_forever()

    from latentedit.studio import RecipeContext, read_recipe, render_recipe
    ctx = RecipeContext(le.load_model(path))          # the model, and the studio's stage caches
    image = render_recipe(read_recipe("recipe.json"), ctx.G, ctx.bundle, ctx)   # what `latentedit replay` runs
"""
from latentedit.studio.context import RecipeContext
from latentedit.studio.recipe import (dump_recipe, encode_png, normalize_recipe, read_recipe, recipe_mask,
                                      render_recipe, run_recipe)

__all__ = ["RecipeContext", "Studio", "dump_recipe", "encode_png", "make_server", "normalize_recipe", "read_recipe",
           "recipe_mask", "render_recipe", "run_recipe"]


def __getattr__(name):  # the server module is imported only when asked for
    if name in ("Studio", "make_server"):
        from latentedit.studio import server

        return getattr(server, name)
    raise AttributeError(name)
