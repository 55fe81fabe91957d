"""Training the image -> W+ encoder (pSp / e4e family, or ReStyle) through a frozen generator.

Each step's batch is half generated images with known codes and half world renders:

- generated: W codes from z with a truncation drawn per sample from `truncation`, style-mixed
  (a second code from a per-sample crossover layer on) with probability `style_mixing`, rendered
  with constant noise; their true W+ codes give a latent loss;
- real: world samples `step * n_real ...` of `data_seed` (no codes), so a resumed run continues the
  exact stream it left.

The encoder's codes are rendered through the frozen generator (noise_mode "const") and compared
with the input; every loss is a batch mean:

- pixel:      w_mse * MSE + w_l1 * L1;
- perceptual: the LPIPS distance when `lpips` names a trunk file (real faces), else
              ||f(x) - f(y)||^2 / ||f(x)||^2 per sample, f = the frozen attribute classifier's
              features (no VGG / LPIPS weights exist offline; see latentedit.edit.losses);
- identity:   1 - cosine of the unit embeddings of ArcFace IR-SE-50 when `arcface` names its file,
              else of the frozen identity embedder;
- attributes: the classifier's heads agree: KL(p(x) || p(y)) summed over the classification heads,
              plus the squared error of the regression outputs;
- latent:     MSE between predicted and true W+ codes (generated half only);
- delta:      e4e's delta regulariser, sum_i ||delta_i||^2 (keeps W+ codes near W);
- w0:         ||w0||^2 = squared distance of the base code to w_avg (a cheap stand-in for the
              distance to the W manifold), weighted small.

ReStyle (`restyle_steps` N >= 1): the encoder takes 6 channels, the image and the current
reconstruction, and refines its codes in N steps per batch (models/restyle.py): step 0 sees the
average image and starts from w_avg, step t > 0 sees G(codes_{t-1}) and adds its offsets to
codes_{t-1}. Each step's losses are backpropagated with the previous codes and image detached (the
ReStyle paper's training), summed over the steps with weight 1 / N, one optimiser step per batch.
A warm start from a 3-channel encoder copies it and gives the reconstruction's channels zero
weights, so its step 0 is the source encoder.

Progressive training (e4e): at step t the deltas of layers 1..progressive_start + t //
progressive_every are active (all from the start when progressive_every is 0). All randomness of
a step is drawn from a generator seeded by (seed, step), so a resumed run gives the same weights as
an uninterrupted one. State (encoder + Adam, safetensors + JSON) is saved every `snapshot` steps,
with log.jsonl and a sample sheet (top row: inputs, bottom row: reconstructions); a resumed run may
take a lower lr (a decay). `init_from` warm-starts from a bundle's encoder, widened
function-preserving (train/widen.py) when this run's has more channels. Under torchrun each rank
trains on its share of every batch (`latentedit.train.distributed`).
"""
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional

import torch

from latentedit.edit.imaging import resize_antialiased
from latentedit.edit.losses import attribute_divergence, evaluator_losses, identity_loss, perceptual_loss
from latentedit.errors import InputError
from latentedit.formats.atomic import write_text
from latentedit.formats.files import recorded_path
from latentedit.formats.images import save_png, tile, to_uint8
from latentedit.models.encoder import Encoder, EncoderConfig
from latentedit.train import distributed
from latentedit.train.loop import run_steps
from latentedit.train.state import check_export, load_state, save_state
from latentedit.train.widen import widen_into
from latentedit.models.config import DictConfig
from latentedit.runtime import seeded

LOSSES = ("mse", "l1", "perceptual", "identity", "attributes", "latent", "delta", "w0")
# the encoder settings a warm start may grow (train/widen.py)
ENCODER_WIDTHS = ("stem_width", "widths", "fpn_width", "head_width", "input_channels")


