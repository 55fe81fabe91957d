"""SD-GAN's released networks on CPU: ours vs SD-GAN's own modules, same weights, one run.

    python benchmarks/sdgan_speed.py --sdgan ~/src/SD-GAN [--threads 2] [--json out.json]

Two figures, each with SD-GAN's number beside ours and their ratio (`*_ratio_*` = ours / theirs):

- fusion network (img/s): `model.Semantic_Fusion_Network` from the checkout given by --sdgan (its
  locally connected layers broadcast a 256 MiB product per sample), batch 1 as test.py runs it,
  vs our `FusionNet` loaded with the same state dict (the issue's goal: >= 3x). Rows: the plain
  module (`fusion_ours_module`, whole forward); per precision (fp32, bf16) `FusionNet.for_inference`
  (BatchNorms folded, channels_last; bf16 convolutions) whole forward at batch 1, per image as
  synthesis runs it (a kind's template features computed once) at batch 1, and at --batch;
- whole synthesis (img/s): test.py's per-image loop vs `latentedit.edit.sdgan.SDGANSynthesizer`
  at --batch, fp32 and bf16 (goal: >= 5x). Their loop body, batch 1, two readings:
  `synthesis_theirs` as test.py and its hparams imply: the loader (`data_function.RefineData`, never
  released) is handed the generator and `is_real = False`, and the fusion network's face is the
  loader's, not test.py's `origins`, so per item it makes the face with one generator call and its
  canonical maps with unsup3d's four nets (Demo.run's cost, on the face resized to 64 px; no MTCNN
  crop, no PNG decoding counted); then test.py's three calls of
  `pytorch_stylegan2/stylegan2_model.Generator` through infer_face.generate_from_synthesis
  (truncation 0.5, fresh noise per call) for origin, InterfaceGAN image and prediction, and their
  fusion module on (face, template, maps), outside torch.no_grad as test.py runs it (the forward
  records autograd). `synthesis_theirs_least`: the loader's generator call left out and everything
  under no_grad, the most favourable reading for theirs. Neither side writes PNGs here.
  Their generator's `op` package compiles CUDA extensions at import; on CPU it is replaced by
  rosinality_op_cpu (the same names and signatures on latentedit.ops; tests/test_rosinality_op_cpu.py),
  or with --their-ops native imported without the compile, running their own CPU code paths.

Weights are random in the released layouts (FusionConfig.sdgan(), a 256 px StyleGAN2 with
channel multiplier 2, unsup3d nf 64 / zdim 256): speed does not depend on their values.
--small runs tiny configurations of ours only (a smoke test of this script, no figures to record).
Results go to benchmarks/RESULTS.md by hand, with the machine line printed here.
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from generator_speed import machine_description  # noqa: E402  sibling scripts
import rosinality_op_cpu  # noqa: E402
from latentedit.edit.sdgan import CPU_FUSION_CHUNK, SDGANSynthesizer  # noqa: E402
from latentedit.formats.sdgan import fusion_state_dict_for_sdgan  # noqa: E402
from latentedit.models.face3d import Face3D, Face3DConfig  # noqa: E402
from latentedit.models.fusion import PRECISIONS, FusionConfig, FusionNet  # noqa: E402
from latentedit.models.stylegan2 import Generator, GeneratorConfig  # noqa: E402


@torch.no_grad()
def rates(calls, iters, warmup):
    """{name: (fn, images per call)} -> {name: images per second}, the median of iters timed calls
    after warmup calls each; the calls take turns, so a change of load on a shared machine touches
    every figure alike (the ratios of one run are what count)."""
    for fn, _ in calls.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in calls}
    for _ in range(iters):
        for name, (fn, _) in calls.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: calls[name][1] / statistics.median(times[name]) for name in calls}


def their_fusion(checkout, state):
    sys.path.insert(0, str(checkout))
    from model import Semantic_Fusion_Network  # SD-GAN's module

    net = torch.nn.DataParallel(Semantic_Fusion_Network())
    net.load_state_dict(state)
    return net.module.eval()


def their_generator(checkout, ours, their_ops="ours"):
    """SD-GAN's rosinality generator with our weights, or the reason it cannot run here. Its `op`
    package compiles CUDA extensions at import; on CPU, their_ops "ours": our stand-in
    (rosinality_op_cpu) replaces it; "native": their own package is imported with the compile
    skipped (torch.utils.cpp_extension.load stubbed during the import), so their own CPU code
    paths run (upfirdn2d_native, fused_leaky_relu's CPU branch; the CUDA kernels are never called)."""
    sys.path.insert(0, str(Path(checkout) / "pytorch_stylegan2"))
    if not torch.cuda.is_available() and their_ops == "ours":
        rosinality_op_cpu.install()
    import torch.utils.cpp_extension as cpp_extension

    compile_extension = cpp_extension.load
    if not torch.cuda.is_available() and their_ops == "native":
        cpp_extension.load = lambda *args, **kwargs: None
    try:
        from stylegan2_model import Generator as TheirGenerator
    except Exception as e:  # rosinality's ops compile CUDA extensions at import
        return None, f"pytorch_stylegan2 did not import ({type(e).__name__}: {str(e)[:120]})"
    finally:
        cpp_extension.load = compile_extension
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
    ap.add_argument("--their-ops", choices=["ours", "native"], default="ours",
                    help="their generator's ops on CPU: our stand-in (default) or their own CPU code")
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
    report = {"machine": machine_description(), "small": args.small, "threads": torch.get_num_threads()}
    r, B = fcfg.resolution, args.batch
    face, tpl, maps = torch.rand(1, 3, r, r) * 2 - 1, torch.rand(1, 3, r, r) * 2 - 1, torch.rand(1, 9, 128, 128) * 2 - 1
    faces, maps_b = face.repeat(B, 1, 1, 1), maps.repeat(B, 1, 1, 1)
    theirs = None
    if args.sdgan and not args.small:
        theirs = their_fusion(args.sdgan, fusion_state_dict_for_sdgan(fusion)["model"])
    calls = {} if theirs is None else {"fusion_theirs": (lambda: theirs(face, tpl, maps), 1)}
    calls["fusion_ours_module"] = (lambda: fusion(face, tpl, maps), 1)  # the plain module, whole forward
    for precision in PRECISIONS:  # as synthesis runs it: FusionNet.for_inference, a kind's template once
        net = fusion.for_inference(precision)
        with torch.no_grad():
            feat = net.template_features(tpl)
        calls[f"fusion_ours_{precision}"] = (lambda net=net: net(face, tpl, maps), 1)
        calls[f"fusion_ours_{precision}_template_once"] = (lambda net=net, f=feat: net(face, None, maps, template_feat=f), 1)
        calls[f"fusion_ours_{precision}_template_once_batch{B}"] = (  # in chunks, as SDGANSynthesizer runs it
            lambda net=net, f=feat: [net(faces[i:i + CPU_FUSION_CHUNK], None, maps_b[i:i + CPU_FUSION_CHUNK],
                                         template_feat=f) for i in range(0, B, CPU_FUSION_CHUNK)], B)
    report.update(rates(calls, args.iters, args.warmup))

    w = G.sample_w(B, seed=0)
    p = torch.randn(B, G.w_dim) * 0.1
    calls = {f"synthesis_ours_{precision}": (lambda s=SDGANSynthesizer(G, fusion, f3, tpl[0], "mask", precision=precision):
                                             s(w, p, batch_size=B), B) for precision in PRECISIONS}
    TG, why = their_generator(args.sdgan, G, args.their_ops) if theirs is not None else (None, "no --sdgan checkout")
    report["their_ops"] = args.their_ops
    if TG is None:
        report["synthesis_theirs"] = f"skipped: {why}"
    else:
        mean = G.w_avg[None]

        def one_image(as_written):  # test.py's loop body for one code, batch 1 (see the docstring)
            latent = w[:1, None].repeat(1, G.num_ws, 1)
            gt = p[:1, None]
            gen = lambda v: TG([v], truncation=0.5, input_is_latent=True, truncation_latent=mean)[0]  # noqa: E731
            origin = gen(latent)
            face = gen(latent) if as_written else origin  # the loader's face: one more call
            gen(latent + gt)
            x = torch.nn.functional.interpolate(face, (64, 64), mode="bilinear", align_corners=False)
            f3.netD(x), f3.netA(x), f3.netL(x), f3.netV(x)  # unsup3d's four nets (Demo.run's cost)
            with torch.set_grad_enabled(as_written):
                offset = theirs(face, tpl, maps)
            gen(latent + offset.detach() + gt)

        calls["synthesis_theirs"] = (lambda: one_image(True), 1)
        calls["synthesis_theirs_least"] = (lambda: one_image(False), 1)
    report.update(rates(calls, args.iters, args.warmup))
    for theirs_name in ("fusion_theirs", "synthesis_theirs", "synthesis_theirs_least"):
        if isinstance(report.get(theirs_name), float):
            kind, reading = theirs_name.split("_theirs")
            for name in [k for k in report if k.startswith(f"{kind}_ours")]:
                report[name.replace("_ours", "_ratio") + reading] = report[name] / report[theirs_name]
    for k, v in report.items():
        print(f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
