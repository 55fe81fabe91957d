"""Training of the evaluators on world renders: attribute classifier, identity embedder, face
parser and the unsup3d-layout 3D encoder (supervised from the world's ground truth).

Data: a pool of world samples rendered once per seed and cached in the run folder (renders are
the slow part on CPU). Each identity i of the pool is drawn twice: view A is sample i of the
seed; view B keeps A's identity and takes pose, light, background, expression and accessories
from sample i of seed + 1. The 3D encoder also gets A re-rendered in the canonical pose (no
rotation or translation, same light): unsup3d's canonical depth / normal / albedo / shading.
Training seeds start at 0; held-out metrics use `EVAL_SEED`.

    train_evaluator("attributes", "runs/evaluators", steps=3000)   # resumes when state exists
    export_evaluators("runs/evaluators", "runs/evaluators/bundle")

Single process, or one process per rank under torchrun (each rank takes its share of every
batch; gradients are averaged by DistributedDataParallel; rank 0 writes).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save

from latentedit import world
from latentedit.errors import InputError
from latentedit.formats.atomic import write_bytes, write_text
from latentedit.models.config import DictConfig, is_count, is_real
from latentedit.models.evaluators import (ATTRIBUTE_HEADS, REGRESSION_HEADS, AttributeClassifier,
                                          ClassifierConfig, FaceParser, IdentityConfig, IdentityEmbedder,
                                          ParserConfig)
from latentedit.models.face3d import Face3D, Face3DConfig, world_to_unsup3d
from latentedit.train.distributed import rank as _rank
from latentedit.train.distributed import world_size as _world_size
from latentedit.train.state import check_new_run, load_state, save_state
from latentedit.world.params import _HAIR, ATTRIBUTE_FIELDS, NUISANCE_FIELDS
from latentedit.world.render import CAM_DIST, TAN_HALF_FOV
from latentedit.runtime import seeded

TRAIN_SEED = 0
EVAL_SEED = 10_000_000
EVALUATOR_NAMES = ("attributes", "identity", "parser", "face3d")
BG_DEPTH = 1.12  # canonical depth target on the background (depth / CAM_DIST units)


# -- targets ---------------------------------------------------------------------------------

def hair_color_index(hair_color):
    """[N, 3] sampled hair colours -> palette index [N] (the palette row whose per-channel
    jitter, within +-12 %, explains the colour best)."""
    pal = torch.as_tensor(_HAIR, dtype=torch.float32)
    ratio = (hair_color[:, None].clamp_min(1e-4) / pal[None]).log().abs().amax(2)   # [N, P]
    return ratio.argmin(1)


def attribute_targets(p) -> dict:
    """{head: class index [N]} for ATTRIBUTE_HEADS and `regression` [N, 3] (smile, age, beard)."""
    return {"glasses": p.glasses, "mask": p.mask, "hat": p.hat, "beard": (p.beard > 0).long(),
            "smile": (p.smile > 0.5).long(), "age": (p.age > 0.5).long(),
            "hair_color": hair_color_index(p.hair_color), "hair_style": p.hair_style,
            "regression": torch.stack([p.smile, p.age, p.beard], 1)}


def world_face3d_config():
    """Our Face3D: unsup3d's layout at a CPU-trainable size, decoding matched to the world."""
    return Face3DConfig(nf=16, zdim=64, nf_encoder=16, min_depth=0.7, max_depth=1.15, center_depth=False,
                        border_depth=None, tan_half_fov=TAN_HALF_FOV * 63 / 64, light_xy_scale=2.5,
                        view_scale=[0.8, 0.5, 0.3, 0.12, 0.12, 0.4],
                        view_names=["yaw", "pitch", "roll", "tx", "ty", "tz"])


# -- the pool ----------------------------------------------------------------------------------

def _to_u8(x):  # [-1, 1] or [0, 1] floats already mapped by the caller -> uint8
    return (x * 255 + 0.5).clamp(0, 255).to(torch.uint8)


