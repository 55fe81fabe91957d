"""Where the folders shipped beside the code are found: checkpoints/ (the bundled default model)
and csrc/ (the CUDA sources built on first CUDA use)."""
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def shipped_dir(name):
    """The folder `name` ("checkpoints" or "csrc"): inside the installed package for a wheel or a
    `pip install .` (setup.py maps the repository's folders there), else the source checkout's,
    beside the package (editable install, PYTHONPATH)."""
    installed = _PACKAGE / name
    return installed if installed.is_dir() else _PACKAGE.parent / name
