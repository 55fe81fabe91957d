"""The offset trainer's loss terms and weights: the frame-glasses clarity, share and contrast terms
(their targets from world renders, their hinges, their gradient into the offset network; absent for
other kinds), the attributes
term and its judge (`attributes_kept`: glasses keep the face's hair, a hair swap does not), and
`latentedit train offset --weight LOSS=VALUE` (into the run's config; a bad name or value is one
error line)."""
import json

import pytest
import torch

from latentedit.edit.discrete import KEPT_HEADS, attributes_kept
from latentedit.edit.losses import attribute_divergence
from latentedit.formats import DEFAULT_BUNDLE
from latentedit.train.offset import OffsetConfig, OffsetTrainer

from conftest import run

torch.set_num_threads(1)


@pytest.mark.parametrize("term, out_of_reach", [("clarity", 10.0), ("share", 0.0), ("contrast", 10.0)])
def test_frame_terms_for_frame_glasses_only(tmp_path, term, out_of_reach):
    """The frames' clarity, share and contrast hinges: targets from world renders under the parser
    (measured 0.83 / 0.57 / 0.79; the exact labels' medians 0.8 / 0.59 / 0.85), each hinge within
    its range, and, its target put out of reach, active on every face and reaching the offset network
    through G; no targets when none of the three is weighted, nor for other kinds."""
    t = OffsetTrainer(OffsetConfig(kind="frame_glasses", batch=4), DEFAULT_BUNDLE, tmp_path / "f")
    bounds = {"clarity": (0.55, 1.05), "share": (0.4, 0.75), "contrast": (0.5, 1.1)}
    assert all(lo <= t.frame_targets[k] <= hi for k, (lo, hi) in bounds.items()), t.frame_targets
    w = t.sample_codes(4)
    _, out = t.losses(w)
    assert 0 <= float(out[term].detach()) <= max(t.frame_targets[term], 1 - t.frame_targets[term])
    t.frame_targets = {**t.frame_targets, term: out_of_reach}
    _, out = t.losses(w)
    out[term].backward()
    assert float(out[term].detach()) > 0.1
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in t.net.parameters())
    none = dict(w_clarity=0.0, w_share=0.0, w_contrast=0.0)
    assert OffsetTrainer(OffsetConfig(kind="frame_glasses", batch=4, **none), DEFAULT_BUNDLE,
                         tmp_path / "off").frame_targets is None
    t = OffsetTrainer(OffsetConfig(kind="mask", batch=4, w_share=1.0), DEFAULT_BUNDLE, tmp_path / "m")
    assert t.frame_targets is None and term not in t.losses(t.sample_codes(4))[1]


def test_see_through_term_for_frame_glasses_only(tmp_path):
    """The lenses-show-the-face term: an L1 distance in [0, 1] units that reaches the offset network
    through G; absent for masks and when its weight is 0."""
    t = OffsetTrainer(OffsetConfig(kind="frame_glasses", batch=4), DEFAULT_BUNDLE, tmp_path / "f")
    _, out = t.losses(t.sample_codes(4))
    assert 0 <= float(out["see_through"].detach()) <= 1
    out["see_through"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in t.net.parameters())
    off = OffsetTrainer(OffsetConfig(kind="frame_glasses", batch=4, w_see_through=0.0), DEFAULT_BUNDLE, tmp_path / "o")
    assert "see_through" not in off.losses(off.sample_codes(4))[1]
    t = OffsetTrainer(OffsetConfig(kind="mask", batch=4), DEFAULT_BUNDLE, tmp_path / "m")
    assert "see_through" not in t.losses(t.sample_codes(4))[1]


def test_crisp_term_for_masks_only(tmp_path):
    """The mask-edge term: its target from world masks (a hard edge steps nearly all at once), a
    hinge in [0, target] that reaches the offset network through G; absent for glasses and at its default weight 0."""
    t = OffsetTrainer(OffsetConfig(kind="mask", batch=4, w_crisp=2.0), DEFAULT_BUNDLE, tmp_path / "m")
    assert 0.6 <= t.crisp_target <= 1.2
    t.crisp_target = 10.0  # out of reach: the hinge is active on every face with a mask edge
    _, out = t.losses(t.sample_codes(4))
    assert 8 <= float(out["crisp"].detach()) < 10  # 10 minus crispness: a one-pixel step is at most a few three-pixel ones
    out["crisp"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in t.net.parameters())
    assert OffsetTrainer(OffsetConfig(kind="mask", batch=4), DEFAULT_BUNDLE, tmp_path / "o").crisp_target is None
    t = OffsetTrainer(OffsetConfig(kind="sunglasses", batch=4, w_crisp=2.0), DEFAULT_BUNDLE, tmp_path / "s")
    assert t.crisp_target is None and "crisp" not in t.losses(t.sample_codes(4))[1]


