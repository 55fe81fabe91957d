"""Accessory template images: what SD-GAN's `templates/` folder holds (a frontal picture of the
accessory alone on white), rendered from the world instead of photographed.

The accessory is drawn on a frontal, centred, neutral head in the world's most common colour for
it (black frame, dark lenses, light-blue surgical mask); every pixel that is not the accessory
(by the exact label map) is white. The template tells the offset network which accessory and
what it should look like.
"""
from functools import lru_cache

import torch

from latentedit.errors import InputError
from latentedit.world.params import LABEL_ID, sample_params
from latentedit.world.render import render

# a view's fields in order: the world's `view_vector` and the face3d evaluator's output
VIEW_FIELDS = ("yaw", "pitch", "roll", "tx", "ty", "tz")

# kind -> (face parameters that put the accessory on, label classes of the region it covers,
#          the classes drawn in the template: clear lenses of frame glasses stay white, as in
#          SD-GAN's frame-glasses template)
ACCESSORIES = {
    "frame_glasses": ({"glasses": "frame", "glasses_color": (0.04, 0.04, 0.05)},
                      ("glasses_frame", "lens"), ("glasses_frame",)),
    "sunglasses": ({"glasses": "sun", "glasses_color": (0.04, 0.04, 0.05), "lens_color": (0.03, 0.03, 0.04)},
                   ("glasses_frame", "lens"), ("glasses_frame", "lens")),
    "mask": ({"mask": 1, "mask_color": (0.55, 0.76, 0.92)}, ("mask",), ("mask",)),
}

# world faces wearing kind alone, in the world's own colours / wearing nothing (sample_params overrides)
WEARING = {"frame_glasses": {"glasses": "frame"}, "sunglasses": {"glasses": "sun"}, "mask": {"mask": 1}}
BARE = {"glasses": "none", "mask": 0, "hat": 0}


def _check(kind):
    if kind not in ACCESSORIES:
        raise InputError(f"unknown accessory {kind!r} (known: {', '.join(sorted(ACCESSORIES))})")
    return ACCESSORIES[kind]


def accessory_labels(kind):
    """Label ids [K] of the classes that make up the region accessory `kind` covers."""
    return torch.tensor([LABEL_ID[name] for name in _check(kind)[1]])


def on_accessory(labels, kind):
    """Bool [..., R, R]: the pixels of label maps [..., R, R] in accessory `kind`'s classes."""
    return torch.isin(labels, accessory_labels(kind).to(labels.device))


def world_wearing(kind, n, seed=0, resolution=64):
    """World renders of n faces of world seed `seed` wearing accessory `kind` alone, in the world's
    own colours; kind None: the same faces wearing nothing."""
    from latentedit import world

    wear = {} if kind is None else (_check(kind) and WEARING[kind])  # _check: an unknown kind is one error
    return world.sample(n, seed=seed, resolution=resolution, **{**BARE, **wear})


def template_labels(kind):
    """Label ids [K] of the classes the template draws (frame glasses: the frame only)."""
    return torch.tensor([LABEL_ID[name] for name in _check(kind)[2]])


def _template_head(kind):
    """The neutral head (parameters) that wears `kind` in the templates and the expected regions."""
    on, _, _ = _check(kind)
    neutral = dict(yaw=0.0, pitch=0.0, roll=0.0, smile=0.0, glasses="none", mask=0, hat=0, beard=0.0,
                   glasses_round=0.5, glasses_size=0.0)
    return sample_params(1, seed=0).replace(**{**neutral, **on})


@lru_cache(maxsize=16)
def _frontal(kind, resolution):
    """The world render of the frontal head wearing `kind` (cached: the offset trainer with a face3d
    outside the world's frame asks for its region at every step; callers only read it)."""
    return render(_template_head(kind), resolution)


def accessory_region(kind, resolution=64, view=None):
    """Bool [R, R]: where accessory `kind` sits on the template's frontal, centred head; with `view`
    [N, 6] (yaw, pitch, roll, tx, ty, tz, as the world and the face3d evaluator give it) bool
    [N, R, R]: where it sits on the same head turned and moved to each view. World faces turn up to
    35 degrees and shift, so a judge of where an accessory belongs needs the face's own view: on
    world renders wearing frame glasses the frontal region holds a median 15% of the glasses."""
    ids = accessory_labels(kind)
    if view is None:
        return torch.isin(_frontal(kind, resolution).labels[0], ids)
    v = torch.as_tensor(view, dtype=torch.float32).cpu()
    if v.ndim != 2 or v.shape[1] != 6:
        raise InputError(f"view must be [N, 6] (yaw, pitch, roll, tx, ty, tz), got shape {list(v.shape)}")
    head = _template_head(kind).select([0] * len(v))
    head = head.replace(**{name: v[:, i] for i, name in enumerate(VIEW_FIELDS)})
    return torch.isin(render(head, resolution).labels, ids)


def accessory_template(kind, resolution=64):
    """Template image [3, R, R] in [-1, 1]: the accessory on white."""
    batch = _frontal(kind, resolution)
    keep = torch.isin(batch.labels[0], template_labels(kind))
    return torch.where(keep[None], batch.image[0], torch.ones_like(batch.image[0]))
