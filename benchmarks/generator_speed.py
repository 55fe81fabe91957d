"""Generator speed on CPU: ours vs the NVlabs and rosinality reference paths, in one run.

    python benchmarks/generator_speed.py --nvlabs NVLABS_CHECKOUT --rosinality ROSINALITY_CHECKOUT

Every configuration (implementation x resolution x batch x dtype) runs in its own subprocess, so
its peak RSS (ru_maxrss) is its own; all of them load the same random weights (config-f, seed 0)
and synthesise the same W codes with constant noise. Reported: images/s (median of the timed
iterations after warm-up; the minimum is printed too, it is the figure least disturbed by other
load on the machine), peak RSS, the max-abs image difference against the NVlabs output (our
reference path when NVlabs is absent), PSNR of bf16 against our fp32 output, and ratios to the
NVlabs reference path. The reference checkouts are imported from the paths given, never copied.

Configurations:
  nvlabs      training.networks.Generator, force_fp32 (its ops take the 'ref' path on CPU)
  rosinality  model.Generator, weights converted with latentedit.formats.rosinality
  ours-ref    our reference path: fast=False (the NVlabs sequence of ops, our code)
  ours        default CPU fast path, fp32
  ours-bf16   the fast path with compute_dtype=torch.bfloat16 (opt-in)
"""
import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch

CONFIGS = ("nvlabs", "rosinality", "ours-ref", "ours", "ours-bf16")


# ---------------------------------------------------------------------------------------------
# Worker: one configuration in a fresh process


def _build_nvlabs(path, res, sd):
    sys.path.insert(0, path)
    from training.networks import Generator as NVGenerator

    G = NVGenerator(z_dim=512, c_dim=0, w_dim=512, img_resolution=res, img_channels=3,
                    mapping_kwargs=dict(num_layers=8),
                    synthesis_kwargs=dict(channel_base=32768, channel_max=512, num_fp16_res=0, conv_clamp=None))
    G.load_state_dict(sd)
    G.eval()
    return lambda ws: G.synthesis(ws, noise_mode="const", force_fp32=True)


def _build_rosinality(path, res, sd):
    sys.path.insert(0, path)
    import model as rosinality_model  # noqa: E402  (its op/ package builds CUDA extensions at import)

    from latentedit.formats.rosinality import generator_to_rosinality
    from latentedit.models.stylegan2 import GeneratorConfig

    G = rosinality_model.Generator(res, 512, 8, channel_multiplier=2)
    G.load_state_dict(generator_to_rosinality(GeneratorConfig(resolution=res), sd), strict=False)
    G.eval()
    noise = [getattr(G.noises, f"noise_{i}") for i in range(G.num_layers)]
    return lambda ws: G([ws], input_is_latent=True, noise=noise)[0]


def _build_ours(res, sd, **options):
    from latentedit.models.stylegan2 import Generator, GeneratorConfig

    G = Generator(GeneratorConfig(resolution=res))
    G.load_state_dict(sd)
    G.eval()
    return lambda ws: G.synthesis(ws, noise_mode="const", **options)


def worker(args):
    from latentedit.heap import keep_freed_blocks

    keep_freed_blocks()  # every configuration on the same heap settings, the references' included
    torch.set_grad_enabled(False)
    sd = torch.load(args.weights, map_location="cpu")
    ws = torch.load(args.ws, map_location="cpu")[: args.batch]
    if args.config == "nvlabs":
        run = _build_nvlabs(args.path, args.res, sd)
    elif args.config == "rosinality":
        run = _build_rosinality(args.path, args.res, sd)
    elif args.config == "ours-ref":
        run = _build_ours(args.res, sd, fast=False)
    elif args.config == "ours":
        run = _build_ours(args.res, sd)
    elif args.config == "ours-bf16":
        run = _build_ours(args.res, sd, compute_dtype=torch.bfloat16)
    else:
        raise SystemExit(f"unknown config {args.config}")
    if args.config == "rosinality":  # rosinality takes a single W per sample through `styles`
        ws = ws[:, 0]
    del sd
    times = []
    for i in range(args.warmup + args.iters):
        t0 = time.perf_counter()
        img = run(ws)
        dt = time.perf_counter() - t0
        if i >= args.warmup:
            times.append(dt)
    torch.save(img.float().contiguous(), args.out)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(dict(times=times, peak_mb=peak_mb)))


# ---------------------------------------------------------------------------------------------
# Driver


def _rosinality_importable(path):
    code = f"import sys; sys.path.insert(0, {path!r}); import op"
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=path)
    except subprocess.TimeoutExpired:
        return "its op/ package did not import within 10 minutes"
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["?"])[-1]
        return f"its ops need a CUDA build (import op failed: {last})"
    return None


def run_worker(cmd, label):
    """Runs one measurement in its own process (a clean allocator and thread pool per configuration);
    -> (its JSON report, median and best of its "times"), or None after printing why it failed."""
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print(f"[{label}] failed:\n{r.stderr[-2000:]}", flush=True)
        return None
    data = json.loads(r.stdout.strip().splitlines()[-1])
    return data, statistics.median(data["times"]), min(data["times"])


def machine_description():
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    from latentedit import heap
    from latentedit.ops import cpu_kernels
    from latentedit.models.upconv import upconv_form

    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"Python {platform.python_version()}, {platform.system()} {platform.release()}; "
            f"THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE', 'unset')}, "
            f"freed heap blocks {'kept' if heap.kept else 'released'}, "
            f"CPU kernels {cpu_kernels.unavailable_reason() or 'on'}, bf16 up-conv "
            f"{upconv_form(torch.bfloat16, in_channels=512)} / {upconv_form(torch.bfloat16, in_channels=128)} "
            f"(512 / 128 input channels)")


