"""InterfaceGAN boundaries: score latents, keep the top / bottom ratio, fit a linear SVM, drop the
intercept and return the unit normal.

    scores = score_latents(G, clf, w)                    # {attribute: [N]} from the classifier
    b = train_boundary(w, scores["smile"][:, None])      # same selection rule as InterfaceGAN
    smile = b.direction(space="w", generator=generator_hash(G), name="smile")

Selection (InterfaceGAN's train_boundary): sort by score, take the top and bottom
chosen = int(N * ratio) (or `ratio` samples when > 1; at most N // 2) as positives / negatives,
split each chosen set at split_ratio into train / validation; the samples in between are the
"remaining" set, labelled by the mid-score (max + min) / 2. The fit is a linear SVM on the centred
latents with liblinear (no N x N kernel): up to 10k training samples the dual coordinate descent
on SVC's own hinge objective (C = 1), above it the primal Newton solver of the squared hinge,
which stays at seconds for 100k samples; solver="kernel" runs InterfaceGAN's SVC(kernel="linear").
"""
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from latentedit.edit.imaging import network_input
from latentedit.edit.directions import Direction
from latentedit.errors import InputError
from latentedit.models.config import is_count, is_real

SOLVERS = ("auto", "dual", "primal", "kernel")
DUAL_MAX = 10_000  # training samples up to which the dual (exact hinge) solver is used by "auto"
# Readable names for the classifier's multi-class "any-but-none" and class scores.
RENAME = {"glasses": "eyeglasses", "glasses_frame": "frame_glasses", "glasses_sun": "sunglasses"}


@dataclass
class Boundary:
    normal: np.ndarray                 # [1, D] float32, unit norm (intercept dropped)
    intercept: float                   # of the unit normal: the fitted plane is x . n + intercept = 0
    val_accuracy: float                # on the held-out top / bottom samples (None if none)
    rest_accuracy: float               # on the samples between, labelled by the mid-score (None if none)
    n_train: int                       # per class
    n_val: int                         # per class
    solver: str
    seconds: float
    info: dict = field(default_factory=dict)

    def direction(self, space="w", generator=None, name=None, provenance=None):
        prov = {"made_by": "interfacegan", "solver": self.solver, "n_train_per_class": self.n_train,
                "n_val_per_class": self.n_val, "val_accuracy": self.val_accuracy,
                "rest_accuracy": self.rest_accuracy, "intercept": self.intercept, **self.info, **(provenance or {})}
        return Direction(self.normal[0], space=space, generator=generator, name=name, provenance=prov)


