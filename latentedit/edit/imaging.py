"""Resizing generated images to the size a network expects (evaluators, encoders, fusion nets)."""
import torch.nn.functional as F


def resize(images, size):
    """[N, C, H, W] -> [N, C, size, size]: area averaging when shrinking, bilinear when growing."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    if images.shape[-1] > size:
        return F.interpolate(images, size=(size, size), mode="area")
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


def resize_antialiased(images, size):
    """[N, C, H, W] -> [N, C, size, size], bilinear with antialiasing (smooth for gradients both ways)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
