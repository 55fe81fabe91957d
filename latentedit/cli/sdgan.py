"""`latentedit synthesize --model BUNDLE` for a bundle of SD-GAN's released set (made by
`latentedit convert ... --sdgan-fusion`): test.py's maths (`latentedit.edit.sdgan`) into SD-GAN's
output layout:

    origins/0000.png ...              G(t(w))
    interfacegan_origins/0000.png ... G(t(w + p))
    predict_images/0000.png ...       G(t(w + p + offset))        t(v) = mean + psi (v - mean)
    latents.json, interface.json      the codes w and priors p (SD-GAN JSON)
    predict_latents.npy               [N, num_ws, w_dim] t(w + p + offset), the edited images' codes
    manifest.json                     kind, settings (psi, mean latent source), files
"""
from pathlib import Path

import click
import torch

from latentedit.errors import InputError


def synthesize_sdgan(model, kind, normal, n, seed, w_file, interface_file, truncation, mean_source, mean_samples,
                     mean_seed, normalize_output, batch_size, out):
    from latentedit.cli.synthesize import _compact_json
    from latentedit.edit.sdgan import SDGANSynthesizer, save_images
    from latentedit.formats import load_generator
    from latentedit.formats.atomic import write_text
    from latentedit.formats.latents import read_latents, read_priors, write_latents

    G = load_generator(model)
    if w_file is not None:
        if n is not None or seed is not None:
            raise InputError(f"--n / --seed are for sampling from seeds; the codes come from --w-file {w_file}")
        w = torch.from_numpy(read_latents(w_file, w_dim=G.w_dim, num_ws=G.num_ws))
    else:
        n, seed = 16 if n is None else n, 0 if seed is None else seed
        if n < 1 or not 0 <= seed or seed + n > 2 ** 32:
            raise InputError(f"--n must be >= 1 and seeds {seed}..{seed + n - 1} in [0, 2^32)")
        w = G.sample_w(n, seed=seed)  # untruncated: the synthesis truncates, as test.py does
    priors = None if interface_file is None else torch.from_numpy(read_priors(interface_file, len(w), G.w_dim))
    synth = SDGANSynthesizer.load(model, kind, normal, G=G, truncation=truncation, mean_source=mean_source,
                                  mean_samples=mean_samples, mean_seed=mean_seed)
    if priors is None:
        synth.priors(G.broadcast_w(w[:1]))  # the clear error before any work
    out = Path(out)
    parts = []
    batches = [list(range(i, min(i + batch_size, len(w)))) for i in range(0, len(w), batch_size)]
    with click.progressbar(batches, label=f"synthesizing {len(w)} images ({synth.kind}, SD-GAN)", file=None) as bar:
        for batch in bar:
            res = synth(w[batch], None if priors is None else priors[batch], indices=batch, batch_size=len(batch))
            save_images(out, res, batch, normalize=normalize_output)
            parts.append((res.prior, synth.truncated(res.latents)))
    p, final = (torch.cat(t) for t in zip(*parts))
    write_latents(out / "latents.json", w.numpy())
    write_latents(out / "interface.json", p.numpy())
    write_latents(out / "predict_latents.npy", final.numpy())
    manifest = {"format": "latentedit-synthesis", "version": 1, "maths": "sdgan-test.py", "kind": synth.kind,
                "model": str(model), "count": len(w),
                "settings": {"truncation": synth.truncation, "mean_latent": synth.mean_source, "seed": seed,
                             "w_file": None if w_file is None else str(w_file),
                             "interface_file": None if interface_file is None else str(interface_file),
                             "normalize_output": normalize_output, "noise_mode": "const"},
                "mean_latent_norm": round(float(synth.mean.norm()), 6),
                "latents": {"inputs": "latents.json", "priors": "interface.json", "edited": "predict_latents.npy",
                            "edited_is": "mean + psi * (w + prior + offset - mean), [N, num_ws, w_dim]"}}
    write_text(out / "manifest.json", _compact_json(manifest) + "\n")
    click.echo(f"wrote {len(w)} x 3 images ({synth.kind}, SD-GAN's test.py maths, psi {synth.truncation}) to {out}/")
