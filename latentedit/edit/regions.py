"""Regions from the generator's own features: edit masks, semantic components, region-locked
edits and component transfer.

    smile = Direction.load("smile")
    soft = edit_mask(G, w, w + 2 * smile)                       # [N, 1, H, W]: where the edit acts
    binary, t = threshold_mask(soft, cues=edit_cues(G, w, w + 2 * smile))
    comps = component_clusters(G, parser=parser)                # k-means of block features, named
    mouth = region_mask(G, w, "mouth", comps)                   # [N, 1, H, W] in [0, 1]
    img = region_edit(G, w, smile, "mouth", strength=2, components=comps)
    img = transfer_component(G, w_target, w_source, "left_eye", components=comps)

Everything here reads the synthesis blocks' outputs through forward hooks on the reference path
(`fast=False`), because the CPU fast path does not go through the blocks' `forward`. Masks are
computed from the generator only; the face parser is used to *name* clusters (and to evaluate),
never to compute a mask.
"""
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Dict, List

import numpy as np
import torch
from torch.nn import functional as F

from latentedit.edit.imaging import resize
from latentedit.errors import InputError

# Region names -> the parser labels (latentedit.world.params.LABELS) that name their clusters.
# Names beyond the public ones (background, neck, ...) exist so that the clusters of those areas
# get a name of their own instead of being claimed by a face part.
PARTS = {
    "eyes": ("l_eye", "r_eye"),
    "brows": ("l_brow", "r_brow"),
    "nose": ("nose",),
    "mouth": ("mouth", "u_lip", "l_lip"),
    "hair": ("hair",),
    "skin": ("skin",),
    "accessory": ("glasses_frame", "lens", "mask"),
    "hat": ("hat",),
    "beard": ("beard",),
    "ears": ("l_ear", "r_ear"),
    "neck": ("neck",),
    "cloth": ("cloth",),
    "background": ("background",),
}
SIDES = {"left_eye": "l_eye", "right_eye": "r_eye"}        # one eye: the "eyes" region split in two
REGIONS = tuple(PARTS) + tuple(SIDES)
NOISE_MODES = ("const", "none")  # "random" would make the two passes of a comparison differ

# A cue is scaled by its per-sample maximum, but never by less than these, so that a zero edit
# gives a zero mask (not 0/0) and a faint edit a faint one. Image cue: RGB distance in [-1, 1]
# units; feature cue: change relative to the mean activation norm of that block.
IMAGE_FLOOR = 0.1
FEATURE_FLOOR = 0.1
IMAGE_BLUR = 1 / 64  # Gaussian sigma of the image cue, as a fraction of the image side


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
    if noise_mode not in NOISE_MODES:
        raise InputError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")


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


# ---------------------------------------------------------------------------------------------
# 2. Semantic components (spherical k-means of synthesis features, Collins et al. 2020)


def spherical_kmeans(x, k, iters=50, seed=0):
    """Centroids [k, C] (unit) of unit vectors x [M, C]: k-means under cosine similarity, k-means++
    seeding from a seeded generator, so the result is a function of (x, k, seed)."""
    M = x.shape[0]
    if not 1 <= k <= M:
        raise InputError(f"k must be in [1, {M}] (the number of feature vectors), got {k}")
    g = torch.Generator().manual_seed(int(seed))
    c = x[torch.randint(M, (1,), generator=g)]
    dist = (1 - x @ c.T)[:, 0].clamp_min(0)
    for _ in range(1, k):
        p = dist.square().double().cpu()
        pick = torch.multinomial(p / p.sum(), 1, generator=g) if p.sum() > 0 else torch.randint(M, (1,), generator=g)
        c = torch.cat([c, x[pick]])
        dist = torch.minimum(dist, (1 - x @ x[pick].T)[:, 0].clamp_min(0))
    labels = None
    for _ in range(iters):
        new = (x @ c.T).argmax(1)
        if labels is not None and torch.equal(new, labels):
            break
        labels = new
        sums = torch.zeros_like(c).index_add_(0, labels, x)
        norms = sums.norm(dim=1, keepdim=True)
        c = torch.where(norms > 1e-8, sums / norms.clamp_min(1e-8), c)     # an empty cluster keeps its centroid
    return c


