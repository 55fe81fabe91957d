"""Label pairs: the same code drawn with one accessory label switched should stay the same face.

A conditional GAN's loss judges each fake on its label and its realism, never against the same code
under another label, so a learnt per-class W offset may move the whole face (at 3130 kimg turning
the frames label on kept the classifier's hair colour on 16% of faces). In the world an accessory
is drawn onto an unchanged face: switching it changes at most FREE_SHARE of a 64 px render's 16 x 16
cells (measured on 400 renders: frames / sunglasses 0.086 / 0.102, a mask 0.352, a hat 0.227, a
beard 0.266 by more than 0.02). So the term below compares a code drawn under its own label with the
same code with one such group switched (on <-> none), cell by cell at 16 x 16, and averages the
cells that change least, all but the group's free share: the accessory's own cells are free, the
rest of the face is asked to stay. Pixels only: no network the judges use.
"""
import torch
import torch.nn.functional as F

from latentedit.models.stylegan2 import label_spans

PAIR_GRID = 16
# the share of cells a switch of each group may change freely: the world's largest, with a margin
FREE_SHARE = {"glasses": 0.12, "mask": 0.36, "hat": 0.25, "beard": 0.30}  # hair style: not paired


def switched_labels(c, prior, groups, generator):
    """(a copy of labels c [N, c_dim] with one group per row of FREE_SHARE's, drawn uniformly,
    switched: a class there becomes none, none one of the group's classes drawn uniformly; the share
    of cells each row's switch may change [N]). groups: the label group names in order
    (GANConfig.labels). None where no group is switchable."""
    spans = [(span, FREE_SHARE[name]) for span, name in zip(label_spans(prior), groups) if name in FREE_SHARE]
    if not spans:
        return None
    out, free = c.clone(), torch.zeros(len(c), device=c.device)
    pick = torch.randint(len(spans), [len(c)], generator=generator, device=c.device)
    draw = torch.rand([len(c)], generator=generator, device=c.device)
    for g, ((start, end), share) in enumerate(spans):
        rows = pick == g
        had = c[:, start:end].sum(1) > 0
        cls = start + (draw * (end - start)).long().clamp(max=end - start - 1)
        out[rows, start:end] = 0
        turn_on = rows & ~had
        out[turn_on, cls[turn_on]] = 1
        free[rows] = share
    return out, free


def pair_change(a, b, free, grid=PAIR_GRID):
    """Per pair of images [N, C, R, R]: the mean absolute change (colour averaged) of the grid x grid
    cells that change least, leaving out each pair's `free` share [N] (or a number) of cells."""
    d = (F.adaptive_avg_pool2d(a.float(), grid) - F.adaptive_avg_pool2d(b.float(), grid)).abs().mean(1).flatten(1)
    cells = d.shape[1]
    held = ((1 - torch.as_tensor(free, dtype=torch.float32, device=d.device)) * cells).long().clamp(1, cells)
    held = held.expand(len(d))
    kept = torch.arange(cells, device=d.device)[None] < held[:, None]
    return (d.sort(dim=1).values * kept).sum(1) / held
