"""StyleGAN2 synthesis network (config-f maths): modulated convolutions, the synthesis layers and
blocks, and the network over all blocks, with the NVlabs reference path and the CPU fast path
(channels_last, folded gains and biases, per-sample convolutions, optional bf16)."""
import math
import weakref

import torch
from torch import nn

from latentedit.errors import InputError
from latentedit.models.layers import FullyConnectedLayer, conv2d_resample, version_key
from latentedit.models.packedconv import pack_weight, packed_conv2d, use_packed_conv, weights_outnumber_input
from latentedit.models.upconv import FOLDED_FORMS, fir_taps, foldable, upconv_form
from latentedit.ops import bias_act, setup_filter, upsample2d
from latentedit.ops.cpu_kernels import layer_tail_
from latentedit.ops.upfirdn2d import fixed_depthwise

NOISE_MODES = ("random", "const", "none")

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
    inplace = not (torch.is_grad_enabled() and (x.requires_grad or w.requires_grad or
                                                 any(p.requires_grad for p in layer.parameters())))
    dcoefs = (styles.square() @ _weight_energy(layer, cache=inplace).t() + 1e-8).rsqrt() * g  # [N, O]
    bias32 = layer.bias * g
    bias = bias32.to(dtype)
    if fused and N != 1:
        raise ValueError("the fused fast path runs one sample at a time")
    # Up-convs without autograd on CPUs whose plain convs far outrun transposed ones (upconv.py).
    form = upconv_form(dtype, x.device.type, layer.training, x.shape[1]) \
        if not torch.is_grad_enabled() and foldable(layer.resample_filter, layer.up) else "transposed"
    if form != "transposed":
        y = _folded_upconv_layer(layer, x, styles, dcoefs, bias, fused, dtype, form)
    elif fused and inplace and _packable(layer, x):
        y = _packed_layer(layer, x, styles, dcoefs, bias32, dtype)
    elif fused:
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
    if inplace and layer_tail_(y, noise, 0.2, layer.conv_clamp):  # the three passes below in one (csrc/)
        return y
    if noise is not None:
        y = y.add_(noise) if inplace or fused else y + noise
    y = torch.nn.functional.leaky_relu_(y, 0.2) if (inplace or fused) else torch.nn.functional.leaky_relu(y, 0.2)
    if layer.conv_clamp is not None:
        y = y.clamp_(-layer.conv_clamp, layer.conv_clamp) if inplace else y.clamp(-layer.conv_clamp, layer.conv_clamp)
    return y


def _weight_energy(layer, cache):
    """sum over the kernel taps of weight^2, [O, I]; cached for inference (`_derived`)."""
    def energy(weight):
        return weight.square().sum(dim=[2, 3])

    return _derived(layer, "energy", energy) if cache else energy(layer.weight)


def _derived(layer, kind, compute, depends_on=()):
    """compute(layer.weight), cached per layer and kind while the weight (and the tensors it
    `depends_on`) are unchanged: keyed on storage, version, dtype and shape, so optimiser steps and
    load_state_dict invalidate it; never cached for inference tensors, which have no version.
    Computed without autocast, so an entry is the same whoever fills it."""
    weight = layer.weight
    keys = [version_key(t) for t in (weight, *depends_on)]
    if any(k is None for k in keys):
        with torch.autocast(weight.device.type, enabled=False):
            return compute(weight)
    key = (*keys, weight.dtype, tuple(weight.shape))
    entries = _DERIVED.setdefault(layer, {})
    hit = entries.get(kind)
    if hit is None or hit[0] != key:
        # A normal tensor even when filled under inference_mode, so later autograd runs can use it.
        with torch.no_grad(), torch.inference_mode(False), torch.autocast(weight.device.type, enabled=False):
            hit = (key, compute(weight))
        entries[kind] = hit
    return hit[1]


