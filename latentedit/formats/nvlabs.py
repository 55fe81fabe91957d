"""NVlabs stylegan2-ada-pytorch / stylegan3 network pickles (.pkl) holding StyleGAN2 networks.

Read with the restricted unpickler (formats.safe_pickle): the embedded source is never run.
The architecture comes from each network's stored init kwargs; our parameter names are the
NVlabs ones, so weights map one to one (the FIR filter buffers are derived, not copied).
"""
import torch

from latentedit.errors import FormatError
from latentedit.formats.files import regular_file
from latentedit.formats.safe_pickle import PersistentObject, restricted_load
from latentedit.formats.weights import strip_derived
from latentedit.models.stylegan2 import DiscriminatorConfig, GeneratorConfig

NETWORK_KEYS = ("G_ema", "G", "D")


def load_pkl(path):
    """-> {'G_ema'|'G'|'D': PersistentObject} plus any plain metadata the pickle holds."""
    with open(regular_file(path, "network pickle"), "rb") as f:
        data = restricted_load(f)
    if not isinstance(data, dict) or not any(isinstance(data.get(k), PersistentObject) for k in NETWORK_KEYS):
        raise FormatError(f"{path}: a pickle, but not an NVlabs network pickle (no G_ema / G / D networks)")
    return data


def _kw(kwargs, key, default):
    v = kwargs.get(key, default)
    return default if v is None and default is not None else v


def generator_config(net: PersistentObject):
    if net.class_name != "Generator":
        raise FormatError(f"expected a Generator network, found {net.class_name!r}")
    kw = net.init_kwargs
    try:
        syn, mapping = dict(kw.get("synthesis_kwargs") or {}), dict(kw.get("mapping_kwargs") or {})
    except (TypeError, ValueError):
        raise FormatError("generator init kwargs are malformed (synthesis / mapping kwargs are not dicts)") from None
    for key in ("embed_features", "layer_features") if kw.get("c_dim") else ("layer_features",):
        if mapping.get(key) not in (None, kw.get("w_dim")):  # ours are w_dim wide, NVlabs' default
            raise FormatError(f"mapping {key}={mapping[key]!r} differs from w_dim={kw.get('w_dim')!r}: not supported")
    arch = syn.get("architecture", "skip")
    if arch != "skip":
        raise FormatError(f"synthesis architecture {arch!r} is not supported (StyleGAN2 'skip' only)")
    if "layer_kwargs" in syn or "magnitude_ema_beta" in syn or "channel_base" in syn and "num_layers" in syn:
        raise FormatError("this pickle holds a StyleGAN3 (alias-free) generator; only StyleGAN2 networks load")
    try:
        return GeneratorConfig(
            resolution=int(kw["img_resolution"]), z_dim=int(kw["z_dim"]), w_dim=int(kw["w_dim"]),
            img_channels=int(kw["img_channels"]),
            channel_base=int(_kw(syn, "channel_base", 32768)), channel_max=int(_kw(syn, "channel_max", 512)),
            n_mlp=int(_kw(mapping, "num_layers", 8)),
            mapping_lr_multiplier=float(_kw(mapping, "lr_multiplier", 0.01)),
            w_avg_beta=float(_kw(mapping, "w_avg_beta", 0.995)),
            num_fp16_res=int(_kw(syn, "num_fp16_res", 0)), conv_clamp=syn.get("conv_clamp"),
            resample_filter=list(_kw(syn, "resample_filter", [1, 3, 3, 1])), c_dim=int(_kw(kw, "c_dim", 0)),
        )
    except KeyError as e:
        raise FormatError(f"generator init kwargs lack {e.args[0]!r}; pass the architecture explicitly") from None
    except (TypeError, ValueError) as e:
        raise FormatError(f"generator init kwargs are malformed ({e})") from None


def discriminator_config(net: PersistentObject):
    if net.class_name != "Discriminator":
        raise FormatError(f"expected a Discriminator network, found {net.class_name!r}")
    kw = net.init_kwargs
    if kw.get("c_dim", 0):
        raise FormatError(f"conditional NVlabs discriminators (c_dim={kw['c_dim']}: a label mapping network) are "
                          "not supported")
    if kw.get("architecture", "resnet") != "resnet":
        raise FormatError(f"discriminator architecture {kw['architecture']!r} is not supported (resnet only)")
    try:
        epi = dict(kw.get("epilogue_kwargs") or {})
    except (TypeError, ValueError):
        raise FormatError("discriminator init kwargs are malformed (epilogue kwargs are not a dict)") from None
    try:
        return DiscriminatorConfig(
            resolution=int(kw["img_resolution"]), img_channels=int(kw["img_channels"]),
            channel_base=int(_kw(kw, "channel_base", 32768)), channel_max=int(_kw(kw, "channel_max", 512)),
            mbstd_group_size=int(_kw(epi, "mbstd_group_size", 4)),
            mbstd_num_channels=int(_kw(epi, "mbstd_num_channels", 1)),
            num_fp16_res=int(_kw(kw, "num_fp16_res", 0)), conv_clamp=kw.get("conv_clamp"),
            resample_filter=list(_kw(dict(kw.get("block_kwargs") or {}), "resample_filter", [1, 3, 3, 1])),
        )
    except KeyError as e:
        raise FormatError(f"discriminator init kwargs lack {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        raise FormatError(f"discriminator init kwargs are malformed ({e})") from None


def network_weights(net: PersistentObject):
    """Our state dict for a persistent network: the same names, derived buffers dropped."""
    sd = strip_derived(net.state_dict())
    bad = [k for k, v in sd.items() if not torch.is_tensor(v)]
    if bad:
        raise FormatError(f"{net.class_name}: entries that are not tensors, e.g. {bad[:3]}")
    return {k: v.float() for k, v in sd.items()}
