"""Editing: directions, discrete attributes (SD-GAN), projection, regions, photos.

    from latentedit.edit import train_boundary, sefa, ganspace, edit_mask, region_edit, project

Names resolve lazily (PEP 562), so `import latentedit.edit` stays cheap and import order free.
"""
import importlib

_EXPORTS = {
    # directions and how they are found
    "Direction": "directions", "linear_interpolate": "directions", "gram_schmidt": "directions",
    "Boundary": "boundaries", "train_boundary": "boundaries", "sample_latents": "boundaries",
    "score_latents": "boundaries", "attribute_scores": "boundaries",
    "sparse_boundary": "sparse", "sefa": "discover", "ganspace": "discover", "name_directions": "discover",
    # discrete attributes
    "DiscreteSynthesizer": "discrete", "resolve_kind": "discrete", "SDGANSynthesizer": "sdgan",
    "SynthesisOutputs": "outputs",
    # inversion
    "project": "inversion", "invert": "inversion", "encode_images": "inversion", "load_encoder": "inversion",
    "reconstruct": "inversion",
    # regions: edit masks, part components, region-locked edits, transfer, layers
    "edit_mask": "regions", "threshold_mask": "regions", "component_clusters": "regions",
    "default_components": "regions", "region_mask": "regions", "region_edit": "regions",
    "transfer_component": "regions", "AttributeLayers": "layers",
    # photos
    "align_face": "align", "paste_back": "align",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


def __dir__():
    return __all__
