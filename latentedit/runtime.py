"""Process-wide runtime settings that a command may change: the torch CPU thread count."""
import contextlib
import os

import torch

from latentedit.errors import InputError

# OpenMP creates one thread per request; far past the machine's cores it crashes (100,000 segfaults)
# without being any faster. 1024 covers every machine we know of while staying safe.
MAX_THREADS = max(1024, os.cpu_count() or 1)


def check_threads(threads, name="--threads"):
    """The thread count as an int in 1..MAX_THREADS, or InputError naming the option."""
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= MAX_THREADS:
        raise InputError(f"{name} must be an integer in 1..{MAX_THREADS}, got {threads!r}")
    return threads


def set_threads(threads, name="--threads"):
    """Checks then applies a thread option; None keeps torch's default."""
    if threads is not None:
        torch.set_num_threads(check_threads(threads, name))


@contextlib.contextmanager
def seeded(seed):
    """Module initialisation from `seed` without touching the caller's global RNG: torch's init
    functions draw from the global generator, so it is forked, seeded, and restored on exit."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield
