"""Function-preserving widening of a trained network into a wider configuration (a generator /
discriminator with larger channel_base / channel_max, or an unconditional one given a label input:
c_dim; an encoder with wider stages, or a ReStyle one given its reconstruction's input channels), so
a capacity increase can warm-start instead of starting over.

Every tensor of the wider network starts from its fresh initialisation; the trained tensor fills its
leading slice (channels are laid out the same way, and a flattened [C, 4, 4] is channel-major, so
the old channels are the leading ones everywhere). Then:
  - weights that carry a *new input* channel into an *old output* are zeroed, so old outputs never
    see the new channels: they only learn to use them (new outputs keep their random weights and so
    produce non-zero activations; a zero/zero split would never receive a gradient);
  - in networks with equalised learning rate (the GAN's), the trained part of every weight is scaled
    by sqrt(new fan-in / old fan-in): those multiply each weight by 1/sqrt(fan-in) at run time, and
    the fan-in grew. (Demodulated convolutions cancel this scale anyway; toRGB and the
    discriminator's layers do not.) Plain layers (the encoder's) keep their weights as they are.
A label input is one such widening: the generator's per-class W offsets and the discriminator's
label projection start at zero (their own initialisation); a trained projection widens with its
features (scaled, as it is divided by the square root of their number).
The generator is then exactly the trained one. The discriminator is too, except for its
minibatch-standard-deviation feature, which averages over every channel, new ones included: that one
input of the last conv moves, so D's logits shift slightly until training adapts.
"""
import math
from dataclasses import asdict

import torch

from latentedit.errors import InputError

WIDTHS = ("channel_base", "channel_max", "c_dim")  # c_dim: an unconditional network gains a label input
NOT_WEIGHTS = ("label_prior",)  # where a generator's labels fall in z: this run's config decides


def is_widening(trained_cfg, wanted_cfg, what):
    """Whether a network of trained_cfg goes into wanted_cfg by widening (False: the same widths);
    InputError when the widths change along with anything else, or a conditional network's labels
    would change (only an unconditional one gains labels)."""
    if trained_cfg.c_dim not in (0, wanted_cfg.c_dim):
        raise InputError(f"{what}: a network conditioned on {trained_cfg.c_dim} label classes cannot warm-start "
                         f"one with {wanted_cfg.c_dim}")
    if all(getattr(trained_cfg, k) == getattr(wanted_cfg, k) for k in WIDTHS):
        return False
    ignored = WIDTHS + NOT_WEIGHTS + (("label_input",) if trained_cfg.c_dim == 0 else ())  # no labels yet
    others = {k: (v, getattr(wanted_cfg, k)) for k, v in asdict(trained_cfg).items()
              if k not in ignored and getattr(wanted_cfg, k) != v}
    if others:
        raise InputError(f"{what}: can only warm-start a wider network (channel_base / channel_max / c_dim); "
                         f"differs in {', '.join(f'{k} {a} vs {b}' for k, (a, b) in others.items())}")
    return True


def _widened(name, old, fresh, moved_tail=0, equalised=True):
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
        if equalised:
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
def widen_into(trained, target, mbstd_channels=0, equalised=True):
    """Loads `trained` (a state dict) into the wider module `target` (freshly initialised), function-
    preserving as the module docstring says. mbstd_channels: the discriminator's minibatch-std
    channels, appended after the features at the input of its epilogue conv (`b4.conv.weight`).
    equalised: the network's layers scale their weights by 1/sqrt(fan-in) at run time."""
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
        state[name] = _widened(name, trained[name], tensor, tail, equalised)
        if name == "project.weight":  # D's label projection is divided by sqrt(its width): keep the term
            state[name][: len(trained[name])] *= math.sqrt(len(tensor) / len(trained[name]))
    target.load_state_dict(state)
    return target
