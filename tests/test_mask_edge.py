"""The mask edge judge (metrics/edges.py): world masks pass it under their exact labels; the same
renders blurred (every edge a ramp a few pixels wide, as the shipped edits' mask edges were) fail
it under the same labels, crispness falls as the blur widens, a faint film with the mask's hard
boundary fails it by contrast, and no mask fails. Its soft form (the offset trainer's crisp term)
tells the same apart and moves only the image."""
import pytest
import torch
import torch.nn.functional as F

from latentedit.metrics.edges import (CRISP_MIN, FACE_LABELS, edge_crispness, edge_measures, edge_pass,
                                     soft_edge_crispness, world_edge_reference)
from latentedit.world.templates import accessory_labels, world_wearing

torch.set_num_threads(1)
MASK = accessory_labels("mask")


@pytest.fixture(scope="module")
def faces():
    """(bare, wearing a mask): the same 48 world faces."""
    return world_wearing(None, 48, seed=23), world_wearing("mask", 48, seed=23)


def _crisp(values, reference):
    """The crispness half of the judge alone."""
    return values >= CRISP_MIN * reference["crispness"]


def _judged(images, labels, reference):
    return edge_pass(*edge_measures(images, labels, MASK), reference)


def _blurred(images, width):
    return F.avg_pool2d(F.pad(images, [width // 2] * 4, mode="replicate"), width, stride=1) if width > 1 else images


def test_world_masks_pass(faces):
    reference = world_edge_reference("mask", n=64)
    assert 0.7 <= reference["crispness"] <= 1.3  # a hard edge steps about the whole colour change in one pixel
    _, wearing = faces
    assert _judged(wearing.image, wearing.labels, reference).float().mean() >= 0.9


def test_soft_edges_fail(faces):
    reference = world_edge_reference("mask", n=64)
    _, wearing = faces
    medians = [float(edge_crispness(_blurred(wearing.image, k), wearing.labels, MASK).nanmedian()) for k in (1, 3, 5)]
    assert medians[0] > medians[1] > medians[2], medians
    soft = edge_crispness(_blurred(wearing.image, 3), wearing.labels, MASK)
    assert _crisp(soft, reference).float().mean() <= 0.1


def test_faint_film_fails_by_contrast(faces):
    """A 20%-opaque mask over the bare face keeps the mask's hard boundary, so crispness alone
    passes it (88% of 256 such faces); its edge steps a fifth of the world's, so the judge fails it
    (12% pass)."""
    reference = world_edge_reference("mask", n=64)
    bare, wearing = faces
    film = 0.8 * bare.image + 0.2 * wearing.image
    assert _crisp(edge_crispness(film, wearing.labels, MASK), reference).float().mean() >= 0.5
    assert _judged(film, wearing.labels, reference).float().mean() <= 0.25


def test_no_region_fails(faces):
    bare, _ = faces
    values, contrast = edge_measures(bare.image, bare.labels, MASK)
    assert values.isnan().all() and contrast.isnan().all()
    assert not edge_pass(values, contrast, {"crispness": 1.0, "contrast": 0.2}).any()


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
    reference = world_edge_reference("mask", n=64)
    _, wearing = faces
    region = torch.isin(wearing.labels, MASK).float()
    face = torch.isin(wearing.labels, torch.tensor(FACE_LABELS)).float()
    soft_edges = _blurred(wearing.image, 3)
    noisy = (soft_edges + 0.2 * torch.randn(soft_edges.shape, generator=torch.Generator().manual_seed(1))).clamp(-1, 1)
    assert _crisp(edge_crispness(noisy, wearing.labels, MASK), reference).float().mean() <= 0.1
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


@pytest.mark.parametrize("move", ["grown", "shrunk"])
def test_a_labeller_a_pixel_off_still_reads_the_edge(faces, move):
    """A labeller whose mask edge sits a pixel outside (or inside) the image's reads the one-pixel
    step within the skin (or the cloth): a hard edge would score near 0 there. Crispness takes the
    best of the labelled edge and a pixel either way, so world masks still pass under labels a pixel
    off while their blurred renders still fail."""
    reference = world_edge_reference("mask", n=64)
    _, wearing = faces
    mask = torch.isin(wearing.labels, MASK)[:, None].float()
    face = torch.isin(wearing.labels, torch.tensor(FACE_LABELS))[:, None]
    def grown(m):  # by one pixel across each side (4-neighbours: a diagonal edge moves one pixel too)
        p = F.pad(m, (1, 1, 1, 1))
        return torch.stack([m, p[..., :-2, 1:-1], p[..., 2:, 1:-1], p[..., 1:-1, :-2], p[..., 1:-1, 2:]]).amax(0)

    if move == "grown":  # the mask's label spills a pixel onto the face around it
        moved = (grown(mask) > 0) & (face | (mask > 0))
    else:
        moved = 1 - grown(1 - mask) > 0
    labels = torch.where(moved[:, 0], MASK[0], torch.where(mask[:, 0] > 0, FACE_LABELS[0], wearing.labels))
    assert float((labels != wearing.labels).float().mean()) > 0.005  # the edge did move
    assert _crisp(edge_crispness(wearing.image, labels, MASK), reference).float().mean() >= 0.85
    assert _crisp(edge_crispness(_blurred(wearing.image, 3), labels, MASK), reference).float().mean() <= 0.1
