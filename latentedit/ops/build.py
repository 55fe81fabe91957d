"""Builds and loads the compiled CUDA ops of csrc/ (bias_act, upfirdn2d).

Nothing here runs at import. `compiled_ops()` builds lazily on its first call, with
torch.utils.cpp_extension.load (ninja), into a cache folder keyed by everything that changes the
binary: $LATENTEDIT_CACHE/ops/<hash> (default ~/.cache/latentedit/ops/<hash>), the hash covering
the csrc/ sources, the torch, Python, nvcc and torch-CUDA versions and the GPU architectures.
Concurrent processes serialise on a lock file next to that folder; a waiter gives up after
LOCK_TIMEOUT_S and breaks a lock whose owner died or that is older than LOCK_STALE_S.

When the build is impossible (no CUDA device, a CPU torch, no nvcc or ninja, no csrc/ in an
incomplete install, a compile error) it warns once and returns None, and the ops use their
reference path; with LATENTEDIT_OPS=cuda it raises instead. Modules built ahead of time by
setup.py (LATENTEDIT_BUILD_OPS=1, see `aot_extensions`) are used when present.
"""
import functools
import hashlib
import importlib
import json
import os
import socket
import subprocess
import sys
import time
import types
import warnings
from pathlib import Path

from latentedit.ops.dispatch import requested_impl
from latentedit.shipped import shipped_dir

# One extension module per op: {name: its sources in csrc/}.
EXTENSIONS = {
    "bias_act": ("bias_act.cpp", "bias_act.cu"),
    "upfirdn2d": ("upfirdn2d.cpp", "upfirdn2d.cu"),
}
AOT_PACKAGE = "latentedit.ops"  # ahead-of-time modules are latentedit.ops._ext_<name>
LOCK_TIMEOUT_S = 20 * 60  # a cold build takes a minute or two
LOCK_STALE_S = 60 * 60  # no build holds the lock this long
_NVCC_FLAGS = ["-O3"]  # no --use_fast_math: tanh / sigmoid / exp stay accurate


def csrc_dir():
    """The CUDA sources: the source checkout's csrc/, or the installed package's copy."""
    return shipped_dir("csrc")


