"""StyleGAN2 (config-f maths): mapping, synthesis, generator and residual discriminator.

One code path for every size: resolution, channel_base / channel_max, n_mlp and latent dims
are configuration (config-f at 1024 px is GeneratorConfig(resolution=1024)). Module and
parameter names follow the NVlabs stylegan2-ada layout, so their state dicts load by name and
rosinality's by rename + reshape (latentedit.formats).
"""
import math
import weakref
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from latentedit.errors import InputError
from latentedit.models.config import DictConfig, is_real
from latentedit.models.layers import (Conv2dLayer, FullyConnectedLayer, conv2d_resample, normalize_2nd_moment,
                                     version_key)
from latentedit.ops import bias_act, setup_filter, upsample2d

NOISE_MODES = ("random", "const", "none")


# Limits on what a file may ask for, so that a corrupt or hostile config fails with a message
# instead of allocating terabytes (config-f at 1024 px is well inside them).
CONFIG_LIMITS = {"resolution": 4096, "z_dim": 8192, "w_dim": 8192, "img_channels": 16, "channel_base": 1 << 20,
                 "channel_max": 8192, "n_mlp": 64, "num_fp16_res": 16, "mbstd_group_size": 1024,
                 "mbstd_num_channels": 64}


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
    elements = cfg.tensor_elements()
    if elements > MAX_CONFIG_ELEMENTS:
        raise InputError(f"{name} asks for {elements / 2 ** 30:.1f} Gi parameters ({elements * 4 / 2 ** 30:.0f} GiB); "
                         f"the limit is {MAX_CONFIG_ELEMENTS / 2 ** 30:.0f} Gi (a 1024 px config-f network has 0.03 Gi)")



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

    def __post_init__(self):
        check_config(self)

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

        def layer(i, o, res):  # SynthesisLayer: affine, weight, noise, bias
            return (self.w_dim + 1) * i + 9 * i * o + res * res + o + 1
        for res in self.block_resolutions:
            c = self.channels(res)
            n += (16 * c if res == 4 else layer(self.channels(res // 2), c, res)) + layer(c, c, res)
            n += (self.w_dim + 1) * c + (c + 1) * self.img_channels  # ToRGB
        return n


@dataclass
class DiscriminatorConfig(DictConfig):
    resolution: int = 1024
    img_channels: int = 3
    channel_base: int = 32768
    channel_max: int = 512
    mbstd_group_size: int = 4
    mbstd_num_channels: int = 1
    num_fp16_res: int = 0
    conv_clamp: float = None
    resample_filter: list = field(default_factory=lambda: [1, 3, 3, 1])

    channels = GeneratorConfig.channels
    __post_init__ = check_config

    def tensor_elements(self):
        """Parameters + buffers of Discriminator(self), counted from the config alone (filters left out)."""
        c4, n = self.channels(4), 0
        for res in (2 ** i for i in range(int(math.log2(self.resolution)), 2, -1)):
            c, out = self.channels(res), self.channels(res // 2)
            n += (self.img_channels + 1) * c if res == self.resolution else 0
            n += 9 * c * c + c + 9 * c * out + out + c * out
        return n + 9 * (c4 + self.mbstd_num_channels) * c4 + c4 + 16 * c4 * c4 + c4 + c4 + 1


# ---------------------------------------------------------------------------------------------
# Mapping


class MappingNetwork(nn.Module):
    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws, self.num_layers = cfg.z_dim, cfg.w_dim, cfg.num_ws, cfg.n_mlp
        self.w_avg_beta = cfg.w_avg_beta
        dims = [cfg.z_dim] + [cfg.w_dim] * cfg.n_mlp
        for i in range(cfg.n_mlp):
            layer = FullyConnectedLayer(dims[i], dims[i + 1], activation="lrelu", lr_multiplier=cfg.mapping_lr_multiplier)
            setattr(self, f"fc{i}", layer)
        self.register_buffer("w_avg", torch.zeros([cfg.w_dim]))

    def forward(self, z, c=None, truncation_psi=1.0, truncation_cutoff=None, *, update_w_avg=None,
                update_emas=None):
        """z [N, z_dim] -> ws [N, num_ws, w_dim]. Truncation pulls layers [0, cutoff) towards w_avg.
        NVlabs' calling convention: `mapping(z, c, truncation_psi=...)`, where c is the class label
        (these generators are unconditional: None or an empty [N, 0] tensor); update_emas is
        NVlabs' name for update_w_avg."""
        check_label(c, len(z))
        if update_w_avg is None:
            update_w_avg = update_emas
        x = normalize_2nd_moment(z.to(torch.float32))
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        if update_w_avg if update_w_avg is not None else self.training:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        return truncate(x.unsqueeze(1).repeat([1, self.num_ws, 1]), self.w_avg, truncation_psi, truncation_cutoff)


def check_label(c, n):
    """c: NVlabs' conditioning label of an unconditional generator: None or [n, 0]. A number there is
    the old positional truncation psi, which reads as a label in NVlabs' convention."""
    if c is None or (torch.is_tensor(c) and c.ndim == 2 and c.shape == (n, 0)):
        return
    if isinstance(c, (int, float)):
        raise InputError(f"the second positional argument is the class label c (NVlabs' convention), got {c!r}; "
                         "pass truncation_psi= by name")
    shape = list(c.shape) if torch.is_tensor(c) else type(c).__name__
    raise InputError(f"this generator is unconditional (c_dim 0): c must be None or [{n}, 0], got {shape}")


def truncate(ws, w_avg, psi=1.0, cutoff=None):
    """ws [N, L, w_dim] -> w_avg + psi * (ws - w_avg) on layers [0, cutoff) (all when None)."""
    if psi == 1:
        return ws
    cutoff = ws.shape[1] if cutoff is None else cutoff
    ws = ws.clone()
    ws[:, :cutoff] = w_avg.lerp(ws[:, :cutoff], psi)
    return ws


# ---------------------------------------------------------------------------------------------
# Synthesis


def modulated_conv2d(x, weight, styles, noise=None, up=1, padding=0, resample_filter=None, demodulate=True,
                     fused_modconv=True):
    """x [N, I, H, W], weight [O, I, k, k], styles [N, I]; noise broadcastable to the output.

    Fused: one grouped conv with per-sample weights (cheap for small batches).
    Non-fused: scale the activations instead of the weights and share one conv across the batch,
    then demodulate the output (cheaper for large batches; the same maths).
    """
    N = x.shape[0]
    O, I, kh, kw = weight.shape
    if x.dtype == torch.float16 and demodulate:
        # Pre-normalise so that the fp16 products below cannot overflow; demodulation undoes it.
        weight = weight * (1 / math.sqrt(I * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)
    dcoefs = None
    if demodulate:
        w = weight.unsqueeze(0) * styles.reshape(N, 1, I, 1, 1)  # [N, O, I, k, k]
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # [N, O]
    if not fused_modconv:
        x = x * styles.to(x.dtype).reshape(N, I, 1, 1)
        x = conv2d_resample(x, weight.to(x.dtype), f=resample_filter, up=up, padding=padding)
        if dcoefs is not None:
            x = x * dcoefs.to(x.dtype).reshape(N, O, 1, 1)
        if noise is not None:
            x = x + noise.to(x.dtype)
        return x
    w = weight.unsqueeze(0) * styles.reshape(N, 1, I, 1, 1)
    if dcoefs is not None:
        w = w * dcoefs.reshape(N, O, 1, 1, 1)
    x = conv2d_resample(x.reshape(1, N * I, *x.shape[2:]), w.reshape(N * O, I, kh, kw).to(x.dtype),
                        f=resample_filter, up=up, padding=padding, groups=N)
    x = x.reshape(N, O, *x.shape[2:])
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x


_LRELU_GAIN = math.sqrt(2)


def _synthesis_layer_fast(layer, x, w, noise, fused, dtype):
    styles = layer.affine(w)  # [N, I] fp32
    weight = layer.weight  # [O, I, 3, 3]
    N = x.shape[0]
    g = _LRELU_GAIN
    # Demodulation: sum_{i,k} (W_oik s_i)^2 = sum_i s_i^2 sum_k W_oik^2, without the [N, O, I, 3, 3] tensor.
    inplace = not (torch.is_grad_enabled() and (x.requires_grad or w.requires_grad or weight.requires_grad))
    dcoefs = (styles.square() @ _weight_energy(layer, cache=inplace).t() + 1e-8).rsqrt() * g  # [N, O]
    bias = (layer.bias * g).to(dtype)
    if fused:
        if N != 1:
            raise ValueError("the fused fast path runs one sample at a time")
        scale = (dcoefs.reshape(-1, 1) * styles.reshape(1, -1)).unsqueeze(-1).unsqueeze(-1)  # [O, I, 1, 1]
        if inplace:  # one pass over the weights, written straight in the compute dtype
            wconv = torch.mul(weight, scale, out=torch.empty(weight.shape, dtype=dtype, device=weight.device))
        else:
            wconv = (weight * scale).to(dtype)
        y = _conv3x3_resample(x, wconv, bias, layer.up, layer.resample_filter)
    else:
        xs = x * styles.to(dtype).reshape(N, -1, 1, 1)
        y = _conv3x3_resample(xs, weight.to(dtype), None, layer.up, layer.resample_filter,
                              post_scale=dcoefs.to(dtype).reshape(N, -1, 1, 1), inplace=inplace)
        y = y.add_(bias.reshape(1, -1, 1, 1)) if inplace else y + bias.reshape(1, -1, 1, 1)
    if noise is not None:
        noise = (noise * g).to(dtype)
        y = y.add_(noise) if inplace or fused else y + noise
    y = torch.nn.functional.leaky_relu_(y, 0.2) if (inplace or fused) else torch.nn.functional.leaky_relu(y, 0.2)
    if layer.conv_clamp is not None:
        y = y.clamp_(-layer.conv_clamp, layer.conv_clamp) if inplace else y.clamp(-layer.conv_clamp, layer.conv_clamp)
    return y


def _weight_energy(layer, cache):
    """sum over the kernel taps of weight^2, [O, I]; cached for inference (keyed on the weight's
    storage and version, so optimiser steps and load_state_dict invalidate it; never for
    inference tensors, which have no version)."""
    weight = layer.weight
    key = version_key(weight) if cache else None
    if key is None:
        return weight.square().sum(dim=[2, 3])
    hit = _WEIGHT_ENERGY.get(layer)
    if hit is None or hit[0] != key:
        # A normal tensor even when filled under inference_mode, so later autograd runs can use it.
        with torch.no_grad(), torch.inference_mode(False):
            hit = (key, weight.square().sum(dim=[2, 3]))
        _WEIGHT_ENERGY[layer] = hit
    return hit[1]


_WEIGHT_ENERGY = weakref.WeakKeyDictionary()  # layer -> (version_key of its weight, energy)


def _conv3x3_resample(x, w, bias, up, f, post_scale=None, inplace=True):
    """conv2d_resample(x, w, f, up, padding=1) for 3x3 w, + bias, with an optional per-sample
    per-channel scale applied before the bias (post_scale [N, O, 1, 1]). Up-sampling is a strided
    transposed conv followed by the FIR, whose 2-D taps (x up^2) and bias run as one depthwise
    conv with the FIR padding folded into the conv's own padding (no padded copy)."""
    F = torch.nn.functional
    if up == 1:
        y = F.conv2d(x, w, bias=bias if post_scale is None else None, padding=1)
        if post_scale is not None:
            y = y.mul_(post_scale) if inplace else y * post_scale
        return y
    O = w.shape[0]
    y = F.conv_transpose2d(x, w.transpose(0, 1), stride=up)  # [N, O, up*H + 1, up*W + 1]
    if post_scale is not None:
        y = y.mul_(post_scale) if inplace else y * post_scale
    fw = f.shape[-1]
    f2 = f if f.ndim == 2 else f.ger(f)
    taps = (f2.flip([0, 1]) * up ** 2).to(y.dtype).expand(O, 1, *f2.shape)
    # up=2, 4 taps: the reference pads the (2H+1) image by 1 on each side (cf. conv2d_resample).
    px0 = 1 + (fw + up - 1) // 2 - 2
    px1 = 1 + (fw - up) // 2 - (3 - up)
    if px0 == px1 and px0 >= 0:
        return F.conv2d(y, taps, bias=bias, padding=px0, groups=O)
    y = F.pad(y, [px0, px1, px0, px1])
    return F.conv2d(y, taps, bias=bias, groups=O)


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (+ optional 2x FIR up-sampling) + per-pixel noise + bias + lrelu."""

    def __init__(self, in_channels, out_channels, w_dim, resolution, up=1, resample_filter=(1, 3, 3, 1),
                 conv_clamp=None):
        super().__init__()
        self.resolution, self.up, self.conv_clamp = resolution, up, conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 3, 3]))
        self.register_buffer("noise_const", torch.randn([resolution, resolution]))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x, w, noise_mode="random", fused_modconv=True, generator=None):
        styles = self.affine(w)  # [N, I]
        noise = None
        if noise_mode == "random":
            shape = [x.shape[0], 1, self.resolution, self.resolution]
            noise = torch.randn(shape, device=x.device, generator=generator) * self.noise_strength
        elif noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        x = modulated_conv2d(x, self.weight, styles, noise=noise, up=self.up, padding=1,
                             resample_filter=self.resample_filter, fused_modconv=fused_modconv)
        return bias_act(x, self.bias.to(x.dtype), act="lrelu", clamp=self.conv_clamp)

    def scaled_noise(self, batch, noise_mode, generator=None):
        """The noise this layer adds (fp32, strength applied), drawn exactly as `forward` draws it."""
        if noise_mode == "random":
            shape = [batch, 1, self.resolution, self.resolution]
            return torch.randn(shape, device=self.noise_const.device, generator=generator) * self.noise_strength
        if noise_mode == "const":
            return (self.noise_const * self.noise_strength).reshape(1, 1, self.resolution, self.resolution)
        return None

    def forward_fast(self, x, w, noise, fused, dtype):
        """CPU fast path, the same maths as `forward`: x [N, I, H, W] in `dtype` (channels_last),
        w [N, w_dim] fp32, noise from `scaled_noise` or None. fused needs N == 1: the styles and
        demodulation go into the weights and one ordinary conv runs; otherwise (non-fused) the
        activations are scaled and one conv is shared by the batch. The lrelu gain is folded
        into the weights, the bias into the conv (or FIR) bias, and the remaining element-wise
        work runs in place where autograd allows it."""
        return _synthesis_layer_fast(self, x, w, noise, fused, dtype)


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv without demodulation, + bias."""

    def __init__(self, in_channels, out_channels, w_dim, conv_clamp=None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 1, 1]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x, w, fused_modconv=True):
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused_modconv=fused_modconv)
        return bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)

    def forward_fast(self, x, w):
        """CPU fast path: a per-sample 1x1 conv is a batched matmul over the channels_last pixels
        (no scaled copy of x). Returns fp32 [N, C, H, W]."""
        styles = self.affine(w) * self.weight_gain  # [N, I]
        N, I, H, W = x.shape
        wt = (self.weight.reshape(1, -1, I) * styles.unsqueeze(1)).transpose(1, 2).to(x.dtype)  # [N, I, C]
        pixels = x.permute(0, 2, 3, 1).reshape(N, H * W, I)  # a view when x is channels_last
        y = torch.baddbmm(self.bias.to(x.dtype).reshape(1, 1, -1), pixels, wt)  # [N, HW, C]
        y = y.reshape(N, H, W, -1).permute(0, 3, 1, 2).to(torch.float32)
        if self.conv_clamp is not None:
            y = y.clamp(-self.conv_clamp, self.conv_clamp)
        return y


class SynthesisBlock(nn.Module):
    """One resolution: (const | 2x up-conv) -> conv -> ToRGB, skip-connected RGB output."""

    def __init__(self, in_channels, out_channels, w_dim, resolution, img_channels, use_fp16,
                 resample_filter=(1, 3, 3, 1), conv_clamp=None):
        super().__init__()
        self.in_channels, self.resolution, self.use_fp16 = in_channels, resolution, use_fp16
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2,
                                        resample_filter=resample_filter, conv_clamp=conv_clamp)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution,
                                    resample_filter=resample_filter, conv_clamp=conv_clamp)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.num_conv = 1 if in_channels == 0 else 2
        self.num_torgb = 1

    def forward(self, x, img, ws, noise_mode="random", fused_modconv=None, force_fp32=False, generator=None, *,
                noises=None, fast_dtype=None):
        """ws [N, num_conv + num_torgb, w_dim]; x [N, C, r/2, r/2] or None; img [N, 3, r/2, r/2] or None.
        fast_dtype (float32 | bfloat16) runs the CPU fast path with scaled `noises` (forward_fast);
        both paths enter through here, so forward hooks on a block fire whichever runs."""
        if fast_dtype is not None:
            return self.forward_fast(x, img, ws, noises, fused_modconv, fast_dtype)
        N = ws.shape[0]
        fp16 = self.use_fp16 and not force_fp32 and ws.device.type == "cuda"
        dtype = torch.float16 if fp16 else torch.float32
        if fused_modconv is None:
            fused_modconv = choose_fused_modconv(N, ws.device, self.training, dtype)
        w_iter = iter(ws.unbind(dim=1))
        if self.in_channels == 0:
            x = self.const.to(dtype).unsqueeze(0).repeat([N, 1, 1, 1])
        else:
            x = self.conv0(x.to(dtype), next(w_iter), noise_mode, fused_modconv, generator)
        x = self.conv1(x, next(w_iter), noise_mode, fused_modconv, generator)
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv).to(torch.float32)
        img = y if img is None else img + y
        return x, img


    def forward_fast(self, x, img, ws, noises, fused, dtype):
        """CPU fast path of `forward`: x channels_last in `dtype`, noises [conv0, conv1] from
        SynthesisLayer.scaled_noise; fused requires a batch of one."""
        N = ws.shape[0]
        w_iter = iter(ws.unbind(dim=1))
        if self.in_channels == 0:
            x = self.const.to(dtype).unsqueeze(0).expand([N, -1, -1, -1]).contiguous(memory_format=torch.channels_last)
        else:
            x = self.conv0.forward_fast(x, next(w_iter), noises[0], fused, dtype)
        x = self.conv1.forward_fast(x, next(w_iter), noises[-1], fused, dtype)
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        y = self.torgb.forward_fast(x, next(w_iter))
        img = y if img is None else img.add_(y) if not torch.is_grad_enabled() else img + y
        return x, img


