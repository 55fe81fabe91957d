"""A restricted unpickler for NVlabs network pickles (stylegan2-ada-pytorch, stylegan3).

Those pickles store each network as a "persistent object": a call to
torch_utils.persistence._reconstruct_persistent_obj(meta) whose meta carries the Python source of
the network's module, which NVlabs' loader executes. Here that call builds an inert
`PersistentObject` (class name, init kwargs, state) and the source is never executed; every
other global must be on the allow-list below, so a pickle that asks for anything else
(os.system, builtins.eval, ...) is refused before anything runs.
"""
import collections
import io
import pickle

import numpy as np
import torch

from latentedit.errors import FormatError, UnsafeFileError

MAX_MODULE_DEPTH = 64  # a 1024 px NVlabs generator nests 4 deep (G.synthesis.b1024.conv0.affine)
MAX_MODULES = 100_000  # it has about 150 modules


class PersistentObject:
    """What an NVlabs persistent network becomes: data only, no code."""

    def __init__(self, meta):
        meta = dict(meta)
        self.class_name = meta.get("class_name")
        self.version = meta.get("version")
        self.state = dict(meta.get("state") or {})
        self.init_args = self.state.get("_init_args", ())
        self.init_kwargs = dict(self.state.get("_init_kwargs") or {})

    def __repr__(self):
        return f"PersistentObject({self.class_name})"

    def children(self):
        return self._group("_modules")

    def _group(self, key):
        group = self.state.get(key) or {}
        if not isinstance(group, dict):
            raise FormatError(f"{self.class_name}: {key} is a {type(group).__name__}, not a dict")
        return dict(group)

    def state_dict(self, prefix=""):
        """Flattened parameters and buffers, in nn.Module key order. Walked with a stack and bounds,
        not recursion: a pickle can nest modules thousands deep, share them or make a cycle."""
        out, todo, visited = {}, [(prefix, self, 0)], 0
        while todo:
            prefix, net, depth = todo.pop()
            visited += 1
            if depth > MAX_MODULE_DEPTH or visited > MAX_MODULES:
                raise FormatError(f"{self.class_name}: modules nested deeper than {MAX_MODULE_DEPTH} or more than "
                                  f"{MAX_MODULES} of them (a cycle or a hostile pickle)")
            for group in ("_parameters", "_buffers"):
                for name, t in net._group(group).items():
                    if t is not None:
                        out[prefix + str(name)] = t.detach() if torch.is_tensor(t) else t
            children = [(f"{prefix}{name}.", child, depth + 1) for name, child in net.children().items()
                        if isinstance(child, PersistentObject)]
            todo.extend(reversed(children))  # the first child's subtree next: depth-first, in order
        return out


class _AttrDict(dict):
    """Stands in for dnnlib.EasyDict."""


def _storage_from_bytes(data):
    # torch pickles storages as torch.save bytes; read them back weights-only.
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


_ALLOWED = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): PersistentObject,
    ("dnnlib.util", "EasyDict"): _AttrDict,
    ("dnnlib", "EasyDict"): _AttrDict,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    ("torch", "Size"): torch.Size,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
}
# numpy scalars and arrays (gains, init kwargs); whatever they contain passes through this unpickler too.
try:
    from numpy._core import multiarray as _np_multiarray
except ImportError:  # numpy < 2
    from numpy.core import multiarray as _np_multiarray
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_mod, "scalar")] = _np_multiarray.scalar
    _ALLOWED[(_mod, "_reconstruct")] = _np_multiarray._reconstruct
_ALLOWED[("numpy", "dtype")] = np.dtype
_ALLOWED[("numpy", "ndarray")] = np.ndarray
for _name in ("float32", "float16", "bfloat16", "float64", "int64", "int32", "uint8", "bool"):
    _ALLOWED[("torch", _name)] = getattr(torch, _name)


class RestrictedUnpickler(pickle._Unpickler):
    """The pure-Python unpickler, so that BUILD can be vetted too: BUILD sets attributes on the
    object below it; on an allow-listed class or function that would alter library code for the
    rest of the process, on a built object it could replace a method (state_dict, ...). Only numpy
    arrays and dtypes are built that way in real pickles, from a tuple their __setstate__ reads."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        raise UnsafeFileError(f"refusing to unpickle {module}.{name}: not on the allow-list of data-only types")

    def persistent_load(self, pid):
        raise UnsafeFileError("refusing to unpickle a persistent reference (not an NVlabs network pickle)")

    def load_build(self):
        target, state = self.stack[-2], self.stack[-1]
        no_op = type(state) is dict and not state and not callable(target)  # an empty __dict__ changes nothing
        if not no_op and not (isinstance(target, (np.ndarray, np.dtype)) and isinstance(state, tuple)):
            raise UnsafeFileError(f"refusing to set attributes on {getattr(target, '__name__', type(target).__name__)}"
                                  " (a pickle may only build data)")
        super().load_build()

    dispatch[pickle.BUILD[0]] = load_build


def restricted_load(f):
    """Unpickles a file object with the allow-list; never executes stored code."""
    try:
        return RestrictedUnpickler(f).load()
    except UnsafeFileError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            RuntimeError, MemoryError, RecursionError, OverflowError) as e:
        raise FormatError(f"corrupt or truncated pickle ({type(e).__name__}: {str(e)[:200]})") from None