@dataclass
class ComponentModel:
    """Clusters of per-pixel synthesis features, with optional part names.

    resolutions: the blocks whose outputs make the feature vector (each normalised, upsampled
    bilinearly to the finest of them and concatenated with equal weight); centroids [k, C] unit
    vectors; names: region name -> cluster ids; left_on_image_left: whether the parser's l_eye
    lies left of its r_eye in the image; iou: each name's IoU against the parser on the naming
    samples."""
    resolutions: tuple
    centroids: torch.Tensor
    names: Dict[str, List[int]] = field(default_factory=dict)
    left_on_image_left: bool = True
    iou: Dict[str, float] = field(default_factory=dict)

    @property
    def k(self):
        return self.centroids.shape[0]

    @property
    def resolution(self):
        return max(self.resolutions)

    def features(self, G, ws, batch_size=16):
        """Unit feature vectors [N, C, r, r] (r: the finest of `resolutions`)."""
        ws = _wplus(G, ws)
        return torch.cat([_pixel_features(synthesis_features(G, chunk, self.resolutions)[1], self.resolutions)
                          for chunk in ws.split(batch_size)])

    @torch.no_grad()
    def assign(self, G, ws):
        """Cluster labels [N, r, r] at the finest clustered resolution."""
        x = self.features(G, ws)
        return torch.einsum("nchw,kc->nkhw", x, self.centroids.to(x.device)).argmax(1)

    def labels(self, G, ws):
        """Cluster labels [N, R, R] at image resolution (nearest)."""
        lab = self.assign(G, ws)[:, None].float()
        return F.interpolate(lab, size=(G.img_resolution,) * 2, mode="nearest")[:, 0].long()

    def cluster_mask(self, G, ws, clusters, labels=None):
        """Soft mask [N, 1, R, R]: the block-resolution indicator of `clusters`, upsampled bilinearly."""
        lab = self.assign(G, ws) if labels is None else labels
        ids = torch.as_tensor(list(clusters), dtype=torch.long, device=lab.device)
        m = torch.isin(lab, ids).float()[:, None]
        return F.interpolate(m, size=(G.img_resolution,) * 2, mode="bilinear", align_corners=False).clamp(0, 1)


def _parse(parser, images):
    """Parser label maps [N, R, R] for generator images of any size (resized to the parser's)."""
    size, R = parser.cfg.image_size, images.shape[-1]
    lab = parser.parse(resize(images.clamp(-1, 1), size))
    if R != size:
        lab = F.interpolate(lab[:, None].float(), size=(R, R), mode="nearest")[:, 0].long()
    return lab


def _pick_clusters(inside, size, allowed):
    """Cluster set for one part: of the clusters ranked by precision (the share of their pixels
    that lie in the part), the prefix whose union has the highest IoU with the part (a prefix of
    this order is how a threshold on precision would choose). inside, size: [k] pixel counts.
    Returns (cluster ids, IoU)."""
    area = float(inside.sum())
    order = sorted((c for c in allowed if size[c] > 0), key=lambda c: -float(inside[c] / size[c]))
    if not order or area == 0:
        return [], 0.0
    inter = np.cumsum([float(inside[c]) for c in order])
    union = np.cumsum([float(size[c]) for c in order]) + area - inter
    iou = inter / union
    n = int(iou.argmax()) + 1
    return sorted(order[:n]), float(iou[n - 1])


