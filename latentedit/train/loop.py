"""The step loop shared by the trainers that run a fixed number of steps over a frozen bundle
(offset networks, the encoder): log means every `log_every` steps, state and samples every
`snapshot` steps and at the end. A trainer provides cfg (a dataclass), out_dir, step, log,
train_step() -> {name: float}, save() and `trainable`, the module being trained.

Under torchrun every rank runs the loop (train_step computes the rank's share and averages the
gradients); the logged means are averaged over the ranks and only rank 0 writes."""
import json
import time
from dataclasses import asdict

from latentedit.formats.atomic import write_text
from latentedit.train import distributed


def run_steps(trainer, steps, batch, snapshot, log_every=25, progress=print, unit="img/s"):
    lead = distributed.rank() == 0
    if lead:
        trainer.out_dir.mkdir(parents=True, exist_ok=True)
        write_text(trainer.out_dir / "config.json", json.dumps(asdict(trainer.cfg), indent=2))
    distributed.broadcast_state(trainer.trainable)  # resumed or warm-started: everyone starts alike
    t0, acc, n = time.perf_counter(), {}, 0
    while trainer.step < steps:
        for k, v in trainer.train_step().items():
            acc[k] = acc.get(k, 0.0) + v
        n += 1
        if trainer.step % log_every == 0 or trainer.step == steps:
            rate = n * batch / (time.perf_counter() - t0)
            mean = distributed.mean_over_ranks({k: v / n for k, v in acc.items()})
            trainer.log.append({"step": trainer.step, unit.replace("/", "_per_"): round(rate, 2), **mean})
            if progress is not None and lead:
                progress(f"step {trainer.step}/{steps}  {rate:.1f} {unit}  " +
                         "  ".join(f"{k} {v:.4g}" if k == "lr" else f"{k} {v:.4f}" for k, v in mean.items()))
            t0, acc, n = time.perf_counter(), {}, 0
        if trainer.step % snapshot == 0 or trainer.step == steps:
            if lead:
                trainer.save()
            distributed.barrier()
    return trainer.log