def _folded_upconv_layer(layer, x, styles, dcoefs, bias, fused, dtype, form):
    """An up-conv without autograd in a folded form (upconv.FOLDED_FORMS[form]: one plain conv with 4 O
    outputs), + bias. The modulation goes on the 4 O kernels when they are smaller than the input (fused,
    low channel counts at high resolution), else on the activations: styles scale the input,
    demodulation rides on the interleaving copy."""
    N, _, H, W = x.shape
    O = layer.weight.shape[0]
    f, cl, folded = layer.resample_filter, torch.channels_last, FOLDED_FORMS[form]
    if fused and not weights_outnumber_input(4 * O, folded.taps, H, W):
        base = _derived(layer, form, lambda w: folded.weight(w, f).contiguous(memory_format=cl), [f])
        scale = (dcoefs.reshape(-1, 1) * styles.reshape(1, -1)).repeat(4, 1)[..., None, None]  # [4 O, I, 1, 1]
        k = torch.mul(base, scale, out=torch.empty_like(base, dtype=dtype))
        return folded.run(x, k, f, bias, None)
    # Cached in the compute dtype: one more copy of the up-conv weights (4x) per layer and dtype,
    # packed for oneDNN where that wins (packedconv.py).
    if _packable(layer, x, taps=4 * folded.taps):
        shape = tuple(x.shape)
        k = _derived(layer, f"{form}-packed-{dtype}-{shape}",
                     lambda w: pack_weight(folded.weight(w, f).to(dtype), shape), [f])
    else:
        k = _derived(layer, f"{form}-{dtype}",
                     lambda w: folded.weight(w, f).to(dtype).contiguous(memory_format=cl), [f])
    # One sample: the fp32 styles through scaled_channels; a shared conv's per-sample styles in bf16 (the
    # exact per-sample product costs more than it saves there).
    xs = scaled_channels(x, styles) if N == 1 else x * styles.to(dtype).reshape(N, -1, 1, 1)
    return folded.run(xs, k, f, bias, dcoefs.reshape(N, -1, 1, 1))


_DERIVED = weakref.WeakKeyDictionary()  # layer -> {kind: (key of its weight and dependencies, value)}


def _packable(layer, x, taps=9):
    """Whether this inference conv of one sample runs on a cached weight (packedconv.py): where the
    table says so, the weights outnumber the input values, and the weight can be cached and is not
    training (a weight that changes every step would be repacked every call)."""
    return x.shape[0] == 1 and not layer.training and use_packed_conv(x.device.type, x.dtype) and \
        version_key(layer.weight) is not None and \
        weights_outnumber_input(layer.weight.shape[0], taps, x.shape[2], x.shape[3])


def scaled_channels(x, scale, bias=None, inplace=False):
    """x [N, C, H, W] times a per-channel scale ([C], [1, C] or per sample [N, C, 1, 1]), plus an optional
    bias [C], in the wider of the dtypes (fp32) and rounded once to x's dtype (in place where `inplace`
    and the dtypes agree, without a bias). The scale stays fp32: rounded to bf16 it biases whole
    channels (bf16 generator PSNR vs the reference path at 256 px 42.9 -> 42.1 dB).
    A scale shared by the batch runs as batch_norm's inference kernel (zero mean, unit variance, no eps:
    x * scale + bias per channel in fp32, one vectorised pass), where PyTorch's mixed-dtype product takes a
    slow casting path for a bf16 channels_last x and an upcast copy costs two fp32 tensors (AMX Xeon,
    [1, 512, 64, 64]: 0.22 ms against 0.72-7.6); per-sample scales upcast, multiply and round."""
    per_sample = scale.ndim == 4 and scale.shape[0] != 1
    wide = torch.promote_types(x.dtype, scale.dtype)
    if per_sample or (bias is None and x.dtype == wide):
        scale = scale.reshape(scale.shape[0] if per_sample else 1, -1, 1, 1)
        if x.dtype == wide:
            y = x.mul_(scale) if inplace else x * scale
        else:
            y = x.to(wide).mul_(scale)
        return (y if bias is None else y.add_(bias.reshape(1, -1, 1, 1))).to(x.dtype)
    c = x.shape[1]
    stats = torch.zeros(2, c, dtype=wide, device=x.device)
    stats[1] = 1
    return torch.nn.functional.batch_norm(x, stats[0], stats[1], scale.reshape(c).to(wide),
                                          None if bias is None else bias.to(wide), False, 0.0, 0.0)


def _packed_layer(layer, x, styles, dcoefs, bias, dtype):
    """A fused inference conv on the layer's cached weight: the styles scale the input and the
    demodulation the output (the same maths as modulated weights), + bias (fp32: a plain conv's is added
    with the demodulation, rounded once). A plain conv's weight is packed for oneDNN; an up-conv's
    (transposed conv + FIR) is cached transposed, in channels_last."""
    shape = tuple(x.shape)
    xs = scaled_channels(x, styles)
    if layer.up == 1:
        packed = _derived(layer, f"packed-{dtype}-{shape}", lambda w: pack_weight(w.to(dtype), shape))
        return scaled_channels(packed_conv2d(xs, packed), dcoefs, bias)
    wt = _derived(layer, f"transposed-{dtype}",
                  lambda w: w.to(dtype).transpose(0, 1).contiguous(memory_format=torch.channels_last))
    return _transposed_upconv(xs, wt, bias.to(dtype), layer.up, layer.resample_filter,
                              post_scale=dcoefs.reshape(1, -1, 1, 1))


