"""rosinality/stylegan2-pytorch checkpoints (.pt): converted files (`g_ema`, `latent_avg`) and
training files (`g`, `d`, `g_ema`, optimiser states, `args`: an argparse.Namespace).

Their layout and ours (NVlabs names) differ by rename and reshape only; the blur kernels are
derived from the resample filter, never copied. Loading is weights-only with an allow-list.
"""
import argparse
import math
import re

import torch

from latentedit.errors import FormatError
from latentedit.formats.torch_file import load_torch_file
from latentedit.models.stylegan2 import DiscriminatorConfig, GeneratorConfig
from latentedit.ops import setup_filter

ROSINALITY_BLUR = [1, 3, 3, 1]


def load_pt(path):
    """Weights-only load; the only class allowed beyond tensors is argparse.Namespace (training args)."""
    return load_torch_file(path, safe_globals=[argparse.Namespace])


def is_rosinality(ckpt):
    return isinstance(ckpt, dict) and any(k in ckpt for k in ("g_ema", "g")) and \
        isinstance(ckpt.get("g_ema", ckpt.get("g")), dict) and "input.input" in ckpt.get("g_ema", ckpt.get("g"))


def _channel_layout(channels_by_res):
    """Finds channel_base / channel_max reproducing {res: channels}; rosinality's table
    (512 up to 32 px, then 16384 * multiplier / res) is expressible for multipliers 1 and 2."""
    cmax = max(channels_by_res.values())
    for base_res, ch in sorted(channels_by_res.items(), reverse=True):
        base = ch * base_res
        if all(min(base // r, cmax) == c for r, c in channels_by_res.items()):
            return base, cmax
    raise FormatError(f"channel layout {channels_by_res} cannot be expressed as channel_base / channel_max")


def _get(sd, key):
    if key not in sd:
        raise FormatError(f"rosinality checkpoint is missing key {key!r}")
    return sd[key]


def generator_from_rosinality(sd, latent_avg=None):
    """rosinality Generator state dict -> (GeneratorConfig, our state dict)."""
    n_mlp = sum(1 for k in sd if re.fullmatch(r"style\.\d+\.weight", k))
    n_up = sum(1 for k in sd if re.fullmatch(r"to_rgbs\.\d+\.bias", k))
    resolution = 4 * 2 ** n_up
    w_dim = _get(sd, "style.1.weight").shape[0]
    z_dim = _get(sd, "style.1.weight").shape[1]
    channels = {4: _get(sd, "conv1.conv.weight").shape[1]}
    for k in range(n_up):
        channels[8 * 2 ** k] = _get(sd, f"convs.{2 * k}.conv.weight").shape[1]
    base, cmax = _channel_layout(channels)
    lr_mul = 0.01  # rosinality's default; stored weights are N(0,1)/lr_mul either way
    cfg = GeneratorConfig(resolution=resolution, z_dim=z_dim, w_dim=w_dim, channel_base=base, channel_max=cmax,
                          n_mlp=n_mlp, mapping_lr_multiplier=lr_mul, resample_filter=list(ROSINALITY_BLUR))
    out = {}
    for i in range(n_mlp):
        out[f"mapping.fc{i}.weight"] = _get(sd, f"style.{i + 1}.weight")
        out[f"mapping.fc{i}.bias"] = _get(sd, f"style.{i + 1}.bias")
    out["mapping.w_avg"] = latent_avg.reshape(w_dim).float() if latent_avg is not None else torch.zeros(w_dim)

    def styled(src, dst, noise_idx):
        out[f"{dst}.weight"] = _get(sd, f"{src}.conv.weight")[0]
        out[f"{dst}.affine.weight"] = _get(sd, f"{src}.conv.modulation.weight")
        out[f"{dst}.affine.bias"] = _get(sd, f"{src}.conv.modulation.bias")
        out[f"{dst}.noise_strength"] = _get(sd, f"{src}.noise.weight").reshape([])
        out[f"{dst}.bias"] = _get(sd, f"{src}.activate.bias")
        out[f"{dst}.noise_const"] = _get(sd, f"noises.noise_{noise_idx}")[0, 0]

    def torgb(src, dst):
        out[f"{dst}.weight"] = _get(sd, f"{src}.conv.weight")[0]
        out[f"{dst}.affine.weight"] = _get(sd, f"{src}.conv.modulation.weight")
        out[f"{dst}.affine.bias"] = _get(sd, f"{src}.conv.modulation.bias")
        out[f"{dst}.bias"] = _get(sd, f"{src}.bias").reshape(-1)

    out["synthesis.b4.const"] = _get(sd, "input.input")[0]
    styled("conv1", "synthesis.b4.conv1", 0)
    torgb("to_rgb1", "synthesis.b4.torgb")
    for k in range(n_up):
        res = 8 * 2 ** k
        styled(f"convs.{2 * k}", f"synthesis.b{res}.conv0", 2 * k + 1)
        styled(f"convs.{2 * k + 1}", f"synthesis.b{res}.conv1", 2 * k + 2)
        torgb(f"to_rgbs.{k}", f"synthesis.b{res}.torgb")
    return cfg, out


def generator_to_rosinality(cfg, sd):
    """Our generator state dict -> rosinality layout (plus `latent_avg`)."""
    if cfg.c_dim:
        raise FormatError(f"rosinality's layout has no class label: a conditional generator (c_dim {cfg.c_dim}) "
                          "stays a bundle")
    out = {}
    for i in range(cfg.n_mlp):
        out[f"style.{i + 1}.weight"] = sd[f"mapping.fc{i}.weight"]
        out[f"style.{i + 1}.bias"] = sd[f"mapping.fc{i}.bias"]
    blur = setup_filter(cfg.resample_filter)

    def styled(src, dst, noise_idx, up):
        out[f"{dst}.conv.weight"] = sd[f"{src}.weight"][None]
        out[f"{dst}.conv.modulation.weight"] = sd[f"{src}.affine.weight"]
        out[f"{dst}.conv.modulation.bias"] = sd[f"{src}.affine.bias"]
        if up:
            out[f"{dst}.conv.blur.kernel"] = blur * 4
        out[f"{dst}.noise.weight"] = sd[f"{src}.noise_strength"].reshape(1)
        out[f"{dst}.activate.bias"] = sd[f"{src}.bias"]
        out[f"noises.noise_{noise_idx}"] = sd[f"{src}.noise_const"][None, None]

    def torgb(src, dst, up):
        out[f"{dst}.conv.weight"] = sd[f"{src}.weight"][None]
        out[f"{dst}.conv.modulation.weight"] = sd[f"{src}.affine.weight"]
        out[f"{dst}.conv.modulation.bias"] = sd[f"{src}.affine.bias"]
        out[f"{dst}.bias"] = sd[f"{src}.bias"].reshape(1, -1, 1, 1)
        if up:
            out[f"{dst}.upsample.kernel"] = blur * 4

    out["input.input"] = sd["synthesis.b4.const"][None]
    styled("synthesis.b4.conv1", "conv1", 0, up=False)
    torgb("synthesis.b4.torgb", "to_rgb1", up=False)
    for k, res in enumerate(cfg.block_resolutions[1:]):
        styled(f"synthesis.b{res}.conv0", f"convs.{2 * k}", 2 * k + 1, up=True)
        styled(f"synthesis.b{res}.conv1", f"convs.{2 * k + 1}", 2 * k + 2, up=False)
        torgb(f"synthesis.b{res}.torgb", f"to_rgbs.{k}", up=True)
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


def discriminator_from_rosinality(sd):
    """rosinality Discriminator state dict -> (DiscriminatorConfig, our state dict)."""
    n_blocks = sum(1 for k in sd if re.fullmatch(r"convs\.\d+\.conv1\.0\.weight", k))
    resolution = 4 * 2 ** n_blocks
    channels = {resolution: _get(sd, "convs.0.0.weight").shape[0], 4: _get(sd, "final_conv.0.weight").shape[0]}
    for j in range(1, n_blocks + 1):
        res = resolution >> (j - 1)
        channels[res] = _get(sd, f"convs.{j}.conv1.0.weight").shape[0]
        channels[res // 2] = _get(sd, f"convs.{j}.conv2.1.weight").shape[0]
    base, cmax = _channel_layout(channels)
    cfg = DiscriminatorConfig(resolution=resolution, channel_base=base, channel_max=cmax,
                              resample_filter=list(ROSINALITY_BLUR))
    out = {f"b{resolution}.fromrgb.weight": _get(sd, "convs.0.0.weight"),
           f"b{resolution}.fromrgb.bias": _get(sd, "convs.0.1.bias")}
    for j in range(1, n_blocks + 1):
        b = f"b{resolution >> (j - 1)}"
        out[f"{b}.conv0.weight"] = _get(sd, f"convs.{j}.conv1.0.weight")
        out[f"{b}.conv0.bias"] = _get(sd, f"convs.{j}.conv1.1.bias")
        out[f"{b}.conv1.weight"] = _get(sd, f"convs.{j}.conv2.1.weight")
        out[f"{b}.conv1.bias"] = _get(sd, f"convs.{j}.conv2.2.bias")
        out[f"{b}.skip.weight"] = _get(sd, f"convs.{j}.skip.1.weight")
    out["b4.conv.weight"] = _get(sd, "final_conv.0.weight")
    out["b4.conv.bias"] = _get(sd, "final_conv.1.bias")
    out["b4.fc.weight"] = _get(sd, "final_linear.0.weight")
    out["b4.fc.bias"] = _get(sd, "final_linear.0.bias")
    out["b4.out.weight"] = _get(sd, "final_linear.1.weight")
    out["b4.out.bias"] = _get(sd, "final_linear.1.bias")
    return cfg, out


def discriminator_to_rosinality(cfg, sd):
    if cfg.c_dim:
        raise FormatError(f"rosinality's layout has no class label: a conditional discriminator (c_dim {cfg.c_dim}) "
                          "stays a bundle")
    R = cfg.resolution
    blur = setup_filter(cfg.resample_filter)
    out = {"convs.0.0.weight": sd[f"b{R}.fromrgb.weight"], "convs.0.1.bias": sd[f"b{R}.fromrgb.bias"]}
    n_blocks = int(math.log2(R)) - 2
    for j in range(1, n_blocks + 1):
        b = f"b{R >> (j - 1)}"
        out[f"convs.{j}.conv1.0.weight"] = sd[f"{b}.conv0.weight"]
        out[f"convs.{j}.conv1.1.bias"] = sd[f"{b}.conv0.bias"]
        out[f"convs.{j}.conv2.0.kernel"] = blur
        out[f"convs.{j}.conv2.1.weight"] = sd[f"{b}.conv1.weight"]
        out[f"convs.{j}.conv2.2.bias"] = sd[f"{b}.conv1.bias"]
        out[f"convs.{j}.skip.0.kernel"] = blur
        out[f"convs.{j}.skip.1.weight"] = sd[f"{b}.skip.weight"]
    out["final_conv.0.weight"] = sd["b4.conv.weight"]
    out["final_conv.1.bias"] = sd["b4.conv.bias"]
    out["final_linear.0.weight"] = sd["b4.fc.weight"]
    out["final_linear.0.bias"] = sd["b4.fc.bias"]
    out["final_linear.1.weight"] = sd["b4.out.weight"]
    out["final_linear.1.bias"] = sd["b4.out.bias"]
    return {k: v.detach().clone().contiguous() for k, v in out.items()}

