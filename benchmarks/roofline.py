"""This CPU's ceiling and how much of it our generator and training step reach, in one run.

    python benchmarks/roofline.py [--nvlabs PATH] [--res 64 256 1024] [--batch 1 4] [--threads 2]

1. Ceiling: torch's own convolutions on the shapes the networks use (3x3 at 512 ch / 16-64 px,
   256 ch / 128 px, 128 ch / 256 px; 1x1; the 2x transposed 3x3 of up-convs; the 4x4 depthwise
   FIR of up/down-sampling), channels_last, forward and forward+backward, fp32 and bf16, at the
   thread count used. GFLOP/s = FLOPs counted by torch.utils.flop_counter / median time; the
   ceiling of a dtype and pass is the best 3x3 figure (FIR is memory-bound: GB/s instead).
2. Our generator, inference (config-f at 256 / 1024 px, the bundled config at 64 px; batch 1 and
   4; fp32 fast path, bf16 fast path, our reference path, NVlabs' when --nvlabs is given):
   images/s, achieved GFLOP/s and the fraction of the ceiling; ratios to NVlabs (or our reference
   path when NVlabs is absent); "convs alone": the share of our time that the network's own
   convolutions take when each is timed in isolation at its shapes (a shape-aware roofline: 100%
   would mean everything else is free; small-channel layers cannot reach the 3x3 ceiling).
3. Our G+D training step at the bundled config, batch 32, fp32 and bf16: one G forward, the
   non-saturating G and D losses summed into one backward, one Adam step over both (a compact
   stand-in for benchmarks/train_step_speed.py's separate G and D steps, which time a trainer's
   step against NVlabs): images/s and achieved GFLOP/s (the FLOPs counted on one step); then the
   trainer's own step (latentedit train gan: world renders, lazy R1 / path length) in fp32 and bf16,
   and its steps without regularisation with their convolutions alone (forward and backward).
Where bf16 runs, the report also gives the bounds the shapes set: bf16 / fp32 of the convolutions
alone (the most bf16 could gain over fp32 were everything else free in both; for the trainer, on
the steps without the regularisers, which run fp32 in both) and the share of the ceiling the
generator's convolutions alone reach.
The CPU model and its ISA flags (avx512*, amx*) head the report: figures are per machine. Where
bf16 is the slower path (no bf16 arithmetic: AVX2 only), parts 2 and 3 run fp32 alone, by the rule
the commands' bf16 options follow (`latentedit.runtime.fast_precision`, its own probe).
"""
import argparse
import os
from collections import Counter
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from generator_speed import machine_description  # noqa: E402  sibling script

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
CONV_SHAPES = [  # (name, batch, in ch, out ch, px, kernel, transposed)
    ("3x3 512ch 16px b4", 4, 512, 512, 16, 3, False), ("3x3 512ch 64px b1", 1, 512, 512, 64, 3, False),
    ("3x3 256ch 128px b1", 1, 256, 256, 128, 3, False), ("3x3 128ch 256px b1", 1, 128, 128, 256, 3, False),
    ("3x3 128ch 32px b32 (train)", 32, 128, 128, 32, 3, False),
    ("1x1 512ch 64px b1", 1, 512, 512, 64, 1, False), ("up 3x3 512ch 32->64px b1", 1, 512, 512, 32, 3, True),
]


def isa_flags():
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next(line for line in fh if line.startswith("flags")).split(":", 1)[1].split()
    except (OSError, StopIteration):
        return "?"
    keep = sorted(f for f in flags if f.startswith(("avx512", "amx")) or f in ("avx2", "fma", "avx_vnni"))
    return " ".join(keep) or "none of avx2/avx512/amx"


