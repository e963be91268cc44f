"""A resumable, deterministic order of training batches.

Batch k of a run is always the same indices, whatever happened before: epoch e = k // batches_per_epoch is a
permutation seeded by (seed, e). A run resumed at optimizer step s starts at batch s x accumulation, so the data
order after a crash equals the uninterrupted run's. Each batch carries its index, which seeds its dynamic mask.

Lightning sees the whole run as one epoch of `end_batch` batches. A resumed run's loader yields only batches
start..end, while Lightning's restored progress says `start` of them are done: so __len__ is the whole epoch's
`end_batch`, not what is left, or Lightning would end the epoch early and replay batches in a second one.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, Sampler


class ResumableBatches(Sampler):
    """Under data parallelism rank r of w takes global batches k*w + r, so ranks never see the same batch."""

    def __init__(self, num_examples: int, batch_size: int, seed: int, start_batch: int, end_batch: int,
                 rank: int = 0, world_size: int = 1):
        self.num_examples, self.batch_size, self.seed = num_examples, batch_size, seed
        self.start_batch, self.end_batch = start_batch, end_batch
        self.rank, self.world_size = rank, world_size
        self.per_epoch = max(1, num_examples // batch_size)  # drop the ragged last batch: static shapes

    def __len__(self) -> int:
        return self.end_batch  # the whole run, resumed or not (see the module docstring)

    def __iter__(self):
        permutation, epoch = None, None
        for local in range(self.start_batch, self.end_batch):
            k = local * self.world_size + self.rank
            if k // self.per_epoch != epoch:
                epoch = k // self.per_epoch
                permutation = torch.randperm(self.num_examples, generator=torch.Generator().manual_seed(
                    self.seed * 1_000_003 + epoch)).tolist()
            offset = (k % self.per_epoch) * self.batch_size
            yield [(k, i) for i in permutation[offset:offset + self.batch_size]]


class IndexedDataset(Dataset):
    """Wraps a datasets.Dataset so that items keyed (batch index, row) come back tagged with the batch index."""

    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, key):
        batch_index, row = key if isinstance(key, tuple) else (0, key)
        return {**self.rows[int(row)], "_batch_index": batch_index}

    def __getitems__(self, keys):
        rows = self.rows[[int(r) for _, r in keys]]  # one columnar read per batch
        names = list(rows)
        return [{**{n: rows[n][j] for n in names}, "_batch_index": keys[j][0]} for j in range(len(keys))]
