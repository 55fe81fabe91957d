"""The frame-glasses judge (metrics/accessories.py): world renders of frame glasses pass it, a dark
band across the eyes and sunglasses fail it, on the world's exact label maps; its soft clarity (the
offset trainer's loss) tells the same apart and moves only the image."""
import pytest
import torch

from latentedit import world
from latentedit.metrics.accessories import (frame_measures, frames_hold_world, frames_pass, soft_lens_clarity,
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
    clarity, share = frame_measures(b.image, b.labels)
    assert frames_pass(clarity, share, reference).float().mean() >= 0.9
    assert frames_hold_world(clarity, share, reference)["holds"]


def test_sunglasses_fail(reference):
    b = _renders("sun")
    clarity, share = frame_measures(b.image, b.labels)
    assert frames_pass(clarity, share, reference).float().mean() <= 0.1
    assert not frames_hold_world(clarity, share, reference)["holds"]


@pytest.mark.parametrize("band_label", ["glasses_frame", "lens"])
def test_dark_band_fails(reference, band_label):
    """The band: every glasses pixel painted the frame's dark colour, labelled frame or lens."""
    b = _renders("frame")
    glasses = (b.labels == LABEL_ID["glasses_frame"]) | (b.labels == LABEL_ID["lens"])
    image = torch.where(glasses[:, None], torch.full_like(b.image, -0.9), b.image)
    labels = torch.where(glasses, LABEL_ID[band_label], b.labels)
    clarity, share = frame_measures(image, labels)
    assert frames_pass(clarity, share, reference).float().mean() <= 0.1
    assert not frames_hold_world(clarity, share, reference)["holds"]


def test_soft_clarity_tells_clear_lenses_from_a_band():
    """Under one-hot weights (exact labels) the soft clarity of world frame glasses sits near the
    median-based one (about 0.8), a dark band painted over the glasses scores below a third of it,
    and its gradient reaches the image only at lens and skin pixels."""
    b = _renders("frame")
    weight = {k: (b.labels == LABEL_ID[k]).float() for k in ("lens", "skin")}
    clear = soft_lens_clarity(b.image, weight["lens"], weight["skin"])
    median_based, _ = frame_measures(b.image, b.labels)
    assert abs(float(clear.median()) - float(median_based.nanmedian())) <= 0.1
    glasses = (b.labels == LABEL_ID["glasses_frame"]) | (b.labels == LABEL_ID["lens"])
    band = torch.where(glasses[:, None], torch.full_like(b.image, -0.9), b.image)
    assert float(soft_lens_clarity(band, weight["lens"], weight["skin"]).median()) <= float(clear.median()) / 3
    image = b.image[:4].clone().requires_grad_(True)
    soft_lens_clarity(image, weight["lens"][:4], weight["skin"][:4]).sum().backward()
    touched = image.grad.abs().sum(1) > 0
    assert touched.any() and not (touched & (weight["lens"][:4] + weight["skin"][:4] == 0)).any()
