"""Equalised-learning-rate building blocks shared by the StyleGAN2 generator and discriminator.

Parameters are stored unscaled (N(0, 1) / lr_mul) and scaled at run time, so every layer trains
at the same effective rate (Karras et al.); parameter names follow the NVlabs layout so that
their checkpoints load by name.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from latentedit.ops import ACTIVATIONS, bias_act, setup_filter, upfirdn2d
from latentedit.ops.upfirdn2d import filter_size, parse_padding


_POSITIVE_HOMOGENEOUS = ("linear", "lrelu", "relu")  # act(g x) = g act(x) for g > 0


def version_key(t):
    """A key for caching values derived from tensor t that changes when t is modified in place
    (optimiser steps, load_state_dict); None for an inference tensor, which has no version
    counter: do not cache what derives from one."""
    return None if t.is_inference() else (t.data_ptr(), t._version, t.device)


def normalize_2nd_moment(x, dim=1, eps=1e-8):
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


class FullyConnectedLayer(nn.Module):
    def __init__(self, in_features, out_features, bias=True, activation="linear", lr_multiplier=1.0, bias_init=0.0):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x):  # [N, in] -> [N, out]
        # The weight gain scales the product (addmm's alpha, or the [N, out] output), not a fresh
        # scaled copy of the [out, in] weight: at batch 1 that copy cost more than the product.
        w = self.weight.to(x.dtype)
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t(), alpha=self.weight_gain)
        return bias_act(x.matmul(w.t()) * self.weight_gain, b, act=self.activation)

    def extra_repr(self):
        return f"in={self.in_features}, out={self.out_features}, activation={self.activation}"


def conv2d_resample(x, w, f=None, up=1, down=1, padding=0, groups=1, bias=None):
    """2-D correlation with w [O, I/groups, kh, kw], with FIR up- or down-sampling by filter f.

    `padding` is relative to the up-sampled image. Up-sampling runs as a strided transposed
    convolution followed by the FIR filter (never a zero-stuffed tensor), down-sampling as the
    FIR filter followed by a strided convolution. `bias` [O] (optional) is added to the output
    by the convolution itself where the convolution comes last.
    """
    if bias is not None and up > 1:
        return conv2d_resample(x, w, f, up, down, padding, groups) + bias.reshape(1, -1, 1, 1)
    out_ch, in_per_group, kh, kw = w.shape
    fw, fh = filter_size(f)
    px0, px1, py0, py1 = parse_padding(padding)
    if up > 1:
        px0, px1 = px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2
        py0, py1 = py0 + (fh + up - 1) // 2, py1 + (fh - up) // 2
    if down > 1:
        px0, px1 = px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2
        py0, py1 = py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2

    if up == 1 and down == 1:
        if px0 == px1 and py0 == py1 and min(px0, py0) >= 0:
            return F.conv2d(x, w, bias, padding=(py0, px0), groups=groups)
        return F.conv2d(upfirdn2d(x, None, padding=[px0, px1, py0, py1]), w, bias, groups=groups)
    if down > 1 and up == 1:
        if kh == 1 and kw == 1:  # subsample first: the 1x1 conv then runs on a quarter of the pixels
            return F.conv2d(upfirdn2d(x, f, down=down, padding=[px0, px1, py0, py1]), w, bias, groups=groups)
        return F.conv2d(upfirdn2d(x, f, padding=[px0, px1, py0, py1]), w, bias, stride=down, groups=groups)
    if up > 1 and down == 1:
        if kh == 1 and kw == 1:
            return upfirdn2d(F.conv2d(x, w, groups=groups), f, up=up, padding=[px0, px1, py0, py1], gain=up ** 2)
        # conv_transpose2d wants [I, O/groups, kh, kw].
        wt = w.reshape(groups, out_ch // groups, in_per_group, kh, kw).transpose(1, 2)
        wt = wt.reshape(groups * in_per_group, out_ch // groups, kh, kw)
        px0, px1, py0, py1 = px0 - (kw - 1), px1 - (kw - up), py0 - (kh - 1), py1 - (kh - up)
        pxt, pyt = max(min(-px0, -px1), 0), max(min(-py0, -py1), 0)
        x = F.conv_transpose2d(x, wt, stride=up, padding=(pyt, pxt), groups=groups)
        return upfirdn2d(x, f, padding=[px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt], gain=up ** 2)
    raise NotImplementedError("conv2d_resample with both up and down sampling")


class Conv2dLayer(nn.Module):
    """Equalised-lr convolution + bias + activation, optionally with FIR up/down-sampling."""

    def __init__(self, in_channels, out_channels, kernel_size, bias=True, activation="linear", up=1, down=1,
                 resample_filter=(1, 3, 3, 1), conv_clamp=None):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.activation, self.up, self.down, self.conv_clamp = activation, up, down, conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels])) if bias else None

    def forward(self, x, gain=1.0, fast=None):
        """fast (default: on for CPU tensors): folded gains and bias, in-place activation; False runs
        the reference sequence of ops."""
        act_gain = ACTIVATIONS[self.activation].default_gain * gain
        fast = x.device.type == "cpu" if fast is None else fast
        if fast and self.activation in _POSITIVE_HOMOGENEOUS and act_gain > 0:
            # CPU fast path: act(conv(x, w) + b) * g = act(conv(x, g w) + g b) for g > 0, so the
            # gain goes into the weights, the bias into the conv, and the activation runs in place.
            w = self.weight * (self.weight_gain * act_gain)
            b = self.bias * act_gain if self.bias is not None else None
            y = conv2d_resample(x, w.to(x.dtype), f=self.resample_filter, up=self.up, down=self.down,
                                padding=self.padding, bias=None if b is None else b.to(x.dtype))
            if self.activation == "lrelu":
                y = F.leaky_relu_(y, 0.2)
            elif self.activation == "relu":
                y = F.relu_(y)
            if self.conv_clamp is not None:
                c = self.conv_clamp * gain
                y = y.clamp(-c, c) if torch.is_grad_enabled() else y.clamp_(-c, c)
            return y
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias.to(x.dtype) if self.bias is not None else None
        x = conv2d_resample(x, w, f=self.resample_filter, up=self.up, down=self.down, padding=self.padding)
        act_gain = ACTIVATIONS[self.activation].default_gain * gain
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, b, act=self.activation, gain=act_gain, clamp=clamp)

    def extra_repr(self):
        return (f"in={self.in_channels}, out={self.out_channels}, k={self.weight.shape[-1]}, "
                f"act={self.activation}, up={self.up}, down={self.down}")

