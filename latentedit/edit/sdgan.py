"""SD-GAN's released models run with the maths of its `test.py`.

test.py (through pytorch_stylegan2/stylegan2_infer_pytorch.py) computes, for a code w and its
interface vector p (the prior, one row of the interface JSON), each repeated over the W+ layers:

    t(v)    = mean + psi * (v - mean)         psi = 0.5, toward a mean latent
    origin  = G(t(w))                          -> origins/
    prior   = G(t(w + p))                      -> interfacegan_origins/
    offset  = fusion(origin, template, canonical 3D maps of origin)
    image   = G(t(w + p + offset))             -> predict_images/

The truncation applies to the whole sum, so the prior and the offset are scaled by psi too.
test.py's mean latent is `g_ema.mean_latent(4096)`, drawn unseeded (a different mean each run);
here its source is a setting: "latent_avg" (the file's stored running mean of w, the default:
reproducible) or "sampled" (the mean of `samples` mapped z drawn from `seed`, test.py's recipe made
repeatable). psi = 1 is today's untruncated edit G(w + p + offset).

Two differences from test.py, both deliberate: the generator's stored noise buffers are used for
every image (test.py draws fresh noise per call, so its three images also differ by noise), and
the origin goes to the 3D encoder as a float image (SD-GAN's unreleased loader passed an 8-bit
image after an MTCNN face crop; generated faces are aligned already).
"""
import torch
import torch.nn.functional as F

from latentedit.edit.discrete import SynthesisResult, fixed_template_features, prior_basis, resolve_kind
from latentedit.edit.imaging import resize
from latentedit.errors import InputError
from latentedit.models.fusion import PRECISIONS
from latentedit.models.layers import version_key
from latentedit.models.stylegan2 import truncate

MEAN_SOURCES = ("latent_avg", "sampled")
TRUNCATION = 0.5       # test.py's psi
MEAN_SAMPLES = 4096    # test.py's num_truncation_mean
# The released fusion network on CPU runs fastest per image at batch 2-4 (AMD Zen 4, 2 threads:
# 0.13 s per image at 2 or 4, 0.15 at 1, 0.16 at 8: the identity branch's 256 px activations
# leave the cache at larger batches); synthesis batches are cut into chunks this size for it.
CPU_FUSION_CHUNK = 4


def mean_latent(G, source="latent_avg", samples=MEAN_SAMPLES, seed=0):
    """[w_dim] the point truncation pulls toward: the generator's stored w_avg (a rosinality
    file's latent_avg), or the mean of `samples` mapped z ~ N(0, I) drawn from `seed`."""
    if source == "latent_avg":
        return G.w_avg.detach().clone()
    if source != "sampled":
        raise InputError(f"mean latent source must be one of {MEAN_SOURCES}, got {source!r}")
    if samples < 1:
        raise InputError(f"mean latent samples must be >= 1, got {samples}")
    z = torch.randn([samples, G.z_dim], generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return G.mapping(z.to(G.w_avg.device), update_w_avg=False)[:, 0].mean(0)


def face3d_input(images, size):
    """Images [N, 3, R, R] -> the 3D encoder's input as unsup3d's Demo makes it: clamped to the
    image range, one bilinear resize (align_corners=False, no antialiasing) to size x size."""
    x = images.clamp(-1, 1)
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, (size, size), mode="bilinear", align_corners=False)


