"""Encoder checkpoints of the pSp family: e4e, pSp, ReStyle-pSp, ReStyle-e4e (their released
`*_encode.pt` files): `{'state_dict': encoder.* + decoder.*, 'latent_avg', 'opts': dict}`.

    enc = load_psp_encoder("e4e_ffhq_encode.pt")          # Encoder (e4e / pSp) or ReStyle
    G = load_generator("e4e_ffhq_encode.pt")             # the file's decoder.* (rosinality layout)

The encoders map onto `models.encoder.Encoder` tensor for tensor: the IR-SE-50 trunk (a rename,
formats/arcface.py), `styles.{i}` -> `heads.{i}` (their EqualLinear's 1/sqrt(fan_in) scale folded
into the weight), `latlayer1` / `latlayer2` -> the medium / fine laterals, `latent_avg` -> w_avg;
config: LeakyReLU slope 0.01, align_corners=True upsampling, no coarse lateral, 256 px input. e4e
and ReStyle-e4e give w0 + per-layer deltas, pSp and ReStyle-pSp independent per-layer codes; the
ReStyle encoders read every code from the last 16 px map and take 6 channels (models/restyle.py).
`opts['encoder_type']` tells the kinds apart (pSp and e4e have the same tensors). Loading is
weights-only: beyond tensors and containers only argparse.Namespace is allowed (old `opts`).
"""
import math
import re

import torch
from torch import nn

from latentedit.errors import FormatError, InputError
from latentedit.formats.arcface import convert_trunk, fill_batchnorm_counters, trunk_layout
from latentedit.formats.weights import load_weights

# encoder_type in opts -> (our mode, ReStyle?)
ENCODER_TYPES = {
    "Encoder4Editing": ("w+", False),                  # e4e
    "GradualStyleEncoder": ("w+independent", False),   # pSp
    "ProgressiveBackboneEncoder": ("w+", True),        # ReStyle-e4e
    "BackboneEncoder": ("w+independent", True),        # ReStyle-pSp
}
RESTYLE_STEPS = 5  # the released inference scripts' default n_iters_per_batch
_HEAD = re.compile(r"styles\.(\d+)\.linear\.weight")


def is_psp_checkpoint(ckpt):
    sd = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    return isinstance(sd, dict) and any(isinstance(k, str) and k.startswith("encoder.") for k in sd)


def load_checkpoint(path):
    """The checkpoint dict, weights-only; FormatError when it is not of the pSp family."""
    from latentedit.formats.rosinality import load_pt

    ckpt = load_pt(path)
    if not is_psp_checkpoint(ckpt):
        keys = sorted(ckpt)[:5] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise FormatError(f"{path}: not an e4e / pSp / ReStyle checkpoint (no state_dict with encoder.* "
                          f"tensors; found {keys})")
    return ckpt


def options(ckpt):
    opts = ckpt.get("opts")
    return dict(opts) if isinstance(opts, dict) else dict(vars(opts)) if hasattr(opts, "__dict__") else {}


def part(ckpt, prefix):
    """The tensors of one network in the checkpoint (`encoder` / `decoder`), prefix removed."""
    n = len(prefix) + 1
    return {k[n:]: v for k, v in ckpt["state_dict"].items() if isinstance(k, str) and k.startswith(prefix + ".")}


def latent_avg(ckpt, w_dim, what):
    """latent_avg as one [w_dim] vector (files store it repeated per layer), or None."""
    avg = ckpt.get("latent_avg")
    if avg is None:
        return None
    if not torch.is_tensor(avg) or avg.numel() % w_dim or avg.numel() == 0:
        raise FormatError(f"{what}: latent_avg is not a tensor of {w_dim}-vectors")
    rows = avg.detach().float().reshape(-1, w_dim)
    if not torch.isfinite(rows).all() or (rows - rows[:1]).abs().max() > 1e-6:
        raise FormatError(f"{what}: latent_avg rows differ per layer (or are not finite); expected one vector")
    return rows[0].clone()


def encoder_type(ckpt, what):
    kind = options(ckpt).get("encoder_type")
    if kind not in ENCODER_TYPES:
        raise FormatError(f"{what}: encoder_type {kind!r} is not supported (supported: {sorted(ENCODER_TYPES)}; "
                          "ResNet-34 and single-code backbones are not)")
    return kind


