"""The studio's recipe context: a thin layer on a `Model` (latentedit.model) that adds what only
the studio needs — a recipe's identity of the model, per-name reasons why a direction or an
accessory cannot be used, and caches of every recipe stage keyed by exact input values.

    ctx = RecipeContext(le.load_model(path))
    res = run_recipe(recipe, ctx.G, ctx.bundle, ctx)

The generator hash, the directions (checked against G), the offset networks and the part
components all come from the model, which loads each once.
"""
import hashlib
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from latentedit.errors import InputError, LatentEditError

ACCESSORIES = ("mask", "sunglasses", "frame_glasses")


def _sha256(array):
    return hashlib.sha256(np.ascontiguousarray(array, dtype=np.float32).tobytes()).hexdigest()


def _key(t):
    """A short cache key for a tensor's exact values."""
    return hashlib.blake2b(t.detach().cpu().contiguous().numpy().tobytes(), digest_size=16).hexdigest()


class _LRU(OrderedDict):
    def __init__(self, size):
        super().__init__()
        self.size = size

    def get_or(self, key, make):
        if key in self:
            self.move_to_end(key)
            return self[key]
        value = make()
        self[key] = value
        while len(self) > self.size:
            self.popitem(last=False)
        return value


def _model_path(source):
    """What a recipe records as model.path: "default" for the bundled model, else the source's
    resolved path (or its name when it is not a file)."""
    from latentedit.formats import is_default_bundle

    path = Path(source)
    if is_default_bundle(path):
        return "default"
    return str(path.resolve()) if path.exists() else str(source)


