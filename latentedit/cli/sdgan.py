"""`latentedit synthesize --model BUNDLE` for a bundle of SD-GAN's released set (made by
`latentedit convert ... --sdgan-fusion`): test.py's maths (`latentedit.edit.sdgan`) into SD-GAN's
output layout:

    origins/0000.png ...              G(t(w))
    interfacegan_origins/0000.png ... G(t(w + p))
    predict_images/0000.png ...       G(t(w + p + offset))        t(v) = mean + psi (v - mean)
    records/0000.npy ...              per image [1 + num_ws, w_dim]: p, then the offset
    latents.json, interface.json      the codes w and priors p (SD-GAN JSON)
    predict_latents.npy               [N, num_ws, w_dim] t(w + p + offset), the edited images' codes
    manifest.json                     kind, settings (psi, mean latent source), files
    run.json                          the settings; a re-run with the same settings resumes

The files are written by `latentedit.edit.outputs` through `latentedit.runs.synthesize_images`
(as for our synthesis path): resumable, and split over torchrun's processes.
"""
from pathlib import Path

import click
import torch

from latentedit.errors import InputError


def synthesize_sdgan(model, kind, normal, n, seed, w_file, interface_file, truncation, mean_source, mean_samples,
                     mean_seed, normalize_output, precision, batch_size, out):
    from latentedit.cli.inputs import warning_lines
    from latentedit.cli.options import progress_bar, sampled_seeds
    from latentedit.formats.files import file_sha256
    from latentedit.edit.sdgan import SDGANSynthesizer
    from latentedit.formats import bundle, load_generator
    from latentedit.formats.latents import read_latents, read_priors
    from latentedit.formats.sdgan import SDGAN_PREFIX
    from latentedit.runs import synthesize_images
    from latentedit.runtime import fast_precision

    G = load_generator(model)
    if w_file is not None:
        if n is not None or seed is not None:
            raise InputError(f"--n / --seed are for sampling from seeds; the codes come from --w-file {w_file}")
        w = torch.from_numpy(read_latents(w_file, w_dim=G.w_dim, num_ws=G.num_ws))
    else:
        n, seed = sampled_seeds(n, seed)
        w = G.sample_w(n, seed=seed)  # untruncated: the synthesis truncates, as test.py does
    sampled = None if w_file is not None else f"sampled: --n {n}; the codes of a --w-file are read instead"
    priors = None if interface_file is None else torch.from_numpy(read_priors(interface_file, len(w), G.w_dim, sampled))
    precision = fast_precision(precision, note=lambda text: click.echo(text, err=True))  # after the input checks
    with warning_lines():  # a template resized to the fusion network's input
        synth = SDGANSynthesizer.load(model, kind, normal, G=G, truncation=truncation, mean_source=mean_source,
                                      mean_samples=mean_samples, mean_seed=mean_seed, precision=precision)
    if priors is None:
        synth.priors(G.broadcast_w(w[:1]))  # the clear error before any work
    out = Path(out)
    networks = bundle.read_manifest(model)["networks"]
    settings = {"command": "synthesize", "maths": "sdgan-test.py", "kind": synth.kind, "model": str(model),
                "generator_sha256": networks["G"]["sha256"],
                "fusion_sha256": networks[SDGAN_PREFIX + synth.kind]["sha256"],
                "truncation": synth.truncation, "mean_latent": synth.mean_source, "n": len(w), "seed": seed,
                "w_file": None if w_file is None else str(w_file),
                "w_sha256": None if w_file is None else file_sha256(w_file),
                "interface_file": None if interface_file is None else str(interface_file),
                "interface_sha256": None if interface_file is None else file_sha256(interface_file),
                "normalize_output": normalize_output, "batch_size": batch_size, "noise_mode": "const",
                # fp32 is not recorded, so runs written before --precision existed still resume
                **({} if precision == "fp32" else {"precision": precision})}

    def compute(batch):
        return synth(w[batch], None if priors is None else priors[batch], indices=batch, batch_size=len(batch))

    outputs, run, _ = synthesize_images(compute, len(w), out, batch_size, settings, normalize=normalize_output,
                                        progress=progress_bar,
                                        label=f"synthesizing {{todo}} of {{count}} images ({synth.kind}, SD-GAN)")
    if not run.finish():
        return
    p, offset = outputs.load_records(G.num_ws, G.w_dim, priors)
    final = synth.truncated(G.broadcast_w(w) + p[:, None] + offset)  # the sum and order of SDGANSynthesizer
    outputs.write_latents(w.numpy(), p.numpy(), final.numpy())
    manifest = {"format": "latentedit-synthesis", "version": 1, "maths": "sdgan-test.py", "kind": synth.kind,
                "model": str(model), "count": len(w),
                "settings": {"truncation": synth.truncation, "mean_latent": synth.mean_source, "seed": seed,
                             "w_file": None if w_file is None else str(w_file),
                             "interface_file": None if interface_file is None else str(interface_file),
                             "normalize_output": normalize_output, "noise_mode": "const", "precision": precision},
                "mean_latent_norm": round(float(synth.mean.norm()), 6),
                "latents": {"inputs": "latents.json", "priors": "interface.json", "edited": "predict_latents.npy",
                            "edited_is": "mean + psi * (w + prior + offset - mean), [N, num_ws, w_dim]"}}
    outputs.write_manifest(manifest)
    click.echo(f"wrote {len(w)} x 3 images ({synth.kind}, SD-GAN's test.py maths, psi {synth.truncation}, "
               f"{len(run.left)} new) to {out}/")
