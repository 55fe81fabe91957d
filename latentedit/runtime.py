"""Process-wide runtime settings that a command may change (the torch CPU thread count) and the one
fact about the machine the commands ask: whether bf16 is faster than fp32 here."""
import contextlib
import os

import torch

from latentedit.errors import InputError

# OpenMP creates one thread per request; far past the machine's cores it crashes (100,000 segfaults)
# without being any faster. 1024 covers every machine we know of while staying safe.
MAX_THREADS = max(1024, os.cpu_count() or 1)


def check_threads(threads, name="--threads"):
    """The thread count as an int in 1..MAX_THREADS, or InputError naming the option."""
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= MAX_THREADS:
        raise InputError(f"{name} must be an integer in 1..{MAX_THREADS}, got {threads!r}")
    return threads


def set_threads(threads, name="--threads"):
    """Checks then applies a thread option; None keeps torch's default."""
    if threads is not None:
        torch.set_num_threads(check_threads(threads, name))


@contextlib.contextmanager
def seeded(seed):
    """Module initialisation from `seed` without touching the caller's global RNG: torch's init
    functions draw from the global generator, so it is forked, seeded, and restored on exit."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


_bf16_speedup = {}  # (device type, threads) -> measured speedup: a fact about the machine
BF16_SLOWER_BELOW = 0.6  # bf16 arithmetic measures >= ~1.3x fp32 here; emulated bf16 0.1-0.35x


def bf16_conv_speedup(device="cpu"):
    """How many times faster a bf16 3x3 convolution runs than the same one in fp32 on this device,
    measured once per process and thread count on CPU (~0.3 s; 128 channels at 32 px, the training
    shapes, channels_last, best of three after a warm-up). Above 1 where the CPU does bf16
    arithmetic (AVX-512 BF16, AMX); far below where oneDNN emulates it (AVX2 only: ~0.1 at one
    thread, ~0.3 at two beside a training run, on an AMD EPYC Zen 3, 2026-12-04). CUDA: 2 where
    the GPU has bf16 arithmetic (Ampere on), else 0; other devices: 1 (the caller's choice stands)."""
    import time

    kind = torch.device(device).type
    if kind == "cuda":
        return 2.0 if torch.cuda.is_bf16_supported(including_emulation=False) else 0.0
    if kind != "cpu":
        return 1.0
    key = (kind, torch.get_num_threads())
    if key not in _bf16_speedup:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn([2, 128, 32, 32], generator=gen).contiguous(memory_format=torch.channels_last)
        w = torch.randn([128, 128, 3, 3], generator=gen).contiguous(memory_format=torch.channels_last)
        best = {}
        with torch.no_grad():
            for dtype in (torch.float32, torch.bfloat16):
                xd, wd = x.to(dtype), w.to(dtype)
                torch.nn.functional.conv2d(xd, wd, padding=1)
                times = []
                for _ in range(3):
                    t = time.perf_counter()
                    torch.nn.functional.conv2d(xd, wd, padding=1)
                    times.append(time.perf_counter() - t)
                best[dtype] = min(times)
        _bf16_speedup[key] = best[torch.float32] / max(best[torch.bfloat16], 1e-9)
    return _bf16_speedup[key]


def fast_precision(precision, device="cpu", note=None):
    """The precision to compute in when `precision` ("fp32" or "bf16") is asked for speed: fp32
    where bf16 measures far slower than fp32 on this device (`bf16_conv_speedup` under
    BF16_SLOWER_BELOW; fp32 is then faster, and exact), saying so through note(text) on rank 0.
    Under torch.distributed every rank takes the slowest rank's measurement, so all agree."""
    if precision != "bf16":
        return precision
    speedup = bf16_conv_speedup(device)
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if distributed:
        agreed = torch.tensor([speedup], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(agreed, op=torch.distributed.ReduceOp.MIN)
        speedup = float(agreed)
    if speedup >= BF16_SLOWER_BELOW:
        return "bf16"
    if note is not None and (not distributed or torch.distributed.get_rank() == 0):
        note(f"note: bf16 runs slower than fp32 on this CPU (a bf16 3x3 convolution measured {speedup:.2f}x "
             f"fp32's speed: no bf16 arithmetic, {torch.backends.cpu.get_cpu_capability()}), so fp32 is used")
    return "fp32"
