"""SD-GAN's output layout, written by both synthesis paths (ours and SD-GAN's test.py maths):

    origins/0000.png ...              the input faces
    interfacegan_origins/0000.png ... InterfaceGAN's prior alone
    predict_images/0000.png ...       the result
    records/0000.npy ...              per image [1 + num_ws, w_dim]: p, then the offset
    latents.json, interface.json      the codes w and the priors p (SD-GAN JSON)
    predict_latents.npy               [N, num_ws, w_dim] the edited images' codes
    manifest.json                     what made them (compact JSON)

An item is done when its record and its three PNGs exist; the latent files and the manifest are
rebuilt from the records, whichever run (or process) wrote them. Every file is written atomically.
"""
import json
from pathlib import Path

import numpy as np
import torch

from latentedit.errors import FormatError

FOLDERS = ("origins", "interfacegan_origins", "predict_images")


def compact_json(obj, indent=1, level=0):
    """JSON with one key per line but every list of numbers on one line (readable manifests)."""
    pad, inner = " " * (indent * level), " " * (indent * (level + 1))
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{inner}{json.dumps(str(k))}: {compact_json(v, indent, level + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, (list, tuple)):
        if all(not isinstance(v, (dict, list, tuple)) for v in obj):
            return json.dumps(list(obj))
        items = [f"{inner}{compact_json(v, indent, level + 1)}" for v in obj]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return json.dumps(obj)


def short_floats(array):
    """float32 array -> nested lists of the shortest decimals that read back to the same float32."""
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 0:
        return float(str(array[()]))
    return [short_floats(row) for row in array] if array.ndim > 1 else [float(str(v)) for v in array]


class SynthesisOutputs:
    """The files of one synthesis run into `out`, items named {i:04d}."""

    def __init__(self, out, count):
        self.out = Path(out)
        self.names = [f"{i:04d}" for i in range(count)]

    def image(self, i, column):
        """Path of item i's image in FOLDERS[column]."""
        return self.out / FOLDERS[column] / f"{self.names[i]}.png"

    def record(self, i):
        return self.out / "records" / f"{self.names[i]}.npy"

    def done(self, i):
        return self.record(i).exists() and all(self.image(i, c).exists() for c in range(len(FOLDERS)))

    def write(self, result, indices, only=None, normalize=False):
        """result (a SynthesisResult) of the items `indices`: the three PNGs and the record of each
        item in `only` (default all). normalize: each image stretched by its own min / max
        (test.py's save_image(normalize=True)); default the plain [-1, 1] mapping.
        -> {(i, column): uint8 [R, R, 3]} for every item of the batch (for a grid)."""
        from latentedit.formats.images import save_png, to_uint8, to_uint8_stretched
        from latentedit.formats.latents import write_latents

        indices = list(indices)
        only = set(indices if only is None else only)
        for j, i in enumerate(indices):
            if i in only:
                write_latents(self.record(i), torch.cat([result.prior[j][None], result.offset[j]]).numpy())
        convert = to_uint8_stretched if normalize else to_uint8
        arrays = {}
        for column, images in enumerate((result.origin, result.prior_image, result.image)):
            for i, arr in zip(indices, convert(images)):
                if i in only:
                    save_png(self.image(i, column), arr)
                arrays[i, column] = arr
        return arrays

    def load_records(self, num_ws, w_dim, priors=None):
        """(priors [N, w_dim], offsets [N, num_ws, w_dim]) from every item's record; FormatError
        unless the priors equal `priors` (the run's given ones), when given."""
        recs = np.stack([self._load_record(i, num_ws, w_dim) for i in range(len(self.names))])
        p, offsets = torch.from_numpy(recs[:, 0]), torch.from_numpy(recs[:, 1:])
        if priors is not None and not torch.equal(p, priors):
            raise FormatError(f"{self.out}/records: priors differ from --interface-file; delete the folder and re-run")
        return p, offsets

    def _load_record(self, i, num_ws, w_dim):
        from latentedit.formats.latents import read_earlier_array

        return read_earlier_array(self.record(i), (1 + num_ws, w_dim), "record")

    def write_latents(self, w, priors, edited):
        """latents.json (w), interface.json (p) and predict_latents.npy (the edited codes)."""
        from latentedit.formats.latents import write_latents

        write_latents(self.out / "latents.json", np.asarray(w))
        write_latents(self.out / "interface.json", np.asarray(priors))
        write_latents(self.out / "predict_latents.npy", np.asarray(edited))

    def write_manifest(self, manifest):
        from latentedit.formats.atomic import write_text

        write_text(self.out / "manifest.json", compact_json(manifest) + "\n")
