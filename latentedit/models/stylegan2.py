"""StyleGAN2 (config-f maths): configs, mapping and the generator; the synthesis network is in
models/synthesis.py, the discriminator in models/discriminator.py.

One code path for every size: resolution, channel_base / channel_max, n_mlp and latent dims
are configuration (config-f at 1024 px is GeneratorConfig(resolution=1024)). Module and
parameter names follow the NVlabs stylegan2-ada layout, so their state dicts load by name and
rosinality's by rename + reshape (latentedit.formats).
"""
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from latentedit.errors import InputError
from latentedit.models.config import DictConfig, is_real
from latentedit.models.layers import FullyConnectedLayer, normalize_2nd_moment
from latentedit.models.synthesis import NOISE_MODES, SynthesisNetwork  # noqa: F401  (NOISE_MODES: public here too)



# Limits on what a file may ask for, so that a corrupt or hostile config fails with a message
# instead of allocating terabytes (config-f at 1024 px is well inside them).
CONFIG_LIMITS = {"resolution": 4096, "z_dim": 8192, "w_dim": 8192, "img_channels": 16, "channel_base": 1 << 20,
                 "channel_max": 8192, "n_mlp": 64, "num_fp16_res": 16, "mbstd_group_size": 1024,
                 "mbstd_num_channels": 64, "c_dim": 4096}


MAX_FILTER_TAPS = 32  # NVlabs and rosinality use 4 ([1, 3, 3, 1])
# Parameters and buffers a config may ask for, checked before anything is allocated: config-f at
# 1024 px is about 59 M elements (G + D); 1 Gi float32 elements are 4 GiB.
MAX_CONFIG_ELEMENTS = 1 << 30


def check_config(cfg):
    """Types and ranges of every field, then the memory the network would take; InputError naming
    the field, so that a corrupt or hostile file fails before a tensor is allocated."""
    name = type(cfg).__name__
    for field_name, limit in CONFIG_LIMITS.items():
        value = getattr(cfg, field_name, None)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= limit:
            raise InputError(f"{name}.{field_name} must be an integer in [0, {limit}], got {value!r:.80}")
    log2 = math.log2(cfg.resolution) if cfg.resolution > 0 else 0.5
    if cfg.resolution < 4 or log2 != int(log2):
        raise InputError(f"resolution must be a power of two >= 4, got {cfg.resolution}")
    if cfg.channel_base < 1 or cfg.channel_max < 1 or getattr(cfg, "z_dim", 1) < 1 or getattr(cfg, "w_dim", 1) < 1:
        raise InputError(f"{name}: channels and latent sizes must be positive")
    if getattr(cfg, "n_mlp", 1) < 1:  # without a layer z is not mapped to W (nor z_dim to w_dim)
        raise InputError(f"{name}.n_mlp must be >= 1, got {cfg.n_mlp}")
    lr_mul, beta = getattr(cfg, "mapping_lr_multiplier", 1), getattr(cfg, "w_avg_beta", 0)
    if not is_real(lr_mul) or lr_mul <= 0:  # 0 freezes the mapping network (its weights are scaled by it)
        raise InputError(f"{name}.mapping_lr_multiplier must be a positive number, got {lr_mul!r:.80}")
    if not is_real(beta) or not 0 <= beta <= 1:
        raise InputError(f"{name}.w_avg_beta must be a number in [0, 1], got {beta!r:.80}")
    if cfg.conv_clamp is not None and (not is_real(cfg.conv_clamp) or cfg.conv_clamp <= 0):
        raise InputError(f"{name}.conv_clamp must be null or a positive number, got {cfg.conv_clamp!r:.80}")
    f = cfg.resample_filter
    if (not isinstance(f, (list, tuple)) or not 1 <= len(f) <= MAX_FILTER_TAPS or not all(is_real(t) for t in f)
            or not is_real(sum(f)) or sum(f) == 0):
        raise InputError(f"{name}.resample_filter must be a list of 1 to {MAX_FILTER_TAPS} numbers with a "
                         f"non-zero sum, got {f!r:.80}")
    check_label_prior(cfg)
    elements = cfg.tensor_elements()
    if elements > MAX_CONFIG_ELEMENTS:
        raise InputError(f"{name} asks for {elements / 2 ** 30:.1f} Gi parameters ({elements * 4 / 2 ** 30:.0f} GiB); "
                         f"the limit is {MAX_CONFIG_ELEMENTS / 2 ** 30:.0f} Gi (a 1024 px config-f network has 0.03 Gi)")



