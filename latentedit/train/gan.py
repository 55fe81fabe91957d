"""StyleGAN2 training on the synthetic world: non-saturating logistic loss, lazy R1 and path-length
regularisation, style mixing, generator EMA, optional bf16 autocast; single process or torchrun
(gloo on CPU, nccl on GPU). Hyper-parameters follow the StyleGAN2-ADA 'auto' configuration.

Data comes from the world renderer on the fly: real sample k of the run is world sample k of the
data seed, so a resumed run continues the exact stream it left.
"""
import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.autograd.graph import increment_version

from latentedit.errors import InputError
from latentedit.formats.atomic import write_text
from latentedit.formats.images import grid, save_png
from latentedit.models.config import DictConfig, is_count, is_real
from latentedit.models.discriminator import Discriminator
from latentedit.models.stylegan2 import DiscriminatorConfig, Generator, GeneratorConfig, label_spans
from latentedit.train import distributed
from latentedit.train.label_pairs import FREE_SHARE, pair_change, switched_labels
from latentedit.train.state import load_state, save_state
from latentedit.train.widen import is_widening, widen_into
from latentedit.runtime import seeded
from latentedit.world.labels import check_groups, face_labels, label_names, label_prior, trained_labels


@dataclass
class GANConfig(DictConfig):
    resolution: int = 64
    channel_base: int = 4096
    channel_max: int = 256
    # The discriminator's channel_base when it differs from G's (None: the same): more channels than
    # G at 64 / 32 / 16 px, to judge fine texture (hair strands, hard edges) that a thin D lets pass.
    d_channel_base: int = None
    n_mlp: int = 8
    batch: int = 32  # total over all processes
    lr: float = 0.0025
    betas: tuple = (0.0, 0.99)
    r1_gamma: float = None  # None: the 'auto' rule 0.0002 * resolution^2 / batch
    pl_weight: float = 2.0
    pl_batch_shrink: int = 2
    pl_decay: float = 0.01
    g_reg_interval: int = 4
    d_reg_interval: int = 16
    style_mixing: float = 0.9
    ema_kimg: float = None  # None: batch * 10 / 32
    ema_rampup: float = 0.05
    bf16: bool = False
    data_seed: int = 0
    world_overrides: dict = field(default_factory=dict)
    # Conditional training on these world label groups (world/labels.py; [] unconditional): G draws
    # its labels from z at the training renders' prior, D sees every image's label.
    labels: list = field(default_factory=list)
    # The label tensors' (G's W offsets, D's projection) learning rate over lr: a warm start's new
    # label inputs start at zero and have the trained networks to catch up with.
    label_lr_mul: float = 1.0
    # A warm start from an unconditional bundle: D's label projection fitted as a linear probe of its
    # last features on this many world renders (train/label_probe.py); 0: zero, learnt from the loss.
    label_probe: int = 0
    # With labels: weight of the label-pair term (train/label_pairs.py), every g_reg_interval steps on
    # batch / pl_batch_shrink codes: a code with one accessory label switched should stay the same
    # face outside the accessory. 0: off.
    label_pair_weight: float = 0.0

    def __post_init__(self):
        for name in ("batch", "g_reg_interval", "d_reg_interval", "pl_batch_shrink"):
            if not is_count(getattr(self, name)):
                raise InputError(f"GANConfig.{name} must be a positive integer, got {getattr(self, name)!r:.80}")
        if self.d_channel_base is not None and not is_count(self.d_channel_base):
            raise InputError(f"GANConfig.d_channel_base must be a positive integer (or null), got {self.d_channel_base!r:.80}")
        if not (is_real(self.lr) and self.lr > 0):
            raise InputError(f"GANConfig.lr must be a positive number, got {self.lr!r:.80}")
        if not (is_real(self.label_lr_mul) and self.label_lr_mul > 0):
            raise InputError(f"GANConfig.label_lr_mul must be a positive number, got {self.label_lr_mul!r:.80}")
        for name in ("r1_gamma", "pl_weight", "pl_decay", "style_mixing", "ema_kimg", "ema_rampup", "label_pair_weight"):
            value = getattr(self, name)
            if value is not None and not (is_real(value) and value >= 0):
                raise InputError(f"GANConfig.{name} must be a number >= 0 (or null), got {value!r:.80}")
        if not isinstance(self.betas, (list, tuple)) or len(self.betas) != 2 or \
                not all(is_real(b) and 0 <= b < 1 for b in self.betas):
            raise InputError(f"GANConfig.betas must be two numbers in [0, 1), got {self.betas!r:.80}")
        if not isinstance(self.world_overrides, dict) or \
                not all(isinstance(k, str) and k.startswith("p_") and is_real(v) for k, v in self.world_overrides.items()):
            raise InputError(f"GANConfig.world_overrides must be an object of sampling probabilities (p_glasses, "
                             f"p_sunglasses, p_mask, p_hat, p_beard), got {self.world_overrides!r:.80}")
        from latentedit import world

        try:
            world.sample_params(1, **self.world_overrides)
        except (InputError, TypeError, ValueError) as e:
            raise InputError(f"GANConfig.world_overrides: {e}") from None
        self.betas = tuple(self.betas)
        check_groups(self.labels)
        self.labels = list(self.labels)
        if not is_count(self.label_probe, low=0) or self.label_probe % 4:  # D's minibatch-std groups of 4
            raise InputError(f"GANConfig.label_probe must be a count of renders, a multiple of 4 (0: none), "
                             f"got {self.label_probe!r:.80}")
        if self.label_probe and not self.labels:
            raise InputError("GANConfig.label_probe fits D's label projection: it needs labels")
        if self.label_pair_weight and not set(self.labels) & set(FREE_SHARE):
            raise InputError(f"GANConfig.label_pair_weight switches an accessory label: it needs one of "
                             f"{', '.join(FREE_SHARE)} in labels, got {self.labels!r:.80}")
        if self.r1_gamma is None:
            self.r1_gamma = 0.0002 * self.resolution ** 2 / self.batch
        if self.ema_kimg is None:
            self.ema_kimg = self.batch * 10 / 32
        self.generator_config(), self.discriminator_config()  # their sizes checked now, before a run starts

    def generator_config(self, **world_prior):
        """The generator's config; its labels drawn at the training renders' prior, or at the
        world's with world_prior overrides (what an exported generator draws)."""
        prior = label_prior(self.labels, **world_prior) if self.labels else None
        return GeneratorConfig(resolution=self.resolution, channel_base=self.channel_base, channel_max=self.channel_max,
                               n_mlp=self.n_mlp, c_dim=len(label_names(self.labels)), label_prior=prior,
                               label_input="w_offset")

    def discriminator_config(self):
        return DiscriminatorConfig(resolution=self.resolution, channel_base=self.d_channel_base or self.channel_base,
                                   channel_max=self.channel_max, c_dim=len(label_names(self.labels)))


