"""ArcFace IR-SE-50 (`model_ir_se50.pth`, the identity network of pSp / e4e / ReStyle) and the
released IR-SE layout that their encoders share.

    arcface = load_arcface("model_ir_se50.pth")   # ArcFace in eval mode, frozen
    e = arcface(faces)                            # faces [N, 3, R, R] in [-1, 1] -> [N, 512] unit

The released layout (TreB1eN's InsightFace_Pytorch, reused by pSp): `input_layer.{0,1,2}` (conv, BN,
PReLU), `body.{k}` units with `res_layer.{0..5}` and `shortcut_layer.{0,1}` (only where the width
changes), `output_layer.{0,3,4}` (BN2d, linear, BN1d; 1 and 2 are dropout and flatten). Ours names
the same tensors `stem.*`, `stages.{s}.{j}.residual.*` / `.shortcut.*`, `output_bn`, `linear`,
`embedding_bn`: a rename only. Loading is weights-only, nothing beyond tensors and containers.
"""
import re

import torch

from latentedit.errors import FormatError
from latentedit.formats.torch_file import load_torch_file
from latentedit.formats.weights import load_weights

_UNIT = re.compile(r"body\.(\d+)\.(res_layer|shortcut_layer)\.(.+)")


def trunk_layout(sd, what):
    """The released IR-SE trunk's shape from its tensors: (in_channels, stem_width, widths, blocks,
    se_reduction). A stage starts at unit 0 and wherever a unit's shortcut is a conv (the width changes)."""
    try:
        stem = sd["input_layer.0.weight"]
        units = sorted({int(m.group(1)) for m in map(_UNIT.fullmatch, sd) if m})
        if not units or units != list(range(len(units))):
            raise KeyError("body units")
        widths, blocks = [], []
        for k in units:
            width = sd[f"body.{k}.res_layer.1.weight"].shape[0]
            if k == 0 or f"body.{k}.shortcut_layer.0.weight" in sd:
                widths.append(width)
                blocks.append(0)
            blocks[-1] += 1
        hidden = sd["body.0.res_layer.5.fc1.weight"].shape[0]
    except (KeyError, AttributeError, IndexError) as e:
        raise FormatError(f"{what}: not the released IR-SE layout (missing {e})") from None
    return stem.shape[1], stem.shape[0], widths, blocks, max(widths[0] // hidden, 1)


def convert_trunk(sd, blocks):
    """Released trunk tensors (input_layer.*, body.*) -> ours (stem.*, stages.{s}.{j}.*); other keys dropped."""
    starts = [sum(blocks[:s]) for s in range(len(blocks))]
    out = {}
    for key, value in sd.items():
        if key.startswith("input_layer."):
            out["stem." + key[len("input_layer."):]] = value
            continue
        m = _UNIT.fullmatch(key)
        if m:
            k = int(m.group(1))
            s = max(i for i, start in enumerate(starts) if start <= k)
            part = "residual" if m.group(2) == "res_layer" else "shortcut"
            out[f"stages.{s}.{k - starts[s]}.{part}.{m.group(3)}"] = value
    return out


def fill_batchnorm_counters(sd, module):
    """Files saved by old torch versions lack BatchNorm's num_batches_tracked (unused in eval): zeros."""
    for key, t in module.state_dict().items():
        if key.endswith("num_batches_tracked") and key not in sd:
            sd[key] = torch.zeros_like(t)
    return sd


def arcface_from_released(sd, what="ArcFace"):
    """A released IR-SE ArcFace state dict -> ArcFace (eval mode, gradients off)."""
    from latentedit.models.irse import ArcFace, ArcFaceConfig

    if not isinstance(sd, dict) or not all(isinstance(k, str) for k in sd):
        raise FormatError(f"{what}: not a state dict (got {type(sd).__name__})")
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    in_channels, stem_width, widths, blocks, se_reduction = trunk_layout(sd, what)
    if in_channels != 3 or "output_layer.3.weight" not in sd:
        raise FormatError(f"{what}: not an ArcFace IR-SE network (input channels {in_channels}, "
                          f"output layer {'present' if 'output_layer.3.weight' in sd else 'missing'})")
    linear = sd["output_layer.3.weight"]
    final = int(round((linear.shape[1] / widths[-1]) ** 0.5))
    try:
        cfg = ArcFaceConfig(input_size=final * 2 ** len(widths), stem_width=stem_width, widths=widths, blocks=blocks,
                            se_reduction=se_reduction, embedding_dim=linear.shape[0],
                            affine_output="output_layer.4.weight" in sd)
    except ValueError as e:
        raise FormatError(f"{what}: unexpected ArcFace shape ({e})") from None
    out = convert_trunk(sd, blocks)
    renames = {"output_layer.0.": "output_bn.", "output_layer.3.": "linear.", "output_layer.4.": "embedding_bn."}
    for key, value in sd.items():
        for old, new in renames.items():
            if key.startswith(old):
                out[new + key[len(old):]] = value
    net = ArcFace(cfg)
    load_weights(net, fill_batchnorm_counters(out, net), what)
    return net.eval().requires_grad_(False)


def load_arcface(path, device="cpu"):
    """ArcFace from `model_ir_se50.pth` (or any released IR-SE ArcFace state dict), eval mode, frozen.
    Its forward takes faces in [-1, 1] at any square size and returns unit embeddings [N, 512]."""
    sd = load_torch_file(path)
    return arcface_from_released(sd, str(path)).to(device)
