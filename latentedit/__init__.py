"""latentedit: StyleGAN2 latent-space editing.

    import latentedit as le
    m = le.load_model()                           # the bundled default: G + directions, encoder, ...
    G = le.load_generator("ffhq.pkl")             # bundle folder, rosinality .pt or NVlabs .pkl
    w = G.sample_w(8, seed=0, truncation=0.7)     # [8, 512]
    images = G.synthesize(w)                      # [8, 3, H, W] in [-1, 1]
    codes = le.invert("photos/", mode="encoder")  # [N, num_ws, w_dim] via the bundle's encoder
"""
import os

# Large CPU tensors on 2 MB pages (PyTorch's allocator reads this once, at its first allocation,
# so it holds when latentedit is imported before any tensor is made; THP mode "madvise" then applies): 1.18-1.27x at 1024 px on Intel
# AMX, +2-5% on the training step (benchmarks/RESULTS.md). THP_MEM_ALLOC_ENABLE=0 opts out.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from latentedit.heap import keep_freed_blocks  # noqa: E402

keep_freed_blocks()  # large tensors reuse freed heap memory instead of fresh pages (heap.py)

from latentedit.edit.directions import Direction, linear_interpolate
from latentedit.edit.discrete import DiscreteSynthesizer
from latentedit.edit.layers import AttributeLayers
from latentedit.edit.inversion import encode_images, invert, load_encoder
from latentedit.errors import FormatError, InputError, LatentEditError, UnsafeFileError
from latentedit.formats import load_generator, load_networks, save_networks
from latentedit.formats.latents import read_latents, write_latents
from latentedit.model import Model, load_model
from latentedit.models.encoder import Encoder, EncoderConfig
from latentedit.models.discriminator import Discriminator
from latentedit.models.stylegan2 import DiscriminatorConfig, Generator, GeneratorConfig

__version__ = "0.1.0"

__all__ = [
    "Discriminator", "DiscriminatorConfig", "FormatError", "Generator", "GeneratorConfig", "InputError",
    "LatentEditError", "UnsafeFileError", "load_generator", "load_networks", "read_latents", "save_networks",
    "AttributeLayers", "Direction", "DiscreteSynthesizer", "linear_interpolate", "invert", "encode_images",
    "load_encoder", "load_model", "Model",
    "Encoder", "EncoderConfig",
    "write_latents", "__version__",
]