def cache_root():
    base = os.environ.get("LATENTEDIT_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "latentedit") / "ops"


def compiled_ops():
    """The compiled ops as a namespace with modules `.bias_act` and `.upfirdn2d`, or None (after
    one warning) when they cannot be built. Raises RuntimeError instead when LATENTEDIT_OPS=cuda."""
    ops, reason = _load()
    if ops is not None:
        return ops
    if requested_impl() == "cuda":
        raise RuntimeError(f"LATENTEDIT_OPS=cuda, but the CUDA ops of csrc/ could not be built: {reason}")
    _warn_fallback(reason)
    return None


@functools.lru_cache(maxsize=None)
def _load():
    """(ops, None) or (None, reason); cached, so a failed build is not retried on every call."""
    try:
        return _import_aot() or _jit_build(), None
    except Exception as e:  # noqa: BLE001 -- every failure means "use the reference path"
        return None, f"{type(e).__name__}: {e}"


@functools.lru_cache(maxsize=None)
def _warn_fallback(reason):
    warnings.warn(
        f"latentedit: the compiled CUDA ops are unavailable ({reason}); using the slower reference "
        "PyTorch implementation. Set LATENTEDIT_OPS=ref to silence this, or LATENTEDIT_OPS=cuda to "
        "make it an error.",
        RuntimeWarning,
        stacklevel=4,
    )


def _import_aot():
    mods = {}
    for name in EXTENSIONS:
        try:
            mods[name] = importlib.import_module(f"{AOT_PACKAGE}._ext_{name}")
        except ImportError:
            return None
    return types.SimpleNamespace(**mods)


def _jit_build():
    import torch
    from torch.utils import cpp_extension

    if torch.version.cuda is None:
        raise RuntimeError(f"torch {torch.__version__} is a build without CUDA")
    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA device is available")
    if cpp_extension.CUDA_HOME is None:
        raise RuntimeError("nvcc was not found; set CUDA_HOME to the CUDA toolkit")
    if not cpp_extension.is_ninja_available():
        raise RuntimeError("ninja is not installed (pip install ninja)")
    src = csrc_dir()
    missing = [f for files in EXTENSIONS.values() for f in files if not (src / f).is_file()]
    if missing:
        raise FileNotFoundError(f"csrc/ sources {missing} not found under {src} (an incomplete install: "
                                "reinstall latentedit)")

    digest = build_hash(src)
    root = cache_root() / digest
    root.mkdir(parents=True, exist_ok=True)
    mods = {}
    with BuildLock(root.parent / f"{digest}.lock"):
        for name, files in EXTENSIONS.items():
            build_dir = root / name
            build_dir.mkdir(exist_ok=True)
            # torch's own lock file waits forever when a killed build left it behind; we hold our
            # lock, so no one else is building in this folder.
            (build_dir / "lock").unlink(missing_ok=True)
            mods[name] = cpp_extension.load(
                name=f"latentedit_{name}_{digest[:10]}",  # unique per source version
                sources=[str(src / f) for f in files],
                build_directory=str(build_dir),
                extra_cflags=["-O3"],
                extra_cuda_cflags=_NVCC_FLAGS,
                verbose=os.environ.get("LATENTEDIT_BUILD_VERBOSE") == "1",
            )
    return types.SimpleNamespace(**mods)


def build_hash(src):
    """Hex digest of everything that changes the built binaries."""
    import torch
    from torch.utils import cpp_extension

    h = hashlib.sha256()
    for path in sorted(p for p in src.iterdir() if p.suffix in (".h", ".cuh", ".cpp", ".cu")):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    archs = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
    meta = [torch.__version__, torch.version.cuda, _nvcc_version(cpp_extension.CUDA_HOME), archs,
            os.environ.get("TORCH_CUDA_ARCH_LIST"), sys.version_info[:2], sys.platform, _NVCC_FLAGS]
    h.update(json.dumps(meta, default=str).encode())
    return h.hexdigest()[:24]


def _nvcc_version(cuda_home):
    try:
        out = subprocess.run([str(Path(cuda_home) / "bin" / "nvcc"), "--version"], capture_output=True,
                             text=True, timeout=60).stdout
        return out.strip().splitlines()[-1] if out.strip() else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class BuildLock:
    """An O_EXCL lock file holding {"pid", "host", "time"} of its owner. Waiting polls until
    `timeout` (then TimeoutError); a lock whose owner process is gone (same host) or that is older
    than `stale_after` seconds is removed and retried."""

    def __init__(self, path, timeout=LOCK_TIMEOUT_S, stale_after=LOCK_STALE_S, poll=0.25):
        self.path, self.timeout, self.stale_after, self.poll = Path(path), timeout, stale_after, poll
        self._token = None

    def __enter__(self):
        deadline = time.monotonic() + self.timeout
        token = {"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._read()
                if self._stale(owner):
                    self._break(owner)
                    continue
                if time.monotonic() > deadline:
                    raise TimeoutError(f"waited {self.timeout:.0f} s for the build lock {self.path} held by "
                                       f"{owner}; delete it if no build is running") from None
                time.sleep(self.poll)
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump(token, fh)
            self._token = token
            return self

    def __exit__(self, *exc):
        if self._token is not None and self._read() == self._token:
            self.path.unlink(missing_ok=True)
        self._token = None

    def _read(self):
        """The owner record, {} while it is being written, None when there is no lock."""
        try:
            return json.loads(self.path.read_text() or "{}")
        except FileNotFoundError:
            return None
        except (ValueError, OSError):
            return {}

    def _stale(self, owner):
        if owner is None:
            return False  # just released: retry at once
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return False
        if age > self.stale_after:
            return True
        pid = owner.get("pid")
        return owner.get("host") == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid)

    def _break(self, owner):
        # Re-read right before removing, so a lock re-taken meanwhile by someone else survives.
        if self._read() == owner:
            warnings.warn(f"latentedit: removing the stale build lock {self.path} ({owner})", RuntimeWarning,
                          stacklevel=3)
            self.path.unlink(missing_ok=True)


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def aot_extensions():
    """(ext_modules, cmdclass) for setup.py's opt-in ahead-of-time build (LATENTEDIT_BUILD_OPS=1):
    one CUDAExtension per op, named latentedit.ops._ext_<name>. Paths are relative to the repo."""
    from torch.utils import cpp_extension
    from torch.utils.cpp_extension import BuildExtension, CUDAExtension

    if cpp_extension.CUDA_HOME is None:
        raise RuntimeError("LATENTEDIT_BUILD_OPS=1 needs a CUDA build of torch and the CUDA toolkit "
                           "(set CUDA_HOME); unset it to install without the compiled ops")
    ext_modules = [
        CUDAExtension(
            name=f"{AOT_PACKAGE}._ext_{name}",
            sources=[f"csrc/{f}" for f in files],
            extra_compile_args={"cxx": ["-O3"], "nvcc": list(_NVCC_FLAGS)},
        )
        for name, files in EXTENSIONS.items()
    ]
    return ext_modules, {"build_ext": BuildExtension}
