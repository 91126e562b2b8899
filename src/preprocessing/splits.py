"""Identity-disjoint, seeded train/val/test splits and deterministic sample keys.

All videos of one identity land in one split, so a detector is never evaluated on
a face it trained on. Identities are stratified by which labels they have (e.g.
"has real and fake videos" vs "fake only") and each stratum is divided by the
ratios on its own, so every split gets both labels whenever the data allows.
Everything here is a pure function of its inputs: the same catalog and seed give
the same splits and keys on every run and every resume.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

import numpy as np

from src.errors import ConfigError

__all__ = ["SPLITS", "SplitAssignment", "allocate", "assign_splits", "assign_keys", "connected_groups", "sample_key", "interleave_for_limit"]

SPLITS = ("train", "val", "test")


class SplitAssignment(NamedTuple):
    """One video's place in the output.

    Attributes:
        split: ``train``, ``val`` or ``test``.
        key: Its sample key in that split's store, e.g. ``sample_000001``.
        position: Its 0-based rank inside the split (key number - 1).
    """

    split: str
    key: str
    position: int


def sample_key(position: int) -> str:
    """The zero-padded key of the ``position``-th sample (0-based): ``sample_000001`` for 0."""
    return f"sample_{position + 1:06d}"


def allocate(n: int, ratios: Sequence[float]) -> list[int]:
    """Divide ``n`` items by ``ratios`` (largest remainder), giving each nonzero ratio
    at least one item while there are enough items.

    Example: ``allocate(10, (0.7, 0.15, 0.15)) == [7, 2, 1]``.
    """
    ratios = np.asarray(ratios, dtype=float)
    if n <= 0:
        return [0] * len(ratios)
    exact = ratios / ratios.sum() * n
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    # Every split with a nonzero ratio gets one item when possible, taken from the largest.
    for i in np.flatnonzero((counts == 0) & (ratios > 0)):
        donor = int(np.argmax(counts))
        if counts[donor] > 1:
            counts[donor] -= 1
            counts[i] += 1
    return counts.tolist()


def _stable_rank(identity: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{identity}".encode()).hexdigest()


def assign_splits(identity_labels: Mapping[str, Iterable[int]], ratios: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 42) -> dict[str, str]:
    """Assign every identity to a split.

    Args:
        identity_labels: ``{identity: labels of its videos}``.
        ratios: Fractions for train, val, test (summing to 1).
        seed: Shuffle seed.

    Returns:
        ``{identity: split}``.

    Raises:
        ConfigError: Ratios of the wrong length or not summing to 1.
    """
    if len(ratios) != len(SPLITS) or any(r < 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-6:
        raise ConfigError(f"split ratios must be three non-negative numbers summing to 1; got {list(ratios)}")
    strata: dict[tuple[int, ...], list[str]] = defaultdict(list)
    for identity, labels in identity_labels.items():
        strata[tuple(sorted(set(labels)))].append(identity)
    out: dict[str, str] = {}
    for stratum in sorted(strata):
        # Order by a seeded hash: stable under adding or removing other identities.
        members = sorted(strata[stratum], key=lambda ident: _stable_rank(ident, seed))
        start = 0
        for split, count in zip(SPLITS, allocate(len(members), ratios)):
            for ident in members[start : start + count]:
                out[ident] = split
            start += count
    return out


def connected_groups(links: Iterable[Iterable[str]]) -> dict[str, str]:
    """Union identities that appear together (e.g. a fake's source and targets).

    Args:
        links: Per video, the identities it involves.

    Returns:
        ``{identity: group}``, the group named by its smallest member.
    """
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for ids in links:
        ids = [i for i in ids if i]
        for other in ids[1:]:
            a, b = find(ids[0]), find(other)
            if a != b:
                parent[max(a, b)] = min(a, b)
        for i in ids:
            find(i)
    return {x: find(x) for x in parent}


def assign_keys(items: Sequence[tuple[str, str]]) -> dict[str, SplitAssignment]:
    """Give each video a key inside its split, in sorted order of its relative path.

    Args:
        items: ``(relpath, split)`` pairs.

    Returns:
        ``{relpath: SplitAssignment}``.
    """
    by_split: dict[str, list[str]] = defaultdict(list)
    for relpath, split in items:
        by_split[split].append(relpath)
    out = {}
    for split, paths in by_split.items():
        for position, relpath in enumerate(sorted(paths)):
            out[relpath] = SplitAssignment(split, sample_key(position), position)
    return out


def interleave_for_limit(assignments: Mapping[str, SplitAssignment]) -> list[str]:
    """Order videos so that any prefix takes each split in proportion to its size,
    lowest keys first (what ``--limit N`` processes).
    """
    sizes: dict[str, int] = defaultdict(int)
    for a in assignments.values():
        sizes[a.split] += 1
    return sorted(assignments, key=lambda rel: ((assignments[rel].position + 0.5) / sizes[assignments[rel].split], SPLITS.index(assignments[rel].split)))
