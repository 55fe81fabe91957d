"""An accessory must be the world's size: a judge that oversized or smeared accessories fail.

The classifier, the parser's seen share and the frames judge all passed the shipped sunglasses
edits (2026-12-04) though they were about twice the world's sunglasses, with a dark red smear
across the forehead that the parser labels sunglasses: the seen share asks whether the accessory
covers where it belongs, not whether it stays there, and the MSE-outside measure leaves out
whatever the parser labels as the accessory. Frame glasses edits were 1.3-2.2x the world's
frames (wide lenses, thick rims).

Footprint of a face: the pixels a labeller gives the accessory's classes over the pixels of its
expected region (where the template head wears it, turned to the face's view; see
`latentedit.world.templates.accessory_region`). The reference is its median on world renders
wearing the kind, under the same labeller and views (about 1.0 for glasses, 1.1 for masks, whose
cloth covers more than the template's). A face passes when its footprint is at most FOOTPRINT_MAX
times the reference: world renders' 99th percentiles lie at 1.2-1.4 times their median (glasses
sizes vary by +-10% in the world, masks more), an accessory half as large again as the world's
is not the world's.

A mask must also leave the eyes visible. The generator's own masked faces (2026-12-05) drew the
mask as a blob over the whole face on about 30% of those without glasses: the parser finds under
4 eye pixels on them, where world renders wearing a mask alone have 8 or more on 98% (median 14),
and three of the four on an 8-face sheet passed size, edge and classifier. Eyes of a face: the
pixels a labeller gives the eyes; a face passes at EYES_MIN x the reference (the median on world
renders wearing a mask alone) or more, or when the labeller draws glasses frames on it, at least
the reference's pixels (lenses cover the eyes there; the world's frame glasses and sunglasses hold
3.6x the reference or more by the parser, its mask-alone faces none). Not the classifier's
glasses: it read a blob over the eyes as sunglasses (0.98) where the parser found neither eyes
nor frames.
"""
import torch

from latentedit.world.params import LABEL_ID
from latentedit.world.templates import on_accessory

FOOTPRINT_MAX = 1.5
EYES_MIN = 0.3  # world masks alone: 2nd percentile of eye pixels 0.57x the median, none under 0.3x
EYE_LABELS = torch.tensor([LABEL_ID["l_eye"], LABEL_ID["r_eye"]])
FRAME_LABEL = LABEL_ID["glasses_frame"]


def footprint(labels, kind, expected):
    """[N] pixels of label maps [N, R, R] in accessory `kind`'s classes over the pixels of its
    expected region (bool [N, R, R]); NaN where the expected region is empty."""
    on = on_accessory(labels, kind).sum((-2, -1)).float()
    area = expected.to(labels.device).bool().sum((-2, -1)).float()
    return torch.where(area > 0, on / area.clamp_min(1), torch.full_like(on, float("nan")))


def world_footprint_reference(kind, labeller=None, view_of=None, n=256, seed=7_100_000, resolution=64):
    """The median footprint of n world renders wearing `kind` alone, labelled by `labeller`
    (images -> label maps; None: the renders' exact labels), each expected region at the view
    `view_of` gives (images of the same faces bare -> [N, 6]; None: the renders' true views)."""
    from latentedit.world.templates import accessory_region, world_wearing

    faces = world_wearing(kind, n, seed, resolution)
    view = faces.view if view_of is None else view_of(world_wearing(None, n, seed, resolution).image)
    labels = faces.labels if labeller is None else labeller(faces.image)
    return float(footprint(labels, kind, accessory_region(kind, resolution, view)).nanmedian())


def footprint_pass(values, reference):
    """[N] bool: footprints [N] at most FOOTPRINT_MAX x the world's reference (NaN fails)."""
    return values <= FOOTPRINT_MAX * reference


def eye_mask(labels):
    """Bool [N, R, R]: the pixels of label maps [N, R, R] given the eyes."""
    return torch.isin(labels, EYE_LABELS.to(labels.device))


def eye_pixels(labels):
    """[N] pixels of label maps [N, R, R] given the eyes."""
    return eye_mask(labels).sum((-2, -1)).float()


def world_eyes_reference(labeller=None, n=256, seed=7_100_000, resolution=64):
    """The median eye pixels of n world renders wearing a mask alone, labelled by `labeller`
    (images -> label maps; None: the renders' exact labels)."""
    from latentedit.world.templates import world_wearing

    faces = world_wearing("mask", n, seed, resolution)
    return float(eye_pixels(faces.labels if labeller is None else labeller(faces.image)).median())


def eyes_pass(labels, reference):
    """[N] bool: label maps [N, R, R] with eye pixels at least EYES_MIN x the world's reference, or
    with glasses frames (at least the reference's pixels)."""
    frames = (labels == FRAME_LABEL).sum((-2, -1)).float()
    return (frames >= reference) | (eye_pixels(labels) >= EYES_MIN * reference)
