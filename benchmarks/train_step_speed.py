"""Training-step speed on CPU: our G+D step vs the NVlabs reference path on the same config, in one run.

    python benchmarks/train_step_speed.py --nvlabs NVLABS_CHECKOUT

One step = a G step (non-saturating loss, softplus(-D(G(z)))) and a D step (softplus(D(G(z))) +
softplus(-D(x))), no regularisation, no style mixing, Adam (lr 0.0025, betas (0, 0.99)) on both;
batch 32, 64 px, channel_base 4096 / channel_max 256 by default (the size of RESULTS.md's table; the
bundled model is 2048 / 128: pass --channel-base 2048 --channel-max 128). Each
configuration runs in its own subprocess with the same initial weights; reported: images/s
(batch / median step time after warm-up; best step too), peak RSS, ratio to NVlabs.

Configurations:
  nvlabs     stylegan2-ada-pytorch training.networks (reference ops on CPU), fused_modconv as it
             chooses in training (non-fused)
  ours-ref   our networks with the reference synthesis path (fast=False)
  ours       our default CPU path
  ours-bf16  ours with the generator in bf16 (compute_dtype) and D under bf16 autocast
"""
import argparse
import json
import os
import resource
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

CONFIGS = ("nvlabs", "ours-ref", "ours", "ours-bf16")


def build(config, path, cfg):
    if config == "nvlabs":
        sys.path.insert(0, path)
        from training.networks import Discriminator as NVD, Generator as NVG

        G = NVG(z_dim=512, c_dim=0, w_dim=512, img_resolution=cfg["res"], img_channels=3,
                mapping_kwargs=dict(num_layers=8),
                synthesis_kwargs=dict(channel_base=cfg["cb"], channel_max=cfg["cm"], num_fp16_res=0, conv_clamp=None))
        D = NVD(c_dim=0, img_resolution=cfg["res"], img_channels=3, channel_base=cfg["cb"], channel_max=cfg["cm"],
                num_fp16_res=0, conv_clamp=None)
        c = torch.zeros([cfg["batch"], 0])
        return G, D, (lambda z: G(z, c)), (lambda img: D(img, c)), None
    from latentedit.models.discriminator import Discriminator
    from latentedit.models.stylegan2 import DiscriminatorConfig, Generator, GeneratorConfig

    G = Generator(GeneratorConfig(resolution=cfg["res"], channel_base=cfg["cb"], channel_max=cfg["cm"]))
    D = Discriminator(DiscriminatorConfig(resolution=cfg["res"], channel_base=cfg["cb"], channel_max=cfg["cm"]))
    opts = dict(fast=False) if config == "ours-ref" else dict(compute_dtype=torch.bfloat16) if config == "ours-bf16" else {}
    autocast = torch.bfloat16 if config == "ours-bf16" else None
    return G, D, (lambda z: G(z, **opts)), (lambda img: D(img)), autocast


