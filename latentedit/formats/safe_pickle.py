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
import types

import numpy as np
import torch

from latentedit.errors import UnsafeFileError


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
        return dict(self.state.get("_modules") or {})

    def state_dict(self, prefix=""):
        """Flattened parameters and buffers, in nn.Module key order."""
        out = {}
        for group in ("_parameters", "_buffers"):
            for name, t in (self.state.get(group) or {}).items():
                if t is not None:
                    out[prefix + name] = t.detach() if torch.is_tensor(t) else t
        for name, child in self.children().items():
            if isinstance(child, PersistentObject):
                out.update(child.state_dict(prefix + name + "."))
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
    object below it, and on an allow-listed class or function that would alter library code for
    the rest of the process."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, f):
        super().__init__(f)
        self._shared = set()  # ids of the allow-listed objects handed out by find_class

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            obj = _ALLOWED[(module, name)]
            self._shared.add(id(obj))
            return obj
        raise UnsafeFileError(f"refusing to unpickle {module}.{name}: not on the allow-list of data-only types")

    def persistent_load(self, pid):
        raise UnsafeFileError("refusing to unpickle a persistent reference (not an NVlabs network pickle)")

    def load_build(self):
        target = self.stack[-2]
        if id(target) in self._shared or isinstance(target, (type, types.FunctionType, types.BuiltinFunctionType)):
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
        from latentedit.errors import FormatError

        raise FormatError(f"corrupt or truncated pickle ({type(e).__name__}: {str(e)[:200]})") from None
