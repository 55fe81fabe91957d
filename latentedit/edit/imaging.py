"""Resizing generated images to the size a network expects (evaluators, encoders, fusion nets)."""
import torch.nn.functional as F


def resize(images, size):
    """[N, C, H, W] -> [N, C, size, size]: area averaging when shrinking, bilinear when growing."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    if images.shape[-1] > size:
        return F.interpolate(images, size=(size, size), mode="area")
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


def network_input(images, size):
    """Generated images as a fixed-size network reads them (the judges, the 3D encoder): resized to
    size, clamped to [-1, 1]."""
    return resize(images, size).clamp(-1, 1)


def resize_antialiased(images, size):
    """[N, C, H, W] -> [N, C, size, size], bilinear with antialiasing (smooth for gradients both ways)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