@dataclass
class EncoderTrainConfig(DictConfig):
    steps: int = 20000
    batch: int = 16
    real_fraction: float = 0.5          # share of world renders in each batch (rest: generated)
    lr: float = 1e-4
    betas: tuple = (0.9, 0.999)
    truncation: tuple = (0.5, 1.0)      # per-sample truncation psi of the generated half
    style_mixing: float = 0.5           # probability that a generated sample is style-mixed
    progressive_every: int = 500        # steps per additional delta layer (0: all from the start)
    progressive_start: int = 0          # deltas active at step 0
    w_mse: float = 1.0
    w_l1: float = 0.5
    w_perceptual: float = 0.5
    w_identity: float = 0.5
    w_attributes: float = 0.02       # KL of a confident classifier starts near 20
    w_latent: float = 1.0
    w_delta: float = 2e-4
    w_w0: float = 1e-5
    seed: int = 0                       # encoder initialisation and the per-step random draws
    data_seed: int = 0                  # world stream of the real half
    snapshot: int = 500
    log_every: int = 25
    world_overrides: dict = field(default_factory=dict)
    encoder: dict = field(default_factory=lambda: EncoderConfig.small().to_dict())
    init_from: Optional[str] = None     # bundle whose encoder the run started from (warm start)
    lpips: Optional[str] = None         # "TRUNK.pth[:vgg|alex]": LPIPS replaces the classifier's perceptual loss
    arcface: Optional[str] = None       # model_ir_se50.pth: ArcFace replaces the identity embedder
    restyle_steps: int = 0              # 0: one pass (pSp / e4e); N: a ReStyle encoder refined N times

    def __post_init__(self):
        self.betas, self.truncation = tuple(self.betas), tuple(self.truncation)
        if not isinstance(self.batch, int) or self.batch < 2:
            raise InputError(f"batch must be an integer >= 2, got {self.batch!r}")
        if not 0 <= self.real_fraction <= 1:
            raise InputError(f"real_fraction must be in [0, 1], got {self.real_fraction}")
        if len(self.truncation) != 2 or not 0 <= self.truncation[0] <= self.truncation[1]:
            raise InputError(f"truncation must be (lo, hi) with 0 <= lo <= hi, got {self.truncation}")
        if self.progressive_every < 0 or self.progressive_start < 0:
            raise InputError("progressive_every and progressive_start must be >= 0")
        for name in LOSSES:
            if getattr(self, f"w_{name}") < 0:
                raise InputError(f"w_{name} must be >= 0")
        if self.snapshot < 1 or self.log_every < 1:
            raise InputError("snapshot and log_every must be >= 1")
        if isinstance(self.restyle_steps, bool) or not isinstance(self.restyle_steps, int) \
                or not 0 <= self.restyle_steps <= 10:
            raise InputError(f"restyle_steps must be an integer in [0, 10], got {self.restyle_steps!r}")
        if self.restyle_steps:
            self.encoder = {**self.encoder, "input_channels": 6}

    @property
    def n_real(self):
        return int(round(self.batch * self.real_fraction))


