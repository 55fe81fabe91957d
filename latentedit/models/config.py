"""The to_dict / from_dict pair shared by the dataclass configs that bundles and run folders store."""
from dataclasses import asdict

from latentedit.errors import InputError


class DictConfig:
    """Mixin for a dataclass: `to_dict()` and `from_dict(d)`, where an unknown key is an error (a
    config from a newer or foreign file must not be half-read)."""

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        if not isinstance(d, dict):
            raise InputError(f"{cls.__name__} must be a dict, got {type(d).__name__}")
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise InputError(f"unknown {cls.__name__} keys: {unknown}")
        return cls(**d)
