"""Studio recipes: one JSON document that fully describes an edit, and the one function that turns
it into an image. `latentedit studio` (the server) and `latentedit replay` (the CLI) both call
`run_recipe`, so a recipe downloaded from the page replays to the same PNG bytes.

    recipe = read_recipe("edit.json")
    ctx = RecipeContext(le.load_model(path))          # studio.context: the model and stage caches
    image = render_recipe(recipe, ctx.G, ctx.bundle, ctx)   # [1, 3, R, R] in [-1, 1]
    png = encode_png(image)

A recipe (format "latentedit-recipe", version 1):

    {"format": "latentedit-recipe", "version": 1,
     "model": {"path": "default", "generator": "<generator_hash>", "resolution": 64},
     "start": {"seed": 0, "truncation": 0.7}            # or {"latents": [512] | [L][512], "origin": "..."}
     "directions": [{"name": "smile", "strength": 1.5, "keep": ["age"], "sha256": "..."}],
     "accessory": null | {"kind": "mask" | "sunglasses" | "frame_glasses", "sha256": "..."},
     "transfer": null | {"component": "left_eye", "source": {"seed": 5, "truncation": 0.7}},
     "layers": null | {"s_ref": 1.0, "strengths": {"beard": 0.5},
                       "colours": [{"target": "hair", "rgb": [200, 40, 40]}]},
     "render": {"noise_mode": "const", "threads": 1}}

The stages, in order (each a library call):

1. start code w0 [1, L, D]: the seed's W code (truncated), or the given W / W+ code;
2. directions: w += strength * d for each direction (sorted by name), d = the bundle's boundary,
   or `Direction.orthogonal_to(*keep)` of it when conditions are kept (InterfaceGAN's
   conditional manipulation);
3. accessory: w = `model.synthesizer(kind)(w).latents` (SD-GAN's w + prior + offset), and its
   image, the edit composited into the stage-2 face as `latentedit synthesize` delivers it;
4. image: G(w) (const noise, reference path), or the accessory's composited image, or
   `regions.transfer_component(G, w, source, ...)` (feature-space blend of the source face's
   component into G(w), the accessory not composited) when a transfer is set;
5. attribute layers built once for w (`AttributeLayers`, one generation per layer at s_ref) and
   recomposited at the given strengths on top of the stage-4 image (the layers' residuals are
   added to it), then the colours in order (a layer's region, or a named region's mask from
   `model.components()`).

The latents of a recipe (`run_recipe(...).latents`) are w after stage 3; stages 3-5 act on
images, so with an accessory, a transfer or layers the image is not G(latents) alone.

Bit-for-bit agreement needs the same torch build and the same number of CPU threads (float sums
are ordered by the thread split): "render.threads" records the server's, and `latentedit replay`
uses it. Hashes of the generator, the directions and the offset network are recorded too, and a
replay against other weights is refused.
"""
import io
import json
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from latentedit.errors import FormatError, InputError
from latentedit.formats.files import read_json, regular_file
from latentedit.runtime import check_threads
from latentedit.studio.context import RecipeContext, _key

FORMAT = "latentedit-recipe"
VERSION = 1
DEFAULT_TRUNCATION = 0.7
MAX_STRENGTH = 20.0
MAX_RECIPE_BYTES = 16 << 20  # a W+ start is ~100 kB of JSON
KEYS = ("format", "version", "model", "start", "directions", "accessory", "transfer", "layers", "render", "note")


# ---------------------------------------------------------------------------------------------
# Small helpers


def _number(value, what, lo=-math.inf, hi=math.inf):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise InputError(f"{what} must be a finite number, got {json.dumps(value)[:40]}")
    if not lo <= value <= hi:
        raise InputError(f"{what} must be in [{lo:g}, {hi:g}], got {value:g}")
    return float(value)


def _integer(value, what, lo, hi):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not lo <= value < hi:
        raise InputError(f"{what} must be an integer in [{lo}, {hi}), got {json.dumps(value)[:40]}")
    return int(value)


