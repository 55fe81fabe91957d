"""CPU kernels of csrc/ in plain C, built at first use with the system's C compiler and called
through ctypes (no torch headers: the build takes a fraction of a second).

`layer_tail_` runs a synthesis layer's noise add, leaky ReLU and clamp in one pass, and
`interleave_phases_into` a folded up-conv's interleaving copy (csrc/cpu_kernels.c). Each returns whether it
ran; callers run PyTorch's ops when not. The library is built into $LATENTEDIT_CACHE/cpu (default
~/.cache/latentedit/cpu) under a name keyed by the source, the compiler, its flags and this CPU's
ISA flags (-march=native code must not run on another CPU that shares the folder), written to a
temporary file and renamed into place, so concurrent processes never load half a library. Where
there is no compiler, no glibc-style shared library or the build fails, the callers keep their
PyTorch ops (`unavailable_reason()` says why); LATENTEDIT_CPU_KERNELS=off turns the kernels off.
"""
import ctypes
import functools
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile

import torch

from latentedit.ops.build import cache_root, csrc_dir

SOURCE = "cpu_kernels.c"
CHOICES = ("auto", "off")
# Tried in order: without OpenMP the kernel runs on one thread; without -march=native, baseline SIMD.
_FLAGS = [["-O3", "-march=native", "-mprefer-vector-width=512", "-fopenmp"], ["-O3", "-march=native", "-fopenmp"],
          ["-O3", "-fopenmp"], ["-O3"]]
_DTYPES = (torch.bfloat16, torch.float32)


def enabled():
    choice = os.environ.get("LATENTEDIT_CPU_KERNELS", "auto")
    if choice not in CHOICES:
        raise ValueError(f"LATENTEDIT_CPU_KERNELS must be one of {CHOICES}, got {choice!r}")
    return choice == "auto"


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as fh:
            return next((line for line in fh if line.startswith(("flags", "Features"))), "")
    except OSError:
        return ""


def _compiler(compiler):
    """The compiler command as a list (CC may carry arguments, e.g. "ccache gcc"), or raises."""
    command = shlex.split(compiler)
    cc = shutil.which(command[0]) if command else None
    if cc is None:
        raise RuntimeError(f"no C compiler {compiler!r} on PATH")
    return [cc, *command[1:]]


