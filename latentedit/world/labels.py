"""Class labels of world faces, for training a conditional generator and discriminator: the discrete
attributes a label vector can hold, their prior as groups of class probabilities (what a generator
draws its labels from, `GeneratorConfig.label_prior`) and the labels of sampled faces.

A group is one attribute; its classes are one-hot columns, and the group's remaining probability
is a class without a column (no glasses, no mask; the last hair style), so a label vector is the
concatenation of the groups' columns in the order asked for.
"""
import torch

from latentedit.errors import InputError
from latentedit.world.params import _STYLE_P, GLASSES, HAIR_STYLES, PROBABILITIES

LABEL_GROUPS = ("glasses", "mask", "hat", "beard", "hair_style")


def _classes(name, probs):
    """(column names, their probabilities, a function params -> class index, -1 for no column)."""
    if name == "glasses":
        return list(GLASSES[1:]), [probs["p_glasses"], probs["p_sunglasses"]], lambda p: p.glasses.long() - 1
    if name in ("mask", "hat"):
        return [name], [probs[f"p_{name}"]], lambda p: getattr(p, name).long() - 1
    if name == "beard":
        return ["beard"], [probs["p_beard"]], lambda p: (p.beard > 0).long() - 1
    if name == "hair_style":
        return list(HAIR_STYLES[:-1]), [float(x) for x in _STYLE_P[:-1]], lambda p: p.hair_style.long()
    raise InputError(f"unknown label group {name!r}; choose from {', '.join(LABEL_GROUPS)}")


def check_groups(names):
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names) \
            or len(set(names)) != len(names):
        raise InputError(f"label groups must be a list of distinct names from {', '.join(LABEL_GROUPS)}, "
                         f"got {names!r:.80}")
    for name in names:
        _classes(name, PROBABILITIES)


def label_prior(names, **overrides):
    """The groups of class probabilities of `names` at the world's prior (with `p_*` overrides, as
    `sample_params` takes them): e.g. ["glasses", "mask"] -> [[p_frame, p_sun], [p_mask]]."""
    check_groups(names)
    probs = {**PROBABILITIES, **{k: float(v) for k, v in overrides.items() if k in PROBABILITIES}}
    return [_classes(name, probs)[1] for name in names]


def trained_labels(manifest):
    """The world label groups a bundle's networks were trained with (`train gan --labels`, recorded in
    the provenance of its manifest or `Networks.info`); [] when none."""
    return list(manifest.get("provenance", {}).get("config", {}).get("labels") or [])


def label_names(names):
    """The column names of the label vector of `names`, e.g. ['frame', 'sun', 'mask']."""
    check_groups(names)
    return [f"{name}={c}" if name == "hair_style" else c for name in names for c in _classes(name, PROBABILITIES)[0]]


def face_labels(params, names):
    """Labels [N, c_dim] (float32 one-hot per group) of the faces `params` (a FaceParams)."""
    check_groups(names)
    parts = []
    for name in names:
        columns, _, index = _classes(name, PROBABILITIES)
        k = index(params)
        parts.append((k[:, None] == torch.arange(len(columns), device=k.device)[None]).float())
    return torch.cat(parts, dim=1) if parts else torch.zeros([len(params.glasses), 0])