class RecipeContext:
    """A `Model` (its G, and its bundle `parts` for directions, offset networks and the face
    parser; none: no directions or accessories) and caches of each recipe stage keyed by exact
    input values, so that a server re-renders only what changed. A cache hit returns what the
    computation returned the first time: results never depend on it.

    components: a `regions.ComponentModel`, a callable returning one, or None (default:
    `model.components()` on first use: region masks, region colours, transfers).
    Not thread-safe: one render at a time (the server holds a lock)."""

    def __init__(self, model, components=None, cache_size=32):
        self.model = model
        self.G = model.G.eval()
        self.bundle = model.parts
        self.model_path = _model_path(model.source)
        self._components = components
        self._cache = _LRU(cache_size)
        self._directions = None
        self._synth_sha = {}

    @classmethod
    def for_generator(cls, G, bundle=None):
        """A context for a bare G (and its bundle folder, if any), for `run_recipe` called without
        one. Recipes name it "default", as they always have: replay checks the generator hash."""
        from latentedit.formats import bundle as bundle_io
        from latentedit.model import Model

        parts = bundle if bundle is not None and bundle_io.is_bundle(bundle) else None
        ctx = cls(Model(G, parts=parts))
        ctx.model_path = "default"
        return ctx

    # -- identity ---------------------------------------------------------------------------
    @property
    def generator_hash(self):
        return self.model.generator_hash

    def model_identity(self):
        return {"path": self.model_path, "generator": self.generator_hash, "resolution": self.G.img_resolution}

    # -- directions -------------------------------------------------------------------------
    def directions(self):
        """name -> Direction (checked against G, and in W) or the reason it cannot be used (a string)."""
        if self._directions is None:
            from latentedit.formats.directions import BOUNDARIES

            found = {}
            for name in self.model.direction_names():
                try:  # by path: a name is never mistaken for a file in the working directory
                    found[name] = self.model.direction(str(self.bundle / BOUNDARIES / f"{name}.npy")).check(space="w")
                except LatentEditError as e:
                    found[name] = str(e)
            self._directions = found
        return self._directions

    def direction(self, name):
        d = self.directions().get(name)
        if d is None:
            have = ", ".join(n for n, v in self.directions().items() if not isinstance(v, str)) or "none"
            raise InputError(f"unknown direction {name!r} (this model's: {have})")
        if isinstance(d, str):
            raise InputError(f"direction {name!r} cannot be used: {d}")
        return d

    def direction_sha256(self, name):
        return self._cache.get_or(("dsha", name), lambda: _sha256(self.direction(name).vector.numpy()))

    def edit_direction(self, name, keep=()):
        """The direction `name`, orthogonal to the directions in `keep` when any."""
        d = self.direction(name)
        if not keep:
            return d
        return self._cache.get_or(("orth", name, tuple(keep)),
                                  lambda: d.orthogonal_to(*[self.direction(k) for k in keep]))

    # -- accessories ------------------------------------------------------------------------
    def synthesizer(self, kind):
        """The model's synthesizer of `kind`; FormatError / InputError saying why when there is none.
        A failure is not cached: offset networks added to the bundle later are found."""
        if kind not in ACCESSORIES:
            raise InputError(f"unknown accessory {kind!r} (known: {', '.join(ACCESSORIES)})")
        synth = self.model.synthesizer(kind)
        if kind not in self._synth_sha:
            from latentedit.formats import bundle as bundle_io
            from latentedit.formats.sdgan import offset_network_name

            networks = bundle_io.read_manifest(self.bundle)["networks"]
            self._synth_sha[kind] = networks.get(offset_network_name(kind), {}).get("sha256")
        return synth

    def accessory_sha256(self, kind):
        """sha256 of the offset network's weight file (as the bundle listed it when loaded)."""
        self.synthesizer(kind)
        return self._synth_sha[kind]

    def accessories(self):
        """[{kind, available, reason}] for every accessory kind."""
        out = []
        for kind in ACCESSORIES:
            try:
                self.synthesizer(kind)
                out.append({"kind": kind, "available": True, "reason": None})
            except LatentEditError as e:
                out.append({"kind": kind, "available": False, "reason": str(e)})
        return out

    # -- components -------------------------------------------------------------------------
    def components(self):
        if self._components is None:
            return self.model.components()
        if callable(self._components):
            self._components = self._components()
        return self._components

    # -- stages -----------------------------------------------------------------------------
    def code(self, start):
        """A normalised start ({"seed", "truncation"} or {"latents"}) -> W+ [1, L, D]."""
        if "seed" in start:
            key = ("seed", start["seed"], start["truncation"])
            return self._cache.get_or(key, lambda: self.G.broadcast_w(
                self.G.sample_w(seeds=[start["seed"]], truncation=start["truncation"])))
        return self.G.broadcast_w(torch.from_numpy(start["latents"][None]))

    @torch.no_grad()
    def accessory(self, ws, kind):
        """(the edited codes [1, L, D], the edit composited into ws's face [1, 3, R, R])."""
        synth = self.synthesizer(kind)

        def run():
            out = synth(ws)
            return out.latents, out.image
        return self._cache.get_or(("acc", kind, _key(ws)), run)

    @torch.no_grad()
    def image(self, ws):
        return self._cache.get_or(("img", _key(ws)),
                                  lambda: self.G.synthesis(ws, noise_mode="const", fast=False))

    @torch.no_grad()
    def transfer(self, ws, source, component):
        from latentedit.edit.regions import transfer_component

        return self._cache.get_or(("transfer", _key(ws), _key(source), component),
                                  lambda: transfer_component(self.G, ws, source, component,
                                                             components=self.components())[0])

    def layers(self, ws, names, s_ref):
        from latentedit.edit.layers import AttributeLayers

        return self._cache.get_or(("layers", _key(ws), tuple(names), s_ref),
                                  lambda: AttributeLayers(self.G, ws, {n: self.direction(n) for n in names},
                                                          s_ref=s_ref))

    @torch.no_grad()
    def region_mask(self, ws, name):
        from latentedit.edit.regions import region_mask

        return self._cache.get_or(("region", _key(ws), name),
                                  lambda: region_mask(self.G, ws, name, self.components()))

    # -- recipes ----------------------------------------------------------------------------
    def normalize(self, recipe):
        from latentedit.studio.recipe import normalize_recipe

        return normalize_recipe(recipe, self)