LABEL_INPUTS = ("embed", "w_offset")
UNCONDITIONAL = {"c_dim": 0, "label_input": "embed", "label_prior": None}


def config_dict(cfg):
    """A network config as stored: the label fields left out where unconditional, so that bundles
    of unconditional networks stay readable by versions that predate labels."""
    return {k: v for k, v in asdict(cfg).items() if not (k in UNCONDITIONAL and v == UNCONDITIONAL[k])}


def label_spans(prior):
    """[(first column, end)] of each group of a label prior in the label vector."""
    ends = np.cumsum([len(group) for group in prior]).tolist()
    return [(end - len(group), end) for group, end in zip(prior, ends)]


def group_span(prior, class_idx):
    """(first column, end) of the group of a label prior that holds column class_idx."""
    return next(span for span in label_spans(prior) if span[0] <= class_idx < span[1])


def with_class(c, prior, class_idx):
    """A copy of labels c [N, c_dim] with class_idx's group set to it: its other columns cleared,
    the other groups kept."""
    start, end = group_span(prior, class_idx)
    c = c.clone()
    c[:, start:end] = 0
    c[:, class_idx] = 1
    return c


def check_label_prior(cfg):
    """label_input one of LABEL_INPUTS; label_prior: None, or groups of class probabilities (each
    group's sum <= 1, the rest of its mass is 'no class'), one z dimension per group, as many classes
    in all as c_dim."""
    if getattr(cfg, "label_input", "embed") not in LABEL_INPUTS:
        raise InputError(f"{type(cfg).__name__}.label_input must be one of {LABEL_INPUTS}, got {cfg.label_input!r:.80}")
    prior = getattr(cfg, "label_prior", None)
    if prior is None:
        return
    bad = f"{type(cfg).__name__}.label_prior must be a list of groups of probabilities"
    if not isinstance(prior, (list, tuple)) or not prior or not all(isinstance(g, (list, tuple)) and g for g in prior):
        raise InputError(f"{bad}, got {prior!r:.80}")
    for group in prior:
        if not all(is_real(p) and 0 <= p <= 1 for p in group) or sum(group) > 1 + 1e-6:
            raise InputError(f"{bad} in [0, 1] summing to <= 1 per group, got {list(group)!r:.80}")
    if sum(len(g) for g in prior) != cfg.c_dim:
        raise InputError(f"{type(cfg).__name__}: label_prior has {sum(len(g) for g in prior)} classes, c_dim is {cfg.c_dim}")
    if len(prior) > cfg.z_dim:
        raise InputError(f"{type(cfg).__name__}: {len(prior)} label groups need as many z dimensions (z_dim {cfg.z_dim})")


