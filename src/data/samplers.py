"""Seeded, epoch-aware, distributed-aware, resumable index samplers.

Every sampler here follows one model (mosaicml/streaming's "elastic
determinism"):

1. For a ``(seed, epoch)`` there is one **global order**: a sequence of
   ``epoch_length`` dataset indices, the same on every rank and for every world
   size.
2. A sampler starts at a global **position** ``start`` (0 for a fresh epoch; a
   resumed epoch starts where the saved state says).
3. What remains, ``order[start:]``, is evened out between the ``world_size``
   ranks explicitly, as :class:`torch.utils.data.DistributedSampler` does: with
   ``drop_last=False`` it is padded by repeating the head of the global order,
   with ``drop_last=True`` its uneven tail is dropped.
4. Rank ``r`` takes positions ``r, r + world_size, ...`` of that.

So the ranks' shares of an epoch are disjoint (up to the explicit padding) and
cover it, and after every rank has taken ``c`` indices the first
``start + c * world_size`` positions of the global order are consumed, whatever
the world size: a job restarted on another number of GPUs continues the same
epoch from that position. With ``start == 0``, :class:`EpochSampler` yields
exactly what ``DistributedSampler`` yields for the same seed and epoch.

* :class:`EpochSampler`: a seeded permutation (or the natural order) per epoch.
* :class:`BalancedSampler`: draws with replacement so that every label (or
  every dataset, or every label within every dataset) is equally likely, or
  drawn with given weights; FakeAVCeleb is about 2% real.

Both take ``rank``/``world_size`` explicitly or read them from an initialised
``torch.distributed`` process group, have ``set_epoch``, and the
``state_dict``/``load_state_dict`` pair of torchdata's ``Stateful`` protocol
(plain JSON-serialisable dicts). Order depends only on ``(seed, epoch)``, as
in ffcv (``seed + epoch``).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

from src.errors import ConfigError

__all__ = ["BalancedSampler", "EpochSampler", "GlobalOrderSampler", "distributed_info", "share_size"]


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


def _as_list(values: Sequence[int] | np.ndarray) -> list[int]:
    if isinstance(values, list):
        return values  # a slice is a fresh list already
    return values.tolist() if isinstance(values, np.ndarray) else list(values)


def share_size(remaining: int, world_size: int, drop_last: bool) -> int:
    """Indices each rank gets out of ``remaining`` global positions (``DistributedSampler``'s rule)."""
    if drop_last and remaining % world_size:
        return remaining // world_size
    return math.ceil(remaining / world_size)


class GlobalOrderSampler(Sampler[int]):
    """Base class: this rank's interleaved share of one global order per ``(seed, epoch)``.

    Subclasses implement :meth:`global_order`. The module docstring describes
    the model; :meth:`state_dict` saves ``(epoch, position)``.

    Args:
        epoch_length: Length of the global order of an epoch.
        seed: Base seed; must be the same on every rank.
        rank: This process's rank (default: from ``torch.distributed`` or 0).
        world_size: Number of ranks (default: from ``torch.distributed`` or 1).
        drop_last: Drop the tail that does not split evenly between ranks
            (else pad by repeating the head, so every rank has the same count).

    Attributes:
        epoch: The epoch whose order the next iteration uses.
        start: The global position the next iteration starts from.
        num_samples: Indices per rank in a whole epoch (from position 0).
        total_size: ``num_samples * world_size``.
    """

    def __init__(self, epoch_length: int, seed: int, rank: int | None, world_size: int | None, drop_last: bool) -> None:
        if epoch_length < 0:
            raise ConfigError(f"epoch length must be >= 0; got {epoch_length}")
        self.epoch_length = int(epoch_length)
        self.seed = _check_seed(seed)
        self.rank, self.world_size = distributed_info(rank, world_size)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        self.start = 0
        self.num_samples = share_size(self.epoch_length, self.world_size, self.drop_last)
        self.total_size = self.num_samples * self.world_size
        self._iterator: Iterator[int] | None = None
        self._handed = 0

    # ------------------------------------------------------------------ order

    def global_order(self) -> Sequence[int]:
        """The current epoch's global order: ``epoch_length`` indices, the same on every rank."""
        raise NotImplementedError

    def order_spec(self) -> dict[str, Any]:
        """What fixes the global order besides the epoch (JSON-serialisable; compared when a state is restored)."""
        return {"kind": type(self).__name__, "seed": self.seed}

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch``'s order on the next iteration (same on every rank); it starts at position 0."""
        epoch = int(epoch)
        if epoch != self.epoch:
            self.start = 0
            self._iterator = None
        self.epoch = epoch

    def set_start(self, position: int) -> None:
        """Start the next iteration at global position ``position`` of the current epoch's order.

        Raises:
            ConfigError: A position outside ``[0, epoch_length]``.
        """
        if isinstance(position, bool) or not isinstance(position, (int, np.integer)) or not 0 <= position <= self.epoch_length:
            raise ConfigError(f"sampler position must be an int in [0, {self.epoch_length}]; got {position!r}")
        self.start = int(position)
        self._iterator = None

    def position_after(self, taken: int) -> int:
        """The global position consumed once every rank has taken ``taken`` indices of this iteration."""
        return min(self.epoch_length, self.start + int(taken) * self.world_size)

    def indices(self) -> list[int]:
        """This rank's indices for the current epoch, from :attr:`start` on."""
        share = len(self)
        if share == 0:
            return []
        order = self.global_order()
        total = share * self.world_size
        end = self.start + total
        if end <= len(order):  # no padding: one strided slice of the global order
            return _as_list(order[self.start + self.rank : end : self.world_size])
        rest = _as_list(order[self.start :])
        head = _as_list(order)
        padding = total - len(rest)
        rest += (head * math.ceil(padding / len(head)))[:padding]  # the head of the global order, DistributedSampler's rule
        return rest[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        indices = self.indices()
        # A plain list iterator (no per-index Python frame); what it has handed out is
        # len(indices) minus its length hint.
        self._iterator = iter(indices)
        self._handed = len(indices)
        return self._iterator

    def _yielded(self) -> int:
        if self._iterator is None:
            return 0
        return self._handed - operator.length_hint(self._iterator)

    def __len__(self) -> int:
        """Indices the next iteration yields on this rank (the remainder of the epoch after :attr:`start`)."""
        return share_size(self.epoch_length - self.start, self.world_size, self.drop_last)

    # ------------------------------------------------------------------ Stateful protocol

    def state_dict(self) -> dict[str, Any]:
        """``{"epoch", "position"}``: the global position consumed by the indices this iterator handed out.

        A :class:`~src.data.loaders.ClipLoader` keeps its own state, counting
        only the batches it yielded; this one counts what the sampler handed
        out (which a prefetching consumer may not have used yet).
        """
        return {"epoch": self.epoch, "position": self.position_after(self._yielded())}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Make the next iteration continue ``state``'s epoch from its position."""
        self.set_epoch(int(state["epoch"]))
        self.set_start(int(state["position"]))
        self._iterator = None


class EpochSampler(GlobalOrderSampler):
    """Indices ``0..num_items-1``, shuffled per epoch, this rank's share only.

    The global order is ``torch.randperm(num_items)`` seeded with
    ``seed + epoch`` (``DistributedSampler``'s), or the natural order.

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
        super().__init__(num_items, seed, rank, world_size, drop_last)
        self.num_items = int(num_items)
        self.shuffle = bool(shuffle)

    def order_spec(self) -> dict[str, Any]:
        """``{"kind": "EpochSampler", "seed", "shuffle"}``."""
        return {**super().order_spec(), "shuffle": self.shuffle}

    def global_order(self) -> list[int]:
        """A permutation seeded with ``seed + epoch`` (or ``0..num_items-1``)."""
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(self.seed + self.epoch)
            return torch.randperm(self.num_items, generator=generator).tolist()
        return list(range(self.num_items))


def _codes(name: str, values: Any, length: int | None) -> np.ndarray:
    arr = np.asarray(values).reshape(-1)
    if length is not None and arr.size != length:
        raise ConfigError(f"{name} has {arr.size} entries for {length} items")
    return np.unique(arr, return_inverse=True)[1].reshape(-1)


class BalancedSampler(GlobalOrderSampler):
    """Draws with replacement so that each group is equally likely (or weighted), seeded per epoch.

    Each draw picks a group uniformly among those present (or with
    ``group_weights``), then, when both ``groups`` and ``labels`` are given, a
    label uniformly among that group's labels, then an item uniformly among
    those. The whole epoch's ``num_samples`` draws are made from
    ``(seed, epoch)`` alone, identically on every rank and for every world
    size; rank ``r`` takes draws ``r, r + world_size, ...`` (see the module
    docstring), so the ranks' shares are disjoint positions of one sequence.

    Args:
        labels: Label of each item, in index order (balance by label); None
            with ``groups`` to balance by group only.
        num_samples: Draws per epoch over all ranks (default: the number of items).
        seed: Base seed.
        rank: This process's rank (default: from ``torch.distributed`` or 0).
        world_size: Number of ranks (default: from ``torch.distributed`` or 1).
        drop_last: Round the per-rank share down instead of up.
        groups: Outer group of each item (e.g. its dataset): balance groups
            first, then labels within each group.
        group_weights: Relative weight of each group, indexed by the group
            codes in ``groups`` (sorted unique values); default uniform.

    Raises:
        ConfigError: No items, mismatched lengths, bad counts or weights.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray | None,
        num_samples: int | None = None,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool = False,
        *,
        groups: Sequence[Any] | np.ndarray | None = None,
        group_weights: Sequence[float] | None = None,
    ) -> None:
        if labels is None and groups is None:
            raise ConfigError("balanced sampling needs labels, groups or both")
        levels: list[np.ndarray] = []
        length: int | None = None
        for name, values in (("groups", groups), ("labels", labels)):
            if values is not None:
                levels.append(_codes(name, values, length))
                length = levels[-1].size
        assert length is not None  # one of the two was given
        if length == 0:
            raise ConfigError("balanced sampling needs at least one sample")
        total = length if num_samples is None else int(num_samples)
        if total < 1:
            raise ConfigError(f"num_samples must be >= 1; got {num_samples}")
        self.levels = levels
        self.group_weights: np.ndarray | None = None
        if group_weights is not None:
            if groups is None:
                raise ConfigError("group_weights need groups")
            weights = np.asarray(group_weights, dtype=np.float64).reshape(-1)
            if weights.size != int(levels[0].max()) + 1 or not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
                raise ConfigError(f"group_weights must be {int(levels[0].max()) + 1} finite non-negative numbers, not all zero; got {list(group_weights)}")
            self.group_weights = weights / weights.sum()
        super().__init__(total, seed, rank, world_size, drop_last)
        # Kept for code written against the label-only sampler.
        self.classes = np.unique(np.asarray(labels).reshape(-1)) if labels is not None else np.unique(np.asarray(groups).reshape(-1))

    def order_spec(self) -> dict[str, Any]:
        """``{"kind": "BalancedSampler", "seed", "levels", "weights"}``."""
        weights = None if self.group_weights is None else [float(w) for w in self.group_weights]
        return {**super().order_spec(), "levels": len(self.levels), "weights": weights}

    def global_order(self) -> np.ndarray:
        """The epoch's ``num_samples`` draws, from ``(seed, epoch)`` alone."""
        rng = np.random.default_rng([self.seed, self.epoch])
        items = np.arange(self.levels[0].size, dtype=np.int64)
        return _draw(rng, items, self.levels, self.epoch_length, self.group_weights)


def _draw(rng: np.random.Generator, items: np.ndarray, levels: list[np.ndarray], count: int, weights: np.ndarray | None = None) -> np.ndarray:
    """``count`` items drawn level by level: a group uniformly (or by ``weights``), then recursively within it."""
    if not levels:
        return items[rng.integers(0, len(items), size=count)]
    present, inverse = np.unique(levels[0][items], return_inverse=True)
    if weights is None:
        which = rng.integers(0, len(present), size=count)
    else:
        p = weights[present]
        which = rng.choice(len(present), size=count, p=p / p.sum())
    out = np.empty(count, dtype=np.int64)
    for g in range(len(present)):
        mask = which == g
        out[mask] = _draw(rng, items[inverse == g], levels[1:], int(mask.sum()))
    return out
