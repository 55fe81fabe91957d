"""The mask edge judge (metrics/edges.py): world masks pass it under their exact labels; the same
renders blurred (every edge a ramp a few pixels wide, as the shipped edits' mask edges were) fail
it under the same labels, crispness falls as the blur widens, and no mask fails. Its soft form
(the offset trainer's crisp term) tells the same apart and moves only the image."""
import pytest
import torch
import torch.nn.functional as F

from latentedit.metrics.edges import (FACE_LABELS, crisp_pass, edge_crispness, soft_edge_crispness,
                                     world_crispness_reference)
from latentedit.world.templates import accessory_labels, world_wearing

torch.set_num_threads(1)
MASK = accessory_labels("mask")


@pytest.fixture(scope="module")
def faces():
    """(bare, wearing a mask): the same 48 world faces."""
    return world_wearing(None, 48, seed=23), world_wearing("mask", 48, seed=23)


def _blurred(images, width):
    return F.avg_pool2d(F.pad(images, [width // 2] * 4, mode="replicate"), width, stride=1) if width > 1 else images


def test_world_masks_pass(faces):
    reference = world_crispness_reference("mask", n=64)
    assert 0.7 <= reference <= 1.3  # a hard edge steps about the whole colour change in one pixel
    _, wearing = faces
    assert crisp_pass(edge_crispness(wearing.image, wearing.labels, MASK), reference).float().mean() >= 0.95


def test_soft_edges_fail(faces):
    reference = world_crispness_reference("mask", n=64)
    _, wearing = faces
    medians = [float(edge_crispness(_blurred(wearing.image, k), wearing.labels, MASK).nanmedian()) for k in (1, 3, 5)]
    assert medians[0] > medians[1] > medians[2], medians
    soft = edge_crispness(_blurred(wearing.image, 3), wearing.labels, MASK)
    assert crisp_pass(soft, reference).float().mean() <= 0.1


def test_no_region_fails(faces):
    bare, _ = faces
    values = edge_crispness(bare.image, bare.labels, MASK)
    assert values.isnan().all() and not crisp_pass(values, 1.0).any()


def test_soft_crispness_tells_hard_edges_from_soft(faces):
    _, wearing = faces
    region = torch.isin(wearing.labels, MASK).float()
    face = torch.isin(wearing.labels, torch.tensor(FACE_LABELS)).float()
    hard = soft_edge_crispness(wearing.image, region, face)
    soft = soft_edge_crispness(_blurred(wearing.image, 3), region, face)
    assert float(hard.median()) >= 0.7 and float(soft.median()) <= 0.5
    image = wearing.image.clone().requires_grad_()
    soft_edge_crispness(image, region, face).sum().backward()
    moved = image.grad.abs().sum(1) > 0
    assert moved.any() and not moved[(region == 0) & (face == 0)].any()  # only the mask and the face


def test_noise_is_no_edge(faces):
    """One-pixel noise over a soft edge steps against the edge's colour change as often as along it:
    it lowers crispness (hard and soft form) instead of reading as a hard edge."""
    reference = world_crispness_reference("mask", n=64)
    _, wearing = faces
    region = torch.isin(wearing.labels, MASK).float()
    face = torch.isin(wearing.labels, torch.tensor(FACE_LABELS)).float()
    soft_edges = _blurred(wearing.image, 3)
    noisy = (soft_edges + 0.2 * torch.randn(soft_edges.shape, generator=torch.Generator().manual_seed(1))).clamp(-1, 1)
    assert crisp_pass(edge_crispness(noisy, wearing.labels, MASK), reference).float().mean() <= 0.1
    assert float(edge_crispness(noisy, wearing.labels, MASK).nanmedian()) < float(
        edge_crispness(soft_edges, wearing.labels, MASK).nanmedian())
    assert float(soft_edge_crispness(noisy, region, face).median()) < float(
        soft_edge_crispness(soft_edges, region, face).median())


def test_overshooting_rim_scores_no_more_than_a_hard_edge(faces):
    """A one-pixel rim past the mask's colour on a soft edge steps further than a hard edge: capped,
    it earns at most what a hard edge earns (1), in the judge and in the trainer's soft form."""
    from latentedit.metrics.edges import _edge_steps

    _, wearing = faces
    region = torch.isin(wearing.labels, MASK).float()
    face = torch.isin(wearing.labels, torch.tensor(FACE_LABELS)).float()
    rim = region * F.max_pool2d(face[:, None], 3, stride=1, padding=1)[:, 0]  # mask pixels beside the face
    soft_edges = _blurred(wearing.image, 3)
    ringing = soft_edges + 5.0 * (wearing.image - soft_edges) * rim[:, None]  # past the mask's colour
    along, squared, step, pair = _edge_steps(ringing, region[:, None], face[:, None])
    counted = ((pair > 0) & (step >= 0.02)).flatten(1)
    uncapped = (along / squared.clamp_min(1e-8)).flatten(1).masked_fill(~counted, float("nan")).nanmedian(1).values
    assert float(uncapped.median()) > 1.0  # uncapped, the ringing would outscore a hard edge (1)
    assert float(soft_edge_crispness(ringing, region, face).max()) <= 1.0 + 1e-6
    assert float(edge_crispness(ringing, wearing.labels, MASK).nan_to_num(0).max()) <= 1.0 + 1e-6
