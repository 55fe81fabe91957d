"""Chooses the implementation of an op for a given tensor: 'ref' (pure PyTorch) or 'cuda' (csrc/).

The compiled path is only ever considered for CUDA tensors, and it is built lazily on first use
(never at import). LATENTEDIT_OPS=ref|cuda|auto overrides the per-call default.
"""
import os

IMPLS = ("ref", "cuda", "auto")


def requested_impl(impl=None):
    impl = impl or os.environ.get("LATENTEDIT_OPS", "auto")
    if impl not in IMPLS:
        raise ValueError(f"LATENTEDIT_OPS / impl must be one of {IMPLS}, got {impl!r}")
    return impl


def select_impl(x, impl=None):
    """Returns 'cuda' when x is on a CUDA device and the compiled ops are (or can be) built, else 'ref'."""
    impl = requested_impl(impl)
    if impl == "ref" or x.device.type != "cuda":
        return "ref"
    from latentedit.ops import build  # imported lazily: building needs nvcc and ninja

    return "cuda" if build.compiled_ops() is not None else "ref"
