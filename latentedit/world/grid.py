"""Colour-coded label maps of world renders (the label palette is the world's)."""
import numpy as np
import torch

from latentedit.world.params import LABEL_COLORS


def colorize(labels: torch.Tensor) -> np.ndarray:
    """[N, H, W] int64 label ids -> [N, H, W, 3] uint8 palette colours."""
    return LABEL_COLORS[labels].numpy()
