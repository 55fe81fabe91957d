"""Speed of the synthetic face world renderer, with all ground truth (images/s).

    python benchmarks/world_speed.py                 # batch 256 at 64 px and 128 px
    python benchmarks/world_speed.py --workers 2     # + a 2-worker DataLoader stream

Times are the best of --repeats runs after a warm-up (the fixed textures are baked once per
process and are not counted). The machine may be shared: the load average is printed.
"""
import argparse
import os
import platform
import time

import torch

from latentedit import world


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def bench_render(resolution: int, batch: int, repeats: int) -> float:
    params = world.sample_params(batch, seed=0)
    world.render(params, resolution)  # warm-up: bakes the textures
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        world.render(params, resolution)
        best = min(best, time.perf_counter() - t0)
    return batch / best


def _one_thread(_):
    torch.set_num_threads(1)


def bench_loader(workers: int, n: int, chunk: int) -> float:
    ds = world.WorldDataset(seed=0, chunk=chunk)
    loader = torch.utils.data.DataLoader(ds, batch_size=chunk, num_workers=workers,
                                         worker_init_fn=_one_thread, prefetch_factor=2)
    it = iter(loader)
    next(it)  # workers started and warm
    t0 = time.perf_counter()
    seen = 0
    while seen < n:
        seen += len(next(it)["image"])
    return seen / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--workers", type=int, default=0, help="also time a DataLoader stream")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"cpu: {_cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, load avg {os.getloadavg()[0]:.2f}")
    for res in (64, 128):
        ips = bench_render(res, args.batch, args.repeats)
        print(f"render  {res:3d} px  batch {args.batch}: {ips:7.0f} images/s (full ground truth)")
    if args.workers:
        ips = bench_loader(args.workers, 4096, 128)
        print(f"DataLoader  64 px, {args.workers} workers x 1 thread, chunk 128: {ips:7.0f} images/s")


if __name__ == "__main__":
    main()
