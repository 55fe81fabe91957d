"""Resumable batch runs over numbered items (images to generate, invert or synthesize), optionally
split over `torchrun` processes.

    run = ResumableRun(out, names, batch_size, settings, done=lambda i: (out / f"{names[i]}.png").exists())
    for batch in run.todo():          # this process's batches that still miss an output
        ...compute the whole batch, write the items in run.missing(batch)...
    if run.finish():                  # every process is done; True on rank 0 only
        ...grid, manifest: rebuilt from the files...

Why each piece:
- settings: a folder resumes only the run that made it; they live in OUT/run.json and a re-run
  with other settings is one InputError naming the first setting that differs.
- fixed batches (items k*B .. k*B+B-1, whichever of them are left): a batch's composition changes
  its float sums, so a resumed run recomputes whole batches and writes files bit-identical to an
  uninterrupted run's.
- sharding: under torchrun (WORLD_SIZE > 1) rank r takes the batches b with b % world == r, so
  N processes write exactly the files one process writes; `finish()` waits for all (a gloo
  barrier) and hands the files that summarise the run to rank 0.

It lives at the package's top level rather than in edit/: it is about folders and processes,
not latent maths; generate (no edit at all), invert and synthesize share it.
"""
import json
from pathlib import Path

import numpy as np

from latentedit.errors import FormatError, InputError
from latentedit.formats.atomic import write_text
from latentedit.formats.files import read_json, regular_file
from latentedit.train import distributed

RUN_RECORD = "run.json"


def check_settings(out, settings, write=True):
    """Refuses a folder made with other settings (one InputError naming the first difference);
    records `settings` in out/run.json when the folder has none yet (and `write`)."""
    out = Path(out)
    record = out / RUN_RECORD
    if not record.exists():
        if write:
            write_text(record, json.dumps(settings, indent=1) + "\n")
        return
    try:
        saved = read_json(record, "run record")
    except FormatError:
        saved = None
    if saved == settings:
        return
    if not isinstance(saved, dict):
        detail = "unreadable"
    else:
        unset = object()
        key = next(k for k in list(settings) + list(saved) if saved.get(k, unset) != settings.get(k, unset))
        detail = f"{key} was {saved.get(key, 'unset')!r}, now {settings.get(key, 'unset')!r}"
    raise InputError(f"{out} holds images made with other settings: {detail} ({record}); choose another --out")


def read_earlier_png(path, resolution):
    """uint8 [R, R, 3] of an image an earlier (or another process's) run wrote; FormatError if it is
    unreadable or not resolution x resolution."""
    from PIL import Image

    try:
        with Image.open(regular_file(path, "image from an earlier run")) as im:
            arr = np.asarray(im.convert("RGB"))
    except OSError as e:
        raise FormatError(f"{path}: unreadable image from an earlier run ({e}); delete it") from None
    if resolution is not None and arr.shape[:2] != (resolution, resolution):
        raise FormatError(f"{path}: {arr.shape[1]}x{arr.shape[0]} image from an earlier run, "
                          f"expected {resolution} px; delete it or choose another --out")
    return arr


class ResumableRun:
    """The items of one run into `out`: which are left, in which fixed batches, on which process.

    names: the items' names (their number is the run's length); done(i) -> whether item i's outputs
    all exist (checked once, here, before anything is written); settings: a dict checked against
    out/run.json (None: no record, e.g. a run whose outputs say all there is); sharded: split the
    batches over torchrun's processes (gloo process group, started here when WORLD_SIZE > 1)."""

    def __init__(self, out, names, batch_size, settings=None, done=None, sharded=True):
        if batch_size < 1:
            raise InputError("--batch-size must be >= 1")
        self.out, self.names, self.batch_size = Path(out), list(names), int(batch_size)
        self.rank, self.world = 0, 1
        if sharded:
            self.rank, self.world, _ = distributed.init_distributed(backend="gloo")
        if settings is not None:
            check_settings(self.out, settings, write=self.rank == 0)
        done = done or (lambda i: False)
        self.left = {i for i in range(len(self.names)) if not done(i)}  # over all processes

    @property
    def batches(self):
        """Every batch of the run: items k*B .. k*B+B-1."""
        n, b = len(self.names), self.batch_size
        return [list(range(k, min(k + b, n))) for k in range(0, n, b)]

    def todo(self):
        """This process's batches holding at least one item that is left (whole batches: see above)."""
        return [batch for b, batch in enumerate(self.batches)
                if b % self.world == self.rank and self.left.intersection(batch)]

    def missing(self, batch):
        """The items of `batch` whose outputs are to be written."""
        return [i for i in batch if i in self.left]

    def todo_count(self):
        """Items this process writes."""
        return sum(len(self.missing(batch)) for batch in self.todo())

    def finish(self):
        """Waits for every process; True on the one (rank 0) that writes the run's summary files."""
        distributed.barrier()
        return self.rank == 0