def _build(compiler):
    """The loaded library, or raises with the reason. A library built before under any of the flag sets
    is taken first, so a machine whose compiler rejects the first set does not retry it every process."""
    if not sys.platform.startswith("linux"):
        raise RuntimeError(f"built only on Linux (this is {sys.platform})")
    cc = _compiler(compiler)
    source = (csrc_dir() / SOURCE).read_bytes()
    version = subprocess.run([*cc, "--version"], capture_output=True, text=True, timeout=60).stdout
    folder = cache_root().parent / "cpu"
    folder.mkdir(parents=True, exist_ok=True)
    targets = [(flags, folder / "kernels-{}.so".format(hashlib.sha256(b"\0".join(
        [source, version.encode(), " ".join(flags).encode(), _cpu_flags().encode()])).hexdigest()[:16]))
        for flags in _FLAGS]
    built = next((target for _, target in targets if target.is_file()), None)
    errors = []
    for flags, target in targets:
        if built is not None:
            break
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=folder)
        os.close(fd)
        try:
            with tempfile.TemporaryDirectory() as scratch:  # the source, read once, compiled as read
                src = os.path.join(scratch, SOURCE)
                with open(src, "wb") as fh:
                    fh.write(source)
                done = subprocess.run([*cc, *flags, "-shared", "-fPIC", src, "-o", tmp],
                                      capture_output=True, text=True, timeout=300)
            if done.returncode == 0:
                umask = os.umask(0)
                os.umask(umask)
                os.chmod(tmp, 0o755 & ~umask)  # mkstemp's 0600 would lock out other users of a shared cache
                os.replace(tmp, target)
                built = target
            else:
                errors.append(f"{' '.join(flags)}: {done.stderr.strip()[-300:]}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    if built is None:
        raise RuntimeError("the compiler failed: " + "; ".join(errors))
    lib = ctypes.CDLL(str(built))
    lib.layer_tail.restype = None
    lib.layer_tail.argtypes = [ctypes.c_void_p, ctypes.c_void_p] + [ctypes.c_long] * 4 + \
        [ctypes.c_float] * 2 + [ctypes.c_int] * 2
    lib.interleave_phases.restype = None
    lib.interleave_phases.argtypes = [ctypes.c_void_p, ctypes.c_void_p] + [ctypes.c_long] * 9 + \
        [ctypes.c_void_p, ctypes.c_long] + [ctypes.c_int] * 2
    return lib


@functools.lru_cache(maxsize=None)
def _load(compiler):
    """(library, None) or (None, reason); cached per compiler, so a failed build is not retried."""
    try:
        return _build(compiler), None
    except Exception as e:  # noqa: BLE001 -- every failure means "keep the PyTorch ops"
        return None, f"{type(e).__name__}: {e}"


def _library():
    return _load(os.environ.get("CC", "cc"))


def unavailable_reason():
    """None when the kernels run here, else why not."""
    if not enabled():
        return "LATENTEDIT_CPU_KERNELS=off"
    return _library()[1]


def _takes(y):
    """Whether the kernels can read y: a 4-D channels_last CPU tensor, bf16 or fp32, outside autograd,
    with the kernels on."""
    return y.device.type == "cpu" and y.dtype in _DTYPES and not y.requires_grad and y.dim() == 4 and \
        y.is_contiguous(memory_format=torch.channels_last) and enabled()


def layer_tail_(y, noise, slope, clamp=None):
    """y = clamp(leaky_relu(y + noise, slope), -clamp, clamp) in place, in one pass, when the kernel can
    take it: y a channels_last CPU tensor (bf16 or fp32) outside autograd, noise None or one value per
    pixel ([N or 1, 1, H, W], y's dtype). Returns whether it ran; the caller runs PyTorch's ops if not."""
    if not _takes(y):
        return False
    N, C, H, W = y.shape
    if noise is not None:
        if noise.dtype != y.dtype or noise.device != y.device or noise.shape[1:] != (1, H, W) or \
                noise.shape[0] not in (1, N) or noise.requires_grad:
            return False
        noise = noise.contiguous()
    lib = _library()[0]
    if lib is None:
        return False
    noise_batch_stride = 0 if noise is None or noise.shape[0] == 1 else H * W
    lib.layer_tail(y.data_ptr(), None if noise is None else noise.data_ptr(), N, H * W, C, noise_batch_stride,
                   slope, float("inf") if clamp is None else clamp, y.dtype == torch.bfloat16, torch.get_num_threads())
    torch.autograd.graph.increment_version(y)  # written behind autograd's back: a saved y is now stale
    return True


def interleave_phases_into(out, y, scale=None):
    """out[n, h, a, w, b, c] = y[n, (a, b, c), h, w] * scale[n or 0, c] (fp32 scale, rounded once) when the
    kernel can take it: y [N, 4 C, H, W] channels_last on CPU (bf16 or fp32) outside autograd, out a
    [N, H, 2, W, 2, C] view of y's dtype whose channels are contiguous, scale None or [N or 1, C].
    Returns whether it ran."""
    if not _takes(y) or out.requires_grad:
        return False
    N, C4, H, W = y.shape
    C = C4 // 4
    if out.dtype != y.dtype or out.device != y.device or tuple(out.shape) != (N, H, 2, W, 2, C) or out.stride(5) != 1:
        return False
    if scale is not None:
        scale = scale.reshape(scale.shape[0], -1)
        if scale.shape[1] != C or scale.shape[0] not in (1, N) or scale.requires_grad:
            return False
        scale = scale.to(device=y.device, dtype=torch.float32).contiguous()
    lib = _library()[0]
    if lib is None:
        return False
    lib.interleave_phases(y.data_ptr(), out.data_ptr(), N, H, W, C, *out.stride()[:5],
                          None if scale is None else scale.data_ptr(),
                          0 if scale is None or scale.shape[0] == 1 else C,
                          y.dtype == torch.bfloat16, torch.get_num_threads())
    torch.autograd.graph.increment_version(out)
    return True