@torch.no_grad()
def name_components(model, G, parser, n_samples=64, seed=0, truncation=0.7, min_iou=0.05, exclusive=True):
    """Names the clusters of `model` by overlap with the face parser's label maps; returns the model.

    Each region name takes the clusters that `_pick_clusters` finds for its parser labels on
    n_samples images. exclusive: a cluster gets at most one name; names choose in order of
    their parser area, smallest first, so small parts are not swallowed by skin or background.
    A name whose IoU stays below min_iou gets no clusters. The parser only names; masks are
    always computed from the clusters."""
    labels_names = list(parser.cfg.labels)
    missing = sorted({lab for part in PARTS.values() for lab in part} - set(labels_names))
    if missing:
        raise InputError(f"the parser does not predict {missing}; it needs the world's labels")
    ws = G.sample_w(n_samples, seed=seed, truncation=truncation)
    img = torch.cat([G.synthesis(chunk, noise_mode="const", fast=False) for chunk in G.broadcast_w(ws).split(16)])
    parsed = _parse(parser, img)                                            # [N, R, R]
    clusters = model.labels(G, ws)
    L = len(labels_names)
    joint = torch.bincount((clusters * L + parsed).flatten(), minlength=model.k * L).reshape(model.k, L).double()
    size = joint.sum(1)                                                     # pixels per cluster
    lid = {n: i for i, n in enumerate(labels_names)}
    part_pix = {name: joint[:, [lid[lab] for lab in labs]].sum(1) for name, labs in PARTS.items()}
    free, names, ious = set(range(model.k)), {}, {}
    for name in sorted(PARTS, key=lambda n: float(part_pix[n].sum())):
        if part_pix[name].sum() == 0:
            continue
        chosen, iou = _pick_clusters(part_pix[name], size, free if exclusive else range(model.k))
        if iou >= min_iou:
            names[name], ious[name] = chosen, iou
            free -= set(chosen)
    # Which image side the parser calls "l_eye": its mean column against that of "r_eye".
    cols = torch.arange(G.img_resolution, device=parsed.device).expand_as(parsed)
    lx, rx = cols[parsed == lid["l_eye"]].float().mean(), cols[parsed == lid["r_eye"]].float().mean()
    model.names, model.iou = names, ious
    model.left_on_image_left = bool(lx < rx) if torch.isfinite(lx) and torch.isfinite(rx) else True
    return model


def _pixel_features(feats, resolutions):
    """Per-pixel unit feature vectors [N, C, r, r] from block outputs {res: x}: each block's
    vectors are normalised (blocks differ in scale and width), upsampled to the finest r and
    concatenated, then normalised again, so each block weighs the same in the cosine."""
    r = max(resolutions)
    parts = []
    for res in resolutions:
        x = F.normalize(feats[res], dim=1)
        parts.append(F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False) if res != r else x)
    return F.normalize(torch.cat(parts, 1), dim=1)


@torch.no_grad()
def component_clusters(G, n_samples=64, k=64, layer_res=(32, 64), seed=0, truncation=0.7, parser=None, iters=50,
                       max_vectors=200_000, exclusive=True):
    """A ComponentModel: spherical k-means (k clusters, k-means++ from `seed`) of the per-pixel
    activations of synthesis block(s) `layer_res` (an int or a tuple of resolutions) over the
    latents of seeds seed..seed+n_samples-1. With a face parser the clusters are then named
    (`name_components` on the same latents); without one they are unnamed.

    The defaults were chosen on the bundled 64 px generator (held-out parser IoU, 8 settings of
    blocks x k): the 32 and 64 px blocks together and k=64 beat one block or fewer clusters,
    because the small parts only get clusters of their own when there are many."""
    if int(n_samples) < 1:
        raise InputError(f"n_samples must be >= 1, got {n_samples}")
    res = tuple(_resolutions(G, [layer_res] if np.isscalar(layer_res) else layer_res))
    ws = G.sample_w(int(n_samples), seed=seed, truncation=truncation)
    x = torch.cat([_pixel_features(synthesis_features(G, chunk, res)[1], res) for chunk in G.broadcast_w(ws).split(16)])
    v = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])                       # [N*r*r, C]
    if v.shape[0] > max_vectors:  # a seeded subset keeps k-means cheap at large resolutions
        g = torch.Generator().manual_seed(int(seed))
        v = v[torch.randperm(v.shape[0], generator=g)[:max_vectors].to(v.device)]
    model = ComponentModel(res, spherical_kmeans(v, int(k), iters, seed))
    if parser is not None:
        name_components(model, G, parser, n_samples, seed, truncation, exclusive=exclusive)
    return model


