"""Our own model format: a folder with `bundle.json` and one `.safetensors` file per network.

bundle.json: {"format": "latentedit-bundle", "version": 1, "networks": {name: {"file", "kind",
"config", "sha256", "dtype"}}, "provenance": {...}, "figures": {...}}. No pickle anywhere; the
sha256 of each weight file is checked on load.
"""
import copy
import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from latentedit.errors import FormatError
from latentedit.formats.atomic import write_bytes, write_text
from latentedit.formats.files import read_bytes, read_json
from latentedit.formats.weights import strip_derived

BUNDLE_FORMAT = "latentedit-bundle"
BUNDLE_VERSION = 1


def is_bundle(path):
    return Path(path).is_dir() and (Path(path) / "bundle.json").is_file()


def read_manifest(path):
    path = Path(path)
    manifest = read_json(path / "bundle.json", "bundle manifest")
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise FormatError(f"{path / 'bundle.json'}: not a latentedit bundle manifest")
    if not isinstance(manifest.get("version", 0), int):
        raise FormatError(f"{path / 'bundle.json'}: 'version' must be an integer")
    if manifest.get("version", 0) > BUNDLE_VERSION:
        raise FormatError(f"{path}: bundle version {manifest['version']} is newer than this latentedit reads")
    if not isinstance(manifest.get("networks"), dict):
        raise FormatError(f"{path / 'bundle.json'}: no 'networks' entry")
    for name, entry in manifest["networks"].items():
        file = entry.get("file") if isinstance(entry, dict) else None
        if not isinstance(file, str) or Path(file).name != file or file in ("", ".", ".."):
            raise FormatError(f"{path / 'bundle.json'}: network {name!r} needs a plain 'file' name inside the bundle")
        if not isinstance(entry.get("sha256"), str) or not isinstance(entry.get("config", {}), dict):
            raise FormatError(f"{path / 'bundle.json'}: network {name!r} needs a 'sha256' and a 'config' object")
    return manifest


def read_network(path, name):
    """-> (entry from bundle.json, float32 state dict) after checking the file's sha256."""
    path = Path(path)
    manifest = read_manifest(path)
    if name not in manifest["networks"]:
        raise FormatError(f"{path}: bundle has no network {name!r} (has {sorted(manifest['networks'])})")
    entry = manifest["networks"][name]
    file = path / entry["file"]
    data = read_bytes(file, "weight file")
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry["sha256"]:
        raise FormatError(f"{file}: sha256 mismatch (file corrupt or replaced)")
    try:
        sd = load(data)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise FormatError(f"{file}: not a readable safetensors file ({e})") from None
    return entry, {k: v.float() for k, v in sd.items()}


def write_bundle(path, networks, provenance=None, figures=None, dtype=torch.float32, merge=False, keep_fp32=()):
    """networks: {name: (kind, config dict, state dict)}. Weight files first, manifest last, each
    written atomically, so an interrupted write never leaves a manifest pointing at bad files: a
    weight file the existing manifest lists with other content is not overwritten but written under
    a new name, and the replaced networks' old files are removed once the new manifest is in place;
    then (`_settle_names`) each such file takes its plain name back the same way, so that a bundle
    rewritten many times still names its files `<network>.safetensors`.
    merge: keep the networks, figures and provenance an existing bundle at `path` already lists.
    keep_fp32: tensor names stored in float32 whatever `dtype` is (values that must stay exact)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    old = None
    if is_bundle(path):
        try:
            old = read_manifest(path)
        except FormatError:
            if merge:
                raise
    listed = {e["file"]: e["sha256"] for e in old["networks"].values()} if old else {}
    manifest = {"format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, "networks": {}, "provenance": {}, "figures": {}}
    if merge and old:
        manifest = copy.deepcopy(old)  # `old` still says which files it listed
    manifest.setdefault("provenance", {}).update(provenance or {})
    manifest.setdefault("figures", {}).update(figures or {})
    for name, (kind, config, sd) in networks.items():
        tensors = {k: v.detach().to(torch.float32 if k in keep_fp32 else dtype if v.is_floating_point() else v.dtype)
                   .contiguous().cpu() for k, v in strip_derived(sd).items()}
        data = save(tensors)
        digest = hashlib.sha256(data).hexdigest()
        file = f"{name}.safetensors"
        if listed.get(file, digest) != digest:
            file = f"{name}.{digest[:16]}.safetensors"
        write_bytes(path / file, data)
        manifest["networks"][name] = {"file": file, "kind": kind, "config": config,
                                      "dtype": str(dtype).replace("torch.", ""), "sha256": digest}
    write_text(path / "bundle.json", json.dumps(manifest, indent=2) + "\n")
    replaced = {old["networks"][name]["file"] for name in networks if old and name in old["networks"]}
    for file in replaced - {e["file"] for e in manifest["networks"].values()}:
        (path / file).unlink(missing_ok=True)
    _settle_names(path, manifest, networks)
    return path


def _settle_names(path, manifest, names):
    """Networks `names` written under a new name go back to `<name>.safetensors` once no manifest
    lists that file: a copy under the plain name, the manifest, then the new-named file removed."""
    moved = {}
    for name in names:
        entry = manifest["networks"][name]
        plain = f"{name}.safetensors"
        if entry["file"] != plain and plain not in {e["file"] for e in manifest["networks"].values()}:
            write_bytes(path / plain, (path / entry["file"]).read_bytes())
            moved[entry["file"]] = plain
            entry["file"] = plain
    if moved:
        write_text(path / "bundle.json", json.dumps(manifest, indent=2) + "\n")
        for file in moved:
            (path / file).unlink(missing_ok=True)


def update_manifest(path, figures=None, provenance=None):
    """Merges figures / provenance entries into a bundle's manifest (atomically)."""
    path = Path(path)
    manifest = read_manifest(path)
    manifest.setdefault("figures", {}).update(figures or {})
    manifest.setdefault("provenance", {}).update(provenance or {})
    write_text(path / "bundle.json", json.dumps(manifest, indent=2) + "\n")
    return manifest
