"""Process groups for the trainers: torchrun's environment -> (rank, world size, device), and
what the trainers without a DistributedDataParallel wrapper (encoder, offset networks) need: the
share of every batch a rank computes, gradient averaging, and rank 0's parameters and buffers
for everyone (BatchNorm running statistics would otherwise drift apart, as DDP's buffer broadcast
prevents).

Those trainers draw each step's randomness for the whole batch on every rank from the same
generator and keep their own share of it, so a run's batches do not depend on the number of
processes."""
import os

import torch
import torch.distributed as dist

from latentedit.errors import InputError


# How long a collective waits for the other ranks. torch's 30 minutes would end a run that was
# paused (kill -STOP, to free the CPU for a measurement) for longer: the waiting all-reduce times out
# on resume (seen at 33 minutes). LATENTEDIT_DIST_TIMEOUT_MIN overrides it.
DEFAULT_TIMEOUT_MIN = 360


def collective_timeout():
    from datetime import timedelta

    value = os.environ.get("LATENTEDIT_DIST_TIMEOUT_MIN", str(DEFAULT_TIMEOUT_MIN))
    try:
        minutes = float(value)
    except ValueError:
        minutes = -1
    if not minutes > 0:
        raise InputError(f"LATENTEDIT_DIST_TIMEOUT_MIN must be a positive number of minutes, got {value!r}")
    return timedelta(minutes=minutes)


def init_distributed(backend=None):
    """(rank, world_size, device) from torchrun's environment; single process without it.
    backend: default nccl where CUDA is available, else gloo (gloo for trainers that stay on CPU)."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
        return 0, 1, "cuda" if torch.cuda.is_available() and backend != "gloo" else "cpu"
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=collective_timeout())
    device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if backend == "nccl" else "cpu"
    if backend == "nccl":
        torch.cuda.set_device(device)
    return dist.get_rank(), dist.get_world_size(), device


def rank():
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size():
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def shard(n, what="batch"):
    """This rank's slice of n items (contiguous, equal shares); InputError unless n divides evenly."""
    ws = world_size()
    if n % ws:
        raise InputError(f"{what} of {n} does not split evenly over {ws} processes")
    share = n // ws
    return slice(rank() * share, (rank() + 1) * share)


def average_gradients(module):
    """Gradients averaged over the ranks (each rank's loss is the mean over its equal share, so
    the average is the gradient of the whole batch's mean)."""
    ws = world_size()
    if ws == 1:
        return
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(ws)


def broadcast_state(module, buffers_only=False, src=0):
    """Every rank takes rank src's buffers, and its parameters unless buffers_only."""
    if world_size() == 1:
        return
    tensors = list(module.buffers()) + ([] if buffers_only else list(module.parameters()))
    with torch.no_grad():
        for t in tensors:
            dist.broadcast(t.data, src)


def mean_over_ranks(stats):
    """{name: float} averaged over the ranks (for logs)."""
    ws = world_size()
    if ws == 1:
        return stats
    names = sorted(stats)
    t = torch.tensor([float(stats[k]) for k in names], dtype=torch.float64)
    dist.all_reduce(t)
    return {k: float(v) / ws for k, v in zip(names, t)}


def barrier():
    if world_size() > 1:
        dist.barrier()