def _plain(items, label):
    return items


def generate_images(G, ws, out, names=None, batch_size=4, noise_mode="const", settings=None, progress=None):
    """Images G(ws) into a resumable folder: out/NAME.png per code and out/grid.png, or only the
    grid when `out` ends in .png (nothing to resume then). ws [N, num_ws, w_dim] (or [N, w_dim]);
    names default 0000, 0001, ...; settings: see `check_settings`; progress(batches, label) -> the
    batches, wrapped (e.g. in a progress bar). Split over torchrun's processes like `ResumableRun`.
    -> (the number of images this process wrote, the grid's path or None on ranks other than 0)."""
    import math
    import os

    import torch

    from latentedit.formats.images import save_png, tile, to_uint8

    ws = G.broadcast_w(torch.as_tensor(ws))
    names = [f"{i:04d}" for i in range(len(ws))] if names is None else list(names)
    if len(names) != len(ws):
        raise InputError(f"{len(names)} names for {len(ws)} codes")
    out = Path(out)
    grid_only = out.suffix.lower() == ".png"
    if grid_only and int(os.environ.get("WORLD_SIZE", 1)) > 1:
        raise InputError(f"--out {out}: a grid alone cannot be split over processes; give a folder")
    files = [None if grid_only else out / f"{name}.png" for name in names]
    run = ResumableRun(out, names, batch_size, None if grid_only else settings,
                       done=lambda i: files[i] is not None and files[i].exists(), sharded=not grid_only)
    arrays = [None] * len(names)  # uint8 [R, R, C] per image: what the files and the grid hold
    batches = (progress or _plain)(run.todo(), f"generating {run.todo_count()} images")
    with torch.no_grad():
        for batch in batches:
            for i, arr in zip(batch, to_uint8(G.synthesize(ws[batch], noise_mode=noise_mode))):
                arrays[i] = arr
                if i in run.left and files[i] is not None:
                    save_png(files[i], arr)
    if not run.finish():
        return run.todo_count(), None
    for i, arr in enumerate(arrays):
        if arr is None:  # written by an earlier, interrupted run or by another process
            arrays[i] = read_earlier_png(files[i], G.img_resolution)
    grid_path = out if grid_only else out / "grid.png"
    save_png(grid_path, tile(np.stack(arrays), math.ceil(math.sqrt(len(arrays)))))
    return run.todo_count(), grid_path


def synthesize_images(compute, count, out, batch_size=16, settings=None, normalize=False, grid=0, progress=None,
                      label="synthesizing {todo} of {count} images"):
    """A resumable SD-GAN-layout synthesis run (`latentedit.edit.outputs`): compute(indices) -> the
    SynthesisResult of those items; each batch's missing PNGs and records are written. Both
    synthesis paths (DiscreteSynthesizer, SDGANSynthesizer) run through here.
    -> (SynthesisOutputs, the ResumableRun, {(i, column): uint8 [R, R, 3]} for the items i < grid
    this process computed). Call `run.finish()` before reading what other processes wrote."""
    from latentedit.edit.outputs import SynthesisOutputs

    outputs = SynthesisOutputs(out, count)
    run = ResumableRun(out, outputs.names, batch_size, settings, done=outputs.done)
    tiles = {}
    for batch in (progress or _plain)(run.todo(), label.format(todo=run.todo_count(), count=count)):
        arrays = outputs.write(compute(batch), batch, only=run.missing(batch), normalize=normalize)
        tiles.update((key, arr) for key, arr in arrays.items() if key[0] < grid)
    return outputs, run, tiles
