"""Atomic file writes: a reader (or a resumed batch) never sees a half-written file."""
import contextlib
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path`; on success it replaces `path` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}."
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the permissions open() would
        yield Path(tmp)
        os.replace(tmp, path)
    except OSError as e:
        # The user named `path`, not our hidden temporary file: say which output failed.
        names = {str(n) for n in (e.filename, e.filename2) if n is not None}
        if any(Path(n).name.startswith(prefix) and n.endswith(".tmp") for n in names):
            raise OSError(e.errno, e.strerror or str(e), str(path)) from None
        raise
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes(path, data):
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path, text):
    write_bytes(path, text.encode("utf-8"))
