"""Evaluator networks in bundles: kind strings, configs, loading and adding them to a bundle.

Names in a bundle: "attributes" (AttributeClassifier), "identity" (IdentityEmbedder), "parser"
(FaceParser), "face3d" (Face3D, unsup3d layout). Each entry in bundle.json carries its kind and
its config dict; `load_evaluators(path)` builds every evaluator network the bundle holds.
"""
from pathlib import Path

import torch

from latentedit.errors import FormatError
from latentedit.formats import bundle
from latentedit.formats.weights import load_weights
from latentedit.models.evaluators import (AttributeClassifier, ClassifierConfig, FaceParser, IdentityConfig,
                                          IdentityEmbedder, ParserConfig)
from latentedit.models.face3d import Face3D, Face3DConfig

EVALUATOR_KINDS = {
    "attribute-classifier": (AttributeClassifier, ClassifierConfig),
    "identity-embedder": (IdentityEmbedder, IdentityConfig),
    "face-parser": (FaceParser, ParserConfig),
    "unsup3d-face3d": (Face3D, Face3DConfig),
}
NAMES = {"attributes": "attribute-classifier", "identity": "identity-embedder", "parser": "face-parser",
         "face3d": "unsup3d-face3d"}


def kind_of(module):
    for kind, (cls, _) in EVALUATOR_KINDS.items():
        if type(module) is cls:
            return kind
    raise FormatError(f"{type(module).__name__} is not an evaluator network")


def build(kind, config, state_dict, what):
    if kind not in EVALUATOR_KINDS:
        raise FormatError(f"{what}: unknown evaluator kind {kind!r} (known: {sorted(EVALUATOR_KINDS)})")
    cls, cfg_cls = EVALUATOR_KINDS[kind]
    try:
        cfg = cfg_cls.from_dict(config)
    except (TypeError, ValueError) as e:
        raise FormatError(f"{what}: bad {kind} config ({e})") from None
    return load_weights(cls(cfg), state_dict, what).eval()


def _evaluator_entries(manifest):
    """{name: entry} of a bundle manifest's evaluator networks."""
    return {n: e for n, e in manifest["networks"].items() if e.get("kind") in EVALUATOR_KINDS}


def evaluator_names(path):
    """The names of the evaluator networks bundle folder `path` lists."""
    return sorted(_evaluator_entries(bundle.read_manifest(Path(path))))


def load_evaluators(path, names=None):
    """{name: module} of the evaluator networks in bundle folder `path` (all, or `names`)."""
    path = Path(path)
    found = _evaluator_entries(bundle.read_manifest(path))
    if names is not None:
        missing = [n for n in names if n not in found]
        if missing:
            raise FormatError(f"{path}: bundle has no evaluator {missing} (has {sorted(found)})")
        found = {n: found[n] for n in names}
    out = {}
    for name, entry in found.items():
        _, sd = bundle.read_network(path, name)
        out[name] = build(entry["kind"], entry.get("config", {}), sd, f"{path} [{name}]")
    return out


def add_evaluators(path, modules, figures=None, provenance=None, dtype=torch.float32):
    """Writes {name: module} into bundle folder `path` (created if needed), keeping every other
    network already listed there. Weights first, manifest last, each written atomically."""
    networks = {name: (kind_of(module), module.cfg.to_dict(), module.state_dict()) for name, module in modules.items()}
    return bundle.write_bundle(path, networks, provenance=provenance, figures=figures, dtype=dtype, merge=True)
