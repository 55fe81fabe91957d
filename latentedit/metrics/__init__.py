"""Metrics: world-FID / KID / precision-recall in the attribute classifier's feature space, and
generator quality against the world (`evaluate_generator`)."""
from latentedit.metrics.fid import fid, kid, precision_recall
from latentedit.metrics.generator import evaluate_generator

__all__ = ["fid", "kid", "precision_recall", "evaluate_generator"]
