"""Errors that the CLI reports as a single line (no traceback) with a non-zero exit."""


class LatentEditError(Exception):
    """Base of all user-facing errors: bad input, bad file, bad option."""


class FormatError(LatentEditError, ValueError):
    """A file is corrupt, foreign, truncated or missing a key."""


class UnsafeFileError(FormatError):
    """A file asks to run code or build an object outside the allow-list."""


class InputError(LatentEditError, ValueError):
    """A tensor or option has the wrong shape, type or value (NaN, out of range, ...)."""
