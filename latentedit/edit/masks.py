"""Label-free edit masks: where an edit acts, from the change of the generator's own features and
image between the two codes (no parser, no labels)."""
import numpy as np
import torch
from torch.nn import functional as F

from latentedit.edit.features import _pair, _resolutions, synthesis_features
from latentedit.errors import InputError

# A cue is scaled by its per-sample maximum, but never by less than these, so that a zero edit
# gives a zero mask (not 0/0) and a faint edit a faint one. Image cue: RGB distance in [-1, 1]
# units; feature cue: change relative to the mean activation norm of that block.
IMAGE_FLOOR = 0.1
FEATURE_FLOOR = 0.1
IMAGE_BLUR = 1 / 64  # Gaussian sigma of the image cue, as a fraction of the image side

# ---------------------------------------------------------------------------------------------
# 1. Label-free edit masks


def _gaussian_blur(x, sigma):
    """Separable Gaussian blur of x [N, 1, H, W] (sigma in pixels; replicate padding)."""
    if sigma <= 0:
        return x
    r = int(np.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    kern = torch.exp(-0.5 * (t / sigma) ** 2)
    kern = kern / kern.sum()
    x = F.conv2d(F.pad(x, [r, r, 0, 0], mode="replicate"), kern.reshape(1, 1, 1, -1))
    return F.conv2d(F.pad(x, [0, 0, r, r], mode="replicate"), kern.reshape(1, 1, -1, 1))


def _scale(cue, floor):
    top = cue.amax(dim=(1, 2, 3), keepdim=True).clamp_min(floor)
    return (cue / top).clamp(0, 1)


@torch.no_grad()
def edit_cues(G, ws_before, ws_after, resolutions=None, noise_mode="const"):
    """(feature cue, image cue), each [N, 1, R, R] in [0, 1]: where an edit changes the synthesis
    features and where it changes the pixels.

    Feature cue: at each block, the per-pixel L2 change of the activations relative to the block's
    mean activation norm (so blocks of different scale count alike), upsampled bilinearly and
    averaged over `resolutions` (default: blocks of at least R/8 px; coarser ones smear a local
    change over the whole face). Image cue: the per-pixel RGB distance, blurred by IMAGE_BLUR of
    the image side so that a changed texture reads as an area rather than scattered pixels. Each
    is divided by its per-sample maximum, floored (FEATURE_FLOOR / IMAGE_FLOOR) so that no edit
    gives no mask and a faint edit a faint one."""
    a, b = _pair(G, ws_before, ws_after, ("ws_before", "ws_after"))
    img, feats = synthesis_features(G, torch.cat([a, b]), cue_resolutions(G, resolutions), noise_mode)
    N = a.shape[0]
    return cues_from_features(img[:N], {r: x[:N] for r, x in feats.items()},
                              img[N:], {r: x[N:] for r, x in feats.items()})


def cue_resolutions(G, resolutions=None):
    """The blocks `edit_cues` compares: `resolutions`, default those of at least R/8 px."""
    return _resolutions(G, resolutions, default_min=max(4, G.img_resolution // 8))


def cues_from_features(img_before, feats_before, img_after, feats_after):
    """`edit_cues` from the outputs of `synthesis_features` for the latents before and after
    (the same blocks in both), so that one pass of the unedited latents serves several edits."""
    N, R = img_before.shape[0], img_before.shape[-1]
    fcue = torch.zeros([N, 1, R, R], device=img_before.device)
    for res, xa in feats_before.items():
        xb = feats_after[res]
        scale = xa.norm(dim=1, keepdim=True).mean(dim=(2, 3), keepdim=True) + 1e-8
        d = (xb - xa).norm(dim=1, keepdim=True) / scale
        fcue += F.interpolate(d, size=(R, R), mode="bilinear", align_corners=False) if d.shape[-1] != R else d
    fcue /= len(feats_before)
    icue = _gaussian_blur((img_after - img_before).norm(dim=1, keepdim=True), IMAGE_BLUR * R)
    return _scale(fcue, FEATURE_FLOOR), _scale(icue, IMAGE_FLOOR)


def edit_mask(G, ws_before, ws_after, resolutions=None, image_weight=0.5, noise_mode="const"):
    """Soft mask [N, 1, R, R] in [0, 1] of where ws_before -> ws_after changes the face: the
    weighted geometric mean f^(1 - image_weight) * i^image_weight of the feature cue f (smooth,
    semantic, but it also sees changes that never reach the pixels) and the image cue i (sharp,
    but it also sees small texture changes), so a pixel counts when both cues see a change.
    See `edit_cues`; `threshold_mask` turns it into a binary mask."""
    _check_image_weight(image_weight)
    return soft_from_cues(*edit_cues(G, ws_before, ws_after, resolutions, noise_mode), image_weight)


def _check_image_weight(image_weight):
    if not 0 <= float(image_weight) <= 1:
        raise InputError(f"image_weight must be in [0, 1], got {image_weight}")


def soft_from_cues(f, i, image_weight=0.5):
    """The soft edit mask f^(1 - image_weight) * i^image_weight of cues from `edit_cues`."""
    _check_image_weight(image_weight)
    return f.pow(1 - image_weight) * i.pow(image_weight)


def _check_mask(m, what="mask"):
    if not torch.is_tensor(m) or m.ndim != 4 or m.shape[1] != 1:
        got = list(m.shape) if torch.is_tensor(m) else type(m).__name__
        raise InputError(f"{what} must be a tensor [N, 1, H, W], got {got}")
    if not torch.isfinite(m).all():
        raise InputError(f"{what} contains NaN or infinite values")
    return m.float()


def _kappa(a, b):
    """Cohen's kappa of boolean masks a, b [..., P]: agreement beyond what their areas give by
    chance. 0 for empty or full masks, so the trivial thresholds never win."""
    pa, pb = a.float().mean(-1), b.float().mean(-1)
    po = (a == b).float().mean(-1)
    pe = pa * pb + (1 - pa) * (1 - pb)
    return torch.where(pe < 1 - 1e-9, (po - pe) / (1 - pe).clamp_min(1e-9), torch.zeros_like(po))


def otsu_threshold(x, bins=64):
    """Per-sample Otsu threshold of maps [N, ...] in [0, 1] (maximal between-class variance)."""
    x = x.reshape(x.shape[0], -1).clamp(0, 1)
    edges = torch.linspace(0, 1, bins + 1, device=x.device)[1:-1]           # candidate thresholds
    out = []
    for v in x:
        hi = v[None] > edges[:, None]                                       # [T, P]
        w1 = hi.float().mean(1)
        m1 = (v * hi).sum(1) / hi.sum(1).clamp_min(1)
        m0 = (v * ~hi).sum(1) / (~hi).sum(1).clamp_min(1)
        out.append(edges[((1 - w1) * w1 * (m1 - m0) ** 2).argmax()])
    return torch.stack(out)


def _top_fraction_thresholds(x, fractions):
    """Values [Q, N] above which a fraction q of each map x [N, P] lies."""
    s = x.sort(dim=1).values                                                # [N, P] ascending
    idx = ((1 - fractions) * s.shape[1]).long().clamp(0, s.shape[1] - 1)    # [Q]
    return s[:, idx].T


def threshold_mask(soft, cues=None, fractions=None):
    """(binary mask [N, 1, H, W] bool, thresholds [N]) of a soft edit mask; pixels with
    soft > threshold are in the mask.

    With cues = (feature cue, image cue) from `edit_cues`, the threshold is chosen by agreement:
    for each candidate area fraction q (default 1%, 2%, ..., 95% of the image), the top-q pixels
    of each cue are compared by Cohen's kappa, and the soft map keeps its own top-q pixels for the
    q where the two cues agree best. Comparing equal areas, not equal values, makes the choice
    independent of how each cue is scaled (the feature cue is smooth and wide, the image cue sharp
    and sparse); kappa discounts the agreement that two masks of that area would have by chance,
    so "everything" never wins. A sample without agreement (best kappa <= 0), and every sample
    when no cues are given, uses Otsu's threshold on `soft`. A zero map gives an empty mask."""
    soft = _check_mask(soft, "soft")
    t = otsu_threshold(soft)
    if cues is not None:
        f, i = (_check_mask(c, "cue") for c in cues)
        if f.shape != soft.shape or i.shape != soft.shape:
            raise InputError(f"cues must have the shape of soft {list(soft.shape)}")
        q = torch.arange(1, 96) / 100 if fractions is None else torch.as_tensor(fractions).float()
        q = q.to(soft.device)
        if q.ndim != 1 or not ((q > 0) & (q < 1)).all():
            raise InputError("fractions must be a list of area fractions in (0, 1)")
        for n in range(soft.shape[0]):  # one sample at a time: [Q, P] masks stay small at 1024 px
            fv, iv, sv = f[n].reshape(1, -1), i[n].reshape(1, -1), soft[n].reshape(1, -1)
            fb = fv > _top_fraction_thresholds(fv, q)                       # [Q, P]
            ib = iv > _top_fraction_thresholds(iv, q)
            best, idx = _kappa(fb, ib).max(0)
            if best > 0:
                t[n] = _top_fraction_thresholds(sv, q)[idx, 0]
    t = t.clamp_min(1e-6)  # a zero pixel is never "changed"
    return soft > t.reshape(-1, 1, 1, 1), t
