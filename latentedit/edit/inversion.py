"""Projection (GAN inversion by optimisation): find W / W+ codes (and optionally per-layer noise)
whose images reconstruct given target images.

    result = project(G, targets, space="w+", steps=300, perceptual=lpips, identity=arcface)
    result.codes     # [N, num_ws, w_dim] (space "w+") or [N, w_dim] (space "w")
    result.history   # {"total": [steps, N], "pixel": ..., ...} per-sample losses at each step

Every loss is computed per sample and the batch loss is their sum, and Adam is element-wise, so a
batch gives the same codes as separate runs; random draws come from one generator per sample,
seeded with `seed` (or seeds[i]), so a run is deterministic and independent of the batching.

The schedule follows the NVlabs StyleGAN2-ADA projector: Adam(0.9, 0.999), lr with a linear ramp-up
over the first 5 % and a cosine ramp-down over the last 25 %, Gaussian exploration noise on the code
of scale w_std * 0.05 decaying quadratically to zero at 75 %, and (when noise is optimised) the
multi-scale autocorrelation penalty on the noise maps, which are re-normalised after every step.
"""
import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import torch
from torch.nn import functional as F

from latentedit.edit.imaging import resize_antialiased
from latentedit.edit.losses import evaluator_losses, identity_loss, perceptual_loss
from latentedit.errors import InputError

SPACES = ("w", "w+")
MODES = ("project", "encoder", "hybrid")
# Hybrid starts from the encoder's code, already near the answer: the NVlabs exploration noise and
# lr 0.1 (made for a start at w_avg) first throw it away. Tuned on 16 world renders (a seed the
# benchmark does not use): 75 steps at these settings beat 300 steps of projection from w_avg.
HYBRID_DEFAULTS = {"lr": 0.03, "initial_noise_factor": 0.0}


@dataclass
class ProjectionResult:
    codes: torch.Tensor                      # [N, w_dim] (w) or [N, num_ws, w_dim] (w+)
    history: Dict[str, torch.Tensor]         # name -> [steps, N] per-sample loss at each step
    noises: Optional[List[torch.Tensor]] = None  # optimised unit noise maps [N, 1, r, r] per layer
    space: str = "w+"
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Synthesis with per-sample noise maps


def noise_layers(G):
    """The synthesis layers that take a noise map, in the order the synthesis network runs them."""
    layers = []
    for block in G.synthesis.blocks():
        layers += [block.conv1] if block.in_channels == 0 else [block.conv0, block.conv1]
    return layers


def synthesize_with_noise(G, ws, noises=None):
    """ws [N, num_ws, w_dim] -> images [N, 3, R, R], differentiable in ws and in `noises` (unit
    noise maps [N, 1, r, r] per noise layer, scaled by each layer's noise_strength); noises=None
    uses the generator's constant noise (as noise_mode="const"). Non-fused convolutions
    throughout: one shared conv per batch, so each sample's maths is the same at any batch size."""
    layers = noise_layers(G)
    if noises is None:
        scaled = [layer.scaled_noise(ws.shape[0], "const") for layer in layers]
    else:
        if len(noises) != len(layers):
            raise InputError(f"expected {len(layers)} noise maps, got {len(noises)}")
        scaled = [n * layer.noise_strength for n, layer in zip(noises, layers)]
    per_block, k = [], 0
    for block in G.synthesis.blocks():
        per_block.append(scaled[k:k + block.num_conv])
        k += block.num_conv
    return G.synthesis.run_fast(ws, per_block, False, torch.float32)


def noise_regularizer(noises):
    """Per-sample multi-scale autocorrelation penalty [N]: for each map and each 2x average-pooled
    version of it down to 8 px, the squared mean product with its 1-pixel shift along x and y."""
    total = 0
    for n in noises:
        while True:
            total = total + (n * torch.roll(n, 1, dims=3)).mean((1, 2, 3)).square()
            total = total + (n * torch.roll(n, 1, dims=2)).mean((1, 2, 3)).square()
            if n.shape[2] <= 8:
                break
            n = F.avg_pool2d(n, 2)
    return total


