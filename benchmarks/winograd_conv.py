"""Winograd F(2x2, 3x3) against the direct 3x3 conv at the bundle's training shapes.

    python benchmarks/winograd_conv.py --threads 1 [--iters 5]

On CPUs without bf16 arithmetic (AMD Zen 3) the GAN training step is conv-bound at the machine's
fp32 ceiling (convs 83% of its CPU time, 65-86 GFLOP/s at one thread), so only fewer FLOPs could
make it faster. Winograd F(2x2, 3x3) computes a stride-1 3x3 conv with 16 products per 2x2 output
tile instead of 36 (0.44x the multiplies) at the cost of transforming input tiles, weights and
output tiles. torch's CPU convolutions do not use it, so this times two ways of writing it in
torch ops, each checked against F.conv2d, forward + backward (what a training step spends) at
batch 32 and the bundled config's stride-1 3x3 shapes from 8 px up (channel_base 2048,
channel_max 256):

  elementwise  input tiles by unfold, B^T d B and A^T m A as adds of slices, the 16 products as one
               batched matrix product [16, N T, C] x [16, C, O]
  convs        the same maths as convs: B^T d B as a depthwise 4x4 stride-2 conv with 16 fixed
               filters, the products as a 16-group 1x1 conv, A^T m A as an O-group 1x1 conv and a
               pixel shuffle

Prints milliseconds, GFLOP/s of the direct conv's FLOPs (3 x 2 x 9 C O H W N for forward and
backward, whatever a form spends) and each form's speed relative to the direct conv.
"""
import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from generator_speed import machine_description  # noqa: E402
from roofline import against_first, isa_flags, time_forms  # noqa: E402

# (channels in = out, px): G's and D's stride-1 3x3 convs from 8 px up
SHAPES = [(256, 8), (128, 16), (64, 32), (32, 64)]
_BT = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
_AT = [[1, 1, 1, 0], [0, 1, -1, -1]]
_G = [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]]


def weight_transform(w):
    """[O, I, 3, 3] -> U = G g G^T as [4, 4, I, O]."""
    g = torch.tensor(_G, dtype=w.dtype)
    return torch.einsum("ak,oikl,bl->abio", g, w, g)


def _bt(d, dim):
    d0, d1, d2, d3 = d.unbind(dim)
    return torch.stack([d0 - d2, d1 + d2, d2 - d1, d1 - d3], dim)


def _at(m, dim):
    m0, m1, m2, m3 = m.unbind(dim)
    return torch.stack([m0 + m1 + m2, m1 - m2 - m3], dim)


def winograd_elementwise(x, w):
    """Stride-1, padding-1 3x3 conv of x [N, C, H, W] (H, W even) with w [O, C, 3, 3]."""
    N, C, H, W = x.shape
    th, tw = H // 2, W // 2
    tiles = F.pad(x, (1, 1, 1, 1)).permute(0, 2, 3, 1).unfold(1, 4, 2).unfold(2, 4, 2)  # [N, th, tw, C, 4, 4]
    v = _bt(_bt(tiles, 4), 5).permute(4, 5, 0, 1, 2, 3).reshape(16, N * th * tw, C)
    m = torch.bmm(v, weight_transform(w).reshape(16, C, -1)).view(4, 4, N, th, tw, -1)
    return _at(_at(m, 0), 1).permute(2, 5, 3, 0, 4, 1).reshape(N, -1, H, W)


def winograd_convs(x, w):
    """The same conv as `winograd_elementwise`, each transform a conv."""
    N, C, H, W = x.shape
    O = w.shape[0]
    th, tw = H // 2, W // 2
    bt, at = torch.tensor(_BT, dtype=x.dtype), torch.tensor(_AT, dtype=x.dtype)
    tile_filters = torch.einsum("ai,bj->abij", bt, bt).reshape(16, 1, 4, 4).repeat(C, 1, 1, 1)
    v = F.conv2d(F.pad(x, (1, 1, 1, 1)), tile_filters, stride=2, groups=C)  # [N, C 16, th, tw]
    v = v.view(N, C, 16, th, tw).transpose(1, 2).reshape(N, 16 * C, th, tw)
    u = weight_transform(w).reshape(16, C, O).transpose(1, 2).reshape(16 * O, C, 1, 1)
    m = F.conv2d(v, u, groups=16).view(N, 16, O, th, tw).transpose(1, 2).reshape(N, O * 16, th, tw)
    out_filters = torch.einsum("pa,qb->pqab", at, at).reshape(4, 16).repeat(O, 1).reshape(4 * O, 16, 1, 1)
    return F.pixel_shuffle(F.conv2d(m, out_filters, groups=O), 2)


FORMS = {"direct": lambda x, w: F.conv2d(x, w, padding=1), "elementwise": winograd_elementwise, "convs": winograd_convs}


def random_conv(batch, channels, px):
    x = torch.randn(batch, channels, px, px).contiguous(memory_format=torch.channels_last).requires_grad_()
    return x, torch.randn(channels, channels, 3, 3, requires_grad=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print("machine:", machine_description())
    print(f"ISA: {isa_flags()} (torch: {torch.backends.cpu.get_cpu_capability()}); fp32, forward + backward, "
          f"batch {args.batch}, {args.threads} thread(s); median of {args.iters}")
    totals = {}
    for C, px in SHAPES:
        x, w = random_conv(args.batch, C, px)
        gflop = 3 * 2 * 9 * C * C * px * px * args.batch / 1e9
        forms = {name: (lambda form=form: form(x, w)) for name, form in FORMS.items()}
        cells = time_forms(forms, gflop, args.iters, totals, run=lambda fn: fn().square().mean().backward())
        print(f"{C:3} ch @ {px:2} px   " + "   ".join(f"{n} {c}" for n, c in zip(forms, cells)), flush=True)
    print("all shapes: " + against_first(totals))


if __name__ == "__main__":
    main()
