"""Directions in Z, W or W+: algebra, conditional projection and applying them to latents.

    d = Direction.load("smile")                         # bundle name or .npy path
    edit = d.orthogonal_to(Direction.load("age")).restrict(0, 6, num_ws=G.num_ws)
    images = G.synthesize(w + 2.0 * edit)               # w [N, 512] -> W+ [N, num_ws, 512]

A direction is a vector [D] in Z or W, optionally confined to the W+ layers [start, stop) (then it
moves those layers only, as SeFa's layer-wise edits do), or a per-layer W+ array [L, D]. Metadata:
space, layer range, generator hash (None = unknown), name and provenance. Combining or applying
directions of another latent space or another generator raises InputError.
"""
import numbers
from pathlib import Path

import numpy as np
import torch

from latentedit.errors import InputError
from latentedit.formats.directions import SPACES  # one list, also checked where sidecars are read

_EPS = 1e-8


def _as_tensor(x):
    if torch.is_tensor(x):
        return x.detach()
    return torch.as_tensor(np.asarray(x, dtype=np.float32))


class Direction:
    """A latent direction: `vector` [D] in Z or W (optionally moving only W+ layers `layers` =
    (start, stop)), or [L, D] in W+, with the generator hash it was made for. Algebra (+, -, *,
    dot, project, orthogonal_to, normalized), `apply(latents, strength)` and `latents + s * d`;
    mixing spaces or generators raises InputError. Load with `Direction.load(name or path)` or,
    checked against a generator once, `model.direction(name)`."""

    __array_ufunc__ = None  # `ndarray + direction` defers to Direction.__radd__

    def __init__(self, vector, space="w", layers=None, num_ws=None, generator=None, name=None, provenance=None):
        v = _as_tensor(vector).to("cpu", torch.float32)
        if space not in SPACES + (None,):
            raise InputError(f"space must be one of {SPACES} (or None: unknown), got {space!r}")
        if space != "w+" and v.ndim == 2 and v.shape[0] == 1:
            v = v[0]  # InterfaceGAN's [1, D]
        if v.ndim != (2 if space == "w+" else 1):
            raise InputError(f"a {space or 'W'} direction is a vector [D]" + (" ([L, D] in W+)" if space == "w+" else "")
                             + f", got shape {list(v.shape)}")
        if not torch.isfinite(v).all():
            raise InputError("direction contains NaN or infinite values")
        if space == "w+":
            num_ws, layers = v.shape[0], None
        if layers is not None:
            if space == "z":
                raise InputError("a Z direction has no W+ layers")
            start, stop = (int(layers[0]), int(layers[1]))
            if not 0 <= start < stop or (num_ws is not None and stop > num_ws):
                raise InputError(f"layer range [{start}, {stop}) is empty or outside 0..{num_ws}")
            layers = (start, stop)
        self.vector, self.space, self.layers = v, space, layers
        self.num_ws = None if num_ws is None else int(num_ws)
        self.generator, self.name, self.provenance = generator, name, dict(provenance or {})

    # -- metadata ---------------------------------------------------------------------------
    @property
    def dim(self):
        return self.vector.shape[-1]

    def _replace(self, vector, **changes):
        kw = dict(space=self.space, layers=self.layers, num_ws=self.num_ws, generator=self.generator,
                  name=self.name, provenance=self.provenance)
        kw.update(changes)
        return Direction(vector, **kw)

    def metadata(self):
        return {"name": self.name, "space": self.space, "layers": list(self.layers) if self.layers else None,
                "num_ws": self.num_ws, "w_dim": self.dim, "generator": self.generator, "provenance": self.provenance}

    def __repr__(self):
        where = f" layers {self.layers[0]}-{self.layers[1] - 1}" if self.layers else ""
        gen = self.generator[:12] if self.generator else "any generator"
        return f"Direction({self.name or 'unnamed'}: {self.space or '?'}{where}, |v|={self.norm():.4g}, {gen})"

    def check(self, G=None, space=None, generator_hash=None):
        """Raises InputError if the direction was made for another generator or latent space.
        generator_hash: G's hash when the caller has it (a Model computes it once)."""
        if space is not None and self.space is not None and _family(space) != _family(self.space):
            raise InputError(f"direction {self.name or '(unnamed)'} lives in {self.space.upper()}, the latents in "
                             f"{space.upper()}; make (or load) a direction for {space.upper()}")
        if G is not None:
            if self.dim != G.w_dim:
                raise InputError(f"direction has {self.dim} dims, the generator's latents {G.w_dim}")
            if self.generator is not None:
                from latentedit.formats.directions import made_for

                if not made_for(G, self.generator, generator_hash):
                    raise InputError(f"direction {self.name or '(unnamed)'} was made for another generator "
                                     f"(hash {self.generator[:12]}...); train or discover it for this one")
            if self.num_ws is not None and self.num_ws != G.num_ws:
                raise InputError(f"direction has {self.num_ws} W+ layers, the generator {G.num_ws}")
        return self

    # -- representation ---------------------------------------------------------------------
    def as_wplus(self, num_ws=None):
        """[num_ws, D]: the vector on the layers it moves, zeros elsewhere."""
        if self.space == "z":
            raise InputError("a Z direction has no W+ form")
        if self.space == "w+":
            return self.vector
        num_ws = num_ws or self.num_ws
        if num_ws is None:
            raise InputError("the number of W+ layers is unknown: pass num_ws (G.num_ws)")
        start, stop = self.layers or (0, num_ws)
        if stop > num_ws:
            raise InputError(f"direction moves layers up to {stop - 1}, the latents have {num_ws}")
        out = torch.zeros([num_ws, self.dim])
        out[start:stop] = self.vector
        return out

    def restrict(self, start, stop, num_ws=None):
        """The same direction moving only W+ layers [start, stop) (intersected with its own range)."""
        if self.space == "z":
            raise InputError("a Z direction has no W+ layers to restrict to")
        num_ws = num_ws or self.num_ws
        if self.space == "w+":
            v = torch.zeros_like(self.vector)
            v[start:stop] = self.vector[start:stop]
            return self._replace(v)
        if self.layers:
            start, stop = max(start, self.layers[0]), min(stop, self.layers[1])
        return self._replace(self.vector, layers=(start, stop), num_ws=num_ws)

    def _aligned(self, other):
        """(a, b, common metadata) of two directions in one representation; refuses mismatches."""
        if not isinstance(other, Direction):
            raise InputError(f"expected a Direction, got {type(other).__name__}")
        if self.dim != other.dim:
            raise InputError(f"directions have {self.dim} and {other.dim} dims")
        if self.space and other.space and _family(self.space) != _family(other.space):
            raise InputError(f"cannot combine a {self.space.upper()} and a {other.space.upper()} direction")
        if self.generator and other.generator and self.generator != other.generator:
            raise InputError("the directions were made for different generators")
        meta = dict(generator=self.generator or other.generator, space=self.space or other.space,
                    num_ws=self.num_ws or other.num_ws, name=None, provenance={})
        if self.space != "w+" and other.space != "w+" and self.layers == other.layers:
            return self.vector, other.vector, {**meta, "layers": self.layers}
        n = meta["num_ws"]
        return self.as_wplus(n), other.as_wplus(n), {**meta, "space": "w+", "layers": None}

    # -- algebra ----------------------------------------------------------------------------
    def __add__(self, other):
        if torch.is_tensor(other) or isinstance(other, np.ndarray):
            return self.apply(other)                                # direction + latents
        if not isinstance(other, Direction):
            return NotImplemented
        a, b, meta = self._aligned(other)
        return Direction(a + b, **meta)

    def __sub__(self, other):
        if not isinstance(other, Direction):
            return NotImplemented
        a, b, meta = self._aligned(other)
        return Direction(a - b, **meta)

    def __neg__(self):
        return self._replace(-self.vector)

    def __mul__(self, s):
        if isinstance(s, numbers.Real) or (torch.is_tensor(s) and s.ndim == 0):
            return self._replace(self.vector * float(s))
        return NotImplemented

    __rmul__ = __mul__

    def __truediv__(self, s):
        return self * (1.0 / float(s))

    def dot(self, other):
        a, b, _ = self._aligned(other)
        return float((a.double() * b.double()).sum())

    def norm(self):
        return float(self.vector.double().norm())

    def normalized(self):
        n = self.norm()
        if n < _EPS:
            raise InputError("cannot normalise a zero direction")
        return self._replace(self.vector / n)

    def project(self, other):
        """The component of self along other: (self . o / o . o) o."""
        oo = other.dot(other)
        if oo < _EPS ** 2:
            raise InputError("cannot project onto a zero direction")
        _, b, meta = self._aligned(other)
        return Direction(b * (self.dot(other) / oo), **meta)

    def orthogonal_to(self, *conditions):
        """InterfaceGAN's conditional manipulation for any number of conditions: removes the part
        of self in the span of the conditions (least squares), returns the unit remainder."""
        if not conditions:
            return self.normalized()
        vecs = []
        for c in conditions:
            a, b, meta = self._aligned(c)
            vecs.append(b.reshape(-1).double())
        v = a.reshape(-1).double()                                  # [K] (K = D or L*D)
        C = torch.stack(vecs, 1)                                    # [K, M]
        for _ in range(2):  # a second pass removes the rounding left by the first
            coef = torch.linalg.lstsq(C, v[:, None], driver="gelsd").solution   # [M, 1]
            v = v - (C @ coef)[:, 0]
        if v.norm() < 1e-6 * max(float(a.double().norm()), _EPS):
            raise InputError("the direction lies in the span of the conditions; nothing is left")
        names = ",".join(str(c.name) for c in conditions)
        prov = {"made_by": "orthogonal_to", "of": self.name, "conditions": [c.name for c in conditions]}
        return Direction((v / v.norm()).float().reshape(a.shape),
                         **{**meta, "name": f"{self.name}|{names}", "provenance": prov})

    # -- applying ---------------------------------------------------------------------------
    def apply(self, latents, strength=1.0, G=None, space=None):
        """latents + strength * self. latents: [N, D] or [N, L, D] (tensor or array, returned as
        the same kind). A direction confined to W+ layers turns W codes [N, D] into W+ codes.
        G / space: refuse a direction made for another generator / latent space."""
        self.check(G, space)
        x = _as_tensor(latents)
        if x.ndim not in (2, 3) or x.shape[-1] != self.dim:
            raise InputError(f"latents must be [N, {self.dim}] or [N, L, {self.dim}], got {list(x.shape)}")
        if self.space == "w+" or self.layers is not None:
            L = x.shape[1] if x.ndim == 3 else (G.num_ws if G is not None else None)
            delta = self.as_wplus(L)                                # [L, D]
            if x.ndim == 2:
                x = x[:, None].expand(-1, delta.shape[0], -1)       # W -> W+ [N, L, D]
            elif x.shape[1] != delta.shape[0]:
                raise InputError(f"latents have {x.shape[1]} W+ layers, the direction {delta.shape[0]}")
        else:
            delta = self.vector                                     # [D], broadcast over N (and L)
        out = x + float(strength) * delta.to(x.device, x.dtype)
        return out if torch.is_tensor(latents) else out.numpy()

    def __radd__(self, latents):
        return self.apply(latents)

    def __rsub__(self, latents):
        return self.apply(latents, -1.0)

    # -- files ------------------------------------------------------------------------------
    def save(self, path):
        """NAME.npy ([1, D] float32, InterfaceGAN's layout; [L, D] for per-layer W+) + NAME.json."""
        from latentedit.formats.directions import write_direction

        v = self.vector if self.space == "w+" else self.vector[None]
        return write_direction(path, v.numpy(), self.metadata())

    @classmethod
    def load(cls, name_or_path, bundle=None, space=None):
        """A direction from a .npy path, a name in the bundle's boundaries/ (default bundle), an
        e4e-style .pt direction, or a GANSpace component `FILE.npz:INDEX[:START-END]` (see
        formats.directions). space: the space of a file that does not say; checked against it."""
        from latentedit.formats.directions import (FOREIGN_SUFFIXES, find_direction, read_direction,
                                                   read_foreign_direction, split_component)

        text, component, layers = split_component(name_or_path)
        if component is not None or Path(text).suffix in FOREIGN_SUFFIXES:
            path = Path(text)
            vector, meta = read_foreign_direction(path, component, layers)
        else:
            path = find_direction(name_or_path, bundle)
            vector, meta = read_direction(path)
        if not vector.any():  # it would move nothing; normalising it would divide by zero
            raise InputError(f"{path}: the direction is all zeros")
        file_space = meta.get("space", space)
        if space is not None and file_space != space:
            raise InputError(f"{path}: a {str(file_space).upper()} direction, not {space.upper()}")
        layers = meta.get("layers")
        return cls(vector if file_space == "w+" else vector[0] if len(vector) == 1 else _bad(path, vector),
                   space=file_space, layers=tuple(layers) if layers else None, num_ws=meta.get("num_ws"),
                   generator=meta.get("generator"), name=meta.get("name") or path.stem,
                   provenance=meta.get("provenance") or {"file": str(path)})