def render_pool(seed, n, resolution=64, chunk=200, progress=None):
    """Render `n` identities x 2 views (+ canonical A) of `seed`: a dict of compact tensors."""
    keep = NUISANCE_FIELDS + ATTRIBUTE_FIELDS
    parts = {}
    t0 = time.time()
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        a = world.sample_params(m, seed=seed, start=start)
        other = world.sample_params(m, seed=seed + 1, start=start)
        b = a.replace(**{f: getattr(other, f) for f in keep})
        canon = a.replace(yaw=0.0, pitch=0.0, roll=0.0, tx=0.0, ty=0.0, tz=0.0)
        out = {}
        for view, p in (("a", a), ("b", b)):
            wb = world.render(p, resolution)
            out[f"{view}.image"] = _to_u8(wb.image * 0.5 + 0.5)
            out[f"{view}.labels"] = wb.labels.to(torch.uint8)
            out[f"{view}.light"], out[f"{view}.view"] = wb.light, wb.view
            out[f"{view}.identity"] = wb.identity
            for k, v in attribute_targets(p).items():
                out[f"{view}.{k}"] = v
        cb = world.render(canon, resolution)
        depth = cb.depth[:, 0]
        out["c.mask"] = torch.isfinite(depth).to(torch.uint8)
        out["c.depth"] = torch.where(torch.isfinite(depth), depth / CAM_DIST, torch.tensor(BG_DEPTH)).half()
        out["c.normal"] = cb.normal.half()
        out["c.albedo"] = _to_u8(cb.albedo)
        out["c.shading"] = cb.shading[:, 0].half()
        for k, v in out.items():
            parts.setdefault(k, []).append(v)
        if progress:
            done = start + m
            progress(f"  pool seed {seed}: {done}/{n} identities ({3 * done / (time.time() - t0):.0f} renders/s)")
    return {k: torch.cat(v).contiguous() for k, v in parts.items()}


def load_pool(cache_dir, seed, n, resolution=64, progress=None):
    """The pool from `cache_dir/pool_{seed}_{n}_{resolution}.safetensors`, rendered if absent."""
    path = Path(cache_dir) / f"pool_{seed}_{n}_{resolution}.safetensors"
    if path.is_file():
        return load_file(path)
    pool = render_pool(seed, n, resolution, progress=progress)
    if _rank() == 0:
        write_bytes(path, save(pool))
    return pool


def images(pool, view, idx):
    return pool[f"{view}.image"][idx].float() / 127.5 - 1


# -- tasks: network, loss and held-out metrics per evaluator ----------------------------------------

class AttributesTask:
    lr = 2e-3

    def build(self):
        return AttributeClassifier(ClassifierConfig())

    def batch(self, pool, idx):
        half = len(idx) // 2  # both views: twice the variety of accessories per identity
        views = [("a", idx[:half]), ("b", idx[half:])]
        x = torch.cat([images(pool, v, i) for v, i in views])
        t = {k: torch.cat([pool[f"{v}.{k}"][i] for v, i in views]) for k in list(ATTRIBUTE_HEADS) + ["regression"]}
        return x, t

    def loss(self, net, pool, idx):
        x, t = self.batch(pool, idx)
        out = net(x)
        losses = {k: torch.nn.functional.cross_entropy(out[k], t[k]) for k in ATTRIBUTE_HEADS}
        losses["regression"] = 5 * torch.nn.functional.mse_loss(out["regression"], t["regression"])
        total = sum(losses.values())
        return total, {"loss": total.item()}

    @torch.no_grad()
    def evaluate(self, net, pool):
        n = len(pool["a.image"])
        idx = torch.arange(n)
        correct, conf, reg_err, count = {k: 0.0 for k in ATTRIBUTE_HEADS}, {k: 0.0 for k in ATTRIBUTE_HEADS}, 0, 0
        loss = 0.0
        for view in ("a", "b"):
            for i in idx.split(250):
                x = images(pool, view, i)
                out = net(x)
                for k in ATTRIBUTE_HEADS:
                    t = pool[f"{view}.{k}"][i]
                    correct[k] += (out[k].argmax(1) == t).sum().item()
                    conf[k] += out[k].softmax(1).amax(1).sum().item()
                    loss += torch.nn.functional.cross_entropy(out[k], t, reduction="sum").item()
                reg_err = reg_err + (out["regression"] - pool[f"{view}.regression"][i]).abs().sum(0)
                count += len(i)
        res = {f"acc.{k}": correct[k] / count for k in ATTRIBUTE_HEADS}
        res.update({f"mae.{k}": (reg_err[j] / count).item() for j, k in enumerate(REGRESSION_HEADS)})
        res["mean_top_confidence"] = sum(conf.values()) / count / len(conf)
        res["heldout_loss"] = loss / count
        res["mean_acc"] = sum(correct.values()) / count / len(correct)
        return res