def _object(value, what, allowed):
    if not isinstance(value, dict):
        raise InputError(f"{what} must be a JSON object, got {type(value).__name__}")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise InputError(f"{what}: unknown key(s) {unknown} (known: {', '.join(allowed)})")
    return value


def float32_list(array):
    """float32 array -> nested lists of the shortest decimals that read back to the same float32."""
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 1:
        return [float(str(v)) for v in array]
    return [float32_list(row) for row in array]


# ---------------------------------------------------------------------------------------------
# Normalising (validation; the canonical form)


def _start(value, ctx, what="start"):
    value = _object(value, what, ("seed", "truncation", "latents", "origin"))
    if ("seed" in value) == ("latents" in value):
        raise InputError(f"{what} needs either a seed (and truncation) or latents")
    if "seed" in value:
        if "origin" in value:
            raise InputError(f"{what}: 'origin' belongs to latents")
        return {"seed": _integer(value["seed"], f"{what}.seed", 0, 2 ** 32),
                "truncation": _number(value.get("truncation", DEFAULT_TRUNCATION), f"{what}.truncation", 0, 2)}
    if "truncation" in value:
        raise InputError(f"{what}: truncation applies to seeds; latents are used as they are")
    G = ctx.G
    try:
        arr = np.asarray(value["latents"], dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{what}.latents must be a list of {G.w_dim} numbers (W) or {G.num_ws} such lists (W+)") \
            from None
    if arr.dtype.kind not in "fiu":
        raise InputError(f"{what}.latents must hold numbers")
    if arr.ndim == 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.shape not in ((G.w_dim,), (G.num_ws, G.w_dim)):
        raise InputError(f"{what}.latents must be [{G.w_dim}] (W) or [{G.num_ws}, {G.w_dim}] (W+), "
                         f"got {list(arr.shape)}")
    arr32 = arr.astype(np.float32)
    if not np.isfinite(arr32).all():
        raise InputError(f"{what}.latents contains NaN, infinite or out-of-range values")
    out = {"latents": arr32}
    if "origin" in value:
        if not isinstance(value["origin"], str):
            raise InputError(f"{what}.origin must be a string")
        out["origin"] = value["origin"][:300]
    return out


def _directions(value, ctx):
    if value is None:
        return []
    if isinstance(value, dict):  # shorthand {name: strength}
        value = [{"name": k, "strength": v} for k, v in value.items()]
    if not isinstance(value, list):
        raise InputError(f"directions must be a list of {{name, strength, keep}}, got {type(value).__name__}")
    out, seen = [], set()
    for i, e in enumerate(value):
        e = _object(e, f"directions[{i}]", ("name", "strength", "keep", "sha256"))
        name = e.get("name")
        if not isinstance(name, str):
            raise InputError(f"directions[{i}].name must be a direction name")
        if name in seen:
            raise InputError(f"direction {name!r} is given twice")
        seen.add(name)
        ctx.direction(name)
        strength = _number(e.get("strength", 0.0), f"strength of {name}", -MAX_STRENGTH, MAX_STRENGTH)
        keep = e.get("keep") or []
        if not isinstance(keep, list) or not all(isinstance(k, str) for k in keep):
            raise InputError(f"keep of {name} must be a list of direction names")
        keep = sorted(set(keep))
        if name in keep:
            raise InputError(f"direction {name!r} cannot keep itself")
        for k in keep:
            ctx.direction(k)
        sha = ctx.direction_sha256(name)
        if e.get("sha256") not in (None, sha):
            raise InputError(f"direction {name!r} in this bundle differs from the one the recipe was made with")
        if strength != 0:
            out.append({"name": name, "strength": strength, "keep": keep, "sha256": sha})
    return sorted(out, key=lambda e: e["name"])


def _accessory(value, ctx):
    if value in (None, "", "none"):
        return None
    if isinstance(value, str):
        value = {"kind": value}
    value = _object(value, "accessory", ("kind", "sha256"))
    kind = value.get("kind")
    if kind in (None, "none"):
        return None
    sha = ctx.accessory_sha256(kind)  # an unknown kind is refused there
    if value.get("sha256") not in (None, sha):
        raise InputError(f"the {kind} offset network in this bundle differs from the one the recipe was made with")
    return {"kind": kind, "sha256": sha}


def _transfer(value, ctx):
    from latentedit.edit.regions import REGIONS

    if value is None:
        return None
    value = _object(value, "transfer", ("component", "source"))
    comp = value.get("component")
    if comp in (None, "", "none"):
        return None
    if comp not in REGIONS:
        raise InputError(f"transfer: unknown component {comp!r} (known: {', '.join(REGIONS)})")
    if "source" not in value:
        raise InputError("transfer needs a source face ({\"seed\": N, \"truncation\": T})")
    return {"component": comp, "source": _start(value["source"], ctx, "transfer.source")}


def _colour(rgb, what):
    if not isinstance(rgb, list) or len(rgb) != 3 or not all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) and 0 <= v <= 255 for v in rgb):
        raise InputError(f"{what} must be [r, g, b] with integers in 0..255, got {json.dumps(rgb)[:40]}")
    return [int(v) for v in rgb]


