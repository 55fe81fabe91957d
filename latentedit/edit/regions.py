"""Regions from the generator's own features: edit masks, semantic components, region-locked
edits and component transfer.

    smile = Direction.load("smile")
    soft = edit_mask(G, w, w + 2 * smile)                       # [N, 1, H, W]: where the edit acts
    binary, t = threshold_mask(soft, cues=edit_cues(G, w, w + 2 * smile))
    comps = component_clusters(G, parser=parser)                # k-means of block features, named
    mouth = region_mask(G, w, "mouth", comps)                   # [N, 1, H, W] in [0, 1]
    img = region_edit(G, w, smile, "mouth", strength=2, components=comps)
    img, mask = transfer_component(G, w_target, w_source, "left_eye", components=comps)

Masks are computed from the generator only (its blocks' outputs, read through forward hooks); the
face parser is used to *name* clusters (and to evaluate), never to compute a mask. The pieces live
in edit/features.py (reading and rewriting block outputs), edit/masks.py (label-free edit masks)
and edit/components.py (named part clusters); this module holds the region-locked edits and
component transfer, and re-exports the rest so that `from latentedit.edit import regions` keeps
giving the whole toolbox.
"""
import numpy as np
import torch
from torch.nn import functional as F

from latentedit.edit.components import (PARTS, REGIONS, SIDES, ComponentModel, _parse, _split_side,  # noqa: F401
                                        component_clusters, component_layers, default_components, name_components, region_mask,
                                        spherical_kmeans)
from latentedit.edit.features import (COMPARISON_NOISE_MODES, _blended_synthesis, _check_noise,  # noqa: F401
                                      _resolutions, _wplus, block_hooks, synthesis_features)
from latentedit.edit.masks import (_check_image_weight, _check_mask, _gaussian_blur, cue_resolutions,  # noqa: F401
                                   cues_from_features, edit_cues, edit_mask, otsu_threshold, soft_from_cues,
                                   threshold_mask)
from latentedit.errors import InputError

# ---------------------------------------------------------------------------------------------
# 3. Region-locked edits and component transfer


def feather_mask(mask, grow=1 / 32, sigma=1 / 32):
    """Dilates mask [N, 1, R, R] by `grow` and blurs it with a Gaussian of `sigma` (both as
    fractions of the image side), keeping the original mask's values where they are higher, so
    the region itself stays fully inside and the border fades out instead of cutting."""
    mask = _check_mask(mask)
    R = mask.shape[-1]
    g = int(round(float(grow) * R))
    out = F.max_pool2d(mask, 2 * g + 1, stride=1, padding=g) if g > 0 else mask
    return torch.maximum(_gaussian_blur(out, float(sigma) * R), mask).clamp(0, 1)


def grown(mask, px):
    """Bool [N, R, R]: mask (bool [N, R, R]) grown by px pixels (a square neighbourhood)."""
    return F.max_pool2d(mask[:, None].float(), 2 * px + 1, stride=1, padding=px)[:, 0] > 0


def clear_of(region, keep, clearance, most=1 / 8):
    """Bool [N, R, R]: `region` (bool [N, R, R]) with its top edge lowered, shape kept, until it stays
    `clearance` pixels (a share of the image side) clear of `keep` (bool [N, R, R], e.g. the face's
    eyes): the region intersected with itself moved down by the fewest rows that do it, at most
    `most` of the side. Its top edge stays smooth, where cutting `keep`'s neighbourhood out of the
    region would notch it around each eye."""
    side = region.shape[-1]
    grow = max(1, round(clearance * side)) if clearance > 0 else 0  # a pixel at least at any size
    near = grown(keep, grow) if grow else keep
    out = region.clone()
    todo = (out & near).flatten(1).any(1)
    for rows in range(1, round(most * side) + 1):
        if not todo.any():
            break
        lowered = region.clone()
        lowered[:, rows:] &= region[:, :-rows]
        lowered[:, :rows] = False
        out[todo] = lowered[todo]
        todo = todo & (out & near).flatten(1).any(1)
    return out