def worker(a):
    from latentedit.heap import keep_freed_blocks

    keep_freed_blocks()  # every configuration on the same heap settings, the references' included
    cfg = dict(res=a.res, cb=a.channel_base, cm=a.channel_max, batch=a.batch)
    G, D, run_G, run_D, autocast = build(a.config, a.path, cfg)
    init = torch.load(a.weights, map_location="cpu")
    G.load_state_dict(init["G"])
    D.load_state_dict(init["D"])
    G.train(), D.train()
    opt_G = torch.optim.Adam(G.parameters(), lr=0.0025, betas=(0.0, 0.99), eps=1e-8)
    opt_D = torch.optim.Adam(D.parameters(), lr=0.0025, betas=(0.0, 0.99), eps=1e-8)
    gen = torch.Generator().manual_seed(0)
    reals = torch.rand([a.batch, 3, a.res, a.res], generator=gen) * 2 - 1

    def D_logits(img):
        if autocast is None:
            return run_D(img)
        with torch.autocast("cpu", dtype=autocast):
            return run_D(img).float()

    def step():
        # G step: only G's parameters take gradients.
        G.requires_grad_(True), D.requires_grad_(False)
        z = torch.randn([a.batch, 512], generator=gen)
        loss_G = F.softplus(-D_logits(run_G(z))).mean()
        opt_G.zero_grad(set_to_none=True)
        loss_G.backward()
        opt_G.step()
        # D step: G runs without a graph.
        G.requires_grad_(False), D.requires_grad_(True)
        z = torch.randn([a.batch, 512], generator=gen)
        with torch.no_grad():
            fake = run_G(z)
        loss_D = F.softplus(D_logits(fake)).mean() + F.softplus(-D_logits(reals)).mean()
        opt_D.zero_grad(set_to_none=True)
        loss_D.backward()
        opt_D.step()
        return loss_G.item(), loss_D.item()

    times, losses = [], []
    for i in range(a.warmup + a.iters):
        t0 = time.perf_counter()
        losses.append(step())
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(dict(times=times, peak_mb=peak_mb, losses=losses)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nvlabs", help="path of a stylegan2-ada-pytorch checkout (skipped when absent)")
    ap.add_argument("--res", type=int, default=64)
    ap.add_argument("--channel-base", type=int, default=4096)
    ap.add_argument("--channel-max", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--worker", nargs=3, metavar=("CONFIG", "PATH", "WEIGHTS"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        a.config, a.path, a.weights = a.worker
        worker(a)
        return

    configs = list(a.configs)
    if "nvlabs" in configs and not (a.nvlabs and os.path.isdir(a.nvlabs)):
        print(f"[nvlabs] skipped: {'no checkout given (--nvlabs PATH)' if not a.nvlabs else a.nvlabs + ' does not exist'}")
        configs.remove("nvlabs")
    from generator_speed import machine_description, run_worker  # sibling script (benchmarks/ is on sys.path)

    from latentedit.models.discriminator import Discriminator
    from latentedit.models.stylegan2 import DiscriminatorConfig, Generator, GeneratorConfig

    torch.manual_seed(0)
    G = Generator(GeneratorConfig(resolution=a.res, channel_base=a.channel_base, channel_max=a.channel_max))
    D = Discriminator(DiscriminatorConfig(resolution=a.res, channel_base=a.channel_base, channel_max=a.channel_max))
    n_params = sum(p.numel() for p in G.parameters())
    print(f"machine: {machine_description()}")
    print(f"G {a.res}px channel_base {a.channel_base} channel_max {a.channel_max}: {n_params / 1e6:.2f} M parameters; "
          f"batch {a.batch}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        wpath = os.path.join(tmp, "init.pt")
        torch.save(dict(G=G.state_dict(), D=D.state_dict()), wpath)
        for config in configs:
            cmd = [sys.executable, os.path.abspath(__file__), "--res", str(a.res), "--channel-base", str(a.channel_base),
                   "--channel-max", str(a.channel_max), "--batch", str(a.batch), "--iters", str(a.iters),
                   "--warmup", str(a.warmup), "--worker", config, a.nvlabs or "-", wpath]
            measured = run_worker(cmd, config)
            if measured is None:
                continue
            d, med, best = measured
            rows.append(dict(config=config, img_s=a.batch / med, img_s_best=a.batch / best, peak_mb=d["peak_mb"],
                             step_s=med, first_losses=d["losses"][0]))
            print(f"  {config:10s} {a.batch / med:6.2f} img/s (best {a.batch / best:.2f}), step {med:.2f} s, "
                  f"peak {d['peak_mb']:.0f} MB, first losses G {d['losses'][0][0]:.4f} D {d['losses'][0][1]:.4f}",
                  flush=True)
    base = next((r for r in rows if r["config"] == "nvlabs"), None)
    print()
    print("| config | img/s (median) | img/s (best) | x NVlabs (median / best) | step s | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['img_s'] / base['img_s']:.2f} / {r['img_s_best'] / base['img_s_best']:.2f}" if base else "-"
        print(f"| {r['config']} | {r['img_s']:.2f} | {r['img_s_best']:.2f} | {ratio} | {r['step_s']:.2f} | {r['peak_mb']:.0f} |")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(dict(machine=machine_description(), rows=rows), fh, indent=1)


if __name__ == "__main__":
    main()
