"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual
Metric"), VGG16 and AlexNet variants, written here as plain modules.

The trunks carry torchvision's `features.{i}` key names, so an ImageNet state dict of torchvision
(vgg16-397923af.pth, alexnet-owt-7be5be79.pth) loads into `trunk` as it is; the linear weights
(one non-negative weight per channel and tapped layer) are those the `lpips` package ships.
Distance between images x, y [N, 3, H, W] in [-1, 1]:

    d(x, y) = sum_l mean_hw sum_c w_lc (u_l(x) - u_l(y))^2,   u_l = f_l / (||f_l||_channels + 1e-10)

where f_l are the trunk's activations at the tapped ReLUs of the input after the scaling layer
((x - shift) / scale). `features(x)` flattens sqrt(w_lc / (H_l W_l)) * u_l(x) over all layers, so
||features(x) - features(y)||^2 is exactly d(x, y): targets are embedded once.
Networks only: `latentedit.formats.lpips.load_lpips` reads the weights.
"""
import torch
from torch import nn
from torch.nn import functional as F

from latentedit.errors import InputError

# The scaling layer's constants (the lpips package's ScalingLayer): ImageNet statistics in [-1, 1].
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
EPS = 1e-10

# torchvision's `features` layouts: conv (out channels, kernel, stride, padding), "M" = max pool
# (kernel, stride); ReLUs follow every conv. TAPS: indices of the ReLUs LPIPS reads.
_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
VARIANTS = {
    "vgg": {"taps": (3, 8, 15, 22, 29), "channels": (64, 128, 256, 512, 512), "min_size": 16},
    "alex": {"taps": (1, 4, 7, 9, 11), "channels": (64, 192, 384, 256, 256), "min_size": 31},
}


def _vgg16_features():
    layers, c = [], 3
    for v in _VGG16:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU()]
            c = v
    return nn.Sequential(*layers)


def _alexnet_features():
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU())


class Trunk(nn.Module):
    """The ImageNet trunk up to its last tapped ReLU; `features` has torchvision's indices."""

    def __init__(self, variant):
        super().__init__()
        self.features = _vgg16_features() if variant == "vgg" else _alexnet_features()
        self.taps = VARIANTS[variant]["taps"]

    def forward(self, x):  # -> activations at the tapped ReLUs
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out.append(x)
        return out


class LPIPS(nn.Module):
    """LPIPS distance `forward(x, y) -> [N]` and its embedding `features(x) -> [N, D]`.

    Images larger than `max_size` are first area-downsampled to it (as NVlabs' StyleGAN2-ADA
    projector feeds its LPIPS VGG 256 px images); None keeps every size. A perceptual network of
    the loss protocol (latentedit.edit.losses): `relative_distance = False`, the squared feature
    distance is the LPIPS distance itself."""

    relative_distance = False
    input_size = None  # any size (see max_size)

    def __init__(self, variant="vgg", max_size=256):
        super().__init__()
        if variant not in VARIANTS:
            raise InputError(f"LPIPS variant must be one of {sorted(VARIANTS)}, got {variant!r}")
        self.variant, self.max_size = variant, max_size
        self.trunk = Trunk(variant)
        self.register_buffer("shift", torch.tensor(SHIFT).reshape(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).reshape(1, 3, 1, 1))
        for k, c in enumerate(VARIANTS[variant]["channels"]):
            self.register_buffer(f"lin{k}", torch.full([c], 1.0 / c))
        self.requires_grad_(False)  # a frozen metric: gradients flow to the images only

    @property
    def lins(self):
        return [getattr(self, f"lin{k}") for k in range(len(VARIANTS[self.variant]["channels"]))]

    def _prepare(self, x):
        if not torch.is_tensor(x) or x.ndim != 4 or x.shape[1] != 3:
            shape = list(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise InputError(f"LPIPS expects images [N, 3, H, W] in [-1, 1], got {shape}")
        if self.max_size and max(x.shape[2:]) > self.max_size:
            h, w = x.shape[2:]
            s = self.max_size / max(h, w)
            x = F.interpolate(x, size=(max(1, round(h * s)), max(1, round(w * s))), mode="area")
        min_size = VARIANTS[self.variant]["min_size"]
        if min(x.shape[2:]) < min_size:
            raise InputError(f"LPIPS {self.variant} needs images of at least {min_size} px, got "
                             f"{x.shape[2]}x{x.shape[3]}")
        return (x - self.shift) / self.scale

    def features(self, x):
        """[N, 3, H, W] -> [N, D]: ||features(x) - features(y)||^2 = LPIPS distance."""
        parts = []
        for f, w in zip(self.trunk(self._prepare(x)), self.lins):
            u = f / (f.square().sum(1, keepdim=True).sqrt() + EPS)
            # LPIPS's linear weights are non-negative (load_lpips checks); the clamp keeps sqrt real
            weight = (w.clamp_min(0) / (f.shape[2] * f.shape[3])).sqrt()
            parts.append((u * weight.reshape(1, -1, 1, 1)).flatten(1))
        return torch.cat(parts, 1)

    def forward(self, x, y):
        """LPIPS distance [N] between images x and y [N, 3, H, W] in [-1, 1]."""
        return (self.features(x) - self.features(y)).square().sum(1)
