"""An infinite, seeded stream of world samples for training."""
from __future__ import annotations

from typing import Dict, Iterator, Optional

import torch

from latentedit.world.params import sample_params
from latentedit.world.render import render

_FIELDS = ("image", "depth", "normal", "albedo", "shading", "labels", "light", "view",
           "attributes", "identity")


class WorldDataset(torch.utils.data.IterableDataset):
    """Yields dicts of single-sample tensors (the fields of `WorldBatch`, plus `index`).

    Deterministic per seed and correct with several DataLoader workers: worker k of W
    renders the chunks k, k+W, k+2W, ... of `chunk` consecutive indices, and a DataLoader
    reads the workers round-robin, so the stream is sample 0, 1, 2, ... whatever W is
    (when `batch_size` is a multiple of `chunk` or `chunk` is 1).
    """

    def __init__(self, seed: int = 0, resolution: int = 64, chunk: int = 32,
                 limit: Optional[int] = None, **overrides):
        super().__init__()
        self.seed, self.resolution, self.chunk, self.limit = seed, resolution, chunk, limit
        self.overrides = overrides
        sample_params(1, seed=seed, **overrides)  # validate the overrides now, not in a worker

    def __iter__(self) -> Iterator[Dict[str, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        k, w = (info.id, info.num_workers) if info is not None else (0, 1)
        chunk_id = k
        while True:
            start = chunk_id * self.chunk
            n = self.chunk if self.limit is None else min(self.chunk, self.limit - start)
            if n <= 0:
                return
            batch = render(sample_params(n, seed=self.seed, start=start, **self.overrides),
                           self.resolution)
            for i in range(n):
                item = {f: getattr(batch, f)[i] for f in _FIELDS}
                item["index"] = torch.tensor(start + i)
                yield item
            chunk_id += w
