"""SD-GAN's released networks on CPU: ours vs SD-GAN's own modules, same weights, one run.

    python benchmarks/sdgan_speed.py --sdgan ~/src/SD-GAN [--threads 2] [--json out.json]

Two figures, each with SD-GAN's number beside ours and their ratio:

- fusion network, batch 1 (img/s): `model.Semantic_Fusion_Network` from the checkout given by
  --sdgan (its locally connected layers broadcast a 256 MiB product per sample) vs our
  `FusionNet` loaded with the same state dict (the issue's goal: >= 3x), both the whole forward
  and per image as synthesis runs it (the fixed template's features computed once);
- whole synthesis (img/s): test.py's per-image loop vs `latentedit.edit.sdgan.SDGANSynthesizer`
  at --batch (goal: >= 5x). Their loop body as test.py runs it, batch 1: three calls of
  `pytorch_stylegan2/stylegan2_model.Generator` through infer_face.generate_from_synthesis
  (truncation 0.5, fresh noise per call) for origin, InterfaceGAN image and prediction, and
  their fusion module on (origin, template, maps). Their loader (`data_function.RefineData`) was
  never released; what it must do per item is counted at its least: unsup3d's four nets (Demo.run's
  cost) on the origin resized to 64 px, no extra generator call, no MTCNN crop, no PNG decoding.
  Their generator's `op` package compiles CUDA extensions at import; on CPU it is replaced by
  rosinality_op_cpu (the same names and signatures on latentedit.ops; tests/test_rosinality_op_cpu.py).

Weights are random in the released layouts (FusionConfig.sdgan(), a 256 px StyleGAN2 with
channel multiplier 2, unsup3d nf 64 / zdim 256): speed does not depend on their values.
--small runs tiny configurations of ours only (a smoke test of this script, no figures to record).
Results go to benchmarks/RESULTS.md by hand, with the machine line printed here.
"""
import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from generator_speed import machine_description  # noqa: E402  sibling scripts
from roofline import timed  # noqa: E402
import rosinality_op_cpu  # noqa: E402
from latentedit.edit.sdgan import SDGANSynthesizer  # noqa: E402
from latentedit.formats.sdgan import fusion_state_dict_for_sdgan  # noqa: E402
from latentedit.models.face3d import Face3D, Face3DConfig  # noqa: E402
from latentedit.models.fusion import FusionConfig, FusionNet  # noqa: E402
from latentedit.models.stylegan2 import Generator, GeneratorConfig  # noqa: E402


@torch.no_grad()
def rate(fn, images_per_call, iters, warmup):
    """Images per second of fn() (median of iters timed calls after warmup calls)."""
    return images_per_call / timed(fn, iters, warmup)


def their_fusion(checkout, state):
    sys.path.insert(0, str(checkout))
    from model import Semantic_Fusion_Network  # SD-GAN's module

    net = torch.nn.DataParallel(Semantic_Fusion_Network())
    net.load_state_dict(state)
    return net.module.eval()


def their_generator(checkout, ours):
    """SD-GAN's rosinality generator with our weights, or the reason it cannot run here. Its `op`
    package compiles CUDA extensions at import: on CPU our stand-in (rosinality_op_cpu) replaces it."""
    sys.path.insert(0, str(Path(checkout) / "pytorch_stylegan2"))
    if not torch.cuda.is_available():
        rosinality_op_cpu.install()
    try:
        from stylegan2_model import Generator as TheirGenerator
    except Exception as e:  # rosinality's ops compile CUDA extensions at import
        return None, f"pytorch_stylegan2 did not import ({type(e).__name__}: {str(e)[:120]})"
    from latentedit.formats.rosinality import generator_to_rosinality

    G = TheirGenerator(ours.img_resolution, 512, 8, channel_multiplier=2)
    G.load_state_dict(generator_to_rosinality(ours.cfg, ours.state_dict()), strict=False)
    return G.eval(), None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sdgan", help="path of an SD-GAN checkout (model.py, pytorch_stylegan2/); theirs skipped without")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--batch", type=int, default=8, help="our synthesis batch")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--small", action="store_true", help="tiny configurations of ours only (smoke test)")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.small:
        fcfg = FusionConfig(**{**FusionConfig.small().__dict__, "num_ws": 6})
        G = Generator(GeneratorConfig(resolution=16, channel_base=512, channel_max=32)).eval()
        f3 = Face3D(Face3DConfig(nf=16, zdim=16, nf_encoder=8, shading="diffuse", output_size=128)).eval()
    else:
        fcfg = FusionConfig.sdgan()
        G = Generator(GeneratorConfig(resolution=256)).eval()
        cfg = Face3DConfig.sdgan_demo()
        f3 = Face3D(cfg).eval()
    fusion = FusionNet(fcfg).eval()
    report = {"machine": machine_description(), "small": args.small}
    r = fcfg.resolution
    face, tpl, maps = torch.rand(1, 3, r, r) * 2 - 1, torch.rand(1, 3, r, r) * 2 - 1, torch.rand(1, 9, 128, 128) * 2 - 1
    report["fusion_ours"] = rate(lambda: fusion(face, tpl, maps), 1, args.iters, args.warmup)
    with torch.no_grad():
        tpl_feat = fusion.template_features(tpl)  # what synthesis does: a kind's template, once
    report["fusion_ours_template_once"] = rate(lambda: fusion(face, None, maps, template_feat=tpl_feat), 1,
                                               args.iters, args.warmup)
    synth = SDGANSynthesizer(G, fusion, f3, tpl[0], "mask")
    w = G.sample_w(args.batch, seed=0)
    p = torch.randn(args.batch, G.w_dim) * 0.1
    report["synthesis_ours"] = rate(lambda: synth(w, p, batch_size=args.batch), args.batch, args.iters, args.warmup)

    if args.sdgan and not args.small:
        theirs = their_fusion(args.sdgan, fusion_state_dict_for_sdgan(fusion)["model"])
        report["fusion_theirs"] = rate(lambda: theirs(face, tpl, maps), 1, args.iters, args.warmup)
        report["fusion_ratio"] = report["fusion_ours"] / report["fusion_theirs"]
        report["fusion_ratio_template_once"] = report["fusion_ours_template_once"] / report["fusion_theirs"]
        TG, why = their_generator(args.sdgan, G)
        if TG is None:
            report["synthesis_theirs"] = f"skipped: {why}"
        else:
            mean = G.w_avg[None]

            def one_image():  # test.py's loop body for one code, batch 1
                latent = w[:1, None].repeat(1, G.num_ws, 1)
                gt = p[:1, None]
                gen = lambda v: TG([v], truncation=0.5, input_is_latent=True, truncation_latent=mean)[0]  # noqa: E731
                origin = gen(latent)
                gen(latent + gt)
                x = torch.nn.functional.interpolate(origin, (64, 64), mode="bilinear", align_corners=False)
                f3.netD(x), f3.netA(x), f3.netL(x), f3.netV(x)  # unsup3d's four nets (Demo.run's cost)
                gen(latent + theirs(origin, tpl, maps) + gt)

            report["synthesis_theirs"] = rate(one_image, 1, args.iters, args.warmup)
            report["synthesis_ratio"] = report["synthesis_ours"] / report["synthesis_theirs"]
    for k, v in report.items():
        print(f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
