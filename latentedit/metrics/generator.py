"""Quality of a generator measured against the world with the trained evaluators.

    from latentedit.formats.evaluators import load_evaluators
    report = evaluate_generator(G, load_evaluators(bundle), n=10000)

Reports world-FID / KID / precision / recall of generated images against held-out renders, the
real-vs-real floor (two disjoint sets of renders of the same size), the rate of each predicted
attribute on generated images next to the classifier's rate on renders and the world's sampling
prior (ground truth of the same renders), and the classifier's mean top-class confidence on
both (and their ratio). Per accessory kind K, the FID of the generated faces the classifier gives
K against the reference renders wearing K (and its real-vs-real floor), and its ratio to the
overall FID both at full size and at the kind's sample counts (like for like: FID's small-sample
bias grows as the counts shrink); `kind_render_features` and
`generated_kind_features` serve the edit-FID of synthesized accessories (benchmarks/synthesize_world.py).
"""
import time

import torch

from latentedit import world
from latentedit.edit.discrete import ACCESSORY_KINDS
from latentedit.edit.imaging import resize
from latentedit.errors import InputError
from latentedit.metrics.fid import fid, kid, precision_recall

REAL_SEED = 20_000_000   # renders for the reference set (disjoint from training and held-out seeds)
# Attribute rates reported: name -> (head, class index); the accessories as the edits judge them
RATES = {**{kind: (head, index) for kind, (head, index, _) in ACCESSORY_KINDS.items()},
         "hat": ("hat", 1), "beard": ("beard", 1), "smile": ("smile", 1), "old": ("age", 1)}


def _truth(p):
    return {"frame_glasses": (p.glasses == 1), "sunglasses": (p.glasses == 2), "mask": p.mask == 1,
            "hat": p.hat == 1, "beard": p.beard > 0, "smile": p.smile > 0.5, "old": p.age > 0.5}


# World renders that wear accessory kind K (the other attributes at their priors)
KIND_RENDERS = {"frame_glasses": {"p_glasses": 1.0, "p_sunglasses": 0.0},
                "sunglasses": {"p_glasses": 0.0, "p_sunglasses": 1.0}, "mask": {"p_mask": 1.0}}
ACCESSORIES = tuple(KIND_RENDERS)


class _Accumulator:
    """Classifier features, every head's label and the mean confidences of the images added."""

    def __init__(self, clf):
        self.clf, self.feats, self.heads, self.conf, self.n = clf, [], {}, {}, 0

    @torch.no_grad()
    def add(self, images):
        f = self.clf.features(images)
        out = self.clf.classify(f)
        self.feats.append(f)
        for head in self.clf.cfg.heads:
            self.heads.setdefault(head, []).append(out[head].argmax(1))
            self.conf[head] = self.conf.get(head, 0.0) + out[head].softmax(1).amax(1).sum().item()
        self.n += len(images)

    def labels(self):
        """{head: class index [N]}: the classifier's label of each sample."""
        return {head: torch.cat(v) for head, v in self.heads.items()}

    def predicted(self, name):
        """Bool [N]: the classifier gives attribute `name` (a RATES entry)."""
        head, c = RATES[name]
        return torch.cat(self.heads[head]) == c

    def result(self):
        conf = {k: v / self.n for k, v in self.conf.items()}
        rates = {k: self.predicted(k).sum().item() / self.n for k in RATES}
        return (torch.cat(self.feats), rates, conf,
                sum(conf.values()) / len(conf))


def _renders(n, seed, start, batch, acc, truth=None):
    """Adds renders start..start+n-1 of seed to acc; truth (a dict) gathers each attribute's
    per-sample ground truth (lists of bool tensors)."""
    for s in range(start, start + n, batch):
        b = world.sample(min(batch, start + n - s), seed=seed, start=s)
        acc.add(b.image)
        if truth is not None:
            for k, v in _truth(b.params).items():
                truth.setdefault(k, []).append(v.bool())


def kind_fid(f_real, real_kind, f_other, other_kind):
    """FID between the samples of two feature sets that are of one kind (bool masks), or None when
    either has fewer than 2 such samples."""
    if int(real_kind.sum()) < 2 or int(other_kind.sum()) < 2:
        return None
    return fid(f_real[real_kind], f_other[other_kind])


