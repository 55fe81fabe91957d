"""latentedit: StyleGAN2 latent-space editing.

Installing never needs torch at build time: the CUDA ops in csrc/ are built lazily on first
CUDA use (latentedit.ops). An ahead-of-time build is opt-in: LATENTEDIT_BUILD_OPS=1.
"""
import os

from setuptools import find_packages, setup

ext_modules, cmdclass = [], {}
if os.environ.get("LATENTEDIT_BUILD_OPS") == "1":  # opt-in only: this path imports torch
    from latentedit.ops.build import aot_extensions  # noqa: E402

    ext_modules, cmdclass = aot_extensions()

setup(
    name="latentedit",
    version="0.1.0",
    description="StyleGAN2 latent-space editing: generator, formats, directions, discrete attributes",
    # checkpoints/ (the bundled default model) and csrc/ (CUDA sources) go inside the installed
    # package, where latentedit.shipped finds them; a source checkout uses them where they are.
    packages=find_packages(include=["latentedit", "latentedit.*"]) + ["latentedit.checkpoints", "latentedit.csrc"],
    package_dir={"latentedit.checkpoints": "checkpoints", "latentedit.csrc": "csrc"},
    package_data={"latentedit.studio": ["static/*.html", "static/*.js", "static/*.css"],
                  "latentedit.checkpoints": ["README.md", "default/*.*", "default/*/*.*"],
                  "latentedit.csrc": ["*.c", "*.cpp", "*.cu", "*.cuh", "*.h", "README.md"]},
    python_requires=">=3.9",
    install_requires=[
        "torch>=2.6",  # weights-only loading with safe_globals, and its 2.6 security fix
        "numpy",
        "scipy",
        "scikit-learn",
        "pillow",
        "click>=8",
        "ninja",
        "safetensors",
    ],
    extras_require={
        "test": ["pytest"],
        # LPIPS's linear weights come from `pip install --no-deps lpips==0.1.4` (only its weight files
        # are read): no extra here, since its dependency torchvision would pull another torch
        # align: dlib's face detector (binary wheel) and its 68-point landmark predictor file
        "align": ["dlib-bin", "face-recognition-models"],
    },
    entry_points={"console_scripts": ["latentedit=latentedit.cli:main"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
