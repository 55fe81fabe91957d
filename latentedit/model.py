"""The model object: one generator and every part a feature asks for, assembled once.

    import latentedit as le
    m = le.load_model()                           # the bundled default (or a bundle / foreign file)
    smile = m.direction("smile")                  # checked against m.G at load
    images = m.G.synthesize(m.G.sample_w(4, seed=0) + 2.0 * smile)
    frames = m.synthesizer("glasses", normal=True)(m.G.sample_w(4, seed=0))

A model is a generator plus optional parts, each found in a bundle folder: directions
(`boundaries/`), evaluators (attributes, identity, parser, face3d), the image -> W+ encoder,
offset networks with their templates (SD-GAN synthesis) and part components (regions). The
parts may come from different bundles (`load_model(g.pt, parts=BUNDLE)`): a rosinality or NVlabs
file alone is a valid model whose missing parts give one clear error naming what to pass.
Everything loaded is cached on the object, and the generator's hash is computed once.
"""
from pathlib import Path

import torch

from latentedit.errors import InputError


class Model:
    """A generator `G` (and `D` when the file has one) with the parts found in `parts` (a bundle
    folder, or None). `source` names where G came from, for messages and manifests."""

    def __init__(self, G, D=None, parts=None, source=None, info=None):
        self.G, self.D = G, D
        self.parts = Path(parts) if parts is not None else None
        self.source = str(source) if source is not None else "a generator in memory"
        self.info = dict(info or {})
        self._hash = {}  # {"G": hash} once computed; shared with the with_parts copies (same G)
        self._cache = {}

    def __repr__(self):
        return (f"Model({self.source}: {self.G.img_resolution} px, {self.G.num_ws} W+ layers, "
                f"parts from {self.parts or 'nowhere'})")

    # -- identity --------------------------------------------------------------------------
    @property
    def generator_hash(self):
        """sha256 of G's weights (formats.directions.generator_hash), computed once; a model's
        generator is not retrained in place (train a new one and load it)."""
        if "G" not in self._hash:
            from latentedit.formats.directions import generator_hash

            self._hash["G"] = generator_hash(self.G)
        return self._hash["G"]

    def with_parts(self, parts):
        """The same generator with its parts from another bundle folder (or None); the two share
        the generator's hash, whichever computes it first."""
        other = Model(self.G, D=self.D, parts=parts, source=self.source, info=self.info)
        other._hash = self._hash
        return other

    # -- parts -----------------------------------------------------------------------------
    def _cached(self, key, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def _require_parts(self, what, hint):
        if self.parts is None:
            raise InputError(f"{self.source} holds no {what}: {hint}")
        return self.parts

    def has(self, part):
        """Whether the model can provide `part`: "encoder", "evaluators", one evaluator (attributes,
        identity, parser, face3d), "directions", or an offset kind (mask, frame_glasses, sunglasses)."""
        from latentedit.formats import bundle
        from latentedit.formats.directions import BOUNDARIES
        from latentedit.formats.encoder import has_encoder
        from latentedit.formats.sdgan import offset_network_name

        if self.parts is None or not bundle.is_bundle(self.parts):
            return False
        if part == "encoder":
            return has_encoder(self.parts)
        if part == "directions":
            return (self.parts / BOUNDARIES).is_dir()
        networks = bundle.read_manifest(self.parts)["networks"]
        from latentedit.formats.evaluators import EVALUATOR_KINDS, NAMES

        if part == "evaluators":
            return any(e.get("kind") in EVALUATOR_KINDS for e in networks.values())
        if part in NAMES:  # one evaluator: attributes | identity | parser | face3d
            return networks.get(part, {}).get("kind") == NAMES[part]
        return offset_network_name(part) in networks

    def direction_names(self):
        from latentedit.formats.directions import BOUNDARIES

        folder = self.parts / BOUNDARIES if self.parts is not None else None
        return sorted(p.stem for p in folder.glob("*.npy")) if folder is not None and folder.is_dir() else []

    def direction(self, name_or_path, space=None):
        """A Direction by name (the model's boundaries/) or path, checked against G: a direction
        made for another generator, another W+ depth or another width is refused here, once."""
        from latentedit.edit.directions import Direction

        def load():
            p = Path(str(name_or_path))
            is_path = p.suffix or len(p.parts) > 1 or p.exists()
            if not is_path:
                self._require_parts("directions", f"pass a .npy path, or parts=BUNDLE (--boundaries) with "
                                                  f"a boundaries/ folder holding {name_or_path!r}")
            d = Direction.load(name_or_path, bundle=self.parts, space=space)
            return d.check(self.G, generator_hash=self.generator_hash)
        return self._cached(("direction", str(name_or_path), space), load)

    def evaluator(self, name):
        """One evaluator network (attributes | identity | parser | face3d) from the model's parts."""
        from latentedit.formats.evaluators import load_evaluators

        def load():
            parts = self._require_parts(f"{name} evaluator", "pass evaluators=BUNDLE (--evaluators) "
                                        "with one, or train them with `latentedit train evaluators`")
            return load_evaluators(parts, [name])[name].to(self.G.w_avg.device)
        return self._cached(("evaluator", name), load)

    def evaluators(self, names=("attributes", "identity", "parser", "face3d")):
        return {n: self.evaluator(n) for n in names}

    def encoder(self):
        """The image -> W+ encoder of the model's parts, checked against G."""
        from latentedit.edit.inversion import load_encoder

        def load():
            parts = self._require_parts("encoder", "pass encoder=BUNDLE (--encoder) or train one with "
                                        "`latentedit train encoder`")
            return load_encoder(parts, self.G, generator_hash=self.generator_hash)
        return self._cached(("encoder",), load)

    def synthesizer(self, kind, normal=False, template=None, composite=True, **sdgan_settings):
        """The SD-GAN synthesizer for `kind` (mask | glasses [normal] | frame_glasses | sunglasses):
        our offset network (edit.discrete.DiscreteSynthesizer; `composite` False: its result as G
        draws it, not composited into the origin), or, in a bundle converted from SD-GAN's released
        set, their fusion network with test.py's maths (edit.sdgan, never composited; settings such
        as truncation= / mean_source= go to SDGANSynthesizer.load)."""
        from latentedit.edit.discrete import DiscreteSynthesizer, resolve_kind
        from latentedit.formats.sdgan import sdgan_kinds

        kind = resolve_kind(kind, normal)

        def load():
            parts = self._require_parts(f"offset network for {kind}", "pass parts=BUNDLE holding one, or "
                                        f"train one with `latentedit train offset --kind {kind}`")
            if kind in sdgan_kinds(parts):
                from latentedit.edit.sdgan import SDGANSynthesizer

                return SDGANSynthesizer.load(parts, kind, G=self.G, **sdgan_settings)
            if sdgan_settings:
                raise InputError(f"{sorted(sdgan_settings)} apply to SD-GAN's released networks only")
            return DiscreteSynthesizer.load(kind, bundle=parts, template=template, G=self.G,
                                            generator_hash=self.generator_hash, composite=composite)
        if template is not None or sdgan_settings:  # one-off settings are not cached
            return load()
        return self._cached(("synthesizer", kind, bool(composite)), load)

    def components(self):
        """Part components of G (regions), named by the model's own face parser."""
        from latentedit.edit.regions import default_components

        return self._cached(("components",), lambda: default_components(self.G, parser=self.evaluator("parser")))


def default_parts():
    """The bundled default model's folder (its directions, evaluators, encoder, offset networks),
    or None when none is installed: the parts a foreign or random generator borrows."""
    from latentedit.formats import DEFAULT_BUNDLE, bundle

    return DEFAULT_BUNDLE if bundle.is_bundle(DEFAULT_BUNDLE) else None


@torch.inference_mode(False)  # as load_generator: .to(device) makes normal tensors
def load_model(path=None, parts=None, device="cpu", overrides=None):
    """A Model from a bundle folder, a rosinality .pt or an NVlabs .pkl (None: the bundled default).
    parts: the bundle folder holding directions / evaluators / encoder / offset networks (default:
    `path` itself when it is a bundle). overrides: GeneratorConfig fields the file cannot tell."""
    from latentedit.formats import bundle, load_generator_networks

    nets = load_generator_networks(path, overrides)
    path = nets.path
    if parts is None and nets.format == "bundle":
        parts = path
    if parts is not None and not bundle.is_bundle(parts):
        raise InputError(f"{parts}: parts must be a latentedit bundle folder (bundle.json)")
    G = nets.G.to(device)
    return Model(G, D=nets.D.to(device) if nets.D is not None else None, parts=parts, source=path, info=nets.info)
