"""The synthetic 3D face world: a procedural, ray-cast head with exact ground truth.

    from latentedit import world
    batch = world.sample(64, seed=0)                 # WorldBatch: image, depth, labels, ...
    other = world.render(batch.params.replace(glasses="sun", yaw=0.3))

Sample `i` of a seed is the same whatever batch it is drawn in (`start=` picks the index of
the first one), so `WorldDataset` can split an infinite stream over DataLoader workers.
"""
from latentedit.world.dataset import WorldDataset
from latentedit.world.params import (ATTRIBUTES, GLASSES, HAIR_STYLES, IDENTITY_NAMES,
                                     LABEL_COLORS, LABEL_ID, LABELS, PROBABILITIES, SHAPE_NAMES,
                                     FaceParams, sample_params)
from latentedit.world.render import WorldBatch, render

__all__ = ["sample", "render", "sample_params", "FaceParams", "WorldBatch", "WorldDataset",
           "LABELS", "LABEL_ID", "LABEL_COLORS", "ATTRIBUTES", "IDENTITY_NAMES", "SHAPE_NAMES",
           "HAIR_STYLES", "GLASSES", "PROBABILITIES"]


def sample(n: int, seed: int = 0, resolution: int = 64, start: int = 0, **overrides) -> WorldBatch:
    """Draw and render samples `start .. start+n-1` of `seed` (see `sample_params` overrides)."""
    from latentedit.errors import InputError

    if not isinstance(resolution, int) or not 8 <= resolution <= 1024:
        raise InputError(f"resolution must be an integer in [8, 1024], not {resolution!r}")
    return render(sample_params(n, seed=seed, start=start, **overrides), resolution)
