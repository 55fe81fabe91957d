"""Reading foreign torch checkpoints safely: weights-only unpickling with an explicit allow-list."""
import re
import warnings

import torch

from latentedit.errors import FormatError
from latentedit.formats.files import regular_file


def load_torch_file(path, safe_globals=()):
    """torch.load(weights_only=True) on CPU; `safe_globals` are the only classes allowed beyond
    tensors and plain containers. Any failure is one FormatError line naming the file."""
    path = regular_file(path)
    try:
        with torch.serialization.safe_globals(list(safe_globals)), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols before failing anyway
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError / RuntimeError / EOFError ... for foreign files
        # torch's words for a global it would not load ("Unsupported global"; "unsupported GLOBAL" for
        # blocked modules such as os / posix; the old format's reduce / build refusals)
        refused = ("unsupported global", "trying to call reduce", "can only build", "can only create new object")
        reason = "it holds objects outside the allow-list" if any(r in str(e).lower() for r in refused) else \
            f"corrupt or truncated: {type(e).__name__}"
        named = re.search(r"GLOBAL ([A-Za-z_][\w.]{0,200})", str(e))  # which object: often tells the file apart
        if named and reason.startswith("it holds"):
            reason += f", such as {named.group(1)}"
        raise FormatError(f"{path}: not a loadable weights-only torch file ({reason})") from None
