"""Reading and rewriting the synthesis blocks' outputs (forward hooks on the synthesis blocks,
which fire on every path): the features edit masks and part components are computed from."""
from contextlib import contextmanager

import torch
from torch.nn import functional as F

from latentedit.errors import InputError

COMPARISON_NOISE_MODES = ("const", "none")  # "random" would make the two passes of a comparison differ

# ---------------------------------------------------------------------------------------------
# Reading and rewriting synthesis features


def _wplus(G, ws, what="latents"):
    try:
        return G.broadcast_w(ws)
    except InputError as e:
        raise InputError(f"{what}: {e}") from None


def _pair(G, a, b, names):
    a, b = _wplus(G, a, names[0]), _wplus(G, b, names[1])
    if a.shape != b.shape:
        raise InputError(f"{names[0]} and {names[1]} must have the same shape, got {list(a.shape)} and {list(b.shape)}")
    return a, b


def _check_noise(noise_mode):
    if noise_mode not in COMPARISON_NOISE_MODES:
        raise InputError(f"noise_mode must be one of {COMPARISON_NOISE_MODES}, got {noise_mode!r}")


def _resolutions(G, resolutions, default_min=4):
    have = list(G.synthesis.block_resolutions)
    if resolutions is None:
        return [r for r in have if r >= default_min]
    res = sorted({int(r) for r in resolutions})
    bad = [r for r in res if r not in have]
    if bad or not res:
        raise InputError(f"resolutions must be synthesis block resolutions {have}, got {list(resolutions)}")
    return res


@contextmanager
def block_hooks(G, fn):
    """Calls fn(res, x, img) after every synthesis block; a non-None return (x, img) replaces the
    block's output. The hooks are removed on exit, whatever happens inside."""
    handles = []
    try:
        for res in G.synthesis.block_resolutions:
            def hook(module, args, output, res=res):
                return fn(res, *output)
            handles.append(getattr(G.synthesis, f"b{res}").register_forward_hook(hook))
        yield
    finally:
        for h in handles:
            h.remove()


def synthesis_features(G, ws, resolutions=None, noise_mode="const"):
    """(images [N, C, R, R], {res: block output x [N, C_res, res, res]}) for W or W+ latents."""
    ws = _wplus(G, ws)
    _check_noise(noise_mode)
    keep = set(_resolutions(G, resolutions))
    feats = {}

    def grab(res, x, img):
        if res in keep:
            feats[res] = x.float()

    with block_hooks(G, grab):
        img = G.synthesis(ws, noise_mode=noise_mode, fast=False)
    return img, feats


def _blended_synthesis(G, ws_base, ws_other, mask, resolutions, noise_mode):
    """Renders ws_base, pasting ws_other's block outputs (features and RGB skip) inside mask
    [N, 1, R, R] after every block in `resolutions`. Both streams run as one batch; the other
    stream runs untouched, so where mask == 1 at the last block the output is exactly its image,
    and the base stream's later convs smooth the seam because they see the pasted features."""
    N = ws_base.shape[0]
    masks = {r: F.adaptive_avg_pool2d(mask, r) for r in resolutions}  # area-average: coverage

    def blend(res, x, img):
        if res not in masks:
            return None
        m = masks[res].to(x.dtype)
        xa, xb, ia, ib = x[:N], x[N:], img[:N], img[N:]
        return torch.cat([xa + m * (xb - xa), xb]), torch.cat([ia + m.to(ia.dtype) * (ib - ia), ib])

    with block_hooks(G, blend):
        img = G.synthesis(torch.cat([ws_base, ws_other]), noise_mode=noise_mode, fast=False)
    return img[:N]