def _conv3x3_resample(x, w, bias, up, f, post_scale=None, inplace=True):
    """conv2d_resample(x, w, f, up, padding=1) for 3x3 w, + bias, with an optional per-sample
    per-channel scale applied before the bias (post_scale [N, O, 1, 1]). Up-sampling is a strided
    transposed conv followed by the FIR (`fir_after_transposed`; other forms of the up-conv
    measured in benchmarks/upconv_forms.py)."""
    F = torch.nn.functional
    if up == 1:
        y = F.conv2d(x, w, bias=bias if post_scale is None else None, padding=1)
        return y if post_scale is None else scaled_channels(y, post_scale, inplace=inplace)
    wt = w.transpose(0, 1)  # [I, O, 3, 3]
    if inplace:  # oneDNN's transposed conv runs 2-3% faster in bf16 given a channels_last weight (same
        # bits; AMD Zen 4, 256 / 1024 px); not on training's path, whose backward was not measured
        wt = wt.contiguous(memory_format=torch.channels_last)
    return _transposed_upconv(x, wt, bias, up, f, post_scale, inplace)


def _transposed_upconv(x, wt, bias, up, f, post_scale=None, inplace=True):
    """The up-sampling half of `_conv3x3_resample`, given the transposed weight wt [I, O, 3, 3]."""
    y = torch.nn.functional.conv_transpose2d(x, wt, stride=up)  # [N, O, up*H + 1, up*W + 1]
    if post_scale is not None:
        y = scaled_channels(y, post_scale, inplace=inplace)
    return fir_after_transposed(y, f, up, bias)


def fir_after_transposed(y, f, up, bias=None):
    """The FIR (and bias) that follow a strided transposed 3x3 conv's [N, O, up*H + 1, up*W + 1]
    output in conv2d_resample(..., up, padding=1): one depthwise conv of the 2-D taps (x up^2) with
    the FIR padding folded into the conv's own padding (no padded copy) -> [N, O, up*H, up*W]."""
    F = torch.nn.functional
    O = y.shape[1]
    fw = f.shape[-1]
    taps = fir_taps(f, up, O, y.dtype)
    # up=2, 4 taps: the reference pads the (2H+1) image by 1 on each side (cf. conv2d_resample).
    px0 = 1 + (fw + up - 1) // 2 - 2
    px1 = 1 + (fw - up) // 2 - (3 - up)
    if px0 == px1 and px0 >= 0:
        return fixed_depthwise(y, taps, stride=1, padding=px0, bias=bias)
    y = F.pad(y, [px0, px1, px0, px1])
    return fixed_depthwise(y, taps, stride=1, padding=0, bias=bias)


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
        """CPU fast path, no scaled copy of x: one sample's modulated 1x1 conv as oneDNN's conv, a batch's
        per-sample ones as a batched matmul over the channels_last pixels (the conv ran 1.9-2.9x faster at
        512-1024 px, bf16 and fp32, and the same within 0.02 ms below: a matmul with 3 columns is a
        poor fit). Returns fp32 [N, C, H, W]."""
        styles = self.affine(w) * self.weight_gain  # [N, I]
        N, I, H, W = x.shape
        if N == 1:
            weight = (self.weight * styles.reshape(1, -1, 1, 1)).to(x.dtype)  # [C, I, 1, 1]
            y = torch.nn.functional.conv2d(x, weight, self.bias.to(x.dtype)).to(torch.float32)
        else:
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
    if fast:
        # The CPU fast path runs fused convs one sample at a time at every batch, so that an image
        # does not depend on the batch it was made in (resumed and sharded runs are bit-identical).
        # A small network's shared convs would be faster from batch 2 on (benchmarks/RESULTS.md,
        # "Fused or shared convolutions"): fused_modconv=False asks for them.
        return True
    if device.type == "cuda":
        return dtype == torch.float32 or batch == 1
    return batch <= 2


class SynthesisNetwork(nn.Module):
    def __init__(self, cfg):  # a GeneratorConfig
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