def _lazy_ratio(interval):
    # Lazy regularisation runs every `interval` steps, so the main steps' lr / betas are scaled to
    # keep the effective optimiser the same (StyleGAN2 appendix B).
    return interval / (interval + 1)


def _next_mark(nimg, every_kimg):
    """The first multiple of every_kimg (in images) after nimg."""
    return (nimg // (every_kimg * 1000) + 1) * every_kimg * 1000


LABEL_TENSORS = ("mapping.label_offset.weight", "project.weight")  # G's W offsets, D's label projection


def _lazy_adam(module, cfg, interval):
    """Adam over module's parameters; a conditional network's label tensors in a second group at
    label_lr_mul times the lr (an unconditional network keeps one group, as its saved states have)."""
    ratio = _lazy_ratio(interval)
    named = list(module.named_parameters())
    groups = [{"params": [p for n, p in named if n not in LABEL_TENSORS]}]
    if any(n in LABEL_TENSORS for n, _ in named):
        groups.append({"params": [p for n, p in named if n in LABEL_TENSORS], "label": True})
    # fused: one kernel per tensor instead of ~10 ops (G's step 22 -> 6 ms on one CPU thread; results
    # within an ulp of the loop's).
    opt = torch.optim.Adam(groups, lr=cfg.lr * ratio, betas=tuple(b ** ratio for b in cfg.betas), eps=1e-8,
                           fused=True)
    _set_lr(opt, cfg, interval)
    return opt


def _set_lr(opt, cfg, interval):
    for group in opt.param_groups:
        group["lr"] = cfg.lr * _lazy_ratio(interval) * (cfg.label_lr_mul if group.get("label") else 1)


class GANTrainer:
    def __init__(self, cfg: GANConfig, out_dir, device="cpu", rank=0, world_size=1, bf16=None):
        """bf16: whether to compute in bf16 (default: cfg.bf16; the CLI passes False where bf16 is
        the slower path, and config.json keeps the run's own choice for other machines)."""
        self.cfg, self.out_dir, self.device = cfg, Path(out_dir), torch.device(device)
        self.bf16 = cfg.bf16 if bf16 is None else bool(bf16)
        self.rank, self.world_size = rank, world_size
        if cfg.batch % world_size:
            raise InputError(f"batch {cfg.batch} is not divisible by {world_size} processes")
        self.batch_gpu = cfg.batch // world_size
        if self.batch_gpu % min(4, self.batch_gpu):
            raise InputError(f"per-process batch {self.batch_gpu} must be a multiple of 4 (minibatch-std groups)")
        with seeded(0):  # identical initial weights on every rank
            self.G = Generator(cfg.generator_config(**cfg.world_overrides)).train().to(self.device)
            self.D = Discriminator(cfg.discriminator_config()).train().to(self.device)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.G_opt = _lazy_adam(self.G, cfg, cfg.g_reg_interval)
        self.D_opt = _lazy_adam(self.D, cfg, cfg.d_reg_interval)
        self.pl_mean = torch.zeros([], device=self.device)
        self.step = 0
        self.nimg = 0
        self.gen = torch.Generator(device=self.device).manual_seed(1000 + rank)  # latents, noise, mixing
        self.fixed_z = torch.randn([32, self.G.z_dim], generator=torch.Generator().manual_seed(123)).to(self.device)
        self.log = []

    # -- data and latents ------------------------------------------------------------------------

    def real_images(self):
        """This step's world renders [N, 3, R, R] and their labels [N, c_dim] (c_dim 0: unconditional)."""
        from latentedit import world

        start = self.nimg + self.rank * self.batch_gpu
        batch = world.sample(self.batch_gpu, seed=self.cfg.data_seed, resolution=self.cfg.resolution, start=start,
                             **self.cfg.world_overrides)
        return batch.image.to(self.device), face_labels(batch.params, self.cfg.labels).to(self.device)

    def _z(self, n):
        return torch.randn([n, self.G.z_dim], generator=self.gen, device=self.device)

    def _ws(self, G, n):
        """W+ codes of n fakes and their labels (drawn from z). A style-mixed fake keeps the first
        code's label: its second code is mapped under that label too."""
        z = self._z(n)
        c = G.mapping.labels_from_z(z) if G.c_dim else torch.zeros([n, 0], device=self.device)
        ws = G.mapping(z, c)
        if self.cfg.style_mixing > 0:
            cutoff = int(torch.randint(1, ws.shape[1], [], generator=self.gen, device=self.device))
            if float(torch.rand([], generator=self.gen, device=self.device)) >= self.cfg.style_mixing:
                cutoff = ws.shape[1]
            if cutoff < ws.shape[1]:
                ws = torch.cat([ws[:, :cutoff], G.mapping(self._z(n), c, update_w_avg=False)[:, cutoff:]], dim=1)
        return ws, c

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def _synthesize(self, ws, **kwargs):
        # bf16: the generator's own bf16 compute path (fp32 RGB skip) on CPU, autocast elsewhere.
        opts = {"compute_dtype": torch.bfloat16} if self.bf16 and self.device.type == "cpu" else {}
        return self.G.synthesis(ws, fused_modconv=False, generator=self.gen, **opts, **kwargs)

    def _label_pair_loss(self, m):
        """Mean pair_change of m codes drawn under their own labels and with one accessory group
        switched, with the same constant noise (train/label_pairs.py)."""
        z = self._z(m)
        c = self.G.mapping.labels_from_z(z)
        c2, free = switched_labels(c, self.G.cfg.label_prior, self.cfg.labels, self.gen)
        with self._autocast():
            ws = self.G.mapping(torch.cat([z, z]), torch.cat([c, c2]), update_w_avg=False)
            img = self._synthesize(ws, noise_mode="const")
        return pair_change(img[:m], img[m:], free).mean()

    def _d_fakes_and_reals(self, fake, fake_c, real, real_c):
        """D's logits of fakes and reals from one pass over both (bf16 on one CPU thread: 172 ms where
        two passes take 206). Interleaved so that every minibatch-std group holds fakes alone or reals
        alone, as in two passes: D groups sample i with i + N/G, i + 2N/G, ..."""
        n, mbstd = len(fake), self.D.b4.mbstd
        groups = 1 if mbstd is None else mbstd.group_size  # 0 / None: the whole batch is one group
        if not groups or len(real) != n or n % groups:
            return self.D(fake, fake_c), self.D(real, real_c)

        def interleave(a, b):
            return torch.stack([a.reshape(groups, n // groups, *a.shape[1:]),
                                b.reshape(groups, n // groups, *b.shape[1:])], dim=1).reshape(2 * n, *a.shape[1:])
        logits = self.D(interleave(fake, real), interleave(fake_c, real_c)).reshape(groups, 2, n // groups, -1)
        return logits[:, 0].reshape(n, -1), logits[:, 1].reshape(n, -1)

    # -- one step --------------------------------------------------------------------------------

    def _sync_grads(self, module):
        if self.world_size == 1:
            return
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        if grads:
            flat = torch.cat([g.flatten() for g in grads])
            dist.all_reduce(flat)
            flat /= self.world_size
            torch.nan_to_num_(flat, nan=0, posinf=1e5, neginf=-1e5)
            for g, part in zip(grads, flat.split([g.numel() for g in grads])):
                g.copy_(part.reshape(g.shape))

    def _opt_step(self, module, opt):
        self._sync_grads(module)
        for p in module.parameters():
            if p.grad is not None:
                torch.nan_to_num_(p.grad, nan=0, posinf=1e5, neginf=-1e5)
        opt.step()
        # The fused step writes the weights without bumping their version counters (torch 2.13, CPU);
        # caches keyed on them (models/layers.py version_key: demodulation energies) must see the change.
        increment_version([p for group in opt.param_groups for p in group["params"]])
        opt.zero_grad(set_to_none=True)

    def train_step(self):
        cfg, stats = self.cfg, {}
        # Latents, noise and mixing draw from (rank, step) alone, so a resumed run continues exactly on every rank.
        self.gen.manual_seed(1_000_003 * self.step + 1000 + self.rank)
        real, real_c = self.real_images()
        n = self.batch_gpu

        # G main: non-saturating loss on D's view of fakes.
        self.D.requires_grad_(False)
        with self._autocast():
            ws, fake_c = self._ws(self.G, n)
            fake = self._synthesize(ws)
            loss_g = F.softplus(-self.D(fake, fake_c)).mean()
        loss_g.backward()
        stats["loss_G"] = float(loss_g.detach())
        # G reg: path-length penalty and label pairs, lazily, on a smaller batch.
        g_reg, m = self.step % cfg.g_reg_interval == 0, max(n // cfg.pl_batch_shrink, 1)
        if cfg.pl_weight > 0 and g_reg:
            ws, _ = self._ws(self.G, m)
            img = self.G.synthesis(ws, fused_modconv=False, generator=self.gen)
            pl_noise = torch.randn(img.shape, generator=self.gen, device=self.device) / math.sqrt(img.shape[2] * img.shape[3])
            (grads,) = torch.autograd.grad((img * pl_noise).sum(), ws, create_graph=True)
            lengths = grads.square().sum(2).mean(1).sqrt()
            self.pl_mean.copy_(self.pl_mean.lerp(lengths.mean().detach(), cfg.pl_decay))
            loss_pl = (lengths - self.pl_mean).square().mean() * cfg.pl_weight
            (loss_pl * cfg.g_reg_interval + img[:, 0, 0, 0].sum() * 0).backward()
            stats["loss_pl"] = float(loss_pl.detach())
        if cfg.label_pair_weight > 0 and g_reg:
            loss_pair = self._label_pair_loss(m)
            (loss_pair * cfg.label_pair_weight * cfg.g_reg_interval).backward()
            stats["loss_pair"] = float(loss_pair.detach())
        self.D.requires_grad_(True)
        self._opt_step(self.G, self.G_opt)

        # D main: fakes low, reals high.
        self.G.requires_grad_(False)
        with self._autocast():
            with torch.no_grad():
                ws, fake_c = self._ws(self.G, n)
                fake = self._synthesize(ws)
            logits_fake, logits_real = self._d_fakes_and_reals(fake.float(), fake_c, real, real_c)
            loss_d = F.softplus(logits_fake).mean() + F.softplus(-logits_real).mean()
        loss_d.backward()
        stats["loss_D"] = float(loss_d.detach())
        # D reg: R1 on reals, lazily.
        if cfg.r1_gamma > 0 and self.step % cfg.d_reg_interval == 0:
            real_ = real.detach().requires_grad_(True)
            logits = self.D(real_, real_c)
            (grads,) = torch.autograd.grad(logits.sum(), real_, create_graph=True)
            loss_r1 = grads.square().sum([1, 2, 3]).mean() * (cfg.r1_gamma / 2)
            (loss_r1 * cfg.d_reg_interval + logits.sum() * 0).backward()
            stats["loss_r1"] = float(loss_r1.detach())
        self.G.requires_grad_(True)
        self._opt_step(self.D, self.D_opt)

        self._update_ema()
        self.step += 1
        self.nimg += cfg.batch
        return stats

    @torch.no_grad()
    def _update_ema(self):
        ema_nimg = self.cfg.ema_kimg * 1000
        if self.cfg.ema_rampup:
            ema_nimg = min(ema_nimg, (self.nimg + self.cfg.batch) * self.cfg.ema_rampup)
        beta = 0.5 ** (self.cfg.batch / max(ema_nimg, 1e-8))
        ema, live = list(self.G_ema.parameters()), [p.detach() for p in self.G.parameters()]
        torch._foreach_copy_(ema, torch._foreach_lerp(live, ema, beta))  # the same bits as a lerp per tensor
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
            b_ema.copy_(b)

    # -- checkpoints, samples, loop ----------------------------------------------------------------

    def modules(self):
        return {"G": self.G, "D": self.D, "G_ema": self.G_ema}

    def save(self):
        if self.rank != 0:
            return
        info = {"step": self.step, "nimg": self.nimg, "pl_mean": float(self.pl_mean), "config": asdict(self.cfg),
                }
        save_state(self.out_dir, self.modules(), {"G_opt": self.G_opt, "D_opt": self.D_opt}, info)
        self.export_bundle(self.out_dir / "bundle")

    def export_bundle(self, path, fp16=False, figures=None):
        """The EMA generator and the discriminator as a latentedit bundle (loadable everywhere)."""
        from latentedit.formats import Networks, save_networks

        nets = Networks("training-run", str(self.out_dir), G=self._exported_generator(), D=self.D)
        provenance = {"trained_by": "latentedit.train.gan", "kimg": self.nimg / 1000, "config": asdict(self.cfg)}
        return save_networks(nets, path, fp16=fp16, provenance=provenance, figures=figures)

    @torch.no_grad()
    def _exported_generator(self):
        """G_ema; a conditional one drawing its labels at the world's own prior rather than the
        training renders' (the prior is where labels fall in z, not a weight), its w_avg (the
        truncation centre, tracked at the renders' prior) moved by the per-class W offsets times
        the change of each class's rate."""
        if not self.G_ema.c_dim:
            return self.G_ema
        G = copy.deepcopy(self.G_ema)
        G.cfg = self.cfg.generator_config()
        G.mapping.label_prior = G.cfg.label_prior
        rate = lambda prior: torch.tensor([p for group in prior for p in group], device=self.device)  # noqa: E731
        shift = rate(G.cfg.label_prior) - rate(self.G_ema.cfg.label_prior)
        G.mapping.w_avg.add_(G.mapping.label_offset(shift[None])[0])
        return G

    def resume(self):
        if not (self.out_dir / "state.json").exists():
            return False
        info = load_state(self.out_dir, self.modules(), {"G_opt": self.G_opt, "D_opt": self.D_opt})
        self.step, self.nimg = info["step"], info["nimg"]
        self.pl_mean.fill_(info["pl_mean"])
        # The saved param groups carry the lr the state was saved with; this run's config decides.
        for opt, interval in ((self.G_opt, self.cfg.g_reg_interval), (self.D_opt, self.cfg.d_reg_interval)):
            _set_lr(opt, self.cfg, interval)
        return True

    def init_from(self, path):
        """Warm start from a bundle (e.g. the shipped default): G and G_ema from its generator, D from
        its discriminator; optimiser state starts fresh."""
        from latentedit.formats import load_networks
        from latentedit.formats.weights import load_weights, strip_derived

        nets = load_networks(path)
        if nets.G is None or nets.D is None:
            raise InputError(f"{path}: needs both a generator and a discriminator to continue training")
        trained = trained_labels(nets.info)
        if nets.G.c_dim and trained != self.cfg.labels:
            raise InputError(f"{path}: trained on the labels {trained}, this run asks for {self.cfg.labels}")
        widening = [is_widening(nets.G.cfg, self.G.cfg, path), is_widening(nets.D.cfg, self.D.cfg, path)]
        if not any(widening):
            for target in (self.G, self.G_ema):
                load_weights(target, nets.G.state_dict(), f"{path} [G]")
            load_weights(self.D, nets.D.state_dict(), f"{path} [D]")
        else:  # a capacity increase: the trained networks widened into this run's channel counts
            # The new channels keep this run's fresh initialisation (seeded as every run's is).
            widen_into(strip_derived(nets.G.state_dict()), self.G)
            widen_into(strip_derived(nets.D.state_dict()), self.D, self.D.cfg.mbstd_num_channels)
            self.G_ema.load_state_dict(self.G.state_dict())
        self.nimg = round(1000 * nets.info.get("provenance", {}).get("kimg", 0))  # int() lost an image to float error
        if self.cfg.label_probe and not nets.D.cfg.c_dim:
            self.label_probe_accuracy = self._fit_label_probe()

    def _fit_label_probe(self):
        """D's new label projection as a probe of its features on world renders (a seed the run's
        data stream does not use) -> the probe's accuracy per label group on them."""
        from latentedit import world
        from latentedit.train.label_probe import fit_label_projection

        n, seed, chunk = self.cfg.label_probe, self.cfg.data_seed + 1, 256  # chunks: 2048 renders at 256 px are 1.6 GB
        params = world.sample_params(n, seed=seed, **self.cfg.world_overrides)
        renders = (world.render(params.select(slice(start, start + chunk)), self.cfg.resolution).image.to(self.device)
                   for start in range(0, n, chunk))
        accuracy = fit_label_projection(self.D, renders, face_labels(params, self.cfg.labels).to(self.device),
                                        label_spans(self.G.cfg.label_prior))
        distributed.broadcast_state(self.D.project)  # every rank fits the same; rank 0's fit, bit for bit
        return accuracy

    @torch.no_grad()
    def write_samples(self):
        if self.rank != 0:
            return
        images = self.G_ema(self.fixed_z, noise_mode="const")
        save_png(self.out_dir / f"samples_{self.nimg // 1000:06d}k.png", grid(images, cols=8))

    def keep_snapshot(self):
        """The current bundle, kept as snapshots/NNNNNNk beside the latest one (bundle/), so that a
        session can pick the best of several by FID: a run's FID swings from snapshot to snapshot."""
        if self.rank == 0:
            self.export_bundle(self.out_dir / "snapshots" / f"{self.nimg // 1000:06d}k")

    def train(self, total_kimg, snapshot_kimg=10, progress=print, keep_kimg=0):
        """Trains until total_kimg; state, latest bundle and samples every snapshot_kimg, and a kept
        bundle at the first snapshot on or past every keep_kimg mark (0: none)."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.rank == 0:
            write_text(self.out_dir / "config.json", json.dumps(asdict(self.cfg), indent=1))
        next_snapshot = _next_mark(self.nimg, snapshot_kimg)
        next_keep = _next_mark(self.nimg, keep_kimg) if keep_kimg > 0 else None
        t0, n0 = time.time(), self.nimg
        while self.nimg < total_kimg * 1000:
            stats = self.train_step()
            done = self.nimg >= total_kimg * 1000
            if self.nimg >= next_snapshot or done:
                next_snapshot += snapshot_kimg * 1000
                rate = (self.nimg - n0) / max(time.time() - t0, 1e-9)
                entry = {"kimg": self.nimg / 1000, "img_per_s": round(rate, 2), "precision": "bf16" if self.bf16 else "fp32",
                         "lr": self.cfg.lr, "ema_kimg": self.cfg.ema_kimg, "r1_gamma": self.cfg.r1_gamma,
                         **({"label_lr_mul": self.cfg.label_lr_mul} if self.cfg.labels else {}),
                         **({"label_pair_weight": self.cfg.label_pair_weight} if self.cfg.label_pair_weight else {}),
                         **({"world_prior": self.cfg.world_overrides} if self.cfg.world_overrides else {}),
                         **{k: round(v, 4) for k, v in stats.items()}}
                self.log.append(entry)
                if self.rank == 0:
                    with open(self.out_dir / "log.jsonl", "a") as f:
                        f.write(json.dumps(entry) + "\n")
                    progress(f"kimg {entry['kimg']:.2f}/{total_kimg}  {rate:.1f} img/s  " +
                             "  ".join(f"{k} {v:.3f}" for k, v in stats.items()))
                if next_keep is not None and self.nimg >= next_keep:
                    # before save(): a run stopped between the two resumes before the mark and keeps it again
                    next_keep = _next_mark(self.nimg, keep_kimg)
                    self.keep_snapshot()
                self.save()
                self.write_samples()
        return self