class EncoderTrainer:
    def __init__(self, cfg: EncoderTrainConfig, bundle, out_dir, device="cpu"):
        from latentedit.formats import load_networks
        from latentedit.formats.evaluators import load_evaluators

        self.cfg, self.bundle, self.out_dir, self.device = cfg, Path(bundle), Path(out_dir), torch.device(device)
        self.G = load_networks(self.bundle).G
        if self.G is None:
            raise InputError(f"{bundle}: the bundle has no generator")
        self.G = self.G.eval().requires_grad_(False).to(self.device)
        names = [n for n, w in (("attributes", (0 if cfg.lpips else cfg.w_perceptual) + cfg.w_attributes),
                                ("identity", 0 if cfg.arcface else cfg.w_identity)) if w]
        ev = load_evaluators(self.bundle, names) if names else {}
        for m in ev.values():
            m.eval().requires_grad_(False).to(self.device)
        self.clf = ev.get("attributes")
        # the projector's losses (latentedit.edit.losses), shared; LPIPS / ArcFace read once here
        self.clf_loss, identity = evaluator_losses(ev)
        self.perceptual = perceptual_loss(cfg.lpips, self.device) if cfg.lpips else self.clf_loss
        self.identity = identity_loss(cfg.arcface, self.device) if cfg.arcface else identity
        enc_cfg = EncoderConfig.from_dict({**cfg.encoder, "num_ws": self.G.num_ws, "w_dim": self.G.w_dim})
        with seeded(cfg.seed):
            self.encoder = Encoder(enc_cfg)
        with torch.no_grad():
            self.encoder.w_avg.copy_(self.G.w_avg)
        self.encoder.to(self.device).train()
        self.restyle = None
        if cfg.restyle_steps:
            from latentedit.models.restyle import ReStyle

            self.restyle = ReStyle(self.encoder, self.G, steps=cfg.restyle_steps)
        self.opt = torch.optim.Adam(self.encoder.parameters(), lr=cfg.lr, betas=cfg.betas)
        self.gen = torch.Generator()
        self.step = 0
        self.log = []
        self._fixed = None

    # -- data ------------------------------------------------------------------------------------

    def stage_at(self, step):
        last = self.G.num_ws - 1
        if self.cfg.progressive_every == 0:
            return last
        return min(self.cfg.progressive_start + step // self.cfg.progressive_every, last)

    def _randn(self, *shape):
        return torch.randn(shape, generator=self.gen).to(self.device)

    def _rand(self, *shape):
        return torch.rand(shape, generator=self.gen).to(self.device)

    def _truncated_w(self, n):
        lo, hi = self.cfg.truncation
        psi = lo + (hi - lo) * self._rand(n, 1)
        w = self.G.mapping(self._randn(n, self.G.z_dim), update_w_avg=False)[:, 0]
        return self.G.w_avg + psi * (w - self.G.w_avg)

    @property
    def trainable(self):
        return self.encoder

    @torch.no_grad()
    def generated(self, n, part=slice(None)):
        """(true W+ codes, images [.., 3, R, R]) with style mixing: n codes are drawn, those in
        `part` (this rank's share) kept and rendered."""
        L = self.G.num_ws
        ws = self._truncated_w(n)[:, None].repeat([1, L, 1])
        if self.cfg.style_mixing > 0 and L > 1:
            other = self._truncated_w(n)
            cutoff = torch.randint(1, L, [n], generator=self.gen).to(self.device)
            mixed = self._rand(n) < self.cfg.style_mixing
            take = mixed[:, None] & (torch.arange(L, device=self.device)[None] >= cutoff[:, None])  # [n, L]
            ws = torch.where(take[:, :, None], other[:, None], ws)
        ws = ws[part]
        return ws, self.G.synthesis(ws, noise_mode="const", fused_modconv=False)

    def real(self, n, start):
        from latentedit import world

        return world.sample(n, seed=self.cfg.data_seed, resolution=self.G.img_resolution, start=start,
                            **self.cfg.world_overrides).image.to(self.device)

    # -- losses ----------------------------------------------------------------------------------

    def encode(self, x, current=None, previous=None):
        """Images [N, 3, R, R] (generator size) -> (codes, w0, deltas). ReStyle: current = the
        reconstruction at the encoder's size, previous = the codes it came from (None: w_avg)."""
        inputs = resize_antialiased(x, self.encoder.cfg.resolution)
        if current is not None:
            inputs = torch.cat([inputs, current], dim=1)
        w0, deltas = self.encoder.encode(inputs)
        base = self.encoder.w_avg if previous is None else previous
        return base + w0[:, None] + deltas, w0, deltas

    def losses(self, x, ws_true=None, current=None, previous=None):
        """x [N, 3, R, R]; ws_true: W+ codes of the first len(ws_true) images (or None); current /
        previous: a ReStyle step's inputs (see encode).
        -> (weighted total, {name: unweighted batch-mean loss}, reconstruction, codes)."""
        cfg = self.cfg
        codes, w0, deltas = self.encode(x, current, previous)
        y = self.G.synthesis(codes, noise_mode="const", fused_modconv=False)
        out = {"mse": (y - x).square().mean(), "l1": (y - x).abs().mean()}
        xc, yc = x.clamp(-1, 1), y.clamp(-1, 1)  # the evaluators' input range
        if self.perceptual is not None and self.perceptual is not self.clf_loss:
            with torch.no_grad():
                f_x = self.perceptual.features(xc)
            out["perceptual"] = self.perceptual.distance(self.perceptual.features(yc), f_x).mean()
        if self.clf is not None:
            with torch.no_grad():
                f_x = self.clf_loss.features(xc)
                p_x = self.clf.classify(f_x)
            f_y = self.clf_loss.features(yc)
            if self.perceptual is self.clf_loss:
                out["perceptual"] = self.clf_loss.distance(f_y, f_x).mean()
            p_y = self.clf.classify(f_y)
            regression = (p_y["regression"] - p_x["regression"]).square().sum(1).mean()
            out["attributes"] = attribute_divergence(p_y, p_x, self.clf.cfg.heads) + regression
        if self.identity is not None:
            with torch.no_grad():
                e_x = self.identity.embed(xc)
            out["identity"] = self.identity.distance(self.identity.embed(yc), e_x).mean()
        if ws_true is not None and len(ws_true):
            out["latent"] = (codes[:len(ws_true)] - ws_true).square().mean()
        out["delta"] = deltas.square().sum((1, 2)).mean()
        out["w0"] = w0.square().sum(1).mean()
        total = sum(getattr(cfg, f"w_{k}") * v for k, v in out.items())
        return total, out, y, codes

    def refine(self, x, ws_true=None, backward=False):
        """The losses of the encoder's last pass over x (ReStyle: of its last refinement; with
        backward, each step's losses / N are backpropagated as they come) -> (total, out, codes)."""
        if self.restyle is None:
            total, out, _, codes = self.losses(x, ws_true)
            if backward:
                total.backward()
            return total, out, codes
        steps = self.cfg.restyle_steps
        with torch.no_grad():
            current = self.restyle.average_image().expand(len(x), -1, -1, -1)
        previous = None
        for _ in range(steps):
            total, out, y, codes = self.losses(x, ws_true, current, previous)
            if backward:
                (total / steps).backward()
            previous = codes.detach()
            current = self.restyle.pool(y.detach())
        return total, out, codes

    def train_step(self):
        cfg = self.cfg
        # Every draw of a step comes from (seed, step) alone: a resumed run continues exactly.
        self.gen.manual_seed(1_000_003 * self.step + 7919 * cfg.seed + 1)
        self.encoder.train()
        self.encoder.progressive_stage = self.stage_at(self.step)
        n_real = cfg.n_real
        n_fake = cfg.batch - n_real
        # Under torchrun each rank keeps its share of both halves (the draws are the whole batch's).
        fake_part = distributed.shard(n_fake, "the generated half of the batch")
        real_part = distributed.shard(n_real, "the rendered half of the batch")
        ws_true, x_fake = self.generated(n_fake, fake_part) if n_fake else (None, None)
        parts = [x_fake] if n_fake else []
        if n_real:
            parts.append(self.real(real_part.stop - real_part.start, self.step * n_real + real_part.start))
        self.opt.zero_grad(set_to_none=True)
        total, out, _ = self.refine(torch.cat(parts), ws_true, backward=True)
        distributed.average_gradients(self.encoder)
        self.opt.step()
        distributed.broadcast_state(self.encoder, buffers_only=True)  # BatchNorm running statistics
        self.step += 1
        return {"loss": float(total.detach()), "stage": self.encoder.progressive_stage,
                "lr": self.opt.param_groups[0]["lr"], **{k: float(v.detach()) for k, v in out.items()}}

    # -- run -------------------------------------------------------------------------------------

    def train(self, progress=print):
        return run_steps(self, self.cfg.steps, self.cfg.batch, self.cfg.snapshot, self.cfg.log_every, progress)

    def fixed_inputs(self):
        """8 fixed images for the sample sheets: 4 generated (seeds 10000..) and 4 world renders
        (from a seed the training stream never uses)."""
        if self._fixed is None:
            from latentedit import world

            with torch.no_grad():
                fake = self.G.synthesis(self.G.broadcast_w(self.G.sample_w(4, seed=10_000, truncation=0.7)),
                                        noise_mode="const")
            real = world.sample(4, seed=self.cfg.data_seed + 1_000_000, resolution=self.G.img_resolution).image
            self._fixed = torch.cat([fake, real.to(self.device)])
        return self._fixed

    @torch.no_grad()
    def reconstruct(self, x):
        self.encoder.eval()
        return self.G.synthesis(self.refine(x)[2], noise_mode="const")

    def save(self):
        self.out_dir.mkdir(parents=True, exist_ok=True)
        save_state(self.out_dir, {"encoder": self.encoder}, {"opt": self.opt},
                   {"step": self.step, "log": self.log, "config": asdict(self.cfg)})
        write_text(self.out_dir / "log.jsonl", "".join(json.dumps(e) + "\n" for e in self.log))
        x = self.fixed_inputs()
        rows = torch.cat([x, self.reconstruct(x)])
        save_png(self.out_dir / f"samples_{self.step:06d}.png", tile(to_uint8(rows), len(x), scale=2, pad=2))

    def init_from(self, path):
        """Warm start from the encoder of bundle `path`, e.g. one trained through an earlier generator
        of the same GAN run: its weights with this generator's w_avg, every delta it had trained
        active from step 0; the optimiser starts fresh. A narrower encoder (fewer channels, or 3
        input channels for a ReStyle run) is widened into this run's, computing the same codes."""
        from latentedit.edit.inversion import load_encoder

        source = load_encoder(path)
        source = getattr(source, "encoder", source)  # a ReStyle's network
        ours, theirs = self.encoder.cfg.to_dict(), source.cfg.to_dict()
        # A narrower encoder warm-starts a wider one, and a 3-channel one a ReStyle one (the
        # reconstruction's channels are new inputs): widened function-preserving (train/widen.py).
        differ = sorted(k for k in ours if ours[k] != theirs.get(k) and k not in ENCODER_WIDTHS)
        if differ:
            raise InputError(f"{path}: its encoder differs from this run's in {', '.join(differ)}")
        weights = source.state_dict()
        if set(weights) != set(self.encoder.state_dict()):  # e.g. a block that gains a shortcut conv
            raise InputError(f"{path}: its encoder's layers are not this run's (only channel counts may grow)")
        try:
            widen_into(weights, self.encoder, equalised=False)
        except InputError as e:
            raise InputError(f"{path}: its encoder cannot warm-start this run's ({e})") from None
        with torch.no_grad():
            self.encoder.w_avg.copy_(self.G.w_avg)
        self.cfg = replace(self.cfg, init_from=recorded_path(path),
                           progressive_start=max(self.cfg.progressive_start, source.progressive_stage))

    def resume(self):
        if not (self.out_dir / "state.json").exists():
            return False
        info = load_state(self.out_dir, {"encoder": self.encoder}, {"opt": self.opt})
        self.step, self.log = info["step"], info.get("log", [])
        for group in self.opt.param_groups:  # the saved groups carry the lr they were saved with
            group["lr"] = self.cfg.lr
        return True

    @torch.no_grad()
    def evaluate(self, n=64, seed=None):
        """Mean losses (unweighted) of the eval-mode encoder on n fresh world renders."""
        from latentedit import world

        self.encoder.eval()
        seed = self.cfg.data_seed + 2_000_000 if seed is None else seed
        x = world.sample(n, seed=seed, resolution=self.G.img_resolution).image.to(self.device)
        _, out, _ = self.refine(x)
        return {k: float(v) for k, v in out.items()}

    def export(self, bundle, figures=None, dtype=torch.float16):
        """Writes the encoder into bundle folder `bundle` as network "encoder" (kind "encoder"), in
        fp16 by default: on 64 world renders the codes move by 1e-4 (relative) and the
        reconstructions by under half an 8-bit level. A bundle of another generator than the
        training bundle's is refused (check_export)."""
        from latentedit.formats.directions import generator_hash
        from latentedit.formats.encoder import write_encoder

        generator = generator_hash(self.G)
        check_export(generator, self.bundle, bundle, "encoder")
        self.encoder.eval()
        provenance = {"trained_by": "latentedit.train.encoder", "steps": self.step, "config": asdict(self.cfg),
                      "generator": generator, "source_bundle": recorded_path(self.bundle)}
        if self.restyle is not None:  # what load_encoder refines with
            provenance["restyle_steps"] = self.cfg.restyle_steps
        return write_encoder(bundle, self.encoder, figures=figures, provenance=provenance, dtype=dtype)