def _region(G, ws_list, region, components):
    """The union (max) over ws_list of the region's mask: a name, a callable(G, ws) -> mask, or a
    mask tensor [N, 1, R, R] / [1, 1, R, R] / [R, R]."""
    N, R = ws_list[0].shape[0], G.img_resolution
    if isinstance(region, str):
        return torch.stack([region_mask(G, ws, region, components) for ws in ws_list]).amax(0)
    if callable(region):
        return torch.stack([_check_mask(region(G, ws), "region mask") for ws in ws_list]).amax(0)
    if torch.is_tensor(region):
        m = region.float()
        if m.ndim == 2:
            m = m[None, None]
        if m.ndim != 4 or m.shape[1] != 1 or m.shape[0] not in (1, N) or tuple(m.shape[2:]) != (R, R):
            raise InputError(f"a region mask must be [N, 1, {R}, {R}], [1, 1, {R}, {R}] or [{R}, {R}] (N={N}), "
                             f"got {list(region.shape)}")
        return _check_mask(m, "region mask").expand(N, -1, -1, -1).to(ws_list[0].device)
    raise InputError(f"region must be a name ({', '.join(REGIONS)}), a callable or a mask tensor, "
                     f"got {type(region).__name__}")


def _edited(G, ws, edit, strength):
    """W+ latents ws moved by a Direction (times strength) or an offset [D], [n, D] or [n, L, D]
    (n = 1 or N) (times strength)."""
    from latentedit.edit.directions import Direction

    if isinstance(edit, Direction):
        return _wplus(G, edit.apply(ws, strength, G=G), "edited latents")
    if not torch.is_tensor(edit) and not isinstance(edit, np.ndarray):
        raise InputError(f"edit must be a Direction or an offset tensor, got {type(edit).__name__}")
    d = torch.as_tensor(edit, dtype=torch.float32).to(ws.device)
    N, L, D = ws.shape
    if d.ndim == 1:
        d = d[None, None]
    elif d.ndim == 2:
        d = d[:, None]
    if d.ndim != 3 or d.shape[0] not in (1, N) or d.shape[1] not in (1, L) or d.shape[2] != D:
        raise InputError(f"an offset must be [{D}], [N, {D}] or [N, {L}, {D}] (N={N} or 1), got {list(edit.shape)}")
    if not torch.isfinite(d).all():
        raise InputError("offset contains NaN or infinite values")
    return ws + float(strength) * d


def region_edit(G, ws, edit, region, strength=1.0, components=None, grow=1 / 32, sigma=1 / 32,
                resolutions=None, noise_mode="const"):
    """Images [N, C, R, R] of `edit` (a Direction or a latent offset, times `strength`) applied to
    ws only inside `region` (a name, a callable(G, ws) -> mask, or a mask).

    The region is the union of its masks before and after the edit (a smile widens the mouth),
    feathered (`feather_mask`); the edited latents' features then replace the originals inside it
    after every synthesis block in `resolutions` (default: all), so the edit is composed in
    feature space and later layers blend the border. Far outside the feathered region the image
    keeps the original pixels up to what the blended features leak through the convolutions."""
    _check_noise(noise_mode)
    ws = _wplus(G, ws, "ws")
    ws_edit = _edited(G, ws, edit, strength)
    mask = feather_mask(_region(G, [ws, ws_edit], region, components), grow, sigma)
    return _blended_synthesis(G, ws, ws_edit, mask, _resolutions(G, resolutions), noise_mode)


def transfer_component(G, ws_target, ws_source, region, components=None, grow=1 / 32, sigma=1 / 32,
                       resolutions=None, noise_mode="const"):
    """(images [N, C, R, R], mask [N, 1, R, R]): the targets with the sources' `region` (e.g.
    "mouth", "left_eye") blended in feature space, as `region_edit` does, and the feathered mask
    that was blended with; the region is the union of the part in the target and in the source, so
    both the old part and the new one are covered. Each target takes the source of the same index
    (a single source [1, ...] serves every target)."""
    _check_noise(noise_mode)
    t = _wplus(G, ws_target, "ws_target")
    s = _wplus(G, ws_source, "ws_source")
    if s.shape[0] == 1 and t.shape[0] > 1:
        s = s.expand(t.shape[0], -1, -1)
    if s.shape != t.shape:
        raise InputError(f"ws_source must have one latent or as many as ws_target ({t.shape[0]}), got {s.shape[0]}")
    mask = feather_mask(_region(G, [t, s], region, components), grow, sigma)
    return _blended_synthesis(G, t, s, mask, _resolutions(G, resolutions), noise_mode), mask
