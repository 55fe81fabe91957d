"""Training state on disk: safetensors for every tensor (networks and Adam moments) and JSON for
the rest. Resumable, no pickle, written atomically so an interrupted save keeps the previous one.

And the run folder's rules that every trainer (and `latentedit train ...`) follows:
check_new_run (a folder with a saved state is resumed or left alone), resume_config / run_config
(a resumed run keeps its saved config.json; settings asked for again must agree with it),
start_run / train_run (resume, else warm start, then train) and check_export (a trained network
goes only into a bundle of the generator it was trained through)."""
import hashlib
import json
from dataclasses import replace
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from latentedit.errors import FormatError, InputError
from latentedit.formats.atomic import write_bytes, write_text
from latentedit.formats.files import read_bytes, read_json
from latentedit.train import distributed


IMPLEMENTATION_KEYS = ("foreach", "fused", "capturable", "differentiable")


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
    # Hyperparameters come from the save; how the update is computed (fused, foreach) from the live
    # optimiser, so a state saved by an older implementation resumes with today's.
    groups = [dict(saved, params=live["params"], **{k: live[k] for k in IMPLEMENTATION_KEYS if k in live})
              for saved, live in zip(meta["param_groups"], sd["param_groups"])]
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


# -- run folders --------------------------------------------------------------------------------

def check_new_run(out, resume):
    """A folder holding a saved state is a run: it is continued (resume) or left alone."""
    if not resume and (Path(out) / "state.json").exists():
        raise InputError(f"{out} already holds a run: pass --resume to continue it, or choose another --out")


def resume_config(out, given, explicit=(), what="run"):
    """The saved configuration (a dict) of the run in folder `out`; None when it has none yet.
    A resumed run keeps it: the settings of `given` ({name: value}) named in `explicit` (those
    asked for, not defaults) must agree with it."""
    path = Path(out) / "config.json"
    if not path.exists():
        return None
    saved = read_json(path, "run configuration")
    if not isinstance(saved, dict):
        raise InputError(f"{path}: holds no {what} configuration (a JSON object)")
    for name in explicit:
        if name in given and saved.get(name) != given[name]:
            raise InputError(f"--{name.replace('_', '-')} {given[name]} conflicts with the run's saved {saved.get(name)}")
    return saved


def run_config(config_cls, out, given, explicit=(), resume=False, changes=(), what="run"):
    """The configuration (a config_cls, a DictConfig dataclass) of the run in folder `out`: a new
    run's is config_cls(**given); a resumed run keeps its saved one (resume_config), except the
    settings named in `changes` that are also in `explicit` (the step to train until, a fine-tune's
    new share): those take the given values."""
    saved = resume_config(out, given, set(explicit) - set(changes), what) if resume else None
    if saved is None:
        return config_cls(**given)
    try:
        cfg = config_cls.from_dict(saved)
    except InputError as e:  # unknown keys, wrong types, values its checks refuse
        raise InputError(f"{Path(out) / 'config.json'}: not a usable {what} configuration ({e})") from None
    changed = {name: given[name] for name in changes if name in explicit}
    return replace(cfg, **changed) if changed else cfg


def open_bundle_run(out, resume, steps, snapshot, bundle=None):
    """The checks a run of a trainer over a frozen bundle (offset network, encoder) makes before it
    loads anything -> the bundle folder (None: the bundled model). Under torchrun it joins the
    process group (gloo: one CPU process per rank, each computing its share of every batch)."""
    from latentedit.formats import bundle as bundle_format
    from latentedit.model import default_parts

    check_new_run(out, resume)
    distributed.init_distributed("gloo")
    if steps < 1 or snapshot < 1:
        raise InputError("--steps and --snapshot must be positive")
    source = Path(bundle) if bundle is not None else default_parts()
    if source is None or not bundle_format.is_bundle(source):
        raise InputError(f"{source}: not a bundle folder (bundle.json missing)")
    return source


def start_run(trainer, resume=False, init_from=None):
    """Continues `trainer` from its run folder's saved state (resume), or else warm-starts it from
    the bundle `init_from` (when given) -> whether it resumed."""
    resumed = bool(resume and trainer.resume())
    if init_from and not resumed:
        trainer.init_from(init_from)
    return resumed


def train_run(trainer, resume=False, init_from=None, progress=print, **train_kwargs):
    """A step trainer's run (offset network, encoder): start_run, train until trainer.cfg.steps ->
    its figures {"steps": step, "train_<name>": the last logged mean of each loss, the rate, the
    lr}. Rank 0 alone reports."""
    say = progress if progress is not None and distributed.rank() == 0 else (lambda *_: None)
    resumed = start_run(trainer, resume, init_from)
    if resumed:
        say(f"resumed at step {trainer.step}" + (" (--init-from ignored)" if init_from else ""))
    elif resume:
        say(f"{trainer.out_dir}: no saved state; starting at step 0")
    if init_from and not resumed:
        say(f"warm start from {init_from}")
    if trainer.step >= trainer.cfg.steps:
        say(f"already at step {trainer.step} of {trainer.cfg.steps}")
    else:
        trainer.train(progress=say, **train_kwargs)
    last = trainer.log[-1] if trainer.log else {}
    return {"steps": trainer.step, **{f"train_{k}": v for k, v in last.items() if k != "step"}}


def check_export(generator, source, target, what):
    """A trained network belongs to the generator it was trained through (sha256 `generator`, the
    G of bundle `source`): exporting it into bundle folder `target` is refused unless that holds
    the same generator, or none yet (a new folder, a bundle of evaluators only)."""
    from latentedit.formats import bundle as bundle_format
    from latentedit.formats import load_generator
    from latentedit.formats.directions import generator_hash

    source, target = Path(source), Path(target)
    if not bundle_format.is_bundle(target) or target.resolve() == source.resolve():
        return
    if "G" not in bundle_format.read_manifest(target)["networks"]:
        return
    if generator_hash(load_generator(target)) != generator:
        raise InputError(f"{target}: holds another generator than {source}, the one the {what} was "
                         "trained through; export into the training bundle or a copy of it")
