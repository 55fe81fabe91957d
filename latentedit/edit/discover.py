"""Unsupervised directions: SeFa (closed form from the modulation weights) and GANSpace (PCA of
W), each direction named by which attribute the classifier sees it change most.

    dirs = sefa(G, k=10, layers=(0, 4))          # W directions moving W+ layers 0..3
    dirs = name_directions(G, clf, dirs)         # "sefa03_smile": +strength raises the smile score
"""
import torch

from latentedit.edit.boundaries import attribute_scores, sample_latents
from latentedit.edit.directions import Direction
from latentedit.errors import InputError
from latentedit.formats.directions import generator_hash
from latentedit.models.config import is_count


def modulation_layers(G):
    """[(W+ index, name, affine FullyConnectedLayer)] in synthesis order. A block's ToRGB shares
    its W+ index with the next block's conv0."""
    out, idx = [], 0
    for res in G.synthesis.block_resolutions:
        block = getattr(G.synthesis, f"b{res}")
        convs = (["conv0"] if block.in_channels else []) + ["conv1"]
        out += [(idx + j, f"b{res}.{name}", getattr(block, name).affine) for j, name in enumerate(convs)]
        out.append((idx + len(convs), f"b{res}.torgb", block.torgb.affine))
        idx += len(convs)
    return out


def _layer_range(G, layers):
    start, stop = layers or (0, G.num_ws)
    if not 0 <= start < stop <= G.num_ws:
        raise InputError(f"layer range [{start}, {stop}) is outside the generator's 0..{G.num_ws}")
    return start, stop


def sefa_weights(G, layers=None):
    """SeFa's A: the modulation weights of the W+ layers in [start, stop), one row per style
    channel [sum of channels, w_dim], each row scaled to unit norm. As in SeFa, a W+ index uses
    its conv layers; ToRGB only where no conv reads that index (the last one)."""
    start, stop = _layer_range(G, layers)
    mods = modulation_layers(G)
    conv_idx = {i for i, name, _ in mods if "torgb" not in name}
    rows = [aff.weight.detach().double() for i, name, aff in mods
            if start <= i < stop and ("torgb" not in name or i not in conv_idx)]      # each [C_i, w_dim]
    A = torch.cat(rows)                                                               # [sum C_i, w_dim]
    return A / A.norm(dim=1, keepdim=True)


def _unit_sign(v):
    """Eigenvectors have no sign: fix it so the largest-magnitude entry is positive."""
    return v * torch.sign(v[v.abs().argmax()])


def sefa(G, k=10, layers=None):
    """The top-k eigenvectors of A^T A (SeFa's closed form), unit W directions, largest first."""
    start, stop = _layer_range(G, layers)
    A = sefa_weights(G, (start, stop))
    evals, evecs = torch.linalg.eigh(A.T @ A)                 # ascending, [D], [D, D]
    order = torch.argsort(evals, descending=True)[:k]
    whole = (start, stop) == (0, G.num_ws)
    gh = generator_hash(G)
    return [Direction(_unit_sign(evecs[:, j]).float(), space="w", layers=None if whole else (start, stop),
                      num_ws=G.num_ws, generator=gh, name=f"sefa{r:02d}",
                      provenance={"made_by": "sefa", "rank": r, "eigenvalue": float(evals[j]),
                                  "layers": [start, stop]})
            for r, j in enumerate(order.tolist())]


def ganspace(G, k=10, n=20000, seed=0, layers=None, truncation=1.0):
    """The top-k principal axes of n sampled W codes (GANSpace), unit W directions; the std of
    W along each is in provenance["std"] (GANSpace's natural step)."""
    start, stop = _layer_range(G, layers)
    if not is_count(n, k + 1):  # n samples span at most n - 1 axes of variance
        raise InputError(f"GANSpace needs more samples than directions: n must be an integer >= k + 1 = {k + 1}, "
                         f"got {n!r}")
    w = torch.from_numpy(sample_latents(G, n, "w", seed, truncation)).double()      # [n, D]
    wc = w - w.mean(0)
    evals, evecs = torch.linalg.eigh(wc.T @ wc / (n - 1))                            # covariance [D, D]
    order = torch.argsort(evals, descending=True)[:k]
    whole = (start, stop) == (0, G.num_ws)
    gh = generator_hash(G)
    total = float(evals.clamp(min=0).sum())
    return [Direction(_unit_sign(evecs[:, j]).float(), space="w", layers=None if whole else (start, stop),
                      num_ws=G.num_ws, generator=gh, name=f"ganspace{r:02d}",
                      provenance={"made_by": "ganspace", "rank": r, "std": float(evals[j].clamp(min=0).sqrt()),
                                  "explained_variance": float(evals[j]) / total, "samples": n,
                                  "layers": [start, stop]})
            for r, j in enumerate(order.tolist())]


@torch.no_grad()
def name_directions(G, clf, directions, n=64, strength=2.0, seed=123, min_effect=0.05, batch=64):
    """Names each direction by the attribute whose classifier score it moves most between
    -strength and +strength (in units of the W samples' std along the direction), flipping the
    sign so that + raises that attribute; effects under provenance["effects"]. Directions whose
    largest mean score change is below min_effect keep their name."""
    w = torch.from_numpy(sample_latents(G, n, "w", seed))                              # [n, D]
    clf = clf.eval()

    def scores(x):
        parts = [attribute_scores(clf, G.synthesize(c).float().cpu()) for c in x.split(batch)]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    out = []
    for d in directions:
        d.check(G)  # once: hashing a large generator is not free
        moving = d._replace(d.vector, num_ws=d.num_ws or G.num_ws)
        step = strength * float((w @ d.vector).std()) if d.space != "w+" else strength
        hi, lo = scores(moving.apply(w, step)), scores(moving.apply(w, -step))
        effects = {k: float((hi[k] - lo[k]).mean()) for k in hi}
        best = max(effects, key=lambda k: abs(effects[k]))
        top = dict(sorted(effects.items(), key=lambda kv: -abs(kv[1]))[:5])
        if abs(effects[best]) < min_effect:
            named = d._replace(d.vector, provenance={**d.provenance, "effects": top, "named_by": "none above min"})
        else:
            sign = 1.0 if effects[best] > 0 else -1.0
            named = d._replace(d.vector * sign, name=f"{d.name}_{best}",
                               provenance={**d.provenance, "effects": {k: v * sign for k, v in top.items()},
                                           "attribute": best, "flipped": sign < 0, "naming_strength_std": strength})
        out.append(named)
    return out
