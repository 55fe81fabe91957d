"""Forms of the 2x up-conv (transposed 3x3 conv, then the 4x4 FIR) at the config-f generators' shapes.

    python benchmarks/upconv_forms.py --threads 2 [--dtype bf16] [--iters 5]

At 1024 px the up-convs of the 128 / 256 / 512 px blocks are the slowest layers on CPUs without
bf16 arithmetic (AMD Zen 3: ~50 GFLOP/s where plain 3x3 convs reach ~140). This times, on one
machine in one run, every form of the same maths that could replace the strided transposed conv,
checks each against the transposed form (max-abs difference relative to the output's scale), and prints
milliseconds, GFLOP/s of the transposed conv's own FLOPs (2 * 9 * I * O * H * W, whatever a form
spends), and the ratio to the transposed form:

  transposed  strided transposed conv + depthwise FIR (`_conv3x3_resample`; the fast path's form in
              fp32, under autograd and on CPUs without AMX)
  phase       the FIR folded into four 3x3 phase kernels, one plain conv with 4 O outputs and a
              pixel shuffle (`phase_upconv`; 4x the FLOPs, no FIR; bf16 on AMX below 256 input channels)
  subpixel    the transposed conv as one plain 2x2 conv with 4 O outputs (each output phase takes 4,
              2, 2 or 1 of the 9 taps; 16/9 the FLOPs), interleaved, then the same FIR
              (`subpixel_upconv`; bf16 on AMX from 256 input channels)
  gemm        the transposed conv as a matrix product [H W, I] x [I, 9 O] (the transposed conv's
              FLOPs exactly) and nine strided adds into the output (col2im), then the same FIR

Inference only, batch 1 (the fast path runs one sample at a time), channels_last input.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from generator_speed import machine_description  # noqa: E402
from roofline import against_first, isa_flags, time_forms  # noqa: E402

from latentedit.models.synthesis import _conv3x3_resample, fir_after_transposed  # noqa: E402
from latentedit.models.upconv import phase_upconv, phase_weight, subpixel_upconv, subpixel_weight  # noqa: E402
from latentedit.ops import setup_filter  # noqa: E402

# (I, O, input px): config-f 1024 px, whose first three are 256 px's last three
SHAPES = [(512, 512, 32), (512, 256, 64), (256, 128, 128), (128, 64, 256), (64, 32, 512)]


def gemm_transposed(x, wm, O):
    """The strided transposed conv as [H W, I] x [I, 9 O] then col2im: x channels_last [1, I, H, W],
    wm [I, 9 O] (columns (ky, kx, o))."""
    _, I, H, W = x.shape
    z = (x.permute(0, 2, 3, 1).reshape(H * W, I) @ wm).reshape(H, W, 3, 3, O)
    y = x.new_zeros(1, 2 * H + 1, 2 * W + 1, O)
    for ky in range(3):
        for kx in range(3):
            y[0, ky:ky + 2 * H:2, kx:kx + 2 * W:2] += z[:, :, ky, kx]
    return y.permute(0, 3, 1, 2)


def random_up_conv(I, O, H, seed=0):
    """(x [1, I, H, H], w [O, I, 3, 3], bias [O]), fp32, w at unit output variance."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(1, I, H, H, generator=g), torch.randn(O, I, 3, 3, generator=g) / (9 * I) ** 0.5,
            torch.randn(O, generator=g))


def forms(x, w, bias, dtype):
    """{name: callable} computing the same up-conv + FIR + bias of x by w in `dtype`."""
    O, I = w.shape[:2]
    x = x.to(dtype).contiguous(memory_format=torch.channels_last)
    f = setup_filter([1, 3, 3, 1])
    wd, bd = w.to(dtype), bias.to(dtype)
    phase_k = phase_weight(w, f).to(dtype).contiguous(memory_format=torch.channels_last)
    sub_k = subpixel_weight(wd).contiguous(memory_format=torch.channels_last)
    wm = wd.permute(1, 2, 3, 0).reshape(I, 9 * O).contiguous()
    return {"transposed": lambda: _conv3x3_resample(x, wd, bd, 2, f),
            "phase": lambda: phase_upconv(x, phase_k, bd),
            "subpixel": lambda: subpixel_upconv(x, sub_k, f, bd),
            "gemm": lambda: fir_after_transposed(gemm_transposed(x, wm, O), f, 2, bd)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    print("machine:", machine_description())
    print(f"ISA: {isa_flags()} (torch: {torch.backends.cpu.get_cpu_capability()}); {args.dtype}; median of {args.iters}")
    print(f"{'I->O @ px':18} " + "  ".join(f"{n:>24}" for n in ("transposed", "phase", "subpixel", "gemm")))
    totals = {}
    with torch.no_grad():
        for I, O, H in SHAPES:
            gflop = 2 * 9 * I * O * H * H / 1e9
            cells = time_forms(forms(*random_up_conv(I, O, H), dtype), gflop, args.iters, totals)
            print(f"{I:3}->{O:3} @ {H:4} px   " + "  ".join(f"{c:>24}" for c in cells), flush=True)
    print(f"all {len(SHAPES)} shapes: " + against_first(totals))


if __name__ == "__main__":
    main()