def _layers(value, ctx):
    from latentedit.edit.regions import REGIONS

    if value is None:
        return None
    value = _object(value, "layers", ("s_ref", "strengths", "colours"))
    s_ref = _number(value.get("s_ref", 1.0), "layers.s_ref", -MAX_STRENGTH, MAX_STRENGTH)
    if s_ref == 0:
        raise InputError("layers.s_ref must be non-zero")
    strengths = value.get("strengths") or {}
    if not isinstance(strengths, dict):
        raise InputError("layers.strengths must be an object {direction name: strength}")
    out_s = {}
    for name in sorted(strengths):
        ctx.direction(name)
        out_s[name] = _number(strengths[name], f"layer strength of {name}", -MAX_STRENGTH, MAX_STRENGTH)
    colours = value.get("colours") or []
    if isinstance(colours, dict):  # shorthand {target: rgb}, in the object's order
        colours = [{"target": k, "rgb": v} for k, v in colours.items()]
    if not isinstance(colours, list):
        raise InputError("layers.colours must be a list of {target, rgb}")
    out_c, seen = [], set()
    for i, c in enumerate(colours):
        c = _object(c, f"layers.colours[{i}]", ("target", "rgb"))
        target = c.get("target")
        if target not in out_s and target not in REGIONS:
            raise InputError(f"colour target {target!r} is neither a layer ({', '.join(out_s) or 'none'}) "
                             f"nor a region ({', '.join(REGIONS)})")
        if target in seen:
            raise InputError(f"colour target {target!r} is given twice")
        seen.add(target)
        if c.get("rgb") is not None:
            out_c.append({"target": target, "rgb": _colour(c.get("rgb"), f"colour of {target}")})
    if not out_s and not out_c:
        return None
    return {"s_ref": s_ref, "strengths": out_s, "colours": out_c}


