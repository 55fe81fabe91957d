"""Boundaries from few labels (10-100) plus many unlabelled latents (SG-GAN's sparse-label
problem, solved in latent space).

    b = sparse_boundary(w_labelled, y, w_unlabelled)          # y [n] in {0, 1}
    d = b.direction(space="w", generator=generator_hash(G), name="smile")

method "spreading" (default): label spreading over a k-nearest-neighbour graph of all latents
(in their top principal components, where the kNN graph follows the data manifold rather than
the many low-variance dims), then the linear SVM of `boundaries` on the labelled samples plus the
confidently spread ones. method "self_training": a linear SVM that labels the unlabelled samples
it is surest of (an ever larger share, keeping the labelled class balance) and refits.
"""
from dataclasses import dataclass, field

import numpy as np

from latentedit.edit.boundaries import fit_linear_svm
from latentedit.edit.directions import Direction
from latentedit.errors import InputError

METHODS = ("spreading", "self_training", "labels_only")


@dataclass
class SparseBoundary:
    normal: np.ndarray          # [1, D] float32 unit
    intercept: float            # of the unit normal
    method: str
    info: dict = field(default_factory=dict)

    def decision(self, x):
        return np.asarray(x, dtype=np.float64) @ self.normal[0].astype(np.float64) + self.intercept

    def accuracy(self, x, y):
        return float(((self.decision(x) > 0) == (np.asarray(y) > 0.5)).mean())

    def direction(self, space="w", generator=None, name=None):
        return Direction(self.normal[0], space=space, generator=generator, name=name,
                         provenance={"made_by": f"sparse-{self.method}", "intercept": self.intercept, **self.info})


def _unit(w, b, method, info):
    n = np.linalg.norm(w)
    return SparseBoundary((w / n).astype(np.float32)[None], b / n, method, info)


def _pca(x, k):
    """Projection of x [M, D] on its top-k principal axes -> [M, k]."""
    xc = x - x.mean(0)
    evals, evecs = np.linalg.eigh(xc.T @ xc)
    return xc @ evecs[:, np.argsort(evals)[::-1][:k]]


def _spread(x_l, y, x_u, n_neighbors, n_components, alpha, confidence):
    from sklearn.semi_supervised import LabelSpreading

    z = _pca(np.concatenate([x_l, x_u]), min(n_components, x_l.shape[1]))
    labels = np.concatenate([y, -np.ones(len(x_u))]).astype(int)
    ls = LabelSpreading(kernel="knn", n_neighbors=n_neighbors, alpha=alpha, max_iter=200).fit(z, labels)
    p = ls.label_distributions_[len(x_l):, 1]                          # P(positive) of the unlabelled
    sure = np.maximum(p, 1 - p) >= confidence
    return x_u[sure], (p[sure] > 0.5).astype(np.float64), {"pseudo_labelled": int(sure.sum())}


def _self_train(x_l, y, x_u, C, rounds):
    w, b = fit_linear_svm(x_l, y, C=C)
    prior = float(y.mean())
    for r in range(1, rounds + 1):
        m = int(len(x_u) * r / rounds)                                  # share labelled this round
        margin = x_u @ w + b
        n_pos = int(round(m * prior))
        order = np.argsort(-margin)
        pos, neg = order[:n_pos], order[::-1][:m - n_pos]               # the surest of each class
        x = np.concatenate([x_l, x_u[pos], x_u[neg]])
        t = np.concatenate([y, np.ones(len(pos)), np.zeros(len(neg))])
        w, b = fit_linear_svm(x, t, C=C)
    return w, b


def sparse_boundary(x_labelled, y, x_unlabelled, method="spreading", n_neighbors=10, n_components=32, alpha=0.2,
                    confidence=0.9, rounds=5, C=1.0, max_unlabelled=20000, seed=0):
    """x_labelled [n, D], y [n] in {0, 1}, x_unlabelled [M, D] -> SparseBoundary."""
    x_l = np.asarray(x_labelled, dtype=np.float64)
    x_u = np.asarray(x_unlabelled, dtype=np.float64)
    y = (np.asarray(y).reshape(-1) > 0.5).astype(np.float64)
    if x_l.ndim != 2 or len(y) != len(x_l) or (x_u.ndim != 2 or x_u.shape[1] != x_l.shape[1]):
        raise InputError(f"expected labelled [n, D], labels [n], unlabelled [M, D]; got {list(x_l.shape)}, "
                         f"{list(y.shape)}, {list(x_u.shape)}")
    if y.min() == y.max():
        raise InputError("the labelled samples must include both classes")
    if method not in METHODS:
        raise InputError(f"method must be one of {METHODS}, got {method!r}")
    if len(x_u) > max_unlabelled:
        x_u = x_u[np.random.RandomState(seed).choice(len(x_u), max_unlabelled, replace=False)]
    info = {"labelled": len(y), "unlabelled": len(x_u)}
    if method == "labels_only":
        return _unit(*fit_linear_svm(x_l, y, C=C), method, info)
    if method == "self_training":
        return _unit(*_self_train(x_l, y, x_u, C, rounds), method, {**info, "rounds": rounds})
    x_p, y_p, extra = _spread(x_l, y, x_u, n_neighbors, n_components, alpha, confidence)
    x = np.concatenate([x_l, x_p])
    t = np.concatenate([y, y_p])
    if t.min() == t.max():
        raise InputError("label spreading left one class only; lower `confidence`")
    return _unit(*fit_linear_svm(x, t, C=C), method, {**info, **extra, "n_neighbors": n_neighbors,
                                                      "n_components": n_components, "confidence": confidence})