def _family(space):
    return "z" if space == "z" else "w"  # W and W+ directions combine (W broadcasts to every layer)


def _bad(path, vector):
    raise InputError(f"{path}: a [{len(vector)}, D] array needs a sidecar saying it is a W+ direction")


def gram_schmidt(directions):
    """Orthonormal directions spanning the same nested subspaces (modified Gram-Schmidt)."""
    out = []
    for d in directions:
        v = d
        for u in out:
            v = v - v.project(u)
        if v.norm() < 1e-6 * max(d.norm(), _EPS):
            raise InputError(f"direction {d.name} is linearly dependent on the ones before it")
        u = v.normalized()
        out.append(u._replace(u.vector, name=d.name, provenance=d.provenance))
    return out


def linear_interpolate(latents, direction, start=-3.0, end=3.0, steps=10, mode="auto"):
    """InterfaceGAN's linear_interpolate for a batch: latents [N, D] or [N, L, D] ->
    [N, steps, D] / [N, steps, L, D].
    mode "absolute" (W/Z codes [N, D]): the code moves along the unit normal n to signed distances
    linspace(start, end) from the boundary through the origin: x + (d - x . n) n.
    mode "relative" (W+ codes, or a layer-confined direction): x + d * direction.
    "auto" picks absolute for [N, D] codes and a plain vector direction, else relative."""
    if steps < 1:
        raise InputError(f"steps must be >= 1, got {steps}")
    x = _as_tensor(latents).float()
    plain = direction.space != "w+" and direction.layers is None
    if mode == "auto":
        mode = "absolute" if x.ndim == 2 and plain else "relative"
    d = torch.linspace(float(start), float(end), steps)                            # [S]
    if mode == "absolute":
        if x.ndim != 2 or not plain:
            raise InputError("absolute distances need codes [N, D] and a direction in one space (no layers)")
        n = direction.normalized().vector.to(x)                                     # [D]
        shift = d[None] - (x @ n)[:, None]                                          # [N, S]
        out = x[:, None] + shift[..., None] * n                                     # [N, S, D]
    elif mode == "relative":
        out = torch.stack([direction.apply(x, s) for s in d.tolist()], 1)          # [N, S, (L,) D]
    else:
        raise InputError(f"mode must be auto, absolute or relative, got {mode!r}")
    return out if torch.is_tensor(latents) else out.numpy()
