"""Function-preserving widening of a trained generator / discriminator into a wider configuration
(larger channel_base / channel_max), so a capacity increase can warm-start instead of starting over.

Every tensor of the wider network starts from its fresh initialisation; the trained tensor fills its
leading slice (channels are laid out the same way, and a flattened [C, 4, 4] is channel-major, so
the old channels are the leading ones everywhere). Then:
  - weights that carry a *new input* channel into an *old output* are zeroed, so old outputs never
    see the new channels: they only learn to use them (new outputs keep their random weights and so
    produce non-zero activations; a zero/zero split would never receive a gradient);
  - the trained part of every weight is scaled by sqrt(new fan-in / old fan-in): equalised learning
    rate multiplies each weight by 1/sqrt(fan-in) at run time, and the fan-in grew. (Demodulated
    convolutions cancel this scale anyway; toRGB and the discriminator's layers do not.)
The generator is then exactly the trained one. The discriminator is too, except for its
minibatch-standard-deviation feature, which averages over every channel, new ones included: that one
input of the last conv moves, so D's logits shift slightly until training adapts.
"""
import math
from dataclasses import asdict

import torch

from latentedit.errors import InputError

WIDTHS = ("channel_base", "channel_max")


def is_widening(trained_cfg, wanted_cfg, what):
    """Whether a network of trained_cfg goes into wanted_cfg by widening (False: the same widths);
    InputError when the widths change along with anything else."""
    if all(getattr(trained_cfg, k) == getattr(wanted_cfg, k) for k in WIDTHS):
        return False
    others = {k: (v, getattr(wanted_cfg, k)) for k, v in asdict(trained_cfg).items()
              if k not in WIDTHS and getattr(wanted_cfg, k) != v}
    if others:
        raise InputError(f"{what}: can only warm-start a wider network (channel_base / channel_max); "
                         f"differs in {', '.join(f'{k} {a} vs {b}' for k, (a, b) in others.items())}")
    return True


def _widened(name, old, fresh, moved_tail=0):
    """fresh with old in its leading slice (see the module docstring). moved_tail: the last input
    channels of old that stay the last input channels of the result (the minibatch-std channel)."""
    if old.shape == fresh.shape:
        return old.to(fresh.dtype).clone()
    if old.dim() != fresh.dim() or any(o > n for o, n in zip(old.shape, fresh.shape)):
        raise InputError(f"{name}: cannot widen shape {list(old.shape)} into {list(fresh.shape)} "
                         "(every dimension must stay or grow)")
    out = fresh.clone()
    old = old.to(fresh.dtype)
    if old.dim() >= 2:
        old = old * math.sqrt(fresh[0].numel() / old[0].numel())
        out[: old.shape[0], old.shape[1]:] = 0  # new inputs -> old outputs
    if moved_tail:
        head_in = old.shape[1] - moved_tail
        out[: old.shape[0], :head_in] = old[:, :head_in]
        out[: old.shape[0], -moved_tail:] = old[:, head_in:]
        out[: old.shape[0], head_in:-moved_tail] = 0
        return out
    out[tuple(slice(0, s) for s in old.shape)] = old
    return out


@torch.no_grad()
def widen_into(trained, target, mbstd_channels=0):
    """Loads `trained` (a state dict) into the wider module `target` (freshly initialised), function-
    preserving as the module docstring says. mbstd_channels: the discriminator's minibatch-std
    channels, appended after the features at the input of its epilogue conv (`b4.conv.weight`)."""
    fresh = target.state_dict()
    unexpected = sorted(set(trained) - set(fresh))
    if unexpected:
        raise InputError(f"cannot widen: tensors the wider network does not have, e.g. {unexpected[:3]}")
    state = {}
    for name, tensor in fresh.items():
        if name not in trained:
            state[name] = tensor  # derived buffers (resample filters) the network builds itself
            continue
        tail = mbstd_channels if name == "b4.conv.weight" else 0
        state[name] = _widened(name, trained[name], tensor, tail)
    target.load_state_dict(state)
    return target