def _check(latents, scores):
    x = np.asarray(latents, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if x.ndim != 2:
        raise InputError(f"latents must be [N, D], got {list(x.shape)}")
    if s.shape != (len(x), 1):
        raise InputError(f"scores must be [N, 1] with N = {len(x)} (the latents' count), got {list(s.shape)}")
    if not (np.isfinite(x).all() and np.isfinite(s).all()):
        raise InputError("latents or scores contain NaN or infinite values")
    return x, s[:, 0]


def select_samples(latents, scores, ratio=0.02, split_ratio=0.7, invalid_value=None, seed=0):
    """InterfaceGAN's selection -> dict of x / y arrays for "train", "val", "rest" (y: 1 = top)."""
    x, s = _check(latents, scores)
    if invalid_value is not None:
        keep = s != invalid_value
        x, s = x[keep], s[keep]
    if ratio <= 0 or not 0 < split_ratio <= 1:
        raise InputError(f"ratio must be > 0 and split_ratio in (0, 1], got {ratio}, {split_ratio}")
    order = np.argsort(-s, kind="stable")                            # descending scores
    x, s = x[order], s[order]
    n = len(x)
    chosen = min(int(n * ratio) if ratio <= 1 else int(ratio), n // 2)
    n_train = int(chosen * split_ratio)
    if n_train < 1:
        raise InputError(f"{n} samples at ratio {ratio} leave no training samples; use more samples or a larger ratio")
    rng = np.random.RandomState(seed)
    pos, neg = x[:chosen][rng.permutation(chosen)], x[n - chosen:][rng.permutation(chosen)]
    rest_s = s[chosen:n - chosen]
    ones, zeros = np.ones(chosen), np.zeros(chosen)
    return {"train": (np.concatenate([pos[:n_train], neg[:n_train]]), np.concatenate([ones[:n_train], zeros[:n_train]])),
            "val": (np.concatenate([pos[n_train:], neg[n_train:]]), np.concatenate([ones[n_train:], zeros[n_train:]])),
            "rest": (x[chosen:n - chosen], (rest_s >= (s[0] + s[-1]) / 2).astype(np.float64))}


def fit_linear_svm(x, y, C=1.0, solver="auto", max_iter=20000):
    """Linear SVM on x [N, D], y [N] in {0, 1} -> (w [D], b) of the plane x . w + b = 0.
    solver: "dual" (liblinear dual coordinate descent, hinge loss: SVC's objective), "primal"
    (liblinear trust-region Newton, squared hinge: a few O(N * D) Newton steps, for large N where
    dual descent crawls on overlapping classes), "auto" (dual up to DUAL_MAX samples, else primal),
    "kernel" (sklearn SVC(kernel="linear"), InterfaceGAN's, for comparison)."""
    from sklearn.svm import SVC, LinearSVC

    if solver not in SOLVERS:
        raise InputError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if not (is_real(C) and C > 0):
        raise InputError(f"the SVM regularisation C must be a positive number, got {C!r}")
    if len(np.unique(y)) != 2:
        raise InputError("an SVM needs samples of both classes")
    if solver == "auto":
        solver = "dual" if len(y) <= DUAL_MAX else "primal"
    mean = x.mean(0)
    xc = x - mean  # same optimum (the intercept is free); keeps liblinear's penalised intercept near 0
    clf = {"dual": lambda: LinearSVC(C=C, loss="hinge", dual=True, tol=1e-4, max_iter=max_iter),
           "primal": lambda: LinearSVC(C=C, loss="squared_hinge", dual=False, tol=1e-4),
           "kernel": lambda: SVC(kernel="linear", C=C)}[solver]()
    clf.fit(xc, y)  # a ConvergenceWarning (sklearn's) says when max_iter passes were not enough
    w = clf.coef_.reshape(-1).astype(np.float64)
    return w, float(clf.intercept_[0] - w @ mean)


def _accuracy(x, y, w, b):
    return float(((x @ w + b > 0) == (y > 0.5)).mean()) if len(y) else None


def train_boundary(latents, scores, ratio=0.02, split_ratio=0.7, invalid_value=None, C=1.0, solver="auto", seed=0):
    """latents [N, D], scores [N, 1] -> Boundary (unit normal [1, D] pointing to high scores)."""
    t0 = time.perf_counter()
    sets = select_samples(latents, scores, ratio, split_ratio, invalid_value, seed)
    if solver == "auto":
        solver = "dual" if len(sets["train"][1]) <= DUAL_MAX else "primal"
    w, b = fit_linear_svm(*sets["train"], C=C, solver=solver)
    norm = np.linalg.norm(w)
    if norm == 0:
        raise InputError("the SVM found no separating direction (constant scores?)")
    n_train = len(sets["train"][1]) // 2
    return Boundary(normal=(w / norm).astype(np.float32)[None], intercept=b / norm,
                    val_accuracy=_accuracy(*sets["val"], w, b), rest_accuracy=_accuracy(*sets["rest"], w, b),
                    n_train=n_train, n_val=len(sets["val"][1]) // 2, solver=solver,
                    seconds=time.perf_counter() - t0,
                    info={"samples": len(np.asarray(scores)), "ratio": ratio, "split_ratio": split_ratio, "C": C})


# ---------------------------------------------------------------------------------------------
# Scoring latents with the attribute classifier

def attribute_scores(clf, images):
    """{attribute: [N]} in [0, 1] from the attribute classifier: binary heads -> P(positive);
    regression heads (smile, age, beard) -> the predicted amount; multi-class heads -> one score
    per class, plus P(not none) when the first class is "none"."""
    p = clf.predict(network_input(images, clf.cfg.image_size))
    out = {}
    for head, classes in clf.cfg.heads.items():
        if len(classes) == 2:
            out[head] = p[head][:, 1]
            continue
        if classes[0] == "none":
            out[head] = 1 - p[head][:, 0]
        for i, c in enumerate(classes):
            if c != "none":
                out[f"{head}_{c}"] = p[head][:, i]
    for i, head in enumerate(clf.cfg.regression):
        out[head] = p["regression"][:, i]
    return {RENAME.get(k, k): v for k, v in out.items()}


def attribute_names(clf):
    return sorted(attribute_scores(clf.eval(), torch.zeros(1, 3, clf.cfg.image_size, clf.cfg.image_size)))


@torch.no_grad()
def sample_latents(G, n, space="w", seed=0, truncation=1.0, batch=1000):
    """n latent codes [n, D] (z ~ N(0, I) from torch seed `seed`, mapped to W unless space="z")."""
    if space not in ("z", "w"):
        raise InputError(f"boundaries are trained in z or w, got {space!r}")
    if not is_count(n):
        raise InputError(f"the number of samples must be a positive integer, got {n!r}")
    z = torch.randn([n, G.z_dim], generator=torch.Generator().manual_seed(seed))
    if space == "z":
        return z.numpy()
    dev = G.w_avg.device
    return torch.cat([G.mapping(c.to(dev), truncation_psi=truncation, update_w_avg=False)[:, 0].cpu() for c in z.split(batch)]).numpy()


@torch.no_grad()
def score_latents(G, clf, latents, space="w", batch=100, progress=None):
    """latents [N, D] (Z or W) or [N, L, D] (W+) -> {attribute: float32 [N]}."""
    clf = clf.eval()
    dev = G.w_avg.device
    x = torch.as_tensor(np.asarray(latents, dtype=np.float32))
    parts = {}
    for i in range(0, len(x), batch):
        c = x[i:i + batch].to(dev)
        ws = G.mapping(c, update_w_avg=False) if space == "z" else G.broadcast_w(c)
        scores = attribute_scores(clf, G.synthesize(ws).float().cpu())
        for k, v in scores.items():
            parts.setdefault(k, []).append(v)
        if progress:
            progress(min(i + batch, len(x)), len(x))
    return {k: torch.cat(v).numpy().astype(np.float32) for k, v in parts.items()}