@dataclass
class GeneratorConfig(DictConfig):
    """A StyleGAN2 generator's architecture (the defaults are config-f at 1024 px)."""
    resolution: int = 1024  # output size in px, a power of two; the synthesis has one block per octave from 4 px
    z_dim: int = 512  # input latent size
    w_dim: int = 512  # intermediate latent (W) size: one style vector per W+ layer
    img_channels: int = 3
    channel_base: int = 32768  # feature channels at resolution r: min(channel_base // r, channel_max)
    channel_max: int = 512
    n_mlp: int = 8  # fully connected layers of the mapping network
    mapping_lr_multiplier: float = 0.01  # equalised-lr multiplier of the mapping (rosinality's --lr_mlp)
    w_avg_beta: float = 0.995  # EMA decay of the tracked average W (the truncation centre) in training
    num_fp16_res: int = 0  # the top resolutions that run in fp16 on CUDA (CPU is always fp32)
    conv_clamp: float = None  # clamp pre-activations to +-conv_clamp (NVlabs uses 256 with fp16)
    resample_filter: list = field(default_factory=lambda: [1, 3, 3, 1])
    c_dim: int = 0  # class label size (NVlabs' conditioning); 0: unconditional
    # How the label enters: "embed", NVlabs' label embedding beside z at the mapping's input;
    # "w_offset", a learnt W offset per class added to the mapping's output (ours: zero at the start,
    # it learns at Adam's own rate, so an unconditional generator gains labels as the same function).
    label_input: str = "embed"
    # Labels drawn from z itself (MappingNetwork.labels_from_z), so that G(z) needs no label: groups
    # of class probabilities, e.g. [[p_frame, p_sun], [p_mask]]. None: a conditional G needs c given.
    label_prior: list = None

    def __post_init__(self):
        check_config(self)

    to_dict = config_dict

    @property
    def block_resolutions(self):
        return [2 ** i for i in range(2, int(math.log2(self.resolution)) + 1)]

    @property
    def num_ws(self):
        return 2 * len(self.block_resolutions)  # one per conv plus the last ToRGB: 18 at 1024 px

    def channels(self, res):
        return min(self.channel_base // res, self.channel_max)

    def tensor_elements(self):
        """Parameters + buffers of Generator(self), counted from the config alone (filters left out)."""
        n = self.z_dim * self.w_dim + (self.n_mlp - 1) * self.w_dim ** 2 + (self.n_mlp + 1) * self.w_dim
        if self.c_dim:  # the label embedding and its inputs to the first layer, or the W offsets
            n += (self.c_dim + 1) * self.w_dim + self.w_dim ** 2 if self.label_input == "embed" else self.c_dim * self.w_dim

        def layer(i, o, res):  # SynthesisLayer: affine, weight, noise, bias
            return (self.w_dim + 1) * i + 9 * i * o + res * res + o + 1
        for res in self.block_resolutions:
            c = self.channels(res)
            n += (16 * c if res == 4 else layer(self.channels(res // 2), c, res)) + layer(c, c, res)
            n += (self.w_dim + 1) * c + (c + 1) * self.img_channels  # ToRGB
        return n


@dataclass
class DiscriminatorConfig(DictConfig):
    """A StyleGAN2 residual discriminator's architecture (defaults: config-f at 1024 px)."""
    resolution: int = 1024  # input size in px; one residual block per octave down to 4 px
    img_channels: int = 3
    channel_base: int = 32768  # channels at resolution r: min(channel_base // r, channel_max), as G
    channel_max: int = 512
    mbstd_group_size: int = 4  # minibatch standard deviation over groups of this many samples
    mbstd_num_channels: int = 1  # feature maps the minibatch-std layer appends
    num_fp16_res: int = 0  # the top resolutions that run in fp16 on CUDA
    conv_clamp: float = None  # clamp pre-activations to +-conv_clamp
    resample_filter: list = field(default_factory=lambda: [1, 3, 3, 1])  # FIR taps of down-sampling
    c_dim: int = 0  # class label size: a projection of the label onto the last features (0: unconditional)

    channels = GeneratorConfig.channels
    __post_init__ = check_config
    to_dict = config_dict

    def tensor_elements(self):
        """Parameters + buffers of Discriminator(self), counted from the config alone (filters left out)."""
        c4, n = self.channels(4), 0
        for res in (2 ** i for i in range(int(math.log2(self.resolution)), 2, -1)):
            c, out = self.channels(res), self.channels(res // 2)
            n += (self.img_channels + 1) * c if res == self.resolution else 0
            n += 9 * c * c + c + 9 * c * out + out + c * out
        return n + 9 * (c4 + self.mbstd_num_channels) * c4 + c4 + 16 * c4 * c4 + c4 + c4 + 1 + self.c_dim * c4


# ---------------------------------------------------------------------------------------------
# Mapping


class MappingNetwork(nn.Module):
    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws, self.num_layers = cfg.z_dim, cfg.w_dim, cfg.num_ws, cfg.n_mlp
        self.w_avg_beta, self.c_dim, self.label_prior = cfg.w_avg_beta, cfg.c_dim, cfg.label_prior
        embed = cfg.c_dim and cfg.label_input == "embed"
        if embed:  # NVlabs' layout: the normalised label embedding beside the normalised z
            self.embed = FullyConnectedLayer(cfg.c_dim, cfg.w_dim)
        elif cfg.c_dim:  # one W vector per class; lr multiplier sqrt(c_dim) undoes the 1/sqrt(fan-in) gain
            self.label_offset = FullyConnectedLayer(cfg.c_dim, cfg.w_dim, bias=False, lr_multiplier=math.sqrt(cfg.c_dim))
            nn.init.zeros_(self.label_offset.weight)
        dims = [cfg.z_dim + (cfg.w_dim if embed else 0)] + [cfg.w_dim] * cfg.n_mlp
        for i in range(cfg.n_mlp):
            layer = FullyConnectedLayer(dims[i], dims[i + 1], activation="lrelu", lr_multiplier=cfg.mapping_lr_multiplier)
            setattr(self, f"fc{i}", layer)
        self.register_buffer("w_avg", torch.zeros([cfg.w_dim]))

    def forward(self, z, c=None, truncation_psi=1.0, truncation_cutoff=None, *, update_w_avg=None,
                update_emas=None):
        """z [N, z_dim] -> ws [N, num_ws, w_dim]. Truncation pulls layers [0, cutoff) towards w_avg.
        NVlabs' calling convention: `mapping(z, c, truncation_psi=...)`, where c is the class label
        [N, c_dim] (unconditional: None or [N, 0]; with a label prior None draws it from z);
        update_emas is NVlabs' name for update_w_avg."""
        check_label(c, len(z), self.c_dim, self.label_prior is not None)
        if update_w_avg is None:
            update_w_avg = update_emas
        x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim:
            c = (self.labels_from_z(z) if c is None else c).to(torch.float32)
        if hasattr(self, "embed"):
            x = torch.cat([x, normalize_2nd_moment(self.embed(c))], dim=1)
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        if hasattr(self, "label_offset"):
            x = x + self.label_offset(c)
        if update_w_avg if update_w_avg is not None else self.training:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        return truncate(x.unsqueeze(1).repeat([1, self.num_ws, 1]), self.w_avg, truncation_psi, truncation_cutoff)

    def labels_from_z(self, z):
        """Labels [N, c_dim] drawn from z: group g's class is where Phi(z[:, g]) falls among the
        group's cumulative probabilities (past the last: no class, all zeros). z ~ N(0, I) then
        draws each class at its prior rate, independently across groups, and a seed keeps its labels."""
        if self.label_prior is None:
            raise InputError("this generator has no label prior to draw labels from: give its label c")
        u = torch.special.ndtr(z[:, :len(self.label_prior)].double())
        parts = []
        for g, probs in enumerate(self.label_prior):
            edges = torch.tensor(np.cumsum(probs), dtype=torch.float64, device=z.device)
            k = torch.searchsorted(edges, u[:, g].contiguous(), right=True)  # len(probs): no class
            if sum(probs) >= 1:  # no mass left for 'no class' (Phi rounds to 1 far out in the tail)
                k = k.clamp(max=len(probs) - 1)
            parts.append(torch.nn.functional.one_hot(k, len(probs) + 1)[:, :len(probs)])
        return torch.cat(parts, dim=1).to(torch.float32)


def check_label(c, n, c_dim=0, drawn=False):
    """c: NVlabs' conditioning label: [n, c_dim], or None where there is none (c_dim 0) or the
    network draws it (`drawn`). A number there is the old positional truncation psi, which reads as
    a label in NVlabs' convention."""
    if c is None and (c_dim == 0 or drawn):
        return
    if torch.is_tensor(c) and c.ndim == 2 and c.shape == (n, c_dim):
        if not torch.isfinite(c).all():
            raise InputError("the class label c contains NaN or infinite values")
        return
    if isinstance(c, (int, float)):
        raise InputError(f"the second positional argument is the class label c (NVlabs' convention), got {c!r}; "
                         "pass truncation_psi= by name")
    shape = list(c.shape) if torch.is_tensor(c) else type(c).__name__
    if c_dim == 0:
        raise InputError(f"this network is unconditional (c_dim 0): c must be None or [{n}, 0], got {shape}")
    raise InputError(f"this network is conditional: c must be a label [{n}, {c_dim}], got {shape}")


def truncate(ws, w_avg, psi=1.0, cutoff=None):
    """ws [N, L, w_dim] -> w_avg + psi * (ws - w_avg) on layers [0, cutoff) (all when None)."""
    if psi == 1:
        return ws
    cutoff = ws.shape[1] if cutoff is None else cutoff
    ws = ws.clone()
    ws[:, :cutoff] = w_avg.lerp(ws[:, :cutoff], psi)
    return ws


# ---------------------------------------------------------------------------------------------
# Generator


def z_from_seeds(seeds, z_dim=512):
    """The z that NVlabs' and rosinality-converted generate scripts use for each integer seed:
    numpy RandomState(seed).randn(z_dim), so seed k draws the same face as in those tools."""
    return torch.from_numpy(np.stack([np.random.RandomState(int(s)).randn(z_dim) for s in seeds])).float()


class Generator(nn.Module):
    """StyleGAN2 generator (NVlabs' config-f maths): `mapping` z -> W+ [N, num_ws, w_dim] and
    `synthesis` W+ -> images [N, C, R, R] in about [-1, 1]. Editing works on W / W+ codes:
    `sample_w(n, seed)` (seed k draws NVlabs' face k), `broadcast_w`, `synthesize(w)`,
    `mix_styles`. Calling conventions: NVlabs' `G(z, c, truncation_psi=...)` and
    `G.mapping(z, c, ...)` (c None: unconditional); rosinality's `G([z])` is `G(z)` here, and its
    `G([w], input_is_latent=True)` is `G.synthesize(w)`. Loaded from any format by
    `le.load_generator` / `le.load_model`."""

    def __init__(self, cfg: GeneratorConfig = None):
        super().__init__()
        self.cfg = cfg = cfg or GeneratorConfig()
        self.z_dim, self.w_dim, self.num_ws, self.img_resolution = cfg.z_dim, cfg.w_dim, cfg.num_ws, cfg.resolution
        self.c_dim, self.img_channels = cfg.c_dim, cfg.img_channels  # NVlabs' attributes
        self.mapping = MappingNetwork(cfg)
        self.synthesis = SynthesisNetwork(cfg)

    @property
    def w_avg(self):
        return self.mapping.w_avg

    def forward(self, z, c=None, truncation_psi=1.0, truncation_cutoff=None, *, update_emas=None,
                noise_mode="random", fused_modconv=None, force_fp32=False, generator=None, fast=None,
                compute_dtype=None):
        """z [N, z_dim] (and NVlabs' label c, see MappingNetwork.forward) -> images [N, C, R, R]; the options are
        SynthesisNetwork.forward's. rosinality's `G([z])` is `G(z)` here (`G.synthesize(w)` for W)."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)
        return self.synthesis(ws, noise_mode=noise_mode, fused_modconv=fused_modconv, force_fp32=force_fp32,
                              generator=generator, fast=fast, compute_dtype=compute_dtype)

    @torch.no_grad()
    def sample_w(self, n=None, seed=0, truncation=1.0, seeds=None):
        """W codes [N, w_dim] for seeds (`seeds`, or n consecutive seeds from `seed`), truncated."""
        seeds = list(range(seed, seed + n)) if seeds is None else list(seeds)
        z = z_from_seeds(seeds, self.z_dim).to(self.w_avg.device)
        return self.mapping(z, truncation_psi=truncation, update_w_avg=False)[:, 0]

    def broadcast_w(self, w):
        """[N, w_dim] (W) or [N, num_ws, w_dim] (W+) -> [N, num_ws, w_dim]; validates shape and values."""
        if not torch.is_tensor(w):
            w = torch.as_tensor(np.asarray(w), dtype=torch.float32)
        if w.ndim == 2 and w.shape[1] == self.w_dim:
            w = w.unsqueeze(1).repeat([1, self.num_ws, 1])
        elif not (w.ndim == 3 and w.shape[1:] == (self.num_ws, self.w_dim)):
            raise InputError(f"latents must have shape [N, {self.w_dim}] (W) or [N, {self.num_ws}, {self.w_dim}] "
                             f"(W+), got {list(w.shape)}")
        if not torch.isfinite(w).all():
            raise InputError("latents contain NaN or infinite values")
        return w.to(device=self.w_avg.device, dtype=torch.float32)

    def synthesize(self, w, *, noise_mode="const", batch_size=None, generator=None, fused_modconv=None,
                   force_fp32=False, fast=None, compute_dtype=None):
        """W [N, w_dim] or W+ [N, num_ws, w_dim] -> images [N, C, R, R] in about [-1, 1]; the options
        are SynthesisNetwork.forward's, batch_size splits the work."""
        if noise_mode not in NOISE_MODES:
            raise InputError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        ws = self.broadcast_w(w)
        batch_size = batch_size or ws.shape[0]
        return torch.cat([self.synthesis(chunk, noise_mode=noise_mode, generator=generator, fused_modconv=fused_modconv,
                                         force_fp32=force_fp32, fast=fast, compute_dtype=compute_dtype)
                          for chunk in ws.split(batch_size)])

    @staticmethod
    def mix_styles(ws_a, ws_b, crossover):
        """Style mixing: layers [0, crossover) from ws_a, the rest from ws_b (both [N, num_ws, w_dim])."""
        out = ws_a.clone()
        out[:, crossover:] = ws_b[:, crossover:]
        return out
