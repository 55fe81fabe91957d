"""Reading LPIPS: an ImageNet trunk file the user passes (torchvision's state-dict layout:
vgg16-397923af.pth, alexnet-owt-7be5be79.pth) and the linear weights the `lpips` package ships
(`lpips/weights/v0.1/{vgg,alex}.pth`, BSD-2; `pip install --no-deps lpips==0.1.4`, since its
dependency torchvision would pull another torch), or a file given.

    net = load_lpips("vgg16-397923af.pth")          # the variant is read from the trunk's shapes
    net = load_lpips("alexnet-owt-7be5be79.pth:alex", lin_path="alex.pth")
"""
import importlib.util
from pathlib import Path

from latentedit.errors import FormatError, InputError
from latentedit.formats.torch_file import load_torch_file
from latentedit.models.lpips import LPIPS, VARIANTS

# The first conv's kernel tells the trunks apart: VGG16 3x3, AlexNet 11x11.
_FIRST_KERNEL = {3: "vgg", 11: "alex"}


def split_spec(spec):
    """"PATH[:vgg|alex]" -> (Path, variant or None); a colon elsewhere (C:\\...) stays in the path."""
    spec = str(spec)
    head, sep, tail = spec.rpartition(":")
    if sep and tail in VARIANTS:
        return Path(head), tail
    return Path(spec), None


def package_lin_path(variant):
    """The linear weights the installed `lpips` package ships, or None. The package is located,
    never imported (importing it needs torchvision)."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "weights" / "v0.1" / f"{variant}.pth"
        if path.is_file():
            return path
    return None


def load_lpips(trunk, variant=None, lin_path=None, max_size=256, device="cpu"):
    """LPIPS (eval mode, frozen) from trunk file `trunk` ("PATH[:vgg|alex]"; without a variant it is
    read from the file) and lin_path (default: the installed lpips package's v0.1 weights)."""
    path, named = split_spec(trunk)
    if variant is not None and named is not None and variant != named:
        raise InputError(f"{trunk}: variant {named!r} in the path, {variant!r} given")
    variant = variant or named
    if variant is not None and variant not in VARIANTS:
        raise InputError(f"LPIPS variant must be one of {sorted(VARIANTS)}, got {variant!r}")
    state = load_torch_file(path)
    if not isinstance(state, dict):
        raise FormatError(f"{path}: not a state dict (got {type(state).__name__})")
    features = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    first = features.get("0.weight")
    found = _FIRST_KERNEL.get(first.shape[-1]) if first is not None and first.ndim == 4 else None
    if found is None:
        raise FormatError(f"{path}: not a torchvision VGG16 / AlexNet state dict (no features.0.weight "
                          "of a 3x3 or 11x11 conv); pass vgg16-397923af.pth or alexnet-owt-7be5be79.pth")
    if variant is not None and variant != found:
        raise InputError(f"{path}: holds a {found} trunk, not {variant}")
    net = LPIPS(found, max_size=max_size)
    _load(net.trunk.features, features, path, "trunk")

    lin = Path(lin_path) if lin_path is not None else package_lin_path(found)
    if lin is None:
        raise InputError(f"LPIPS {found} needs its linear weights: install the lpips package "
                         "(pip install --no-deps lpips==0.1.4) or pass lin_path=.../weights/v0.1/"
                         f"{found}.pth")
    lins = load_torch_file(lin)
    if not isinstance(lins, dict):
        raise FormatError(f"{lin}: not a state dict (got {type(lins).__name__})")
    for k, c in enumerate(VARIANTS[found]["channels"]):
        w = lins.get(f"lin{k}.model.1.weight")
        if w is None or tuple(w.shape) != (1, c, 1, 1):
            got = "missing" if w is None else list(w.shape)
            raise FormatError(f"{lin}: lin{k}.model.1.weight should be [1, {c}, 1, 1] for LPIPS {found}, "
                              f"got {got}")
        if not w.isfinite().all() or (w < 0).any():
            raise FormatError(f"{lin}: lin{k} weights must be finite and non-negative")
        getattr(net, f"lin{k}").copy_(w.reshape(c))
    return net.eval().to(device)


def _load(module, state, path, what):
    own = module.state_dict()
    missing = sorted(set(own) - set(state), key=lambda k: (int(k.split(".")[0]), k))
    if missing:
        raise FormatError(f"{path}: the {what} lacks features.{missing[0]} ({len(missing)} missing)")
    for k, t in own.items():
        if tuple(state[k].shape) != tuple(t.shape):
            raise FormatError(f"{path}: features.{k} is {list(state[k].shape)}, expected {list(t.shape)}")
        if not state[k].is_floating_point() or not state[k].isfinite().all():
            raise FormatError(f"{path}: features.{k} must be finite floats")
    module.load_state_dict({k: state[k].float() for k in own})
