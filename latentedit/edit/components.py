"""Semantic components: spherical k-means of synthesis features (Collins et al. 2020), clusters named
with a face parser; region masks of W / W+ codes from them."""
import weakref
from dataclasses import dataclass, field
from typing import Dict, List

import numpy as np
import torch
from torch.nn import functional as F

from latentedit.edit.features import _resolutions, _wplus, synthesis_features
from latentedit.edit.imaging import resize
from latentedit.errors import InputError
from latentedit.models.layers import version_key

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


def default_components(G, parser=None):
    """The components of G (component_clusters defaults; blocks 32 and 64 px where G has them)
    named with `parser` (default: the bundled default model's face parser), fitted once (about 10 s on one CPU
    thread at 64 px) and cached per generator and parser until G's weights change.
    `Model.components()` passes the model's own parser."""
    first = next(G.synthesis.parameters())
    key = version_key(first)  # None for inference tensors: then nothing is cached
    hit = _COMPONENTS.get(G)
    if key is not None and hit is not None and hit[0] == key and hit[1] is parser:
        return hit[2]
    given = parser
    if parser is None:
        from latentedit.model import Model, default_parts

        parser = Model(G, parts=default_parts()).evaluator("parser").to(first.device)
    model = component_clusters(G, layer_res=component_layers(G), parser=parser)
    if key is not None:
        _COMPONENTS[G] = (key, given, model)
    return model


_COMPONENTS = weakref.WeakKeyDictionary()  # G -> (version_key of its weights, parser given, components)


def component_layers(G):
    """The block resolutions whose features make the default components: 32 and 64 px where G has
    them, else its last block."""
    blocks = G.synthesis.block_resolutions
    return tuple(r for r in (32, 64) if r in blocks) or (blocks[-1],)


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
