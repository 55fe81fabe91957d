"""Training state on disk: safetensors for every tensor (networks and Adam moments) and JSON for
the rest. Resumable, no pickle, written atomically so an interrupted save keeps the previous one."""
import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from latentedit.errors import FormatError
from latentedit.formats.atomic import write_bytes, write_text
from latentedit.formats.files import read_bytes, read_json


def _flatten_optimizer(prefix, opt):
    tensors, meta = {}, {"param_groups": [], "scalars": {}}
    sd = opt.state_dict()
    for group in sd["param_groups"]:
        meta["param_groups"].append({k: v for k, v in group.items() if isinstance(v, (int, float, list, tuple, bool))})
    for idx, st in sd["state"].items():
        for key, value in st.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.{idx}.{key}"] = value.detach().contiguous()
            else:
                meta["scalars"][f"{idx}.{key}"] = value
    return tensors, meta


def _unflatten_optimizer(prefix, opt, tensors, meta):
    state = {}
    for name, value in tensors.items():
        if name.startswith(prefix + "."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    for name, value in meta["scalars"].items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    sd = opt.state_dict()
    groups = [dict(saved, params=live["params"]) for saved, live in zip(meta["param_groups"], sd["param_groups"])]
    opt.load_state_dict({"state": state, "param_groups": groups})


def save_state(path, modules, optimizers, info):
    """modules / optimizers: {name: nn.Module / torch.optim.Optimizer}; info: JSON-able dict."""
    path = Path(path)
    tensors, opt_meta = {}, {}
    for name, module in modules.items():
        for k, v in module.state_dict().items():
            tensors[f"{name}.{k}"] = v.detach().contiguous()
    for name, opt in optimizers.items():
        t, m = _flatten_optimizer(name, opt)
        tensors.update(t)
        opt_meta[name] = m
    data = save(tensors)
    write_bytes(path / "state.safetensors", data)
    # The JSON names the tensors file by hash: an interruption between the two writes is detected on load.
    write_text(path / "state.json", json.dumps({"info": info, "optimizers": opt_meta,
                                                 "tensors_sha256": hashlib.sha256(data).hexdigest()}, indent=1))


def load_state(path, modules, optimizers):
    """Restores modules and optimizers in place; returns the saved info dict."""
    path = Path(path)
    try:
        meta = read_json(path / "state.json", "training state")
        data = read_bytes(path / "state.safetensors", "training state")
        saved_hash = meta.get("tensors_sha256")  # absent in states written before the check existed
        if saved_hash is not None and saved_hash != hashlib.sha256(data).hexdigest():
            raise FormatError(f"{path}: state.json and state.safetensors are from different saves "
                              "(interrupted save); restore a consistent pair")
        tensors = load(data)
    except (OSError, ValueError, SafetensorError, AttributeError) as e:  # AttributeError: JSON not an object
        raise FormatError(f"{path}: cannot read training state ({e})") from None
    try:
        for name, module in modules.items():
            sd = {k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(name + ".")}
            module.load_state_dict(sd, strict=True)
        for name, opt in optimizers.items():
            _unflatten_optimizer(name, opt, tensors, meta["optimizers"][name])
        return meta["info"]
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as e:  # another run's or a damaged state
        raise FormatError(f"{path}: training state does not fit this run ({type(e).__name__}: {str(e)[:200]})") from None