def encoder_from_checkpoint(ckpt, what="checkpoint"):
    """(Encoder in eval mode, is ReStyle) from a loaded checkpoint dict."""
    from latentedit.models.encoder import Encoder, EncoderConfig

    kind = encoder_type(ckpt, what)
    mode, restyle = ENCODER_TYPES[kind]
    sd = part(ckpt, "encoder")
    in_channels, stem_width, widths, blocks, se_reduction = trunk_layout(sd, what)
    heads = sorted(int(m.group(1)) for m in map(_HEAD.fullmatch, sd) if m)
    if not heads or heads != list(range(len(heads))):
        raise FormatError(f"{what}: no map-to-style heads (styles.{{i}}.linear.weight)")
    convs = [sum(1 for k in sd if re.fullmatch(rf"styles\.{i}\.convs\.\d+\.weight", k)) for i in heads]
    sizes = [2 ** c for c in convs]                                 # each head's input map size
    w_dim, head_width = sd["styles.0.linear.weight"].shape
    fpn_width = sd["styles.0.convs.0.weight"].shape[1]
    coarse = sizes[0]
    n_coarse, n_medium = sizes.count(coarse), sizes.count(coarse * 2)
    expected = [coarse] * n_coarse + [coarse * 2] * n_medium + [coarse * 4] * (len(sizes) - n_coarse - n_medium)
    if sizes != expected:
        raise FormatError(f"{what}: heads read pyramid levels {sizes}, not coarse then medium then fine")
    needs = (in_channels, 6 if restyle else 3)
    if needs[0] != needs[1]:
        raise FormatError(f"{what}: a {kind} taking {needs[0]}-channel input; only {needs[1]}-channel "
                          "photo encoders are supported")
    try:
        cfg = EncoderConfig(resolution=coarse * 2 ** len(widths), num_ws=len(heads), w_dim=w_dim, mode=mode,
                            stem_width=stem_width, widths=widths, blocks=blocks, se_reduction=se_reduction,
                            fpn_width=fpn_width, head_width=head_width, coarse_layers=n_coarse,
                            medium_layers=max(n_medium, 1), init_scale=0.0, input_channels=in_channels,
                            style_slope=0.01, fpn_align_corners=True, coarse_lateral=False)
    except InputError as e:
        raise FormatError(f"{what}: unexpected encoder shape ({e})") from None
    encoder = Encoder(cfg)
    out = convert_trunk(sd, blocks)
    # latlayer1 / latlayer2: the medium / fine laterals; ignored where no head reads that level
    # (ReStyle's loader is not strict about them either).
    laterals = {f"latlayer{2 - k}.": f"laterals.{k}." for k in (0, 1) if isinstance(encoder.laterals[k], nn.Conv2d)}
    for key, value in sd.items():
        if key.startswith("styles."):
            new = "heads." + key[len("styles."):]
            if _HEAD.fullmatch(key):  # EqualLinear: weight * (1 / sqrt(fan_in)) * lr_mul (1)
                value = value * (1 / math.sqrt(value.shape[1]))
            out[new] = value
        for old, new in laterals.items():
            if key.startswith(old):
                out[new + key[len(old):]] = value
    use_avg = restyle or options(ckpt).get("start_from_latent_avg", True)
    avg = latent_avg(ckpt, w_dim, what) if use_avg else None
    if use_avg and avg is None:
        raise FormatError(f"{what}: no latent_avg (the codes are offsets from it)")
    out["w_avg"] = avg if avg is not None else torch.zeros(w_dim)
    out["stage"] = torch.tensor(len(heads) - 1)   # e4e's inference stage: every delta on
    load_weights(encoder, fill_batchnorm_counters(out, encoder), f"{what} [encoder]")
    return encoder.eval(), restyle


def load_psp_encoder(path, G=None, steps=None, device="cpu"):
    """The encoder of an e4e / pSp / ReStyle checkpoint, eval mode: an `Encoder`, or for ReStyle a
    `ReStyle` refining through G (default: the checkpoint's own decoder) in `steps` steps (default:
    opts' n_iters_per_batch, else 5)."""
    ckpt = load_checkpoint(path)
    encoder, restyle = encoder_from_checkpoint(ckpt, str(path))
    encoder = encoder.to(device)
    if not restyle:
        return encoder
    from latentedit.models.restyle import ReStyle

    if G is None:  # the checkpoint's own decoder, from the checkpoint already read
        from latentedit.formats import psp_networks

        with torch.inference_mode(False):
            G = psp_networks(path, ckpt).G.to(device)
    steps = steps if steps is not None else options(ckpt).get("n_iters_per_batch", RESTYLE_STEPS)
    return ReStyle(encoder, G, steps=int(steps)).eval()


def decoder_from_checkpoint(ckpt, what="checkpoint"):
    """(GeneratorConfig, our state dict) of the checkpoint's decoder.* (a rosinality Generator), with
    latent_avg as w_avg (None: not stored)."""
    from latentedit.formats.rosinality import generator_from_rosinality

    sd = part(ckpt, "decoder")
    if "input.input" not in sd:
        raise FormatError(f"{what}: has no decoder.* generator")
    w_dim = sd["style.1.weight"].shape[0] if "style.1.weight" in sd else 512
    avg = latent_avg(ckpt, w_dim, what)
    cfg, out = generator_from_rosinality(sd, avg)
    return cfg, out, avg