def timed(fn, iters, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_forms(forms, gflop, iters, totals, run=lambda fn: fn()):
    """Times each of `forms` ({name: fn}, all computing the same tensor), each by `run(fn)` (e.g.
    with a backward pass), and checks its output against the first form's. Adds each median time
    to `totals` ({name: seconds}); returns one 'ms, GFLOP/s, relative max-abs error' cell per form."""
    cells, ref = [], None
    for name, fn in forms.items():
        with torch.no_grad():
            out = fn().float()
        ref = out if ref is None else ref
        err = float((out - ref).abs().max() / ref.abs().max())
        t = timed(lambda: run(fn), iters)
        totals[name] = totals.get(name, 0.0) + t
        cells.append(f"{t * 1e3:6.1f} ms {gflop / t:4.0f} GF/s e{err:.0e}")
    return cells


def against_first(totals):
    """'name T ms (R x first)' for every form: the first form is the baseline."""
    first, base = next(iter(totals.items()))
    return ", ".join(f"{n} {t * 1e3:.0f} ms ({base / t:.2f}x {first})" for n, t in totals.items())


def counted_flops(fn):
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def conv_case(batch, cin, cout, px, k, transposed, dtype, backward):
    x = torch.randn(batch, cin, px, px, dtype=dtype).contiguous(memory_format=torch.channels_last)
    w = (torch.randn(cin, cout, k, k) if transposed else torch.randn(cout, cin, k, k)).to(dtype)
    w = w.contiguous(memory_format=torch.channels_last)
    if backward:
        x.requires_grad_(True), w.requires_grad_(True)
    conv = (lambda: F.conv_transpose2d(x, w, stride=2, padding=1)) if transposed else \
        (lambda: F.conv2d(x, w, padding=k // 2))

    def run():
        if backward:
            conv().float().sum().backward()
        else:
            with torch.no_grad():
                conv()
    return run


def ceiling(iters):
    """{(dtype, pass): best 3x3 GFLOP/s}, printing every shape."""
    best = {}
    print("\n== ceiling: torch convolutions, channels_last ==")
    print(f"{'shape':32} {'dtype':5} {'pass':8} {'GFLOP/s':>9}")
    for dname, dtype in DTYPES.items():
        for backward in (False, True):
            label = "fwd+bwd" if backward else "fwd"
            for name, b, cin, cout, px, k, tr in CONV_SHAPES:
                run = conv_case(b, cin, cout, px, k, tr, dtype, backward)
                flops = counted_flops(run)
                gflops = flops / timed(run, iters) / 1e9
                print(f"{name:32} {dname:5} {label:8} {gflops:9.1f}", flush=True)
                if name.startswith("3x3"):
                    best[dname, label] = max(best.get((dname, label), 0.0), gflops)
        x = torch.randn(1, 512, 64, 64, dtype=dtype).contiguous(memory_format=torch.channels_last)
        fir = torch.ones(512, 1, 4, 4, dtype=dtype) / 16
        t = timed(lambda: F.conv2d(x, fir, padding=1, groups=512), iters)
        print(f"{'FIR 4x4 depthwise 512ch 64px':32} {dname:5} {'fwd':8} {2 * x.numel() * x.element_size() / t / 1e9:9.1f} GB/s")
    return best


def conv_seconds(run, iters):
    """Seconds that run()'s convolutions take alone: each distinct call, forward or backward, timed in
    isolation on random tensors of its shapes, dtype and layout, times how often run() makes it (the
    shape-aware roofline: what the network would cost if everything but its convolutions were
    free). run() runs without autograd (inference)."""
    from latentedit.ops.recording import ConvolutionRecorder

    with torch.no_grad(), ConvolutionRecorder() as rec:
        run()
    return isolated_seconds(Counter(rec.calls), iters)


def isolated_seconds(calls, iters):
    """Seconds that the recorded convolution calls ({ConvCall: count}) take, each timed alone."""
    return sum(timed(_isolated_conv(call), iters) * count for call, count in calls.items())


def _isolated_conv(call):
    """A no-argument callable that makes the recorded convolution call again on random tensors."""
    from latentedit.models.packedconv import pack_weight, packed_conv2d

    fmt = torch.channels_last if call.channels_last else torch.contiguous_format
    x = torch.randn(call.input_shape, dtype=call.dtype).contiguous(memory_format=fmt)
    w = torch.randn(call.weight_shape, dtype=call.dtype)
    out_ch = call.weight_shape[1] * call.groups if call.transposed else call.weight_shape[0]
    b = torch.randn(out_ch, dtype=call.dtype) if call.bias else None
    args = (call.stride, call.padding, call.dilation, call.transposed, call.output_padding, call.groups)
    if call.packed:  # as the network runs it: on a weight packed once (stride 1, one group, square padding)
        wp = pack_weight(w, call.input_shape, call.padding[0])
        return torch.no_grad()(lambda: packed_conv2d(x, wp, b, call.padding[0]))
    if not call.backward:
        return torch.no_grad()(lambda: torch.ops.aten.convolution(x, w, b, *args))
    with torch.no_grad():
        g = torch.randn_like(torch.ops.aten.convolution(x, w, b, *args))
    return torch.no_grad()(lambda: torch.ops.aten.convolution_backward(
        g, x, w, [out_ch] if call.bias else None, *args, list(call.output_mask)))


def bf16_is_faster(best):
    """Whether the commands' --precision bf16 computes in bf16 on this CPU: the rule of
    `latentedit.runtime.fast_precision` (bf16 unless it measures below BF16_SLOWER_BELOW x fp32's
    speed), applied to the forward 3x3 ceilings measured by `ceiling`."""
    from latentedit.runtime import BF16_SLOWER_BELOW

    return best["bf16", "fwd"] >= BF16_SLOWER_BELOW * best["fp32", "fwd"]


def generator_runs(res, batch, nvlabs, bf16=True):
    """{config: (synthesis callable, ws)} on one set of random weights (without ours-bf16 unless bf16)."""
    from latentedit.models.stylegan2 import Generator, GeneratorConfig

    cfg = GeneratorConfig(resolution=res) if res >= 256 else \
        GeneratorConfig(resolution=res, channel_base=2048, channel_max=128)  # the bundled model's size
    torch.manual_seed(0)
    G = Generator(cfg).eval()
    ws = G.mapping(torch.randn(batch, G.z_dim), update_w_avg=False)
    runs = {"ours": lambda: G.synthesis(ws, noise_mode="const"),
            "ours-bf16": lambda: G.synthesis(ws, noise_mode="const", compute_dtype=torch.bfloat16),
            "ours-ref": lambda: G.synthesis(ws, noise_mode="const", fast=False)}
    if not bf16:
        del runs["ours-bf16"]
    if nvlabs and res >= 256:
        from generator_speed import _build_nvlabs

        nv = _build_nvlabs(nvlabs, res, G.state_dict())
        runs["nvlabs"] = lambda: nv(ws)
    return runs


def generator_table(args, best):
    print("\n== generator inference (synthesis, const noise) ==")
    print(f"{'res':>5} {'batch':>5} {'config':10} {'img/s':>8} {'GFLOP/s':>8} {'of ceiling':>10} {'vs ref':>7} "
          f"{'convs alone':>10}")
    for res in args.res:
        for batch in args.batch:
            runs = generator_runs(res, batch, args.nvlabs, bf16_is_faster(best))
            flops = counted_flops(runs["ours-ref"])
            speed = {}
            for name, run in runs.items():
                with torch.no_grad():
                    speed[name] = batch / timed(run, args.iters if res < 1024 else max(2, args.iters // 2))
            ref = speed.get("nvlabs") or speed["ours-ref"]
            alone = {}
            for name, v in speed.items():
                achieved = flops * v / batch / 1e9
                ceil = best["bf16" if name == "ours-bf16" else "fp32", "fwd"]
                ratio = f"{v / ref:6.2f}x" if name not in ("ours-ref", "nvlabs") else "      -"
                share = ""
                if name in ("ours", "ours-bf16"):  # how much of our time the convolutions themselves take
                    alone[name] = conv_seconds(runs[name], 3)
                    share = f" {alone[name] * v / batch:10.0%}"
                if name == "ours-bf16":  # what bf16 / fp32 and the ceiling's share would be were all else free
                    share += f"  bf16 / fp32 {v / speed['ours']:.2f}x, convs alone {alone['ours'] / alone[name]:.2f}x; " \
                             f"convs alone reach {flops / alone[name] / 1e9 / ceil:.0%} of the ceiling"
                print(f"{res:5} {batch:5} {name:10} {v:8.2f} {achieved:8.1f} {achieved / ceil:9.0%} {ratio}{share}",
                      flush=True)


def training_table(args, best):
    from latentedit.models.discriminator import Discriminator
    from latentedit.models.stylegan2 import DiscriminatorConfig, Generator, GeneratorConfig

    print("\n== G+D training step, 64 px, channel_base 2048 / max 128 (the bundled config), batch 32 ==")
    precisions = ("fp32", "bf16") if bf16_is_faster(best) else ("fp32",)
    for name in precisions:
        torch.manual_seed(0)
        G = Generator(GeneratorConfig(resolution=64, channel_base=2048, channel_max=128)).train()
        D = Discriminator(DiscriminatorConfig(resolution=64, channel_base=2048, channel_max=128)).train()
        opt = torch.optim.Adam(list(G.parameters()) + list(D.parameters()), lr=0.0025, betas=(0.0, 0.99))
        z, real = torch.randn(32, 512), torch.randn(32, 3, 64, 64)
        bf16 = name == "bf16"

        def step():
            opt.zero_grad(set_to_none=True)
            fake = G(z, compute_dtype=torch.bfloat16 if bf16 else None)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = F.softplus(-D(fake)).mean() + F.softplus(D(fake.detach())).mean() + F.softplus(-D(real)).mean()
            loss.backward()
            opt.step()
        flops = counted_flops(step)
        t = timed(step, args.iters, warmup=2)
        print(f"{name:5} {32 / t:8.1f} img/s {flops / t / 1e9:8.1f} GFLOP/s "
              f"({flops / t / 1e9 / best[name, 'fwd+bwd']:.0%} of the fwd+bwd ceiling)", flush=True)
    trainer_steps(precisions, batch=args.trainer_batch, alone=not args.no_alone)


# The trainer's configurations: the size earlier figures were taken at, and the one the bundle trains
# at now (widened, conditional on four label groups, the label-pair term every 4th step).
TRAINER_CONFIGS = {
    "2048/128": dict(channel_base=2048, channel_max=128),
    "2048/256 + labels": dict(channel_base=2048, channel_max=256, labels=("glasses", "mask", "hair_style", "beard"),
                              label_pair_weight=10.0),
}


def trainer_steps(precisions, steps=16, batch=32, alone=True):
    """What trains the bundle: GANTrainer's step (world renders, style mixing, lazy path-length
    and R1 regularisation, EMA), averaged over one whole regularisation cycle of 16 steps. `batch`
    per process: 16 at one thread is one of the bundle's two torchrun processes. alone: also the
    steps without regularisation (path length, R1 and the label-pair term, which run fp32 in both
    precisions) on their own, and their convolutions, forward and backward, each timed alone."""
    import tempfile

    from latentedit.ops.recording import ConvolutionRecorder
    from latentedit.train.gan import GANConfig, GANTrainer

    print(f"\n== the trainer's step (latentedit train gan), batch {batch}, {torch.get_num_threads()} threads, "
          f"{steps} steps ==")
    for label, config in TRAINER_CONFIGS.items():
        rates, plain, convs = {}, {}, {}
        for name in precisions:
            with tempfile.TemporaryDirectory() as out:
                cfg = GANConfig(**config, batch=batch, bf16=name == "bf16")
                trainer = GANTrainer(cfg, out)
                trainer.train_step()

                def regularised():  # whether the next step runs path length, label pairs or R1
                    return trainer.step % cfg.g_reg_interval == 0 or trainer.step % cfg.d_reg_interval == 0
                times, calls = {}, Counter()
                for _ in range(steps):
                    kind = regularised()
                    t0 = time.perf_counter()
                    trainer.train_step()
                    times.setdefault(kind, []).append(time.perf_counter() - t0)
                rates[name] = batch * steps / sum(sum(t) for t in times.values())
                if alone:
                    plain[name] = statistics.median(times[False])
                    for _ in range(steps):  # the same cycle again, recording the steps without regularisation
                        if not regularised():
                            with ConvolutionRecorder() as rec:
                                trainer.train_step()
                            calls.update(rec.calls)
                        else:
                            trainer.train_step()
                    convs[name] = isolated_seconds(calls, 3) / len(times[False])
            share = f"; without regularisation {plain[name] * 1e3:.0f} ms a step, its convs alone " \
                    f"{convs[name] * 1e3:.0f} ms" if alone else ""
            print(f"{label:18} {name:5} {rates[name]:8.1f} img/s{share}", flush=True)
        if "bf16" in rates:
            bound = f"; without regularisation {plain['fp32'] / plain['bf16']:.2f}x, its convs alone " \
                    f"{convs['fp32'] / convs['bf16']:.2f}x (the most it could be were all else free)" if alone else ""
            print(f"{label:18} bf16 / fp32: {rates['bf16'] / rates['fp32']:.2f}x{bound}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nvlabs", help="a stylegan2-ada-pytorch checkout for the reference ratios (optional)")
    ap.add_argument("--res", type=int, nargs="+", default=[64, 256, 1024])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--skip", nargs="*", default=[], choices=["generator", "training"])
    ap.add_argument("--trainer-only", action="store_true",
                    help="only the trainer's steps (no ceiling, generator or compact step): A/B runs of a change")
    ap.add_argument("--trainer-batch", type=int, default=32, help="per-process batch of the trainer's steps")
    ap.add_argument("--no-alone", action="store_true",
                    help="skip timing the trainer's convolutions alone (a faster A/B of the step)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print("machine:", machine_description())
    print("ISA:", isa_flags())
    if args.trainer_only:
        from latentedit.runtime import fast_precision

        precisions = ("fp32", "bf16") if fast_precision("bf16") == "bf16" else ("fp32",)
        return trainer_steps(precisions, batch=args.trainer_batch, alone=not args.no_alone)
    best = ceiling(args.iters)
    print("ceiling (best 3x3):", ", ".join(f"{d} {p} {g:.0f}" for (d, p), g in sorted(best.items())), "GFLOP/s")
    if not bf16_is_faster(best):
        print("bf16 is slower than fp32 here (no bf16 arithmetic): the generator and training step run fp32 alone")
    if "generator" not in args.skip:
        generator_table(args, best)
    if "training" not in args.skip:
        training_table(args, best)


if __name__ == "__main__":
    main()