def fid_at_counts(f_real, n_real, f_other, n_other, seed=0):
    """FID of random subsets of n_real and n_other samples: the overall FID a kind's FID is compared
    with, as FID's small-sample bias grows as the counts shrink (so a kind's ~1,000 samples
    against the overall 10,000 would read worse by the bias alone)."""
    g = torch.Generator().manual_seed(seed)
    return fid(f_real[torch.randperm(len(f_real), generator=g)[:n_real]],
               f_other[torch.randperm(len(f_other), generator=g)[:n_other]])


def kind_render_images(kind, n, seed=REAL_SEED, start=0, resolution=64):
    """n world renders [n, 3, R, R] wearing accessory `kind` (the other attributes at their priors)."""
    return world.sample(n, seed=seed, start=start, resolution=resolution, **KIND_RENDERS[kind]).image


@torch.no_grad()
def kind_render_features(clf, kind, n, seed=REAL_SEED, batch=100):
    """Classifier features [n, D] of n world renders wearing accessory `kind`."""
    return torch.cat([clf.features(kind_render_images(kind, min(batch, n - s), seed, start=s))
                      for s in range(0, n, batch)])


def _first_of_kind(G, clf, kind, n, truncation, seed, batch, max_draws):
    """(images, classifier features, codes drawn) of the first n generated faces (codes seed,
    seed + 1, ...) that the classifier gives accessory `kind`, at the classifier's size; fewer than
    n when max_draws (default 50 n) codes did not hold n of them."""
    head, c = RATES[kind]
    images, feats, found, drawn = [], [], 0, 0
    max_draws = max_draws or 50 * n
    while found < n and drawn < max_draws:
        x = _generated(G, batch, seed + drawn, truncation, clf.cfg.image_size)
        f = clf.features(x)
        keep = clf.classify(f)[head].argmax(1) == c
        images.append(x[keep][:n - found])
        feats.append(f[keep][:n - found])
        found, drawn = found + int(keep.sum().clamp(max=n - found)), drawn + batch
    return torch.cat(images), torch.cat(feats), drawn


@torch.no_grad()
def generated_kind_images(G, clf, kind, n, truncation=1.0, seed=0, batch=100, max_draws=None):
    """The first n generated faces that the classifier gives accessory `kind` (`_first_of_kind`),
    and how many codes were drawn."""
    images, _, drawn = _first_of_kind(G, clf, kind, n, truncation, seed, batch, max_draws)
    return images, drawn


@torch.no_grad()
def generated_kind_features(G, clf, kind, n, truncation=1.0, seed=0, batch=100, max_draws=None):
    """Classifier features of those faces (`_first_of_kind`), and how many codes were drawn."""
    _, feats, drawn = _first_of_kind(G, clf, kind, n, truncation, seed, batch, max_draws)
    return feats, drawn


def _generated_accumulator(G, clf, n, truncation, seed, batch, say=lambda *_: None):
    acc = _Accumulator(clf)
    for s in range(0, n, batch):
        m = min(batch, n - s)
        acc.add(_generated(G, m, seed + s, truncation, clf.cfg.image_size))
        say(f"  generated {s + m}/{n}")
    return acc


def generated_features(G, clf, n, truncation=1.0, seed=0, batch=100):
    """(classifier features [n, D], {head: labels [n]}) of the generated codes seed .. seed + n - 1:
    the samples evaluate_generator measures."""
    acc = _generated_accumulator(G, clf.eval(), n, truncation, seed, batch)
    return acc.result()[0], acc.labels()


def render_features(clf, n, seed=REAL_SEED, batch=100):
    """(features [n, D], {head: labels [n]}, {attribute: ground truth, bool [n]}) of world renders
    0 .. n-1 of seed: evaluate_generator's reference set."""
    acc, truth = _Accumulator(clf.eval()), {}
    _renders(n, seed, 0, batch, acc, truth)
    return acc.result()[0], acc.labels(), {k: torch.cat(v) for k, v in truth.items()}


@torch.no_grad()
def _generated(G, n, seed, truncation, size):
    """Images of codes seed .. seed + n - 1 on the CPU in [-1, 1], at the classifier's size."""
    w = G.sample_w(n, seed=seed, truncation=truncation)
    return resize(G.synthesize(w.to(next(G.parameters()).device)).float().cpu().clamp(-1, 1), size)