def choose_fused_modconv(batch, device, training, dtype, fast=False):
    """Per-sample weights (fused) win at batch 1 and in inference on small batches; a shared conv
    with activation scaling (non-fused) wins for training batches, which also need its cheaper
    backward. Measured in benchmarks/generator_speed.py."""
    if training:
        return False
    if fast:  # the CPU fast path runs fused convs one sample at a time, the winner at every batch
        return True
    if device.type == "cuda":
        return dtype == torch.float32 or batch == 1
    return batch <= 2


class SynthesisNetwork(nn.Module):
    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.cfg = cfg
        self.block_resolutions = cfg.block_resolutions
        self.num_ws = cfg.num_ws
        fp16_resolution = max(2 ** (int(math.log2(cfg.resolution)) + 1 - cfg.num_fp16_res), 8)
        for res in self.block_resolutions:
            in_ch = cfg.channels(res // 2) if res > 4 else 0
            block = SynthesisBlock(in_ch, cfg.channels(res), cfg.w_dim, res, cfg.img_channels,
                                   use_fp16=res >= fp16_resolution and cfg.num_fp16_res > 0,
                                   resample_filter=cfg.resample_filter, conv_clamp=cfg.conv_clamp)
            setattr(self, f"b{res}", block)

    def forward(self, ws, noise_mode="random", fused_modconv=None, force_fp32=False, generator=None,
                fast=None, compute_dtype=None):
        """ws [N, num_ws, w_dim] -> images [N, img_channels, R, R] (float32, about [-1, 1]).

        fast (default: on for CPU tensors): the CPU fast path (channels_last, folded gains and
        biases, in-place element-wise ops, per-sample convs instead of grouped ones); False runs
        the reference path (the NVlabs sequence of ops). compute_dtype=torch.bfloat16 runs the
        convolutions and activations of the fast path in bf16 (fp32 accumulation, fp32 RGB skip);
        images then differ from fp32 by about 45 dB PSNR."""
        if fast is None:
            fast = ws.device.type == "cpu"
        if fast:
            return self._forward_fast(ws, noise_mode, fused_modconv, generator, compute_dtype or torch.float32)
        if compute_dtype not in (None, torch.float32):
            raise InputError("compute_dtype other than float32 needs the fast path (fast=True)")
        x = img = None
        for block, block_ws in self.block_ws(ws):
            x, img = block(x, img, block_ws, noise_mode, fused_modconv, force_fp32, generator)
        return img

    def blocks(self):
        """The synthesis blocks in the order they run."""
        return [getattr(self, f"b{res}") for res in self.block_resolutions]

    def block_ws(self, ws):
        """(block, its slice of ws [N, num_conv + num_torgb, w_dim]) in running order: the one block
        iterator of every path. Consecutive blocks share a w: a block's ToRGB uses the same w as
        the next block's conv0."""
        w_idx = 0
        for block in self.blocks():
            yield block, ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            w_idx += block.num_conv

    def run_fast(self, ws, noises, fused, dtype):
        """The fast path over all blocks: ws [N, num_ws, w_dim], noises one list of scaled noise maps
        per block ([conv0, conv1], or [conv1] for the first); fused needs a batch of one."""
        x = img = None
        for (block, block_ws), block_noises in zip(self.block_ws(ws), noises):
            x, img = block(x, img, block_ws, fused_modconv=fused, noises=block_noises, fast_dtype=dtype)
        return img.contiguous()


    def _forward_fast(self, ws, noise_mode, fused_modconv, generator, dtype):
        if dtype not in (torch.float32, torch.bfloat16):
            raise InputError(f"compute_dtype must be float32 or bfloat16, got {dtype}")
        if noise_mode not in NOISE_MODES:
            raise InputError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        N = ws.shape[0]
        blocks = self.blocks()
        # Noise is drawn up front in the reference order, so a generator gives the same images
        # whichever way the batch is then split.
        noises = [[layer.scaled_noise(N, noise_mode, generator) for layer in
                   ([b.conv1] if b.in_channels == 0 else [b.conv0, b.conv1])] for b in blocks]
        if fused_modconv is None:
            fused_modconv = choose_fused_modconv(N, ws.device, self.training, dtype, fast=True)
        if fused_modconv:
            # Per-sample weights: one ordinary conv per sample beats a grouped conv on CPU.
            return torch.cat([self.run_fast(ws[n:n + 1], [[nz if nz is None or nz.shape[0] == 1 else nz[n:n + 1]
                                                           for nz in bn] for bn in noises], True, dtype)
                              for n in range(N)])
        return self.run_fast(ws, noises, False, dtype)


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
        self.c_dim, self.img_channels = 0, cfg.img_channels  # NVlabs' attributes: unconditional
        self.mapping = MappingNetwork(cfg)
        self.synthesis = SynthesisNetwork(cfg)

    @property
    def w_avg(self):
        return self.mapping.w_avg

    def forward(self, z, c=None, truncation_psi=1.0, truncation_cutoff=None, *, update_emas=None,
                noise_mode="random", fused_modconv=None, force_fp32=False, generator=None, fast=None,
                compute_dtype=None):
        """z [N, z_dim] (and NVlabs' label c: None or [N, 0]) -> images [N, C, R, R]; the options are
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


# ---------------------------------------------------------------------------------------------
# Discriminator


class MinibatchStdLayer(nn.Module):
    """Appends the mean standard deviation over groups of samples as extra feature maps."""

    def __init__(self, group_size, num_channels=1):
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x):
        N, C, H, W = x.shape
        G = min(self.group_size, N) if self.group_size else N
        Fc = self.num_channels
        y = x.reshape(G, -1, Fc, C // Fc, H, W)
        y = (y - y.mean(dim=0)).square().mean(dim=0)
        y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4])  # [N/G, F]
        y = y.reshape(-1, Fc, 1, 1).repeat(G, 1, H, W)
        return torch.cat([x, y], dim=1)


class DiscriminatorBlock(nn.Module):
    """Residual block: (fromRGB) -> conv -> 2x down-conv, plus a 1x1 down-sampled skip."""

    def __init__(self, in_channels, tmp_channels, out_channels, img_channels, resample_filter, conv_clamp):
        super().__init__()
        self.in_channels = in_channels
        self.register_buffer("resample_filter", setup_filter(resample_filter))  # kept for the NVlabs layout
        if in_channels == 0:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, 1, activation="lrelu", conv_clamp=conv_clamp)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, activation="lrelu", conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, activation="lrelu", down=2,
                                 resample_filter=resample_filter, conv_clamp=conv_clamp)
        self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, down=2, resample_filter=resample_filter)

    def forward(self, x, img, fast=None):
        if self.in_channels == 0:
            x = self.fromrgb(img, fast=fast)
        y = self.skip(x, gain=math.sqrt(0.5), fast=fast)
        x = self.conv1(self.conv0(x, fast=fast), gain=math.sqrt(0.5), fast=fast)
        return y + x


class DiscriminatorEpilogue(nn.Module):
    def __init__(self, in_channels, img_channels, mbstd_group_size, mbstd_num_channels, conv_clamp, resolution=4):
        super().__init__()
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, 3, activation="lrelu",
                                conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * resolution ** 2, in_channels, activation="lrelu")
        self.out = FullyConnectedLayer(in_channels, 1)

    def forward(self, x, fast=None):
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x, fast=fast)
        return self.out(self.fc(x.flatten(1)))


class Discriminator(nn.Module):
    """StyleGAN2 residual discriminator: images [N, C, R, R] -> realness logits [N, 1] (minibatch
    standard deviation over groups of `mbstd_group_size`). `D(img)` or NVlabs' `D(img, c)`."""

    def __init__(self, cfg: DiscriminatorConfig = None):
        super().__init__()
        self.cfg = cfg = cfg or DiscriminatorConfig()
        log2 = int(math.log2(cfg.resolution))
        self.block_resolutions = [2 ** i for i in range(log2, 2, -1)]
        for res in self.block_resolutions:
            in_ch = cfg.channels(res) if res < cfg.resolution else 0
            block = DiscriminatorBlock(in_ch, cfg.channels(res), cfg.channels(res // 2), cfg.img_channels,
                                       cfg.resample_filter, cfg.conv_clamp)
            setattr(self, f"b{res}", block)
        self.b4 = DiscriminatorEpilogue(cfg.channels(4), cfg.img_channels, cfg.mbstd_group_size,
                                        cfg.mbstd_num_channels, cfg.conv_clamp)

    def forward(self, img, c=None, fast=None):
        """img [N, C, R, R] (and NVlabs' label c: None or [N, 0]) -> logits [N, 1]. fast (default: on
        for CPU tensors): channels_last and the Conv2dLayer fast path; False: the reference ops."""
        check_label(c, len(img))
        fast = img.device.type == "cpu" if fast is None else fast
        if fast:
            img = img.contiguous(memory_format=torch.channels_last)  # measured: ~25% faster on CPU
        x = None
        for res in self.block_resolutions:
            x = getattr(self, f"b{res}")(x, img, fast=fast)
        return self.b4(x, fast=fast)
