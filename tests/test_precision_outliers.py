"""benchmarks/precision_outliers.py: its reach says inside exactly where precision does, and the faces
it draws are the samples `evaluate generator` measured."""
import torch

from latentedit.edit.imaging import resize
from latentedit.formats import DEFAULT_BUNDLE, load_generator
from latentedit.formats.evaluators import load_evaluators
from latentedit.metrics.fid import precision_recall
from latentedit.metrics.generator import generated_features


def test_reach_agrees_with_precision():
    from conftest import load_benchmark

    outliers = load_benchmark("precision_outliers")
    g = torch.Generator().manual_seed(0)
    real = torch.randn(300, 8, generator=g)
    fake = torch.randn(200, 8, generator=g) * 1.4 + 0.3  # wider and shifted: some fall outside
    precision, _ = precision_recall(real, fake)
    r = outliers.reach(real, fake)
    assert 0.1 < precision < 0.95
    assert (r <= 1).float().mean().item() == precision
    assert (outliers.reach(real, real[:50]) < 0.05).all()  # a render lies in its own ball (cdist rounds near 0)


def test_faces_are_the_measured_samples():
    from conftest import load_benchmark

    outliers = load_benchmark("precision_outliers")
    G = load_generator(DEFAULT_BUNDLE).eval()
    clf = load_evaluators(DEFAULT_BUNDLE, ["attributes"])["attributes"].eval()
    features = generated_features(G, clf, 22, truncation=0.8, batch=8)[0]  # a last batch of 6
    picked = [21, 3, 8]  # across three seed batches (the short last one too), out of order
    with torch.no_grad():
        again = clf.features(resize(outliers.faces(G, picked, 0.8, 8, 22), clf.cfg.image_size)).flatten(1)
    assert torch.allclose(again, features[picked], atol=1e-5)
    assert not torch.allclose(again, features[[20, 2, 9]], atol=1e-2)  # a neighbour's face is another face
