"""Putting a state dict from any format into our modules, with clear errors."""
import torch

from latentedit.errors import FormatError

# Buffers computed from the configuration, never read from files (the FIR resample filters).
DERIVED_SUFFIXES = ("resample_filter",)


def is_derived(key):
    return key.endswith(DERIVED_SUFFIXES)


def strip_derived(sd):
    return {k: v for k, v in sd.items() if not is_derived(k)}


def load_weights(module, sd, what="network"):
    """Loads sd into module: every non-derived tensor must be present with the right shape."""
    expected = module.state_dict()
    sd = strip_derived(sd)
    missing = sorted(k for k in expected if not is_derived(k) and k not in sd)
    unexpected = sorted(k for k in sd if k not in expected)
    if missing:
        raise FormatError(f"{what}: missing {len(missing)} tensors, e.g. {missing[:3]}")
    if unexpected:
        raise FormatError(f"{what}: unexpected tensors, e.g. {unexpected[:3]}")
    for k, v in sd.items():
        if not torch.is_tensor(v):
            raise FormatError(f"{what}: {k} is not a tensor")
        if tuple(v.shape) != tuple(expected[k].shape):
            raise FormatError(f"{what}: {k} has shape {list(v.shape)}, expected {list(expected[k].shape)}")
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise FormatError(f"{what}: {k} contains NaN or infinite values")
    full = {k: (sd[k] if k in sd else expected[k]) for k in expected}
    module.load_state_dict({k: v.to(expected[k].dtype) for k, v in full.items()}, strict=True)
    return module
