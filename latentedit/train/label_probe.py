"""A conditional discriminator's label projection fitted before training (`train gan --label-probe N`).

A warm start from an unconditional bundle gains a zero projection, which the real / fake loss alone
teaches slowly: at the start the fakes' labels say nothing about their images, each batch holds a
few faces of a class, and Adam (beta1 0) steps on that noise. Measured on a 2940 kimg warm start
at 30x the label rate: after 20 kimg, switching one column of a world render's label lowered D's
logit by 0.29 at most (`benchmarks/label_adherence.py --discriminator`), and G's W offsets had
little to follow. So the projection can start as a
linear probe of D's own last features on world renders: per label group, a softmax regression
with the group's column-less class (no glasses, no mask, no beard, the last hair style) as the
reference at logit 0, L2-regularised so that its logits stay moderate (weight 1e-2: a median
largest |logit| of 1.6-2.5 per group on the 2940 kimg D, held-out accuracy 0.89 / 0.94 / 0.55 / 0.89
for glasses / mask / hair style / beard, where always guessing the commonest class gives 0.60 / 0.83 /
0.22 / 0.85). D then scores how well an
image shows its label from the first step; its unconditional term is unchanged.
"""
import math

import torch
import torch.nn.functional as F

from latentedit.errors import InputError


@torch.no_grad()
def last_features(D, images, batch=32):
    """D's last features [N, C] of images: a tensor [N, 3, R, R], or an iterable of such chunks
    (rendered as they are consumed, so that N large renders need not be held at once); in batches
    of `batch` (its minibatch-std groups) within each chunk."""
    chunks = [images] if torch.is_tensor(images) else images
    return torch.cat([D.features(x).float() for chunk in chunks for x in chunk.split(batch)])


def probe_targets(labels, spans):
    """Class index per group [N, groups]: the label's column within the group, or the group's
    width for the reference (column-less) class."""
    out = []
    for start, end in spans:
        part = labels[:, start:end]
        out.append(torch.where(part.sum(1) > 0, part.argmax(1), torch.full_like(part[:, 0], end - start).long()))
    return torch.stack(out, 1)


def fit_probe(h, labels, spans, weight_decay=1e-2, steps=100):
    """V [c_dim, C]: per group, logits h @ V[start:end].T beside the reference's 0, fitted by L-BFGS
    to the labels' classes (cross-entropy summed over groups + weight_decay * |V|^2 per sample)."""
    targets = probe_targets(labels, spans)
    V = torch.zeros(labels.shape[1], h.shape[1], device=h.device, requires_grad=True)
    opt = torch.optim.LBFGS([V], max_iter=steps, line_search_fn="strong_wolfe")

    def loss():
        opt.zero_grad()
        value = weight_decay * V.square().sum() + sum(
            F.cross_entropy(group_logits(h, V, span), targets[:, g]) for g, span in enumerate(spans))
        value.backward()
        return value

    opt.step(loss)
    return V.detach()


def group_logits(h, V, span):
    """[N, width + 1]: the group's class logits, the reference class last at 0."""
    start, end = span
    logits = h @ V[start:end].T
    return torch.cat([logits, torch.zeros_like(logits[:, :1])], 1)


def fit_label_projection(D, images, labels, spans, weight_decay=1e-2):
    """Set D.project from a probe fitted on `images` [N, 3, R, R] (or chunks of them, as
    `last_features` takes) with their world labels [N, c_dim]
    (one-hot per group, as `world.labels.face_labels`; the groups' column spans, as
    `models.stylegan2.label_spans`): afterwards D(x, c) - D(x) is the probe's logit of c's classes
    summed over the groups. Returns the probe's accuracy per group on them."""
    if not D.cfg.c_dim or labels.shape[1] != D.cfg.c_dim or spans[-1][1] != D.cfg.c_dim:
        raise InputError(f"a label probe needs a conditional D with c_dim {labels.shape[1]}")
    h = last_features(D, images)
    V = fit_probe(h, labels.float(), spans, weight_decay)
    targets = probe_targets(labels, spans)
    accuracy = [(group_logits(h, V, span).argmax(1) == targets[:, g]).float().mean().item()
                for g, span in enumerate(spans)]
    with torch.no_grad():  # <project(c), h> / sqrt(C) = c . (V h): project's effective weight is sqrt(C) V^T
        D.project.weight.copy_(math.sqrt(h.shape[1]) * V.T / D.project.weight_gain)
    return accuracy

