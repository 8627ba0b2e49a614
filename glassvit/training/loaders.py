"""Batches for the fit loop: a held-out validation split, an epoch sampler that shards across processes and resumes
mid-epoch, and data loaders whose randomness comes from the run's seed only.

Sharding follows DistributedSampler: the epoch's permutation (seeded by seed and epoch) is padded to a multiple of
the number of processes and process r takes every world-th index from r. With a global batch B split as B/world per
process, the union of one step's local batches is exactly the 1-process batch of that step, so a run gives the same
result on any number of processes (up to floating-point reduction order).
"""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset, default_collate

from ..errors import GlassViTError


class EpochSampler(Sampler[int]):
    """One process's dataset indices for one epoch.

    Args:
        size: dataset length.
        shuffle: permute (seeded by `seed` and `epoch`) or keep the dataset order.
        rank, world: this process and the number of processes.
        pad: repeat leading indices so that every process gets the same count (training); without padding the
            shards are disjoint and may differ by one (evaluation).
        start: skip this many of this process's indices (resuming inside an epoch).
    """

    def __init__(self, size: int, *, shuffle: bool, seed: int = 0, epoch: int = 0, rank: int = 0, world: int = 1,
                 pad: bool = True, start: int = 0):
        self.size, self.shuffle, self.seed, self.epoch = size, shuffle, seed, epoch
        self.rank, self.world, self.pad, self.start = rank, world, pad, start

    def indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        if self.pad and self.size % self.world:
            extra = self.world - self.size % self.world
            order += (order * (extra // max(len(order), 1) + 1))[:extra]
        return order[self.rank::self.world][self.start:]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices())

    def __len__(self) -> int:
        return len(self.indices())


def split_validation(data: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset | None]:
    """Hold out a seeded random `fraction` of `data` for validation: (train subset, validation subset or None).

    The validation subset is taken from `eval_view(data)`, so held-out images are not augmented.
    """
    n = _length(data)
    if not 0 <= fraction < 1:
        raise GlassViTError(f"val_fraction must lie in [0, 1), got {fraction}")
    n_val = int(round(n * fraction))
    if n_val == 0:
        return data, None
    if n_val >= n:
        raise GlassViTError(f"val_fraction={fraction} leaves no training data out of {n} items")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return Subset(data, sorted(order[n_val:])), Subset(eval_view(data), sorted(order[:n_val]))


def eval_view(data: Dataset) -> Dataset:
    """`data` without augmentation: its `for_eval()` view (also through a Subset), else `data` itself."""
    if hasattr(data, "for_eval"):
        return data.for_eval()
    if isinstance(data, Subset) and hasattr(data.dataset, "for_eval"):
        return Subset(data.dataset.for_eval(), data.indices)
    return data


def _length(data: Any) -> int:
    if not isinstance(data, Sized):
        raise GlassViTError(f"datasets must have a length (map-style torch Dataset), got {type(data).__name__}")
    n = len(data)
    if n == 0:
        raise GlassViTError("the dataset is empty")
    return n


def make_loader(data: Dataset, sampler: EpochSampler, batch_size: int, num_workers: int, seed: int,
                pin_memory: bool = False) -> DataLoader:
    """A DataLoader over `sampler` whose worker seeds derive from (seed, epoch, rank), not from the global RNG."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + sampler.epoch) * 4099 + sampler.rank)
    return DataLoader(data, batch_size=batch_size, sampler=sampler, num_workers=num_workers, generator=g,
                      pin_memory=pin_memory, collate_fn=collate)


def collate(items: list[Any]) -> Any:
    """default_collate of dict items; (image, label) pairs (torchvision style) become {"image", "label"} dicts."""
    if items and isinstance(items[0], (tuple, list)) and len(items[0]) == 2:
        items = [{"image": image, "label": torch.as_tensor(label)} for image, label in items]
    return default_collate(items)


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Move every tensor of a batch dict to `device` (other values are kept as they are)."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
