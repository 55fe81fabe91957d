"""Distribution metrics in the attribute classifier's feature space ("world-FID").

`fid` (Fréchet distance of Gaussian fits), `kid` (unbiased MMD^2 with the cubic polynomial
kernel, averaged over subsets), `precision_recall` (Kynkäänniemi et al. 2019: k-NN manifolds).
Inputs are feature matrices [N, D] (torch or numpy); outputs are Python floats.
"""
import numpy as np
import scipy.linalg
import torch

from latentedit.errors import InputError


def _np(x):
    x = x.detach().cpu().double().numpy() if torch.is_tensor(x) else np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise InputError(f"features must be [N >= 2, D], got shape {list(x.shape)}")
    if not np.isfinite(x).all():
        raise InputError("features contain NaN or infinite values")
    return x


def gaussian_stats(features, weights=None):
    """Mean and covariance of features [N, D]; with weights [N] (>= 0, importance weights) the
    weighted mean and the unbiased weighted covariance (numpy's aweights)."""
    f = _np(features)
    if weights is None:
        return f.mean(0), np.cov(f, rowvar=False)
    w = np.asarray(weights.detach().cpu() if torch.is_tensor(weights) else weights, dtype=np.float64)
    if w.shape != (len(f),) or not np.isfinite(w).all() or (w < 0).any() or (w > 0).sum() < 2:
        raise InputError(f"weights must be [{len(f)}] finite, >= 0, with at least 2 above 0")
    return np.average(f, axis=0, weights=w), np.cov(f, rowvar=False, aweights=w)


def frechet_distance(mu1, sigma1, mu2, sigma2):
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2)."""
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():  # near-singular product: regularise (as the TTUR code does)
        eps = np.eye(len(mu1)) * 1e-6
        covmean = scipy.linalg.sqrtm((sigma1 + eps) @ (sigma2 + eps))
    covmean = covmean.real
    return float(max(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean), 0.0))


def fid(features_a, features_b, weights_b=None):
    """FID of two feature sets; weights_b: importance weights of features_b's samples."""
    return frechet_distance(*gaussian_stats(features_a), *gaussian_stats(features_b, weights_b))


def kid(features_a, features_b, subsets=100, subset_size=1000, seed=0):
    """Kernel Inception Distance: mean and std over subsets of the unbiased MMD^2 estimate with
    k(x, y) = (x.y / D + 1)^3. Subsets are drawn without replacement within each subset."""
    a, b = _np(features_a), _np(features_b)
    m = min(subset_size, len(a), len(b))
    d = a.shape[1]
    rng = np.random.RandomState(seed)
    vals = []
    for _ in range(subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        vals.append(mmd2_unbiased(x, y, d))
    return float(np.mean(vals)), float(np.std(vals))


def mmd2_unbiased(x, y, d=None):
    """Unbiased MMD^2 of samples x [m, D], y [n, D] under the cubic polynomial kernel."""
    d = d or x.shape[1]
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    m, n = len(x), len(y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


def _knn_radii(f, k, chunk=2048):
    """Distance from each row of f to its k-th nearest other row."""
    out = []
    for i in range(0, len(f), chunk):
        d = torch.cdist(f[i:i + chunk], f)
        out.append(d.kthvalue(k + 1, dim=1).values)  # +1: the point itself at distance 0
    return torch.cat(out)


def _inside(query, ref, radii, chunk=2048):
    """Bool [len(query)]: each query row lies inside some ball (ref_j, radii_j)."""
    inside = []
    for i in range(0, len(query), chunk):
        d = torch.cdist(query[i:i + chunk], ref)
        inside.append((d <= radii[None]).any(1))
    return torch.cat(inside)


def precision_recall(real, fake, k=3, groups=None):
    """Improved precision (fake inside the real manifold) and recall (real inside the fake
    manifold), manifolds = unions of k-NN balls (Kynkäänniemi et al. 2019). With groups (name ->
    bool mask over the fake rows) also each group's precision (None for an empty group), to say
    which fakes fall outside: (precision, recall, {name: precision})."""
    real = torch.as_tensor(_np(real), dtype=torch.float32)
    fake = torch.as_tensor(_np(fake), dtype=torch.float32)
    if min(len(real), len(fake)) <= k:
        raise InputError(f"precision/recall need more than k={k} samples per set")
    inside = _inside(fake, real, _knn_radii(real, k)).float()
    recall = _inside(real, fake, _knn_radii(fake, k)).float().mean().item()
    if groups is None:
        return inside.mean().item(), recall
    return inside.mean().item(), recall, {name: inside[m].mean().item() if m.any() else None for name, m in groups.items()}
