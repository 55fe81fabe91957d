"""ReStyle: an encoder that refines its codes in steps, each seeing the image and the current
reconstruction (re-implemented from the ReStyle paper, Alaluf et al. 2021).

    restyle = ReStyle(encoder, G, steps=5)   # encoder: an Encoder with input_channels 6
    codes = restyle(images)                  # [N, 3, H, W] in [-1, 1] -> [N, num_ws, w_dim]

Step 0 sees [image, the average image] (G's image of w_avg on every layer) and gives codes
w_avg + offsets; step t > 0 sees [image, G(codes_{t-1})] and gives codes_{t-1} + offsets. Images
enter at the encoder's resolution (resized with antialiasing, as the released code's loader does);
reconstructions are adaptively average-pooled to it (the released code's `face_pool`), noise
constant. Networks only: the checkpoint loader is formats/psp.py.
"""
import torch
import torch.nn.functional as F
from torch import nn

from latentedit.errors import InputError
from latentedit.models.encoder import Encoder

MAX_STEPS = 100


class ReStyle(nn.Module):
    def __init__(self, encoder: Encoder, G, steps=5):
        super().__init__()
        if encoder.cfg.input_channels != 6:
            raise InputError(f"ReStyle needs an encoder of 6 input channels, got {encoder.cfg.input_channels}")
        if (encoder.cfg.num_ws, encoder.cfg.w_dim) != (G.num_ws, G.w_dim):
            raise InputError(f"the encoder makes {encoder.cfg.num_ws} x {encoder.cfg.w_dim} W+ codes, the generator "
                             f"takes {G.num_ws} x {G.w_dim}")
        self.encoder, self.G = encoder, G
        self.steps = steps

    @property
    def steps(self):
        return self._steps

    @steps.setter
    def steps(self, value):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_STEPS:
            raise InputError(f"ReStyle steps must be an integer in [1, {MAX_STEPS}], got {value!r}")
        self._steps = value

    @property
    def num_ws(self):
        return self.encoder.num_ws

    def reconstruct(self, codes):
        """Codes [N, num_ws, w_dim] -> G's images pooled to the encoder's resolution."""
        return self.pool(self.G.synthesis(codes, noise_mode="const"))

    def pool(self, images):
        """G's images -> the encoder's resolution, as the next step sees them."""
        return F.adaptive_avg_pool2d(images, self.encoder.cfg.resolution)

    def average_image(self):
        """[1, 3, R, R]: G's image of w_avg on every layer (the encoder's w_avg, ReStyle's latent_avg)."""
        return self.reconstruct(self.encoder.w_avg.expand(1, self.num_ws, -1))

    def forward(self, images, return_steps=False):
        """Images [N, 3, H, W] in [-1, 1] (any square size) -> codes after `steps` refinements
        [N, num_ws, w_dim]; with return_steps, the list of every step's codes."""
        from latentedit.edit.imaging import resize_antialiased

        R = self.encoder.cfg.resolution
        square = torch.is_tensor(images) and images.ndim == 4 and images.shape[2] == images.shape[3]
        if not square or images.shape[1] != 3:
            shape = list(images.shape) if torch.is_tensor(images) else type(images).__name__
            raise InputError(f"ReStyle input must be images [N, 3, H, H] in [-1, 1], got {shape}")
        x = resize_antialiased(images.float(), R)
        current = self.average_image().expand(len(x), -1, -1, -1)
        codes = self.encoder.w_avg.expand(len(x), self.num_ws, -1)
        history = []
        for step in range(self.steps):
            codes = codes + self.encoder.offsets(torch.cat([x, current], dim=1))
            history.append(codes)
            if step + 1 < self.steps:
                current = self.reconstruct(codes)
        return history if return_steps else codes
