"""Opening user files safely: every reader checks here first, so a FIFO, a device such as /dev/zero
(also behind a symlink) or a folder is one clear error instead of a hang or an endless read, and a
JSON file is parsed with its failures (bad UTF-8, bad syntax, absurd nesting, huge size) as one
FormatError naming the path."""
import json
import os
import stat
from pathlib import Path

from latentedit.errors import FormatError

MAX_JSON_BYTES = 1 << 30  # 1 GiB: a million W codes as JSON text is ~10 GB, far past any real file


def regular_file(path, what="file"):
    """The path (symlinks followed) of an existing regular file, or FormatError naming it. stat never
    blocks, unlike opening a FIFO, and a device or FIFO never ends, so they are refused up front."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FormatError(f"{path}: no such {what}, cannot read it") from None
    except OSError as e:
        raise FormatError(f"{path}: cannot read {what} ({e.strerror or e})") from None
    if stat.S_ISDIR(mode):
        raise FormatError(f"{path}: a folder, expected a {what}")
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) \
            else "a socket" if stat.S_ISSOCK(mode) else "not a regular file"
        raise FormatError(f"{path}: {kind}, not a regular {what}")
    return path


def read_bytes(path, what="file", max_bytes=None):
    """The whole content of a regular file, refusing one larger than max_bytes before reading it."""
    path = regular_file(path, what)
    size = path.stat().st_size
    if max_bytes is not None and size > max_bytes:
        raise FormatError(f"{path}: {size:,} bytes, more than the {max_bytes:,} a {what} may hold")
    try:
        return path.read_bytes()
    except OSError as e:
        raise FormatError(f"{path}: cannot read {what} ({e.strerror or e})") from None


def read_json(path, what="JSON file", max_bytes=MAX_JSON_BYTES):
    """A regular file parsed as UTF-8 JSON; every way that can fail is one FormatError naming it."""
    data = read_bytes(path, what, max_bytes)
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise FormatError(f"{path}: not UTF-8 text, not a {what} ({e.reason} at byte {e.start})") from None
    except ValueError as e:  # bad syntax, or an integer of more digits than Python converts
        raise FormatError(f"{path}: not valid JSON ({e})") from None
    except RecursionError:
        raise FormatError(f"{path}: JSON nested too deeply to be a {what}") from None


def file_sha256(path, what="file"):
    """sha256 hex digest of a regular file's bytes (run records name the files they used by it)."""
    import hashlib

    return hashlib.sha256(read_bytes(path, what)).hexdigest()


def recorded_path(path):
    """`path` as a provenance records it: relative to the working folder when it lies inside it,
    else its name alone, so a file never carries the layout of the machine that made it."""
    path = Path(path).resolve()
    try:
        return path.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.name
