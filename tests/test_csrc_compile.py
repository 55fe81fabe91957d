"""CI check that needs no GPU: every source in csrc/ compiles (compile only, `-c`, no link).

The .cpp files are compiled by the host C++ compiler against torch's headers, the .cu files by
nvcc for one architecture (sm_90), with the flags torch.utils.cpp_extension uses for the real
build. The .cu files include no torch header (csrc/README.md), so this works with the CPU torch
wheel. All sources compile in parallel once per session; a missing compiler skips its files.
"""
import os
import shutil
import subprocess
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from torch.utils import cpp_extension

CSRC = Path(__file__).resolve().parents[1] / "csrc"
SOURCES = sorted(p.name for p in CSRC.glob("*.cpp")) + sorted(p.name for p in CSRC.glob("*.cu"))
ARCH = "sm_90"
TIMEOUT_S = 600


def _nvcc():
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home and (Path(home) / "bin" / "nvcc").is_file():
        return str(Path(home) / "bin" / "nvcc")
    return shutil.which("nvcc")


def _cxx():
    return os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")


def _common_flags(name):
    includes = cpp_extension.include_paths() + [sysconfig.get_paths()["include"]]
    return [f"-I{CSRC}", *(arg for p in includes for arg in ("-isystem", p)),
            f"-DTORCH_EXTENSION_NAME=latentedit_{Path(name).stem}", "-DTORCH_API_INCLUDE_EXTENSION_H",
            f"-D_GLIBCXX_USE_CXX11_ABI={int(torch.compiled_with_cxx11_abi())}", "-std=c++20"]


def _command(name, out_dir):
    obj = str(Path(out_dir) / (name + ".o"))
    if name.endswith(".cu"):
        nvcc = _nvcc()
        if nvcc is None:
            return None
        return [nvcc, "-c", str(CSRC / name), "-o", obj, f"-arch={ARCH}", "--compiler-options", "-fPIC",
                *cpp_extension.COMMON_NVCC_FLAGS, *_common_flags(name)]
    cxx = _cxx()
    if cxx is None:
        return None
    return [cxx, "-c", str(CSRC / name), "-o", obj, "-fPIC", "-O1", "-Wall", *_common_flags(name)]


def _compile(name, out_dir):
    cmd = _command(name, out_dir)
    if cmd is None:
        return None
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return 1, f"timed out after {TIMEOUT_S} s: {' '.join(cmd)}"
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """{source name: (returncode, compiler output) or None when its compiler is missing}."""
    out_dir = tmp_path_factory.mktemp("csrc_objects")
    with ThreadPoolExecutor(max_workers=max(1, min(len(SOURCES), os.cpu_count() or 1))) as pool:
        results = pool.map(lambda name: _compile(name, out_dir), SOURCES)
        return dict(zip(SOURCES, results))


def test_sources_present():
    assert {"bias_act.cpp", "bias_act.cu", "upfirdn2d.cpp", "upfirdn2d.cu"} <= set(SOURCES)


@pytest.mark.parametrize("name", SOURCES)
def test_compiles(name, compiled):
    result = compiled[name]
    if result is None:
        what = "nvcc (set CUDA_HOME or put nvcc on PATH)" if name.endswith(".cu") else "a C++ compiler"
        pytest.skip(f"{what} not found: cannot compile-check csrc/{name}")
    returncode, output = result
    assert returncode == 0, f"csrc/{name} does not compile:\n{output[-6000:]}"
    # Warnings in our own files (torch's headers are -isystem, so theirs are silent).
    ours = [line for line in output.splitlines() if "warning" in line.lower() and str(CSRC) in line]
    assert not ours, f"csrc/{name} compiles with warnings:\n" + "\n".join(ours)