class IdentityTask:
    lr = 2e-3
    tau = 0.1

    def __init__(self):
        self.stats = None

    def build(self):
        return IdentityEmbedder(IdentityConfig(identity_dim=len(world.IDENTITY_NAMES)))

    def _norm_identity(self, pool, idx):
        if self.stats is None:
            v = pool["a.identity"]
            self.stats = (v.mean(0), v.std(0).clamp_min(1e-3))
        return (pool["a.identity"][idx] - self.stats[0]) / self.stats[1]

    def loss(self, net, pool, idx):
        idx = idx[: len(idx) // 2]  # two images per identity
        x = torch.cat([images(pool, "a", idx), images(pool, "b", idx)])
        e, ident = net(x, with_identity=True)
        e1, e2 = e.chunk(2)
        logits = e1 @ e2.t() / self.tau
        target = torch.arange(len(idx))
        nce = 0.5 * (torch.nn.functional.cross_entropy(logits, target)
                     + torch.nn.functional.cross_entropy(logits.t(), target))
        reg = torch.nn.functional.mse_loss(ident, self._norm_identity(pool, idx).repeat(2, 1))
        total = nce + 0.5 * reg
        return total, {"loss": total.item(), "nce": nce.item()}

    @torch.no_grad()
    def evaluate(self, net, pool):
        from sklearn.metrics import roc_auc_score

        n = len(pool["a.image"])
        idx = torch.arange(n)
        ea = torch.cat([net(images(pool, "a", i)) for i in idx.split(250)])
        eb = torch.cat([net(images(pool, "b", i)) for i in idx.split(250)])
        pos = (ea * eb).sum(1)
        g = torch.Generator().manual_seed(0)
        negs = []
        for shift in range(1, 6):  # 5 negatives per identity: other identities, other views
            perm = (idx + shift * (1 + torch.randint(0, n // 6, (1,), generator=g))) % n
            negs.append((ea * eb[perm]).sum(1))
        neg = torch.cat(negs)
        scores = torch.cat([pos, neg]).numpy()
        labels = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
        # Identification: is B_i the nearest of all B to A_i?
        top1 = ((ea @ eb.t()).argmax(1) == idx).float().mean().item()
        logits = ea @ eb.t() / self.tau
        heldout = torch.nn.functional.cross_entropy(logits, idx).item()
        return {"roc_auc": float(roc_auc_score(labels, scores)), "pos_sim": pos.mean().item(),
                "neg_sim": neg.mean().item(), f"top1_of_{n}": top1, "heldout_loss": heldout}


class ParserTask:
    lr = 3e-3

    def __init__(self):
        self.weights = None

    def build(self):
        return FaceParser(ParserConfig(num_classes=len(world.LABELS), labels=list(world.LABELS)))

    def loss(self, net, pool, idx):
        if self.weights is None:  # 1 / sqrt(frequency), mean 1: thin parts count
            freq = torch.bincount(pool["a.labels"][:2000].flatten().long(), minlength=len(world.LABELS)).float()
            w = (freq / freq.sum()).clamp_min(1e-5).rsqrt()
            self.weights = w / w.mean()
        half = len(idx) // 2
        views = [("a", idx[:half]), ("b", idx[half:])]
        x = torch.cat([images(pool, v, i) for v, i in views])
        t = torch.cat([pool[f"{v}.labels"][i] for v, i in views]).long()
        loss = torch.nn.functional.cross_entropy(net(x), t, weight=self.weights)
        return loss, {"loss": loss.item()}

    @torch.no_grad()
    def evaluate(self, net, pool):
        k = len(world.LABELS)
        conf = torch.zeros(k, k, dtype=torch.long)
        loss, count = 0.0, 0
        for view in ("a", "b"):
            for i in torch.arange(len(pool["a.image"])).split(200):
                logits = net(images(pool, view, i))
                t = pool[f"{view}.labels"][i].long()
                loss += torch.nn.functional.cross_entropy(logits, t, reduction="sum").item()
                count += t.numel()
                conf += torch.bincount(t.flatten() * k + logits.argmax(1).flatten(), minlength=k * k).view(k, k)
        inter = conf.diag().float()
        union = conf.sum(0).float() + conf.sum(1).float() - inter
        iou = {name: (inter[c] / union[c]).item() for c, name in enumerate(world.LABELS) if union[c] > 0}
        res = {f"iou.{name}": v for name, v in iou.items()}
        res["miou"] = sum(iou.values()) / len(iou)
        res["pixel_acc"] = (inter.sum() / conf.sum()).item()
        res["heldout_loss"] = loss / count
        return res


class Face3DTask:
    lr = 1e-3

    def build(self):
        return Face3D(world_face3d_config())

    @staticmethod
    def targets(pool, idx):
        light, view = pool["a.light"][idx], pool["a.view"][idx]
        ldir = world_to_unsup3d(light[:, 2:])
        return {"depth": pool["c.depth"][idx].float(), "mask": pool["c.mask"][idx].bool(),
                "normal": world_to_unsup3d(pool["c.normal"][idx].float().permute(0, 2, 3, 1)),
                "albedo": pool["c.albedo"][idx].float() / 127.5 - 1, "shading": pool["c.shading"][idx].float(),
                "light": light, "ldir": ldir, "view": view}

    def loss(self, net, pool, idx):
        cfg = net_cfg(net)
        x = images(pool, "a", idx)
        t = self.targets(pool, idx)
        out = net(x)  # through the (DDP) wrapper, so gradients are synchronised
        fg = _erode(t["mask"])
        l_depth = (out["depth"] - t["depth"]).abs().mean() * 10
        l_normal = ((1 - (out["normal"] * t["normal"]).sum(3)) * fg).sum() / fg.sum().clamp_min(1)
        l_albedo = (out["albedo"] - t["albedo"]).abs().mean()
        light_raw = torch.cat([t["light"][:, :2] * 2 - 1,
                               t["ldir"][:, :2] / t["ldir"][:, 2:] / cfg.light_xy_scale], 1)
        l_light = torch.nn.functional.mse_loss(out["light_raw"], light_raw.clamp(-0.99, 0.99)) * 5
        view_raw = t["view"] / torch.tensor(cfg.view_scale)
        l_view = torch.nn.functional.mse_loss(out["view_raw"], view_raw.clamp(-0.99, 0.99)) * 5
        total = l_depth + l_normal + l_albedo + l_light + l_view
        return total, {"loss": total.item(), "depth": l_depth.item(), "normal": l_normal.item()}

    @torch.no_grad()
    def evaluate(self, net, pool):
        m = unwrap(net)
        sums, count = {}, 0
        fg_total = 0.0
        for i in torch.arange(len(pool["a.image"])).split(200):
            out = m(images(pool, "a", i))
            t = self.targets(pool, i)
            fg = _erode(t["mask"])
            nfg = fg.sum().item()
            ang = (out["normal"] * t["normal"]).sum(3).clamp(-1, 1).acos().rad2deg()
            view_err = (out["view"] - t["view"]).abs()
            ldir_err = (out["light"][:, 2:] * t["ldir"]).sum(1).clamp(-1, 1).acos().rad2deg()
            add = {
                "depth_mae": ((out["depth"] - t["depth"]).abs() * fg).sum().item() * CAM_DIST,  # head units
                "normal_deg": (ang * fg).sum().item(),
                "albedo_l1": ((out["albedo"] - t["albedo"]).abs().mean(1) * fg).sum().item() / 2,
                "shading_mae": ((out["shading"][:, 0] - t["shading"]).abs() * fg).sum().item(),
            }
            for k, v in add.items():
                sums[k] = sums.get(k, 0.0) + v
            per = {"yaw_deg": view_err[:, 0].rad2deg(), "pitch_deg": view_err[:, 1].rad2deg(),
                   "roll_deg": view_err[:, 2].rad2deg(), "txy_mae": view_err[:, 3:5].mean(1),
                   "tz_mae": view_err[:, 5], "light_dir_deg": ldir_err,
                   "ambient_mae": (out["light"][:, 0] - t["light"][:, 0]).abs(),
                   "diffuse_mae": (out["light"][:, 1] - t["light"][:, 1]).abs()}
            for k, v in per.items():
                sums[k] = sums.get(k, 0.0) + v.sum().item()
            fg_total += nfg
            count += len(i)
        pix = ("depth_mae", "normal_deg", "albedo_l1", "shading_mae")
        res = {k: v / (fg_total if k in pix else count) for k, v in sums.items()}
        res["heldout_loss"] = res["depth_mae"] + res["normal_deg"] / 57.3 + res["yaw_deg"] / 57.3
        return res


TASKS = {"attributes": AttributesTask, "identity": IdentityTask, "parser": ParserTask, "face3d": Face3DTask}


def _erode(mask):
    """[N, H, W] bool -> eroded by one pixel (away from silhouette edges)."""
    m = mask.float()[:, None]
    return (-torch.nn.functional.max_pool2d(-m, 3, 1, 1))[:, 0] > 0.5


def unwrap(net):
    return net.module if isinstance(net, torch.nn.parallel.DistributedDataParallel) else net


def net_cfg(net):
    return unwrap(net).cfg


# -- the loop ---------------------------------------------------------------------------------

MIN_EVAL = 6  # the identity metric compares each held-out identity with 5 others


@dataclass
class EvalTrainConfig(DictConfig):
    kind: str
    steps: int = 2000
    batch: int = 64
    lr: float = None           # None: the task's default
    n_train: int = 6000        # identities in the training pool (x2 views)
    n_eval: int = 500          # held-out identities (seed EVAL_SEED)
    eval_every: int = 250
    seed: int = TRAIN_SEED
    resolution: int = 64

    def __post_init__(self):
        if self.kind not in TASKS:
            raise InputError(f"unknown evaluator {self.kind!r}; choose from {list(TASKS)}")
        for name, low in (("steps", 1), ("batch", 4), ("n_eval", MIN_EVAL), ("eval_every", 1), ("seed", 0)):
            if not is_count(getattr(self, name), low):
                raise InputError(f"{name} (--{name.replace('_', '-')}) must be an integer >= {low}, "
                                 f"got {getattr(self, name)!r:.80}")
        if self.batch % 2:
            raise InputError(f"batch must be an even number >= 4, got {self.batch}")
        if not is_count(self.n_train, self.batch):  # each batch draws distinct identities
            raise InputError(f"n_train (--n-train) must be an integer >= the batch ({self.batch}), "
                             f"got {self.n_train!r:.80}")
        if self.lr is not None and not (is_real(self.lr) and self.lr > 0):
            raise InputError(f"lr must be a positive number, got {self.lr!r:.80}")


def train_evaluator(kind, out, steps=2000, batch=64, lr=None, n_train=6000, n_eval=500, eval_every=250,
                    resume=True, progress=print, pool_dir=None):
    """Train (or resume) evaluator `kind` in `out/kind/`; returns the final held-out metrics.
    Writes state.{json,safetensors} (resumable), log.jsonl (loss, held-out metrics) and metrics.json."""
    cfg = EvalTrainConfig(kind=kind, steps=steps, batch=batch, lr=lr, n_train=n_train, n_eval=n_eval,
                          eval_every=eval_every)
    run = Path(out) / kind
    check_new_run(run, resume)  # before the pools are rendered
    run.mkdir(parents=True, exist_ok=True)
    rank, ws = _rank(), _world_size()
    pool_dir = Path(pool_dir or out)
    say = progress if rank == 0 else (lambda *_: None)
    pool = _synced(lambda: load_pool(pool_dir, cfg.seed, n_train, cfg.resolution, say))
    held = _synced(lambda: load_pool(pool_dir, EVAL_SEED, n_eval, cfg.resolution, say))
    task = TASKS[kind]()
    with seeded(cfg.seed):
        net = task.build()
    lr = lr or task.lr
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    step = 0
    if resume and (run / "state.json").exists():
        info = load_state(run, {"net": net}, {"opt": opt})
        step = info["step"]
        say(f"{kind}: resumed at step {step}")
    model = torch.nn.parallel.DistributedDataParallel(net) if ws > 1 else net
    if rank == 0:
        write_text(run / "config.json", json.dumps(asdict(cfg), indent=1))
    n = len(pool["a.image"])
    t0, s0 = time.time(), step
    metrics = {}
    while step < steps:
        epoch, off = divmod(step * batch, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 7919 + epoch))
        idx = perm[off:off + batch]
        if len(idx) < batch:
            idx = torch.cat([idx, perm[:batch - len(idx)]])
        idx = idx[rank::ws] if ws > 1 else idx
        for g in opt.param_groups:  # cosine decay with a short warm-up
            g["lr"] = lr * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * step / steps))
        model.train()
        loss, stats = task.loss(model, pool, idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % eval_every == 0 or step == steps:
            net.eval()
            metrics = task.evaluate(net, held) if rank == 0 else {}
            rate = (step - s0) * batch / max(time.time() - t0, 1e-9)
            entry = {"step": step, "img_per_s": round(rate, 1), **{f"train_{k}": round(v, 4) for k, v in stats.items()},
                     **{k: round(v, 4) for k, v in metrics.items()}}
            if rank == 0:
                with open(run / "log.jsonl", "a") as f:
                    f.write(json.dumps(entry) + "\n")
                save_state(run, {"net": net}, {"opt": opt},
                           {"step": step, "kind": kind, "config": net.cfg.to_dict(), "train": asdict(cfg),
                            "metrics": metrics})
                say(f"{kind} step {step}/{steps}  {rate:.0f} img/s  loss {stats['loss']:.4f}  " +
                    "  ".join(f"{k} {v:.3f}" for k, v in metrics.items() if _headline(kind, k)))
    if rank == 0 and not metrics and (run / "state.json").exists():
        metrics = json.loads((run / "state.json").read_text())["info"]["metrics"]
    if rank == 0:
        write_text(run / "metrics.json", json.dumps(metrics, indent=1))
    return metrics


def _headline(kind, key):
    return key in {"attributes": ("mean_acc", "acc.glasses", "mean_top_confidence"), "identity": ("roc_auc",),
                   "parser": ("miou", "pixel_acc"),
                   "face3d": ("depth_mae", "normal_deg", "yaw_deg")}[kind] or key == "heldout_loss"


def _synced(fn):
    """Rank 0 first (it renders and caches), then the others read the cache."""
    if _world_size() == 1:
        return fn()
    if _rank() == 0:
        out = fn()
        dist.barrier()
        return out
    dist.barrier()
    return fn()


def trained_evaluator(run_dir, kind):
    """(module, info) from a training run folder `run_dir/kind`."""
    run = Path(run_dir) / kind
    info = json.loads((run / "state.json").read_text())["info"] if (run / "state.json").exists() else None
    if info is None:
        raise InputError(f"{run}: no trained {kind} evaluator (state.json missing)")
    from latentedit.formats.evaluators import EVALUATOR_KINDS, NAMES

    cls, cfg_cls = EVALUATOR_KINDS[NAMES[kind]]
    net = cls(cfg_cls.from_dict(info["config"]))
    load_state(run, {"net": net}, {})
    return net.eval(), info


def export_evaluators(run_dir, bundle_path, kinds=EVALUATOR_NAMES):
    """Adds every trained evaluator of `run_dir` to bundle folder `bundle_path` (created if
    needed; other networks in it are kept), with their held-out figures."""
    from latentedit.formats.evaluators import add_evaluators

    modules, figures = {}, {}
    for kind in kinds:
        if not (Path(run_dir) / kind / "state.json").exists():
            continue
        net, info = trained_evaluator(run_dir, kind)
        modules[kind] = net
        figures[f"evaluator.{kind}"] = {"steps": info["step"], "heldout_seed": EVAL_SEED, **info["metrics"]}
    if not modules:
        raise InputError(f"{run_dir}: no trained evaluators to export")
    provenance = {"evaluators": {"trained_by": "latentedit.train.evaluators", "train_seed": TRAIN_SEED,
                                 "heldout_seed": EVAL_SEED}}
    add_evaluators(bundle_path, modules, figures=figures, provenance=provenance)
    return sorted(modules)