def default_components(G):
    """The components of G (component_clusters defaults; blocks 32 and 64 px where G has them)
    named with the bundled face parser, fitted once (about 10 s on one CPU thread at 64 px) and
    cached on G until its weights change (not cached for weights made under inference_mode)."""
    from latentedit.models.layers import version_key

    first = next(G.synthesis.parameters())
    key = version_key(first)
    hit = getattr(G, "_default_components", None)
    if key is not None and hit is not None and hit[0] == key:
        return hit[1]
    from latentedit.formats import DEFAULT_BUNDLE
    from latentedit.formats.evaluators import load_evaluators

    parser = load_evaluators(DEFAULT_BUNDLE, names=["parser"])["parser"].to(first.device)
    blocks = G.synthesis.block_resolutions
    res = tuple(r for r in (32, 64) if r in blocks) or (blocks[-1],)
    model = component_clusters(G, layer_res=res, parser=parser)
    if key is not None:
        G._default_components = (key, model)
    return model


def _split_side(eyes, nose, left_on_image_left, want_left):
    """One eye of an "eyes" mask [N, 1, R, R]: the half on one side of a vertical line through the
    nose's centre of mass (the nose sits between the eyes and turns with the head), or through the
    eyes' own centre of mass when there is no nose in the sample."""
    R = eyes.shape[-1]
    xs = torch.arange(R, device=eyes.device, dtype=eyes.dtype).reshape(1, 1, 1, R)

    def centre(m):
        mass = m.sum(dim=(1, 2, 3))
        return (m * xs).sum(dim=(1, 2, 3)) / mass.clamp_min(1e-8), mass

    cx_nose, mass_nose = centre(nose)
    cx_eyes, _ = centre(eyes)
    cx = torch.where(mass_nose > 1.0, cx_nose, cx_eyes).reshape(-1, 1, 1, 1)
    on_left = xs < cx
    keep = on_left if want_left == left_on_image_left else ~on_left
    return eyes * keep.to(eyes.dtype)


def region_mask(G, ws, name, components=None, labels=None):
    """Soft mask [N, 1, R, R] in [0, 1] of region `name` (REGIONS) for W or W+ latents, from the
    named clusters of `components` (default: `default_components(G)`). labels: the latents'
    cluster labels from `components.assign(G, ws)` when already at hand (then G does not run)."""
    if name not in REGIONS:
        raise InputError(f"unknown region {name!r}; known: {', '.join(REGIONS)}")
    ws = _wplus(G, ws)
    comps = components if components is not None else default_components(G)
    part = "eyes" if name in SIDES else name
    if part not in comps.names:
        raise InputError(f"no cluster is named {part!r} in these components (named: {sorted(comps.names)}); "
                         "fit more samples or clusters, or name them with a parser that sees this part")
    labels = comps.assign(G, ws) if labels is None else labels
    mask = comps.cluster_mask(G, ws, comps.names[part], labels)
    if name in SIDES:
        nose = (comps.cluster_mask(G, ws, comps.names["nose"], labels) if "nose" in comps.names
                else torch.zeros_like(mask))
        mask = _split_side(mask, nose, comps.left_on_image_left, name == "left_eye")
    return mask


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
    """Images [N, C, R, R]: the targets with the sources' `region` (e.g. "mouth", "left_eye")
    blended in feature space, as `region_edit` does; the region is the union of the part in the
    target and in the source, so both the old part and the new one are covered. Each target takes
    the source of the same index (a single source [1, ...] serves every target)."""
    _check_noise(noise_mode)
    t = _wplus(G, ws_target, "ws_target")
    s = _wplus(G, ws_source, "ws_source")
    if s.shape[0] == 1 and t.shape[0] > 1:
        s = s.expand(t.shape[0], -1, -1)
    if s.shape != t.shape:
        raise InputError(f"ws_source must have one latent or as many as ws_target ({t.shape[0]}), got {s.shape[0]}")
    mask = feather_mask(_region(G, [t, s], region, components), grow, sigma)
    return _blended_synthesis(G, t, s, mask, _resolutions(G, resolutions), noise_mode)
