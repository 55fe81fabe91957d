"""unsup3d checkpoints (`checkpoint030.pth`): `netD`, `netA`, `netL`, `netV` state dicts (and
perhaps `netC`, optimizer states, `epoch`) -> a `Face3D` module.

Read with `torch.load(weights_only=True)`: tensors, dicts, lists and numbers only, never code.
unsup3d's trainer also saves its `unsup3d.meters.MetricsTrace` (a class holding a dict of loss
curves); that one name is allow-listed as `MetricsTrace` below, an inert stand-in that keeps the
plain data and runs nothing of unsup3d's. Old (pre-zip) torch files load the same way.
The architecture sizes (nf, zdim, encoder nf) are read from the weight shapes; the decoding
ranges are unsup3d's defaults (`Face3DConfig.unsup3d()`).
"""
from pathlib import Path

from latentedit.errors import FormatError
from latentedit.formats.torch_file import load_torch_file
from latentedit.formats.weights import load_weights
from latentedit.models.face3d import Face3D, Face3DConfig

NETS = ("netD", "netA", "netL", "netV")


class MetricsTrace:
    """Stands in for unsup3d.meters.MetricsTrace when unpickling: data only (`data`, the loss
    curves {split: [{metric: value}]}); any other state in the file is dropped."""

    def __setstate__(self, state):
        self.data = state.get("data") if isinstance(state, dict) else None

    def __repr__(self):
        return f"MetricsTrace({sorted(self.data) if isinstance(self.data, dict) else None})"


TRAINER_GLOBALS = [(MetricsTrace, "unsup3d.meters.MetricsTrace")]


def read_checkpoint(path):
    """The checkpoint dict, loaded weights-only (unsup3d's metrics trace allowed as data)."""
    path = Path(path)
    ckpt = load_torch_file(path, TRAINER_GLOBALS)
    if not isinstance(ckpt, dict):
        raise FormatError(f"{path}: expected a dict of state dicts, found {type(ckpt).__name__}")
    return ckpt


def config_from_state(ckpt, what="checkpoint"):
    """Face3DConfig (unsup3d decoding) with sizes read from the weight shapes."""
    try:
        nf = ckpt["netD"]["network.0.weight"].shape[0]
        zdim = ckpt["netD"]["network.11.weight"].shape[0]
        nf_enc = ckpt["netL"]["network.0.weight"].shape[0]
    except (KeyError, TypeError, AttributeError) as e:
        raise FormatError(f"{what}: not an unsup3d checkpoint (missing {e})") from None
    cfg = Face3DConfig.unsup3d()
    cfg.nf, cfg.zdim, cfg.nf_encoder = int(nf), int(zdim), int(nf_enc)
    return cfg


def face3d_from_state(ckpt, what="checkpoint", cfg=None):
    """{netD, netA, netL, netV: state dict, ...} -> Face3D (eval mode)."""
    missing = [k for k in NETS if not isinstance(ckpt.get(k), dict)]
    if missing:
        raise FormatError(f"{what}: not an unsup3d checkpoint, missing {missing} (has {sorted(ckpt)[:8]})")
    cfg = cfg or config_from_state(ckpt, what)
    model = Face3D(cfg)
    for name in NETS:
        load_weights(getattr(model, name), ckpt[name], f"{what} [{name}]")
    return model.eval()


def load_unsup3d(path):
    """An unsup3d `checkpoint030.pth` -> Face3D."""
    return face3d_from_state(read_checkpoint(path), str(path))


def face3d_to_state(model: Face3D):
    """Face3D -> the unsup3d checkpoint layout {netD, netA, netL, netV} (for torch.save)."""
    return {name: {k: v.detach().clone() for k, v in getattr(model, name).state_dict().items()}
            for name in NETS}