def psnr(a, ref):
    mse = (a - ref).double().square().mean().item()
    peak = (ref.max() - ref.min()).item()
    return float("inf") if mse == 0 else 10 * math.log10(peak ** 2 / mse)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nvlabs", help="path of a stylegan2-ada-pytorch checkout (skipped when absent)")
    ap.add_argument("--rosinality", help="path of a stylegan2-pytorch checkout (skipped when absent)")
    ap.add_argument("--res", type=int, nargs="+", default=[1024, 256])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    ap.add_argument("--iters", type=int, default=None, help="timed iterations (default: by cost)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--json", help="also write all figures to this file")
    ap.add_argument("--worker", nargs=7, metavar=("CONFIG", "PATH", "RES", "BATCH", "WEIGHTS", "WS", "OUT"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        c, p, r, b, wt, w, o = args.worker
        worker(argparse.Namespace(config=c, path=p, res=int(r), batch=int(b), weights=wt, ws=w, out=o,
                                  iters=args.iters or 3, warmup=args.warmup))
        return

    paths = {"nvlabs": args.nvlabs, "rosinality": args.rosinality}
    skipped = {}
    for name in ("nvlabs", "rosinality"):
        p = paths[name]
        if name not in args.configs:
            continue
        if not p or not os.path.isdir(p):
            skipped[name] = f"no checkout given (--{name} PATH)" if not p else f"{p} does not exist"
        elif name == "rosinality":
            why = _rosinality_importable(p)
            if why:
                skipped[name] = why
    for name, why in skipped.items():
        print(f"[{name}] skipped: {why}", flush=True)
    configs = [c for c in args.configs if c not in skipped]

    from latentedit.models.stylegan2 import Generator, GeneratorConfig

    print("machine:", machine_description(), flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for res in args.res:
            torch.manual_seed(0)
            G = Generator(GeneratorConfig(resolution=res)).eval()
            sd = G.state_dict()
            wpath, wspath = os.path.join(tmp, f"G{res}.pt"), os.path.join(tmp, f"ws{res}.pt")
            torch.save(sd, wpath)
            with torch.no_grad():
                z = torch.randn(max(args.batch), 512, generator=torch.Generator().manual_seed(1))
                torch.save(G.mapping(z), wspath)
            del G, sd
            for batch in args.batch:
                imgs, rows = {}, {}
                for config in configs:
                    iters = args.iters or (3 if res * batch >= 4096 else 5 if res >= 1024 else 8)
                    out = os.path.join(tmp, f"img_{config}_{res}_{batch}.pt")
                    cmd = [sys.executable, os.path.abspath(__file__), "--iters", str(iters), "--warmup",
                           str(args.warmup), "--worker", config, paths.get(config) or "-", str(res), str(batch),
                           wpath, wspath, out]
                    measured = run_worker(cmd, f"{config} {res}px batch {batch}")
                    if measured is None:
                        continue
                    data, med, best = measured
                    rows[config] = dict(config=config, res=res, batch=batch, img_s=batch / med, img_s_best=batch / best,
                                        peak_mb=data["peak_mb"], times=data["times"])
                    imgs[config] = torch.load(out)
                    print(f"  {res}px b{batch} {config:10s} {batch / med:7.3f} img/s (best {batch / best:.3f}) "
                          f"peak {data['peak_mb']:.0f} MB", flush=True)
                ref_name = "nvlabs" if "nvlabs" in imgs else "ours-ref" if "ours-ref" in imgs else None
                base = rows.get("nvlabs")
                for config, row in rows.items():
                    if ref_name and config != ref_name:
                        row["max_abs_vs"] = ref_name
                        row["max_abs"] = (imgs[config] - imgs[ref_name]).abs().max().item()
                    if config == "ours-bf16" and "ours" in imgs:
                        row["psnr_vs_ours_fp32"] = psnr(imgs[config], imgs["ours"])
                    if base:
                        row["ratio_vs_nvlabs"] = row["img_s"] / base["img_s"]
                        row["ratio_vs_nvlabs_best"] = row["img_s_best"] / base["img_s_best"]
                        row["peak_vs_nvlabs"] = row["peak_mb"] / base["peak_mb"]
                    results.append(row)
                if ref_name:
                    print(f"  output range of {ref_name}: [{imgs[ref_name].min():.2f}, {imgs[ref_name].max():.2f}]")

    print()
    print(f"machine: {machine_description()}")
    for name, why in skipped.items():
        print(f"{name}: skipped: {why}")
    print("| res | batch | config | img/s (median) | img/s (best) | x NVlabs (median / best) | peak RSS MB | "
          "max-abs vs ref | bf16 PSNR dB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        ratio = (f"{r['ratio_vs_nvlabs']:.2f} / {r['ratio_vs_nvlabs_best']:.2f}" if "ratio_vs_nvlabs" in r else "-")
        mad = f"{r['max_abs']:.1e} ({r['max_abs_vs']})" if "max_abs" in r else "-"
        ps = f"{r['psnr_vs_ours_fp32']:.1f}" if "psnr_vs_ours_fp32" in r else "-"
        print(f"| {r['res']} | {r['batch']} | {r['config']} | {r['img_s']:.3f} | {r['img_s_best']:.3f} | {ratio} | "
              f"{r['peak_mb']:.0f} | {mad} | {ps} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(machine=machine_description(), skipped=skipped, results=results), fh, indent=1)


if __name__ == "__main__":
    main()