class SDGANSynthesizer:
    """G + SD-GAN fusion network + 3D encoder + templates for one kind, with test.py's maths.

    templates [K, 3, R, R] in [-1, 1]: sample i of a run uses template i % K (SD-GAN's template
    folders usually hold one image). normal / intercept / distance: an optional InterfaceGAN
    boundary for priors when no interface vectors are given (SD-GAN ships none). precision: "fp32"
    or "bf16", the generator's and the fusion network's convolutions (the generator's
    compute_dtype, FusionNet.for_inference, whose template branch stays fp32): about 2x faster on
    CPUs with AVX-512 BF16 or AMX; images >= 40 dB PSNR from fp32's, offsets within ~1% of theirs."""

    def __init__(self, G, fusion, face3d, templates, kind, truncation=TRUNCATION, mean=None,
                 normal=None, intercept=0.0, distance=None, precision="fp32"):
        if fusion.cfg.num_ws != G.num_ws or fusion.cfg.w_dim != G.w_dim:
            raise InputError(f"the {kind} fusion network predicts {fusion.cfg.num_ws} x {fusion.cfg.w_dim} offsets, "
                             f"the generator has {G.num_ws} x {G.w_dim} W+ codes")
        if not 0 < float(truncation) <= 1:
            raise InputError(f"truncation must be in (0, 1], got {truncation}")
        t = torch.as_tensor(templates, dtype=torch.float32)
        t = t[None] if t.ndim == 3 else t
        if t.ndim != 4 or t.shape[1] != 3 or len(t) == 0 or not torch.isfinite(t).all():
            raise InputError(f"templates must be finite RGB images [K, 3, H, W], got {list(t.shape)}")
        self.G, self.fusion, self.face3d = G.eval(), fusion.eval(), face3d.eval()
        self.kind, self.truncation = kind, float(truncation)
        self.templates = resize(t, fusion.cfg.resolution)
        self._template_feat = {}  # fixed_template_features' cache
        if precision not in PRECISIONS:
            raise InputError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        self.precision, self._inference_net = precision, {}
        self.mean = (G.w_avg if mean is None else torch.as_tensor(mean, dtype=torch.float32)).reshape(-1).detach()
        if self.mean.numel() != G.w_dim:
            raise InputError(f"mean latent has {self.mean.numel()} values, the generator's W has {G.w_dim}")
        self.normal, self.intercept, self.distance = normal, float(intercept), distance
        self.mean_source = "latent_avg" if mean is None else "given"

    @classmethod
    def load(cls, bundle, kind, normal=False, G=None, truncation=None, mean_source=None, mean_samples=None,
             mean_seed=0, boundary=None, distance=None, intercept=0.0, precision="fp32"):
        """From a bundle made by `latentedit convert ... --sdgan-fusion` (see
        `latentedit.formats.sdgan.convert_sdgan_release`); None settings take the stored ones.
        boundary (a Direction, a W vector or an InterfaceGAN .npy path) with `distance` (and the
        plane's intercept): priors for calls without interface vectors."""
        from latentedit.formats import load_generator
        from latentedit.formats.evaluators import load_evaluators
        from latentedit.formats.sdgan import read_sdgan_network

        kind = resolve_kind(kind, normal)
        G = G if G is not None else load_generator(bundle)
        net, settings = read_sdgan_network(bundle, kind)
        face3d = load_evaluators(bundle, ["face3d"])["face3d"]
        source = settings["mean_latent"] if mean_source is None else mean_source
        samples = settings["mean_samples"] if mean_samples is None else mean_samples  # 0 is refused, not the default
        if mean_samples is not None and source != "sampled":  # not silently unused
            raise InputError(f"mean latent samples apply to the sampled mean latent (--mean-latent sampled), "
                             f"not to {source}")
        mean = mean_latent(G, source, samples, mean_seed)
        psi = settings["truncation"] if truncation is None else truncation
        if isinstance(boundary, (str, bytes)) or hasattr(boundary, "__fspath__"):
            from latentedit.edit.directions import Direction

            boundary = Direction.load(boundary, space="w")
        if (boundary is None) != (distance is None):
            raise InputError("a boundary prior needs both the boundary and the target distance")
        normal = getattr(boundary, "vector", boundary)
        synth = cls(G, net, face3d, settings["templates"], kind, psi, mean, normal, intercept, distance, precision)
        synth.mean_source = source if source == "latent_avg" else f"sampled({samples}, seed={mean_seed})"
        return synth

    def priors(self, w):
        """Prior p [N, w_dim] from the boundary, when one was given; else a clear error."""
        if self.normal is None or self.distance is None:
            raise InputError(f"no prior for {self.kind}: SD-GAN ships no boundary; pass its interface file "
                             "(--interface-file data/<kind>_interfacegan_test_1000.json) or a boundary")
        return prior_basis(w, self.normal, self.intercept, self.distance)

    def truncated(self, ws):
        """t(ws) = mean + psi * (ws - mean) on every layer."""
        return truncate(ws, self.mean.to(ws), self.truncation)

    def offsets(self, origin, indices):
        """Origins [N, 3, R, R] (sample numbers `indices`) -> fusion offsets [N, num_ws, w_dim]."""
        maps = self.face3d(face3d_input(origin, self.face3d.cfg.image_size))["maps"]
        face = resize(origin, self.fusion.cfg.resolution)
        pick = torch.as_tensor(indices) % len(self.templates)
        if torch.is_grad_enabled() or self.fusion.training:
            return self.fusion(face, self.templates[pick].to(face), maps)
        net = self.inference_fusion()
        self.templates = self.templates.to(face.device)  # moved once: a copy per call would miss the cache
        feat = fixed_template_features(net, self.templates, self._template_feat)[pick.to(face.device)]
        chunk = CPU_FUSION_CHUNK if face.device.type == "cpu" else len(face)
        return torch.cat([net(face[i:i + chunk], None, maps[i:i + chunk], template_feat=feat[i:i + chunk])
                          for i in range(0, len(face), chunk)])

    def inference_fusion(self):
        """self.fusion.for_inference(self.precision), made once and again when the fusion network's
        weights change (every time for inference tensors, which keep no version)."""
        tensors = [*self.fusion.parameters(), *self.fusion.buffers()]
        key = tuple(version_key(t) for t in tensors)
        if None in key:
            return self.fusion.for_inference(self.precision)
        if self._inference_net.get("key") != key:
            self._inference_net.update(key=key, net=self.fusion.for_inference(self.precision))
        return self._inference_net["net"]

    @torch.no_grad()
    def __call__(self, w, prior=None, indices=None, batch_size=16):
        """w [N, w_dim] or [N, num_ws, w_dim]; prior [N, w_dim] (default: from the boundary);
        indices [N] the samples' numbers in the run (template choice; default 0..N-1).
        -> SynthesisResult whose `latents` are the untruncated sums; `truncated(result.latents)`
        are the codes the edited images were made from."""
        ws = self.G.broadcast_w(w)
        prior = self.priors(ws) if prior is None else torch.as_tensor(prior, dtype=torch.float32).to(ws.device)
        if prior.shape != (len(ws), self.G.w_dim) or not torch.isfinite(prior).all():
            raise InputError(f"prior must be [{len(ws)}, {self.G.w_dim}] finite values, got {list(prior.shape)}")
        indices = list(range(len(ws))) if indices is None else list(indices)
        if not len(ws) or len(indices) != len(ws):  # a short list would silently pick template 0 for the rest
            raise InputError(f"need one or more codes and one sample number per code, got {len(ws)} codes "
                             f"and {len(indices)} indices")
        dtype = PRECISIONS[self.precision]
        synth = lambda codes: self.G.synthesis(self.truncated(codes), noise_mode="const", compute_dtype=dtype)  # noqa: E731
        parts = []
        for i in range(0, len(ws), batch_size):
            c, p = ws[i:i + batch_size], prior[i:i + batch_size, None]
            origin = synth(c)
            offset = self.offsets(origin, indices[i:i + batch_size])
            parts.append((c, p[:, 0], offset, origin, synth(c + p), synth(c + p + offset)))
        return SynthesisResult(*[torch.cat(t) for t in zip(*parts)])