@torch.no_grad()
def normalize_noise_(noises):
    """Zero mean, unit variance per sample and map, in place."""
    for n in noises:
        n -= n.mean((1, 2, 3), keepdim=True)
        n *= n.square().mean((1, 2, 3), keepdim=True).rsqrt()


def lr_schedule(t, rampup=0.05, rampdown=0.25):
    """Learning-rate factor at progress t in [0, 1): linear ramp-up, cosine ramp-down."""
    ramp = min(1.0, (1.0 - t) / rampdown) if rampdown > 0 else 1.0
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return ramp * (min(1.0, t / rampup) if rampup > 0 else 1.0)


@torch.no_grad()
def w_stats(G, samples=2000, seed=123):
    """Spread of the generator's W distribution: sqrt(E ||w - mean||^2) over `samples` codes."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn([samples, G.z_dim], generator=g).to(G.w_avg.device)
    w = G.mapping(z, update_w_avg=False)[:, 0]
    return float((w - w.mean(0)).square().sum(1).mean().sqrt())


# ---------------------------------------------------------------------------------------------
# Projection


def _init_codes(G, init, n, space):
    if init is None:
        w = G.w_avg.detach().float().reshape(1, 1, -1).repeat([n, 1, 1])  # [N, 1, w_dim]
    else:
        init = torch.as_tensor(init, dtype=torch.float32).to(G.w_avg.device)
        if init.shape[0] != n:
            raise InputError(f"init has {init.shape[0]} codes for {n} images")
        if init.ndim == 2 and init.shape[1] == G.w_dim:
            w = init[:, None]
        elif init.ndim == 3 and init.shape[1:] == (G.num_ws, G.w_dim):
            if space == "w":
                raise InputError("space 'w' needs init codes [N, w_dim], got W+ codes; project in 'w+' instead")
            w = init
        else:
            raise InputError(f"init must be [N, {G.w_dim}] or [N, {G.num_ws}, {G.w_dim}], got {list(init.shape)}")
        if not torch.isfinite(w).all():
            raise InputError("init codes contain NaN or infinite values")
    if space == "w+" and w.shape[1] == 1:
        w = w.repeat([1, G.num_ws, 1])
    return w.clone()  # [N, 1 or num_ws, w_dim]


def project(G, images, space="w+", steps=300, init=None, optimize_noise=False, *,
            perceptual=None, identity=None,
            pixel_weight=1.0, perceptual_weight=1.0, identity_weight=0.5, noise_weight=1e5,
            lr=0.1, lr_rampup=0.05, lr_rampdown=0.25, initial_noise_factor=0.05, noise_ramp=0.75,
            seed=0, progress: Optional[Callable] = None, w_std=None) -> ProjectionResult:
    """Optimises codes so that G(codes) reconstructs `images` [N, 3, R, R] in [-1, 1].

    Loss per sample: pixel_weight * MSE + perceptual_weight * perceptual distance + identity_weight *
    (1 - cos(e(x), e(y))) [+ noise_weight * the noise regulariser when optimize_noise].
    perceptual / identity: networks of the loss protocol (latentedit.edit.losses), paths to them, or
    None. The perceptual distance of LPIPS is the plain LPIPS distance, as NVlabs' projector uses it;
    for other feature networks (the attribute classifier) it is ||f(x) - f(y)||^2 / ||f(y)||^2,
    relative to the target's features, whose scale is not calibrated.
    init: None (start from G.w_avg) or codes [N, w_dim] / [N, num_ws, w_dim] (e.g. an encoder's).
    seed: an int (every sample's generator) or one seed per sample. progress(step, steps, losses [N])
    is called after every step. Returns the final codes (without exploration noise), the per-step
    loss history and, with optimize_noise, the unit noise maps to pass to `synthesize_with_noise`.
    """
    if space not in SPACES:
        raise InputError(f"space must be one of {SPACES}, got {space!r}")
    if steps < 1:
        raise InputError(f"steps must be >= 1, got {steps}")
    R = G.img_resolution
    if not torch.is_tensor(images) or images.ndim != 4 or tuple(images.shape[1:]) != (3, R, R):
        shape = list(images.shape) if torch.is_tensor(images) else type(images).__name__
        raise InputError(f"images must be a tensor [N, 3, {R}, {R}] in [-1, 1], got {shape}")
    device = G.w_avg.device
    target = images.detach().to(device=device, dtype=torch.float32)
    if not torch.isfinite(target).all():
        raise InputError("images contain NaN or infinite values")
    n = target.shape[0]
    seeds = [int(seed)] * n if isinstance(seed, int) else [int(s) for s in seed]
    if len(seeds) != n:
        raise InputError(f"got {len(seeds)} seeds for {n} images")
    gens = [torch.Generator().manual_seed(s) for s in seeds]

    def randn(shape):  # one draw per sample from its own generator -> [N, *shape]
        return torch.stack([torch.randn(shape, generator=g) for g in gens]).to(device)

    perceptual = perceptual_loss(perceptual, device) if perceptual_weight else None
    identity = identity_loss(identity, device) if identity_weight else None
    with torch.no_grad():
        target_f = perceptual.features(target) if perceptual is not None else None
        target_e = identity.embed(target) if identity is not None else None
    if initial_noise_factor > 0 and w_std is None:
        w_std = w_stats(G)

    w_opt = _init_codes(G, init, n, space).requires_grad_(True)  # [N, 1 or num_ws, w_dim]
    params = [w_opt]
    noises = None
    if optimize_noise:
        noises = [randn([1, layer.resolution, layer.resolution]).requires_grad_(True) for layer in noise_layers(G)]
        params += noises
    opt = torch.optim.Adam(params, betas=(0.9, 0.999), lr=lr)
    names = ["total", "pixel"] + (["perceptual"] if target_f is not None else []) \
        + (["identity"] if target_e is not None else []) + (["noise"] if optimize_noise else [])
    history = {k: torch.zeros([steps, n]) for k in names}

    for step in range(steps):
        t = step / steps
        for group in opt.param_groups:
            group["lr"] = lr * lr_schedule(t, lr_rampup, lr_rampdown)
        explore = randn(list(w_opt.shape[1:]))
        if initial_noise_factor > 0:
            explore = explore * (w_std * initial_noise_factor * max(0.0, 1.0 - t / noise_ramp) ** 2)
        else:
            explore = explore * 0
        ws = (w_opt + explore).expand([n, G.num_ws, G.w_dim])
        x = synthesize_with_noise(G, ws, noises)
        parts = {"pixel": (x - target).square().mean((1, 2, 3))}
        loss = pixel_weight * parts["pixel"]
        if target_f is not None:
            parts["perceptual"] = perceptual.distance(perceptual.features(x), target_f)
            loss = loss + perceptual_weight * parts["perceptual"]
        if target_e is not None:
            parts["identity"] = identity.distance(identity.embed(x), target_e)
            loss = loss + identity_weight * parts["identity"]
        if optimize_noise:
            parts["noise"] = noise_regularizer(noises)
            loss = loss + noise_weight * parts["noise"]
        grads = torch.autograd.grad(loss.sum(), params)  # only the codes/noise, never G's weights
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
        if optimize_noise:
            normalize_noise_(noises)
        with torch.no_grad():
            history["total"][step] = loss.detach().cpu()
            for k, v in parts.items():
                history[k][step] = v.detach().cpu()
        if progress is not None:
            progress(step + 1, steps, history["total"][step])

    codes = w_opt.detach()
    codes = codes[:, 0] if space == "w" else codes
    return ProjectionResult(codes=codes, history=history,
                            noises=[nz.detach() for nz in noises] if noises else None, space=space)


@torch.no_grad()
def reconstruct(G, codes, noises=None):
    """Images of projected codes ([N, w_dim] or [N, num_ws, w_dim]), with optimised noise if given."""
    return synthesize_with_noise(G, G.broadcast_w(codes), noises)


# ---------------------------------------------------------------------------------------------
# Encoder


def load_encoder(path, G=None, generator_hash=None):
    """The encoder of bundle folder `path` (eval mode), or of an e4e / pSp / ReStyle checkpoint file
    (formats/psp.py; a ReStyle one refines through G). InputError when `path` is neither or holds no
    encoder, or (G given) when its codes do not fit G or it was trained through another generator
    (the provenance `latentedit train encoder` writes names the generator's hash)."""
    from pathlib import Path

    from latentedit.formats import bundle
    from latentedit.formats.encoder import has_encoder, read_encoder

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such encoder bundle folder or checkpoint file")
    if path.is_file():
        from latentedit.formats.psp import load_psp_encoder

        encoder = load_psp_encoder(path, G=G, device=G.w_avg.device if G is not None else "cpu")
        if G is not None:
            _check_fits(getattr(encoder, "encoder", encoder), G)
        return encoder
    if not has_encoder(path):
        what = "" if bundle.is_bundle(path) else " is not a bundle folder, so it"
        raise InputError(f"{path}{what} has no encoder; train one with `latentedit train encoder` "
                         "or pass --encoder BUNDLE (encoder=... in Python)")
    encoder = read_encoder(path, device=G.w_avg.device if G is not None else "cpu")
    provenance = bundle.read_manifest(path).get("provenance", {}).get("encoder", {})
    provenance = provenance if isinstance(provenance, dict) else {}
    if G is not None:
        _check_fits(encoder, G)
        trained_for = provenance.get("generator")
        if trained_for:
            from latentedit.formats.directions import made_for

            if not made_for(G, trained_for, generator_hash):
                raise InputError(f"the encoder in {path} was trained through another generator; "
                                 "train one for this generator with `latentedit train encoder`")
    if encoder.cfg.input_channels != 6:
        return encoder
    # a ReStyle encoder refines through G (default: the bundle's own) as often as it was trained to
    from latentedit.formats import load_generator
    from latentedit.formats.psp import RESTYLE_STEPS
    from latentedit.models.restyle import ReStyle

    if G is None:
        G = load_generator(path).eval().requires_grad_(False)
    steps = provenance.get("restyle_steps", RESTYLE_STEPS)
    return ReStyle(encoder, G, steps=steps if isinstance(steps, int) else RESTYLE_STEPS).eval()


def _check_fits(encoder, G):
    cfg = encoder.cfg
    if cfg.num_ws != G.num_ws or cfg.w_dim != G.w_dim:
        raise InputError(f"the encoder makes {cfg.num_ws} x {cfg.w_dim} W+ codes, the generator takes "
                         f"{G.num_ws} x {G.w_dim}; use an encoder trained for this generator")


def encode_images(encoder, G, images, batch_size=32):
    """W+ codes [N, num_ws, w_dim] of `encoder` (an `Encoder` or a `ReStyle`) for images [N, 3, H, W]
    in [-1, 1] (any square size; resized to the encoder's input resolution). Runs in eval mode without
    gradients (the encoder's training flag is restored); codes come back on G's device."""
    from latentedit.models.encoder import Encoder
    from latentedit.models.restyle import ReStyle

    if not isinstance(encoder, (Encoder, ReStyle)):
        raise InputError(f"encode_images needs an Encoder or a ReStyle, got {type(encoder).__name__}")
    _check_fits(getattr(encoder, "encoder", encoder), G)
    if not torch.is_tensor(images) or images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
        shape = list(images.shape) if torch.is_tensor(images) else type(images).__name__
        raise InputError(f"images must be a tensor [N, 3, R, R] in [-1, 1], got {shape}")
    if not torch.isfinite(images).all():
        raise InputError("images contain NaN or infinite values")
    network = getattr(encoder, "encoder", encoder)
    device = network.w_avg.device
    # a ReStyle resizes itself (and pools its reconstructions) at each step
    prepare = (lambda x: x) if network is not encoder else (lambda x: resize_antialiased(x, network.cfg.resolution))
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.no_grad():
            parts = [encoder(prepare(chunk.to(device=device, dtype=torch.float32)))
                     for chunk in images.split(max(int(batch_size), 1))]
    finally:
        encoder.train(was_training)
    codes = torch.cat(parts) if parts else images.new_zeros([0, G.num_ws, G.w_dim])
    return codes.to(G.w_avg.device)  # [N, num_ws, w_dim]


def to_w(codes, encoder=None):
    """One W code [N, w_dim] from encoder codes: W codes as they are; W+ codes [N, L, w_dim] from an
    `Encoder` in mode "w" or at progressive stage 0 (every layer the same code) -> layer 0, exactly;
    any other W+ codes -> the mean over the layers (the W code nearest to them in the L2 sense)."""
    if codes.ndim == 2:
        return codes
    from latentedit.models.encoder import Encoder

    if isinstance(encoder, Encoder) and (encoder.cfg.mode == "w" or encoder.progressive_stage == 0):
        return codes[:, 0]
    return codes.mean(1)


# ---------------------------------------------------------------------------------------------
# Inversion front end


def _check_images_argument(images):
    """invert's `images`: a float tensor [N >= 1, 3, R, R] of finite values, or image paths."""
    from pathlib import Path

    if torch.is_tensor(images):
        shape = list(images.shape)
        if images.ndim != 4 or shape[0] == 0 or shape[1] != 3 or shape[2] != shape[3] or shape[2] == 0:
            raise InputError(f"images must be a tensor [N, 3, R, R] (N >= 1) in [-1, 1], got shape {shape}")
        if not images.is_floating_point():
            raise InputError(f"images must be floats in [-1, 1], got {images.dtype} (uint8 pixels: x / 127.5 - 1)")
        if not torch.isfinite(images).all():
            raise InputError("images contain NaN or infinite values")
    elif not (isinstance(images, (str, Path)) or isinstance(images, (list, tuple)) and images
              and all(isinstance(p, (str, Path)) for p in images)):
        raise InputError("images must be a tensor [N, 3, R, R] in [-1, 1], an image file or folder, or a "
                         f"non-empty list of them; got {type(images).__name__}")


def invert(images, mode="project", G=None, evaluators=None, encoder=None, space="w+", steps=300, seed=0,
           optimize_noise=False, progress=None, return_result=False, perceptual=None, identity=None, *,
           pixel_weight=None, perceptual_weight=None, identity_weight=None, noise_weight=None, lr=None,
           lr_rampup=None, lr_rampdown=None, initial_noise_factor=None, noise_ramp=None):
    """Latent codes for `images`: a tensor [N, 3, R, R] in [-1, 1], or image paths / a folder
    (read with `latentedit.formats.image_input.read_images`, resized / centre-cropped to G's size).

    mode: "project" (optimise from w_avg), "encoder" (the encoder's codes, no optimisation),
    "hybrid" (optimise from the encoder's codes: `steps` of projection initialised with them, with
    HYBRID_DEFAULTS unless the options below set them).
    pixel_weight ... noise_ramp: `project`'s loss weights and schedule (None: its defaults, or
    HYBRID_DEFAULTS in mode "hybrid").
    G: a Generator, a model path (bundle folder, rosinality .pt, NVlabs .pkl) or None for the
    bundled default (or, with encoder an e4e / pSp / ReStyle checkpoint file, that file's generator).
    encoder: an `Encoder`, a bundle folder holding one or such a checkpoint file, any callable images
    [N, 3, R, R] -> codes [N, w_dim] / [N, num_ws, w_dim], or None: the encoder of G's bundle
    (G given as a path or None); an InputError says when there is none.
    perceptual / identity: the networks of those losses (latentedit.edit.losses: e.g. LPIPS or
    "vgg16-397923af.pth:vgg", ArcFace or "model_ir_se50.pth"); evaluators: {"attributes": ...,
    "identity": ...}, the same from a bundle, used where perceptual / identity are None (pixel loss
    alone without any). space "w" with a W+ encoder: see `to_w` (layer 0 for a mode-"w" or
    stage-0 encoder, else the mean over the layers).
    Returns codes [N, num_ws, w_dim] (w+) or [N, w_dim] (w); or, with return_result=True, a
    ProjectionResult (mode encoder: empty history; hybrid: extra["init"] holds the encoder codes).
    """
    from pathlib import Path

    if mode not in MODES:
        raise InputError(f"mode must be one of {MODES}, got {mode!r}")
    if space not in SPACES:
        raise InputError(f"space must be one of {SPACES}, got {space!r}")
    _check_images_argument(images)  # before a model is loaded: a wrong argument fails at once
    model_path = None
    if G is None and isinstance(encoder, (str, Path)) and Path(encoder).is_file():
        G = encoder  # an e4e / pSp / ReStyle checkpoint holds its generator
    if G is None or isinstance(G, (str, Path)):
        from latentedit.model import load_model

        model = load_model(G)  # None: the bundled default
        model_path, G = Path(model.source), model.G
    losses = None
    if mode != "encoder":  # checked (and files read) before any image is
        losses = evaluator_losses(evaluators, perceptual, identity, G.w_avg.device)
    if mode in ("encoder", "hybrid"):
        if encoder is None and model_path is None:
            raise InputError(f"mode {mode!r} needs an encoder: pass encoder=... (an Encoder or a bundle folder "
                             "holding one), or G as a bundle path whose encoder is used")
        if encoder is None or isinstance(encoder, (str, Path)):
            encoder = load_encoder(encoder if encoder is not None else model_path, G)
    if not torch.is_tensor(images):
        from latentedit.formats.image_input import read_images

        images = read_images(images, G.img_resolution)
    init = None
    if mode in ("encoder", "hybrid"):
        from latentedit.models.encoder import Encoder
        from latentedit.models.restyle import ReStyle

        if isinstance(encoder, (Encoder, ReStyle)):
            init = encode_images(encoder, G, images)
        else:
            with torch.no_grad():
                init = torch.as_tensor(encoder(images.to(G.w_avg.device)), dtype=torch.float32)
            G.broadcast_w(init)  # validates shape and values
        if init.shape[0] != images.shape[0]:
            raise InputError(f"the encoder returned {init.shape[0]} codes for {images.shape[0]} images")
        init = to_w(init, encoder) if space == "w" else G.broadcast_w(init)
        if mode == "encoder":
            if return_result:
                return ProjectionResult(codes=init, history={}, space=space, extra={"mode": mode})
            return init
    given = dict(pixel_weight=pixel_weight, perceptual_weight=perceptual_weight, identity_weight=identity_weight,
                 noise_weight=noise_weight, lr=lr, lr_rampup=lr_rampup, lr_rampdown=lr_rampdown,
                 initial_noise_factor=initial_noise_factor, noise_ramp=noise_ramp)
    options = {**(HYBRID_DEFAULTS if mode == "hybrid" else {}), **{k: v for k, v in given.items() if v is not None}}
    result = project(G, images, space=space, steps=steps, init=init, optimize_noise=optimize_noise,
                     perceptual=losses[0], identity=losses[1], seed=seed, progress=progress, **options)
    result.extra["mode"] = mode
    if init is not None:
        result.extra["init"] = init
    return result if return_result else result.codes
