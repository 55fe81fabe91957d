"""The frame-glasses judge (metrics/accessories.py): world renders of frame glasses pass it, a dark
band across the eyes and sunglasses fail it, on the world's exact label maps; so do bright lenses
with something else painted in them once the judge knows the face behind the glasses (see-through
error); its soft clarity (the offset trainer's loss) tells the same apart and moves only the image."""
import pytest
import torch

from latentedit import world
from latentedit.metrics.accessories import (CONTRAST_MIN, FRAME_TOLERANCE, SEE_THROUGH_MAX, frame_measures,
                                            frames_hold_world, frames_pass, see_through_error, soft_lens_clarity,
                                            world_frame_reference)
from latentedit.world.params import LABEL_ID

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def reference():
    return world_frame_reference(n=96)


def _renders(kind, n=48, seed=11):
    probs = dict(p_glasses=float(kind == "frame"), p_sunglasses=float(kind == "sun"), p_mask=0.0, p_hat=0.0)
    return world.sample(n, seed=seed, **probs)


def test_world_frames_pass_and_hold(reference):
    b = _renders("frame")  # other seeds than the reference's
    measures = frame_measures(b.image, b.labels)
    # world renders pass 98% (1 of these 48 fails at any contrast cut up to 0.6; a 0.7 cut fails 4)
    assert frames_pass(measures, reference).float().mean() >= 0.95
    assert frames_hold_world(measures, reference)["holds"]


def test_sunglasses_fail(reference):
    b = _renders("sun")
    measures = frame_measures(b.image, b.labels)
    assert frames_pass(measures, reference).float().mean() <= 0.1
    assert not frames_hold_world(measures, reference)["holds"]


@pytest.mark.parametrize("band_label", ["glasses_frame", "lens"])
def test_dark_band_fails(reference, band_label):
    """The band: every glasses pixel painted the frame's dark colour, labelled frame or lens."""
    b = _renders("frame")
    glasses = (b.labels == LABEL_ID["glasses_frame"]) | (b.labels == LABEL_ID["lens"])
    image = torch.where(glasses[:, None], torch.full_like(b.image, -0.9), b.image)
    labels = torch.where(glasses, LABEL_ID[band_label], b.labels)
    measures = frame_measures(image, labels)
    assert frames_pass(measures, reference).float().mean() <= 0.1
    assert not frames_hold_world(measures, reference)["holds"]


def test_soft_clarity_tells_clear_lenses_from_a_band():
    """Under one-hot weights (exact labels) the soft clarity of world frame glasses sits near the
    median-based one (about 0.8), a dark band painted over the glasses scores below a third of it,
    and its gradient reaches the image only at lens and skin pixels."""
    b = _renders("frame")
    weight = {k: (b.labels == LABEL_ID[k]).float() for k in ("lens", "skin")}
    clear = soft_lens_clarity(b.image, weight["lens"], weight["skin"])
    median_based = frame_measures(b.image, b.labels)["clarity"]
    assert abs(float(clear.median()) - float(median_based.nanmedian())) <= 0.1
    glasses = (b.labels == LABEL_ID["glasses_frame"]) | (b.labels == LABEL_ID["lens"])
    band = torch.where(glasses[:, None], torch.full_like(b.image, -0.9), b.image)
    assert float(soft_lens_clarity(band, weight["lens"], weight["skin"]).median()) <= float(clear.median()) / 3
    image = b.image[:4].clone().requires_grad_(True)
    soft_lens_clarity(image, weight["lens"][:4], weight["skin"][:4]).sum().backward()
    touched = image.grad.abs().sum(1) > 0
    assert touched.any() and not (touched & (weight["lens"][:4] + weight["skin"][:4] == 0)).any()


def _with_and_without_glasses(n=48, seed=11):
    """World faces wearing frame glasses only, and the same faces bare."""
    return [world.sample(n, seed=seed, glasses=g, mask=0, hat=0) for g in ("frame", "none")]


def test_see_through_tells_clear_lenses_from_painted_ones(reference):
    """The world's own glasses show the bare face behind the lenses (error ~0); lenses painted a
    bright flat colour (clear by luminance: clarity alone passes them) or dark fail it."""
    worn, bare = _with_and_without_glasses()
    lens = worn.labels == LABEL_ID["lens"]
    assert lens.flatten(1).any(1).all()
    err = see_through_error(worn.image, bare.image, worn.labels)
    assert float(err.max()) <= SEE_THROUGH_MAX / 5
    assert frames_pass(frame_measures(worn.image, worn.labels), reference, err).float().mean() >= 0.9
    for fill in (0.9, -0.9):  # bright, as the 2026-12-03 edits' lenses; dark, as a band's
        painted = torch.where(lens[:, None], torch.full_like(worn.image, fill), worn.image)
        err = see_through_error(painted, bare.image, worn.labels)
        measures = frame_measures(painted, worn.labels)
        if fill > 0:
            assert frames_pass(measures, reference).float().mean() >= 0.9  # what clarity alone says
        assert frames_pass(measures, reference, err).float().mean() <= 0.1
    # a face without lens pixels has no see-through error, and fails
    err = see_through_error(bare.image, bare.image, bare.labels)
    assert torch.isnan(err).all()
    passing = {"clarity": torch.ones(len(err)), "share": torch.zeros(len(err)), "contrast": torch.ones(len(err))}
    assert frames_pass(passing, reference).all()  # what the measures alone say
    assert not frames_pass(passing, reference, err).any()


def test_faint_frames_fail_by_contrast(reference):
    """Frames blended a third of the way over the bare face keep their labels, clear lenses and
    share, so clarity and share pass them; they step about a third of the world's contrast from the
    skin, so the contrast cut fails nearly all (2% pass at 0.6x; a 0.5x cut would pass 12%)."""
    worn, bare = _with_and_without_glasses()
    frame = (worn.labels == LABEL_ID["glasses_frame"])[:, None]
    faint = torch.where(frame, (worn.image + 2 * bare.image) / 3, worn.image)
    measures = frame_measures(faint, worn.labels)
    clear = measures["clarity"] >= 0.5 * reference["clarity"]
    thin = measures["share"] <= (1 + FRAME_TOLERANCE) * reference["share"]
    assert (clear & thin).float().mean() >= 0.9
    assert (measures["contrast"] >= CONTRAST_MIN * reference["contrast"]).float().mean() <= 0.1
    assert frames_pass(measures, reference).float().mean() <= 0.1
    assert not frames_hold_world(measures, reference)["holds"]
    assert 0.6 <= reference["contrast"] <= 1.0  # dark rims on skin, by the exact labels
