"""The to_dict / from_dict pair shared by the dataclass configs that bundles and run folders store."""
import math
import numbers
from dataclasses import asdict

from latentedit.errors import InputError


def is_real(v):
    """A finite int or float (numpy scalars too), not a bool: what a numeric config field may hold."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def is_count(v, low=1):
    """An int (not a bool) >= low."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= low


class DictConfig:
    """Mixin for a dataclass: `to_dict()` and `from_dict(d)`, where an unknown key is an error (a
    config from a newer or foreign file must not be half-read). Every config a bundle or a run
    folder stores is one (the networks', the trainers': GANConfig, OffsetConfig, EncoderTrainConfig,
    EvalTrainConfig), so a bad stored config is always an InputError."""

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        if not isinstance(d, dict):
            raise InputError(f"{cls.__name__} must be a dict, got {type(d).__name__}")
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise InputError(f"unknown {cls.__name__} keys: {unknown}")
        try:
            return cls(**d)
        except TypeError as e:  # a required key missing, or a value of the wrong type (tuple(5))
            raise InputError(f"{cls.__name__}: {e}") from None
