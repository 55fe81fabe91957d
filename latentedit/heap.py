"""Keep freed large blocks in the C heap for the next tensor (glibc), rather than returning each one
to the kernel.

PyTorch's CPU allocator keeps no cache: every large tensor is a fresh malloc, which glibc serves by
mmap above a threshold and hands back to the kernel on free, so the next tensor of that size is
faulted in and zeroed page by page again. On the project's VMs that can cost more than a layer's
arithmetic (a bf16 [1, 128, 256, 256] 3x3 conv, 2 threads, Intel AMX: 8.6 ms into reused memory,
36 ms into fresh) and makes timings swing with the heap's history (benchmarks/RESULTS.md, "heap").
Serving every block from the heap (M_MMAP_MAX 0) and trimming its top only past 1 GiB free keeps
that memory mapped for reuse. The cost: the process's resident memory stays near its peak (freed blocks
below a live one are never returned, and up to 1 GiB at the top), and the setting holds for every
allocation in the process, not only latentedit's, from its import on. LATENTEDIT_KEEP_HEAP=0 opts out;
other C libraries than glibc are left alone.
"""
import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_MAX = -4
TRIM_THRESHOLD = 1 << 30


def glibc():
    """The process's C library when it is glibc, else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
    except (OSError, TypeError):
        return None
    return libc if hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt") else None


kept = False  # whether this process runs with the settings (benchmarks print it)


def keep_freed_blocks():
    """Applies the settings above unless LATENTEDIT_KEEP_HEAP=0; returns whether glibc took them."""
    global kept
    libc = glibc()
    if os.environ.get("LATENTEDIT_KEEP_HEAP", "1") == "0" or libc is None:
        return kept
    kept = bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return kept