def normalize_recipe(recipe, ctx):
    """The canonical recipe (validated; identities filled in; zero strengths dropped; directions
    sorted) for `ctx`'s model. Raises InputError / FormatError naming what is wrong."""
    recipe = _object(recipe, "recipe", KEYS)
    if recipe.get("format", FORMAT) != FORMAT:
        raise InputError(f"not a latentedit recipe (format {recipe.get('format')!r})")
    version = recipe.get("version", VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or version > VERSION:
        raise InputError(f"recipe version {version!r} is newer than this latentedit reads ({VERSION})")
    model = recipe.get("model")
    if model is not None:
        model = _object(model, "model", ("path", "generator", "resolution"))
        if model.get("generator") not in (None, ctx.generator_hash):
            raise InputError("the recipe was made with another generator (its hash differs from this model's); "
                             "pass the model it names with --model")
    if "start" not in recipe:
        raise InputError("recipe has no start (a seed or latents)")
    render = _object(recipe.get("render") or {}, "render", ("noise_mode", "threads"))
    if render.get("noise_mode", "const") != "const":
        raise InputError("render.noise_mode must be 'const'")
    threads = render.get("threads", torch.get_num_threads())
    return {"format": FORMAT, "version": VERSION, "model": ctx.model_identity(),
            "start": _start(recipe["start"], ctx),
            "directions": _directions(recipe.get("directions"), ctx),
            "accessory": _accessory(recipe.get("accessory"), ctx),
            "transfer": _transfer(recipe.get("transfer"), ctx),
            "layers": _layers(recipe.get("layers"), ctx),
            "render": {"noise_mode": "const", "threads": check_threads(threads, "render.threads")}}


def dump_recipe(normalized):
    """A normalised recipe -> a JSON-ready dict (latents as exact float32 decimals)."""
    return json.loads(json.dumps(normalized, default=_jsonable))


def _jsonable(o):
    if isinstance(o, np.ndarray):
        return float32_list(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def read_recipe(path):
    """A recipe file -> dict. FormatError naming the file when it is not a regular file of at most
    MAX_RECIPE_BYTES holding a JSON object with "format": "latentedit-recipe"."""
    path = Path(path)
    data = read_json(path, "recipe", MAX_RECIPE_BYTES)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise FormatError(f"{path}: not a latentedit recipe (no \"format\": \"{FORMAT}\")")
    return data


def recipe_model_path(recipe, recipe_path):
    """The model a recipe file names: None for the bundled default ("default", or no model.path),
    else a path inside the recipe's own folder (relative, links resolved). Any other path is not
    looked at: the error is the same whether it exists or not, so a recipe cannot probe the disk."""
    from latentedit.formats import is_default_bundle

    model = recipe.get("model")
    named = model.get("path") if isinstance(model, dict) else None
    if named in (None, "default") or (isinstance(named, str) and "\x00" not in named and is_default_bundle(named)):
        return None
    if not isinstance(named, str):
        raise InputError("model.path must be a string (\"default\" or a path inside the recipe's folder)")
    folder, target = Path(recipe_path).resolve().parent, None
    if named and "\x00" not in named and not Path(named).is_absolute():
        try:
            target = (folder / named).resolve()
        except (OSError, RuntimeError):  # a link loop, a name too long
            pass
    if target is None or (target != folder and folder not in target.parents):
        raise InputError("the recipe's model.path is not \"default\" or a path inside the recipe's folder, so it "
                         "is not opened; pass the model with --model")
    if not target.exists():
        raise InputError(f"the recipe's model {named!r} is not in the recipe's folder {folder}; pass it with --model")
    return target if target.is_dir() else regular_file(target, "model file")


# ---------------------------------------------------------------------------------------------
# Rendering


@dataclass
class RecipeResult:
    recipe: dict                  # the normalised recipe
    start: torch.Tensor           # [1, L, D] w0
    latents: torch.Tensor         # [1, L, D] after the directions and the accessory
    image: torch.Tensor           # [1, 3, R, R] in [-1, 1]
    stages_ms: dict = field(default_factory=dict)
    layers: Optional[object] = None


def _noop():
    pass


@torch.no_grad()
def run_recipe(recipe, G, bundle=None, context=None, check=None):
    """Runs a recipe (see the module docstring) -> RecipeResult. context: a RecipeContext for G
    (caches; the server's); check: called between stages (the server raises there to drop
    superseded work). The result never depends on either."""
    import time

    from latentedit.edit.layers import parse_colour, recolour

    ctx = context if context is not None else RecipeContext.for_generator(G, bundle)
    if ctx.G is not G:
        raise InputError("the context belongs to another generator")
    check = check or _noop
    times, t0 = {}, time.perf_counter()

    def lap(name):
        nonlocal t0
        t = time.perf_counter()
        times[name] = round(1000 * (t - t0), 3)
        t0 = t
        check()

    r = ctx.normalize(recipe)
    w0 = ctx.code(r["start"])
    ws = w0
    for e in r["directions"]:
        ws = ctx.edit_direction(e["name"], e["keep"]).apply(ws, e["strength"])
    lap("directions")
    image = None  # until stage 4: set when it is not G(ws) alone
    if r["accessory"] is not None:
        ws, image = ctx.accessory(ws, r["accessory"]["kind"])
        lap("accessory")
    if r["transfer"] is not None:
        source = ctx.code(r["transfer"]["source"])
        image = ctx.transfer(ws, source, r["transfer"]["component"])
        lap("transfer")
    elif image is None:
        image = ctx.image(ws)
        lap("generator")
    composed = r["accessory"] is not None or r["transfer"] is not None
    lay = None
    if r["layers"] is not None:
        out = image
        if r["layers"]["strengths"]:
            lay = ctx.layers(ws, list(r["layers"]["strengths"]), r["layers"]["s_ref"])
            lap("layers_build")
            out = lay.render(r["layers"]["strengths"])
            if composed:  # the layers' residuals on top of the composited or transferred image
                out = out - lay.base + image
        for c in r["layers"]["colours"]:
            target = c["target"]
            mask = lay.region[target] if lay is not None and target in lay.region else ctx.region_mask(ws, target)
            out = recolour(out, mask, parse_colour(c["rgb"], f"colour of {target}"))
        image = out
        lap("layers_render")
    return RecipeResult(recipe=r, start=w0, latents=ws, image=image, stages_ms=times, layers=lay)


def render_recipe(recipe, G, bundle=None, context=None, check=None):
    """The recipe's image [1, 3, R, R] in [-1, 1] (see `run_recipe`)."""
    return run_recipe(recipe, G, bundle, context, check).image


@torch.no_grad()
def recipe_mask(recipe, G, bundle=None, name="edit", context=None, check=None):
    """Mask [1, 1, R, R] in [0, 1] for the recipe's face: "edit" = the soft edit mask of the
    recipe's latent edit (start -> directions + accessory, `regions.edit_mask`), or a region name
    (`regions.region_mask` of the edited code, label-free part clusters)."""
    from latentedit.edit.regions import REGIONS, edit_mask

    ctx = context if context is not None else RecipeContext.for_generator(G, bundle)
    if name != "edit" and name not in REGIONS:
        raise InputError(f"unknown mask {name!r} (edit, or a region: {', '.join(REGIONS)})")
    res = run_recipe(recipe, G, bundle, ctx, check)
    if name == "edit":
        return ctx._cache.get_or(("editmask", _key(res.start), _key(res.latents)),
                                 lambda: edit_mask(G, res.start, res.latents))
    return ctx.region_mask(res.latents, name)


def encode_png(image):
    """[1, 3, R, R] in [-1, 1] (or uint8 [R, R, C]) -> PNG bytes (deterministic)."""
    from PIL import Image

    from latentedit.formats.images import to_uint8

    arr = to_uint8(image)[0] if torch.is_tensor(image) else np.asarray(image)
    buf = io.BytesIO()
    Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(buf, format="PNG")
    return buf.getvalue()


def mask_png(mask, colour=(255, 40, 40)):
    """Mask [1, 1, R, R] in [0, 1] -> RGBA PNG bytes: `colour` with the mask as alpha (an overlay)."""
    m = (mask[0, 0].detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    rgba = np.zeros(m.shape + (4,), np.uint8)
    rgba[..., :3] = colour
    rgba[..., 3] = m
    return encode_png(rgba)


def latents_bytes(latents, fmt):
    """[1, L, D] -> (bytes, media type, file name): SD-GAN JSON {"0": [[D floats] x L]} or .npy."""
    arr = latents.detach().cpu().numpy().astype(np.float32)
    if fmt == "json":
        text = json.dumps({str(i): float32_list(row) for i, row in enumerate(arr)})
        return text.encode(), "application/json", "latents.json"
    if fmt == "npy":
        buf = io.BytesIO()
        np.save(buf, arr)
        return buf.getvalue(), "application/octet-stream", "latents.npy"
    raise InputError(f"latents format must be json or npy, got {fmt!r}")