def test_attributes_kept_and_its_loss(tmp_path):
    from latentedit.formats.evaluators import load_evaluators
    from latentedit.world.params import sample_params
    from latentedit.world.render import render

    clf = load_evaluators(DEFAULT_BUNDLE, ["attributes"])["attributes"].eval()
    faces = sample_params(48, seed=5, p_glasses=0, p_sunglasses=0, p_mask=0, p_hat=0)
    other = sample_params(48, seed=6)
    bare = render(faces, 64).image
    with torch.no_grad():
        assert torch.equal(attributes_kept(clf, bare, bare), torch.ones(48))
        # the same faces with sunglasses keep their hair, beard and age (0.93 measured) ...
        assert float(attributes_kept(clf, bare, render(faces.replace(glasses="sun"), 64).image).mean()) >= 0.85
        # ... another face's hair changes up to two of the four heads (0.60 measured)
        swapped = faces.replace(hair_color=other.hair_color, hair_style=other.hair_style)
        assert float(attributes_kept(clf, bare, render(swapped, 64).image).mean()) <= 0.75
        read = clf(bare)
        assert float(attribute_divergence(read, read, KEPT_HEADS)) == pytest.approx(0, abs=1e-6)
        assert float(attribute_divergence(clf(render(swapped, 64).image), read, KEPT_HEADS)) > 0.1
    t = OffsetTrainer(OffsetConfig(kind="sunglasses", batch=4), DEFAULT_BUNDLE, tmp_path / "s")
    _, out = t.losses(t.sample_codes(4))
    out["attributes"].backward()  # the term reaches the offset network through G and the classifier
    assert float(out["attributes"].detach()) >= 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in t.net.parameters())


def test_weight_option(tmp_path):
    args = ("train", "offset", "--kind", "mask", "--batch", 4, "--threads", 1, "--steps", 1, "--snapshot", 1)
    r = run(*args, "--out", tmp_path / "run", "--weight", "identity=3", "--weight", "outside=5")
    assert r.exit_code == 0, r.output
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["w_identity"] == 3.0 and cfg["w_outside"] == 5.0 and cfg["w_class"] == OffsetConfig.w_class
    for bad, says in (("idnetity=3", "LOSS one of attributes, clarity, class, contrast, crisp, eyes, footprint, identity"), ("identity", "LOSS=VALUE"),
                      ("identity=x", "'x' is not a number"), ("identity=-1", "must be >= 0")):
        r = run(*args, "--out", tmp_path / "bad", "--weight", bad)
        lines = [line for line in r.output.splitlines() if line.startswith("error:")]
        assert r.exit_code == 2 and len(lines) == 1 and says in lines[0], r.output
        assert not (tmp_path / "bad").exists()


def test_realism_under_the_kinds_label_asks_the_conditional_discriminator(tmp_path):
    """--realism-label: the realism term passes D the kind's label column (every other clear), so the
    bundled conditional D's projection for frame glasses enters the loss; without it D gets no label."""
    from latentedit.edit.discrete import LABEL_COLUMNS
    from latentedit.formats import bundle
    from latentedit.world.labels import label_names, trained_labels

    labels = trained_labels(bundle.read_manifest(DEFAULT_BUNDLE))
    for realism_label in (True, False):
        t = OffsetTrainer(OffsetConfig(kind="frame_glasses", batch=4, realism_label=realism_label), DEFAULT_BUNDLE,
                          tmp_path / str(realism_label))
        given, D = [], t.D
        t.D = lambda img, c=None: given.append((img, c)) or D(img, c)
        _, out = t.losses(t.sample_codes(4))
        y, c = given[-1]
        if not realism_label:
            assert c is None
            continue
        want = torch.zeros(4, D.cfg.c_dim)
        want[:, label_names(labels).index(LABEL_COLUMNS["frame_glasses"])] = 1
        assert torch.equal(c, want)
        with torch.no_grad():
            assert float(out["realism"]) == pytest.approx(float(torch.nn.functional.softplus(-D(y, c)).mean()), rel=1e-5)
            assert (D(y, c) - D(y)).abs().max() > 1e-3  # the label's projection is not a no-op on this D


def test_eyes_term_for_masks_only(tmp_path):
    """The masks' eyes term: nothing lost when the edit keeps the origin's eyes (the same faces
    wearing a world mask), much lost when it covers them (the same faces in sunglasses), a scale
    from world masks' eye pixels, a gradient that reaches the offset network through G; absent
    for glasses and at its default weight 0."""
    from latentedit.world.params import sample_params
    from latentedit.world.render import render

    t = OffsetTrainer(OffsetConfig(kind="mask", batch=4, w_eyes=2.0), DEFAULT_BUNDLE, tmp_path / "m")
    assert 6 <= t.eyes_scale <= 30  # the world's masked renders: about 14 eye pixels under the parser
    faces = sample_params(32, seed=11, p_glasses=0, p_sunglasses=0, p_mask=0, p_hat=0)
    with torch.no_grad():
        bare, masked, shaded = (t.parser(render(f, 64).image).softmax(1)
                                for f in (faces, faces.replace(mask=1), faces.replace(glasses="sun")))
        kept = t.eyes_lost(bare, masked) / t.eyes_scale
        covered = t.eyes_lost(bare, shaded) / t.eyes_scale
    # measured 0.11 (a world mask makes the parser a little less sure of the eyes) and 0.88
    assert float(kept.median()) < 0.2 and float(covered.median()) > 0.5
    assert float(covered.median()) > 4 * float(kept.median())
    assert float(t.eyes_lost(bare, bare).max()) == 0
    _, out = t.losses(t.sample_codes(4))
    assert float(out["eyes"].detach()) >= 0
    out["eyes"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in t.net.parameters())
    assert OffsetTrainer(OffsetConfig(kind="mask", batch=4), DEFAULT_BUNDLE, tmp_path / "o").eyes_scale is None
    t = OffsetTrainer(OffsetConfig(kind="sunglasses", batch=4, w_eyes=2.0), DEFAULT_BUNDLE, tmp_path / "s")
    assert t.eyes_scale is None and "eyes" not in t.losses(t.sample_codes(4))[1]
