"""The perceptual and identity losses of inversion and encoder training, and the one protocol their
networks follow (our evaluators, LPIPS, ArcFace IR-SE-50 and any module of the same shape):

- perceptual network: a module with `features(images) -> [N, ...]`; the loss is
  ||f(x) - f(y)||^2, divided by ||f(y)||^2 unless the module sets `relative_distance = False`
  (LPIPS does: its squared feature distance is the LPIPS distance itself; our attribute classifier's
  features have no calibrated scale, so their distance is taken relative to the target's norm);
- identity network: a module called as `net(images) -> embeddings [N, D]`; the loss is 1 - cosine;
- both: images [N, 3, H, W] in [-1, 1]; `input_size` (int) if the network needs one size (images
  are resized to it first, antialiased), absent or None when it takes any size.

Either may be given as a path: perceptual "TRUNK.pth[:vgg|alex]" (LPIPS, see formats.lpips),
identity "model_ir_se50.pth" (ArcFace, see formats.arcface).
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from latentedit.edit.imaging import resize_antialiased
from latentedit.errors import InputError

PROTOCOL = ("a perceptual network is a module with features(images) -> [N, ...] (LPIPS, the attribute "
            "classifier), an identity network a module called as net(images) -> embeddings [N, D] (ArcFace, "
            "the identity embedder)")


@dataclass(frozen=True)
class PerceptualLoss:
    """features(x) [N, 3, R, R] -> [N, ...] (resized to the network's input size); distance(f, f_target) [N]."""
    features: Callable
    relative: bool = True

    def distance(self, f, target_f):
        dims = tuple(range(1, f.ndim))
        d = (f - target_f).square().sum(dims)
        return d / target_f.square().sum(dims).clamp_min(1e-8) if self.relative else d


@dataclass(frozen=True)
class IdentityLoss:
    """embed(x) [N, 3, R, R] -> [N, D] (resized to the network's input size); distance(e, e_target) [N]."""
    embed: Callable

    def distance(self, e, target_e):
        return 1 - F.cosine_similarity(e.flatten(1), target_e.flatten(1), dim=1)


def attribute_divergence(logits_y, logits_x, heads):
    """KL(p(x) || p(y)) of a classifier's heads (logits {head: [N, C]}), batch mean, summed over
    `heads`: y keeps what the classifier reads on x (encoder reconstructions, accessory edits)."""
    return sum(F.kl_div(F.log_softmax(logits_y[h], 1), F.log_softmax(logits_x[h], 1), reduction="batchmean",
                        log_target=True) for h in heads)


def _checked(fn, net, what):
    """fn on images resized to net's input_size (if it has one); a network that fails on images or
    returns something else than one row per image is an InputError, not a crash inside it."""
    size = getattr(net, "input_size", None)

    def apply(x):
        try:
            out = fn(resize_antialiased(x, int(size)) if size is not None else x)
        except torch.OutOfMemoryError:
            raise
        except (RuntimeError, TypeError, AttributeError, IndexError) as e:
            raise InputError(f"the {what} failed on images {list(x.shape)} ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}); {PROTOCOL}") from None
        if not torch.is_tensor(out) or out.ndim < 2 or out.shape[0] != x.shape[0]:
            got = list(out.shape) if torch.is_tensor(out) else type(out).__name__
            raise InputError(f"the {what} should return a tensor [{x.shape[0]}, ...] (one row per image), got {got}")
        return out

    return apply


def perceptual_loss(net, device="cpu"):
    """PerceptualLoss of `net`: a module of the protocol, a path ("TRUNK.pth[:vgg|alex]" -> LPIPS),
    an existing PerceptualLoss, a plain function images -> features (relative distance; its input
    size is the caller's business), or None -> None. Anything else: InputError. Networks read from a
    path are put on `device`; modules given stay where they are."""
    if net is None or isinstance(net, PerceptualLoss):
        return net
    if isinstance(net, (str, Path)):
        from latentedit.formats.lpips import load_lpips

        net = load_lpips(net, device=device)
    features = getattr(net, "features", None)
    if callable(features) and not isinstance(features, nn.Module):
        return PerceptualLoss(_checked(features, net, "perceptual network"),
                              bool(getattr(net, "relative_distance", True)))
    if callable(net) and not isinstance(net, nn.Module):
        return PerceptualLoss(_checked(net, None, "perceptual network"), True)
    raise InputError(f"{type(net).__name__} cannot be the perceptual network: it has no features(images) "
                     f"method; {PROTOCOL}")


def identity_loss(net, device="cpu"):
    """IdentityLoss of `net`: a module of the protocol, a path (-> ArcFace IR-SE-50), an existing
    IdentityLoss, a plain function images -> embeddings, or None -> None. Anything else: InputError.
    Networks read from a path are put on `device`."""
    if net is None or isinstance(net, IdentityLoss):
        return net
    if isinstance(net, (str, Path)):
        net = load_identity(net).eval().requires_grad_(False).to(device)
    from latentedit.models.lpips import LPIPS

    if not callable(net) or isinstance(net, LPIPS):  # LPIPS compares two images, it embeds none
        raise InputError(f"{type(net).__name__} cannot be the identity network: it does not embed images; {PROTOCOL}")
    return IdentityLoss(_checked(net, net, "identity network"))


def load_identity(path):
    """ArcFace IR-SE-50 (`model_ir_se50.pth`, as pSp / e4e use it) read from `path`."""
    from latentedit.formats.arcface import load_arcface

    return load_arcface(path)


def evaluator_losses(evaluators, perceptual=None, identity=None, device="cpu"):
    """(PerceptualLoss or None, IdentityLoss or None) of {"attributes": perceptual network,
    "identity": identity network} (either missing -> None); any network of the protocol.
    perceptual / identity (a network or a path, see perceptual_loss / identity_loss) replace
    the evaluators' own; networks read from a path go to `device`."""
    evaluators = evaluators or {}
    if not isinstance(evaluators, dict):
        raise InputError(f"evaluators must be a dict {{'attributes': ..., 'identity': ...}}, got "
                         f"{type(evaluators).__name__}")
    own = perceptual_loss(evaluators.get("attributes")), identity_loss(evaluators.get("identity"))
    return perceptual_loss(perceptual, device) or own[0], identity_loss(identity, device) or own[1]
