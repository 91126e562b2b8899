"""Seeded, epoch-aware, distributed-aware index samplers.

* :class:`EpochSampler`: a seeded permutation (or the natural order) per epoch,
  split between distributed ranks with :class:`torch.utils.data.DistributedSampler`
  semantics: every rank gets the same number of indices; with ``drop_last=False``
  the permutation is padded by repeating its head, with ``drop_last=True`` its
  tail is dropped. With the same seed and epoch it yields exactly what
  ``DistributedSampler`` yields.
* :class:`BalancedSampler`: draws with replacement so that every label is
  equally likely (FakeAVCeleb is about 2% real), seeded per epoch, split
  between ranks.

Both take ``rank``/``world_size`` explicitly or read them from an initialised
``torch.distributed`` process group, and both have ``set_epoch``. Order depends
only on ``(seed, epoch)``, as in ffcv (``seed + epoch``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from src.errors import ConfigError

__all__ = ["BalancedSampler", "EpochSampler", "distributed_info"]


def distributed_info(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """Return ``(rank, world_size)``: the given values, else the process group's, else ``(0, 1)``.

    Raises:
        ConfigError: Only one of the two given, or a rank outside ``[0, world_size)``.
    """
    if rank is None or world_size is None:
        if _dist_ready():
            import torch.distributed as dist

            rank = dist.get_rank() if rank is None else rank
            world_size = dist.get_world_size() if world_size is None else world_size
        elif rank is None and world_size is None:
            rank, world_size = 0, 1
        else:
            raise ConfigError(f"rank={rank!r} and world_size={world_size!r}: pass both or neither (no torch.distributed process group is initialised)")
    if int(world_size) < 1:
        raise ConfigError(f"world_size must be >= 1; got {world_size}")
    if not 0 <= int(rank) < int(world_size):
        raise ConfigError(f"rank must be in [0, {world_size}); got {rank}")
    return int(rank), int(world_size)


def _dist_ready() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ConfigError(f"seed must be an int; got {seed!r}")
    return int(seed)


class EpochSampler(Sampler[int]):
    """Indices ``0..num_items-1``, shuffled per epoch, this rank's share only.

    Args:
        num_items: Dataset length.
        shuffle: Shuffle with ``seed + epoch`` (else natural order).
        seed: Base seed; must be the same on every rank.
        rank: This process's rank (default: from ``torch.distributed`` or 0).
        world_size: Number of ranks (default: from ``torch.distributed`` or 1).
        drop_last: Drop the tail that does not split evenly between ranks
            (else pad by repeating the head, so every rank has the same count).
    """

    def __init__(
        self,
        num_items: int,
        shuffle: bool = True,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool = False,
    ) -> None:
        if num_items < 0:
            raise ConfigError(f"num_items must be >= 0; got {num_items}")
        self.num_items = int(num_items)
        self.shuffle = bool(shuffle)
        self.seed = _check_seed(seed)
        self.rank, self.world_size = distributed_info(rank, world_size)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        if self.drop_last and self.num_items % self.world_size:
            self.num_samples = self.num_items // self.world_size
        else:
            self.num_samples = math.ceil(self.num_items / self.world_size)
        self.total_size = self.num_samples * self.world_size

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch``'s order on the next iteration (same on every rank)."""
        self.epoch = int(epoch)

    def indices(self) -> list[int]:
        """This rank's indices for the current epoch."""
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_items, generator=generator).tolist()
        else:
            order = list(range(self.num_items))
        if not self.drop_last:
            padding = self.total_size - len(order)
            if padding > 0 and order:
                reps = math.ceil(padding / len(order))
                order += (order * reps)[:padding]
        else:
            order = order[: self.total_size]
        return order[self.rank : self.total_size : self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices())

    def __len__(self) -> int:
        return self.num_samples


class BalancedSampler(Sampler[int]):
    """Draws with replacement so that each label is equally likely, seeded per epoch.

    Each draw picks a label uniformly among those present, then an index
    uniformly among that label's items. The whole epoch's draws are made from
    ``seed + epoch`` identically on every rank, and rank ``r`` takes draws
    ``r, r + world_size, ...``, so the ranks' shares are disjoint positions of
    one sequence.

    Args:
        labels: Label of each dataset item, in index order.
        num_samples: Draws per epoch over all ranks (default: ``len(labels)``).
        seed: Base seed.
        rank: This process's rank (default: from ``torch.distributed`` or 0).
        world_size: Number of ranks (default: from ``torch.distributed`` or 1).
        drop_last: Round the per-rank share down instead of up.
    """

    def __init__(
        self,
        labels: Sequence[int],
        num_samples: int | None = None,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool = False,
    ) -> None:
        labels_arr = np.asarray(labels, dtype=np.int64).reshape(-1)
        if labels_arr.size == 0:
            raise ConfigError("balanced sampling needs at least one sample")
        total = labels_arr.size if num_samples is None else int(num_samples)
        if total < 1:
            raise ConfigError(f"num_samples must be >= 1; got {num_samples}")
        self.seed = _check_seed(seed)
        self.rank, self.world_size = distributed_info(rank, world_size)
        self.classes, inverse = np.unique(labels_arr, return_inverse=True)
        self.members = [np.flatnonzero(inverse == c) for c in range(len(self.classes))]
        self.num_samples = total // self.world_size if drop_last else math.ceil(total / self.world_size)
        self.total_size = self.num_samples * self.world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch``'s draws on the next iteration."""
        self.epoch = int(epoch)

    def indices(self) -> list[int]:
        """This rank's draws for the current epoch."""
        rng = np.random.default_rng([self.seed, self.epoch])
        which = rng.integers(0, len(self.classes), size=self.total_size)
        out = np.empty(self.total_size, dtype=np.int64)
        for c, members in enumerate(self.members):
            mask = which == c
            out[mask] = members[rng.integers(0, len(members), size=int(mask.sum()))]
        return out[self.rank :: self.world_size].tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices())

    def __len__(self) -> int:
        return self.num_samples