def _with_none(kinds):
    """Bool masks per accessory kind, plus "none": the faces the classifier gives none of them
    (hats and beards count there)."""
    return {**kinds, "none": ~torch.stack(list(kinds.values())).any(0)}


def evaluate_generator(G, evaluators, n=10000, truncation=1.0, batch=100, seed=0, real_seed=REAL_SEED,
                       floor=True, progress=None):
    """Metrics dict of generator G (64 px output, or resized to the classifier's size)."""
    clf = evaluators.get("attributes") if isinstance(evaluators, dict) else evaluators
    if clf is None:
        raise InputError("evaluate_generator needs the attribute classifier ('attributes')")
    if n < 10:
        raise InputError(f"n must be >= 10, got {n}")
    clf = clf.eval()
    say = progress or (lambda *_: None)
    t0 = time.time()
    gen = _generated_accumulator(G, clf, n, truncation, seed, batch, say)
    real, truth = _Accumulator(clf), {}
    _renders(n, real_seed, 0, batch, real, truth)
    say(f"  rendered {n} reference images")
    f_gen, rates_gen, conf_gen, mconf_gen = gen.result()
    f_real, rates_real, conf_real, mconf_real = real.result()
    truth = {k: torch.cat(v) for k, v in truth.items()}
    gen_kind = {k: gen.predicted(k) for k in ACCESSORIES}
    overall_fid = fid(f_real, f_gen)
    # Per accessory: generated faces the classifier gives kind K vs the reference renders wearing K.
    per_kind = {k: kind_fid(f_real, truth[k], f_gen, gen_kind[k]) for k in ACCESSORIES}
    counts = {k: {"generated": int(gen_kind[k].sum()), "renders": int(truth[k].sum())} for k in ACCESSORIES}
    at_counts = {k: None if per_kind[k] is None else
                 fid_at_counts(f_real, counts[k]["renders"], f_gen, counts[k]["generated"]) for k in ACCESSORIES}
    # Which faces fall outside the world's manifold: those of each accessory kind, and the rest.
    prec, rec, kind_prec = precision_recall(f_real, f_gen, groups=_with_none(gen_kind))
    kid_mean, kid_std = kid(f_real, f_gen, subsets=50, subset_size=min(1000, n))
    report = {
        "n": n, "truncation": truncation, "feature_dim": int(f_gen.shape[1]),
        "world_fid": overall_fid, "kid": kid_mean, "kid_std": kid_std,
        "precision": prec, "recall": rec, "kind_precision": kind_prec,
        "kind_fid": per_kind,
        "kind_fid_ratio": {k: None if v is None or not overall_fid else v / overall_fid for k, v in per_kind.items()},
        # like for like: the overall FID of random subsets of the kind's two counts, and the ratio to it
        "overall_fid_at_kind_counts": at_counts,
        "kind_fid_ratio_matched": {k: None if v is None or not at_counts[k] else v / at_counts[k]
                                   for k, v in per_kind.items()},
        "kind_counts": counts,
        "rates_generated": rates_gen, "rates_real_classifier": rates_real,
        "rates_prior": {k: v.float().mean().item() for k, v in truth.items()},
        "rate_gap_points": {k: 100 * (rates_gen[k] - truth[k].float().mean().item()) for k in RATES},
        "confidence_generated": mconf_gen, "confidence_real": mconf_real,
        "confidence_ratio": mconf_gen / mconf_real,
        "confidence_per_head_generated": conf_gen, "confidence_per_head_real": conf_real,
    }
    if floor:
        other, other_truth = _Accumulator(clf), {}
        _renders(n, real_seed, n, batch, other, other_truth)
        f_other = other.result()[0]
        report["world_fid_floor"] = fid(f_real, f_other)
        report["kind_fid_floor"] = {k: kind_fid(f_real, truth[k], f_other, torch.cat(other_truth[k]))
                                    for k in ACCESSORIES}
        report["kid_floor"] = kid(f_real, f_other, subsets=50, subset_size=min(1000, n))[0]
        report["precision_floor"], report["recall_floor"], report["kind_precision_floor"] = \
            precision_recall(f_real, f_other, groups=_with_none({k: other.predicted(k) for k in ACCESSORIES}))
        say(f"  rendered {n} floor images")
    report["seconds"] = round(time.time() - t0, 1)
    return report
