"""latentedit.shipped: the installed package's copy of checkpoints/ and csrc/ (a wheel) wins over
the source checkout's (editable install, PYTHONPATH). .ci/check_wheel tests a real wheel."""
from pathlib import Path

import latentedit
from latentedit import shipped
from latentedit.formats import DEFAULT_BUNDLE
from latentedit.ops.build import csrc_dir


def test_installed_copy_first_then_the_checkout(tmp_path, monkeypatch):
    package = tmp_path / "site" / "latentedit"
    package.mkdir(parents=True)
    monkeypatch.setattr(shipped, "_PACKAGE", package)
    assert shipped.shipped_dir("csrc") == tmp_path / "site" / "csrc"
    (package / "csrc").mkdir()
    assert shipped.shipped_dir("csrc") == package / "csrc"


def test_source_checkout_finds_its_folders():
    root = Path(latentedit.__file__).resolve().parents[1]
    assert DEFAULT_BUNDLE == root / "checkpoints" / "default" and (DEFAULT_BUNDLE / "bundle.json").is_file()
    assert csrc_dir() == root / "csrc" and (csrc_dir() / "bias_act.cu").is_file()
