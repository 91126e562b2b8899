"""Describe a store from its metadata and indexes alone: no sample is decoded.

:func:`collect_info` returns a :class:`StoreInfo`; :func:`flatten_config` and
:func:`compact_config` give the short view of the preprocessing config that
``inspect_data.py info`` prints.

An output root may hold several datasets (``data/processed/FaceForensics++``,
``data/processed/Celeb-DF-v2``, ...): :func:`find_dataset_stores` finds the
stores of each, and :func:`summarize_datasets` totals their infos per dataset.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from src.data.storage import Storage
from src.data.store_names import store_dataset_name
from src.inspect.stores import StoreTarget, find_stores, store_size

__all__ = [
    "COUNT_FIELDS",
    "LABEL_NAMES",
    "DatasetSummary",
    "StoreInfo",
    "collect_info",
    "compact_config",
    "find_dataset_stores",
    "flatten_config",
    "summarize_datasets",
]

# The index fields whose counts are reported, in this order.
COUNT_FIELDS: tuple[str, ...] = ("label", "category", "method")
# Class labels as the catalogs assign them (src/datasets/catalog.py: 0 real, 1 fake).
LABEL_NAMES: dict[int, str] = {0: "real", 1: "fake"}

# Metadata entries StoreInfo has a field for; anything else is kept in ``extra_meta``.
_KNOWN_META = {
    "format",
    "format_version",
    "num_samples",
    "complete",
    "codec",
    "codec_options",
    "schema",
    "index_fields",
    "config",
    "created",
    "updated",
}


@dataclass
class StoreInfo:
    """What a store is, from its ``__meta__`` and indexes.

    Attributes:
        name: Display name (``train/data.lmdb``).
        path: The store's path.
        format: Storage format (``lmdb``, ``hdf5``, ``numpy``, ``torch``).
        format_version: Store format version from ``__meta__``.
        num_samples: Number of samples.
        counts: ``{field: {value: count}}`` for label, category and method;
            ``None`` for a field the store does not index.
        schema: ``{array: {"dtype", "shape"}}`` (``None`` marks a variable dimension).
        codec: Clip codec (``raw``, ``zstd``, ``jpeg``).
        codec_options: Codec settings (JPEG quality, zstd level).
        size_bytes: Bytes on disk.
        complete: Whether the writer closed the store cleanly.
        index_fields: Fields the store indexes.
        created: When the store was created (ISO 8601), if recorded.
        updated: When it was last written, if recorded.
        config: The configuration that produced the store, if recorded.
        extra_meta: Any other ``__meta__`` entries.
        dataset: The dataset it holds: the recorded ``dataset.name``, else
            its dataset folder (see :func:`~src.data.store_names.store_dataset_name`).
    """

    name: str
    path: str
    format: str
    format_version: int | None
    num_samples: int
    counts: dict[str, dict[str, int] | None]
    schema: dict[str, Any]
    codec: str | None
    codec_options: dict[str, Any]
    size_bytes: int
    complete: bool
    index_fields: list[str]
    created: str | None = None
    updated: str | None = None
    config: dict[str, Any] | None = None
    extra_meta: dict[str, Any] = field(default_factory=dict)
    dataset: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Everything as JSON-serialisable values."""
        return asdict(self)


@dataclass
class DatasetSummary:
    """The stores of one dataset of an output root, totalled.

    Attributes:
        name: The dataset's folder under the root (``FaceForensics++``).
        datasets: The dataset names its stores record (``faceforensics``).
        stores: Number of stores.
        num_samples: Samples over all its stores.
        size_bytes: Bytes on disk over all its stores.
        splits: ``{split: samples}``.
        counts: ``{field: {value: count}}`` summed over the stores that index the field.
    """

    name: str
    datasets: list[str] = field(default_factory=list)
    stores: int = 0
    num_samples: int = 0
    size_bytes: int = 0
    splits: dict[str, int] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Everything as JSON-serialisable values."""
        return asdict(self)


def _value_order(value: str) -> tuple[int, int, str]:
    return (0, int(value), "") if value.lstrip("-").isdigit() else (1, 0, value)


def collect_info(store: Storage, target: StoreTarget) -> StoreInfo:
    """Describe an open store without decoding any sample.

    Args:
        store: An open store (see :func:`~src.inspect.stores.open_checked`).
        target: Where it was found.

    Returns:
        The store's description.
    """
    meta = store.meta
    indexed = set(store.indexed_fields)
    counts: dict[str, dict[str, int] | None] = {}
    for name in COUNT_FIELDS:
        if name in indexed:
            raw = store.index_counts(name)
            counts[name] = {v: raw[v] for v in sorted(raw, key=_value_order)}
        else:
            counts[name] = None
    return StoreInfo(
        name=target.name,
        path=str(target.path),
        format=str(meta.get("format") or store.format),
        format_version=meta.get("format_version"),
        num_samples=int(meta.get("num_samples", len(store))),
        counts=counts,
        schema=dict(meta.get("schema") or {}),
        codec=meta.get("codec"),
        codec_options=dict(meta.get("codec_options") or {}),
        size_bytes=store_size(target.path),
        complete=bool(meta.get("complete", False)),
        index_fields=list(store.indexed_fields),
        created=meta.get("created"),
        updated=meta.get("updated"),
        config=meta.get("config"),
        extra_meta={k: v for k, v in meta.items() if k not in _KNOWN_META},
        dataset=store_dataset_name(store, target.path),
    )


def find_dataset_stores(path: str | os.PathLike) -> list[StoreTarget]:
    """The stores at ``path``, also when it is an output root holding several datasets.

    A store, a split directory or one dataset's root gives what
    :func:`~src.inspect.stores.find_stores` gives. A directory of dataset
    roots (``data/processed`` with ``FaceForensics++/``, ``Celeb-DF-v2/``,
    ...) gives every dataset's stores, datasets by name, each one's splits in
    ``train, val, test`` order, named ``<dataset>/<split>/<store>``.

    Args:
        path: A store, a split directory, a dataset root or an output root.

    Returns:
        The stores found; empty when there are none.
    """
    targets = find_stores(path)
    root = Path(path)
    if targets or not root.is_dir():
        return targets
    try:
        children = sorted(c for c in root.iterdir() if c.is_dir())
    except OSError:
        return []
    return [StoreTarget(f"{child.name}/{t.name}", t.split, t.path) for child in children for t in find_stores(child)]


def summarize_datasets(infos: list[StoreInfo]) -> list[DatasetSummary]:
    """Total store infos per dataset, in the order the datasets first appear.

    A store named ``<dataset>/<split>/<store>`` (from :func:`find_dataset_stores`)
    belongs to ``<dataset>``; any other to its recorded dataset name.
    """
    summaries: dict[str, DatasetSummary] = {}
    for info in infos:
        parts = info.name.split("/")
        name = parts[0] if len(parts) >= 3 else (info.dataset or "?")
        split = parts[-2] if len(parts) >= 2 else "?"
        summary = summaries.setdefault(name, DatasetSummary(name))
        if info.dataset and info.dataset not in summary.datasets:
            summary.datasets.append(info.dataset)
        summary.stores += 1
        summary.num_samples += info.num_samples
        summary.size_bytes += info.size_bytes
        summary.splits[split] = summary.splits.get(split, 0) + info.num_samples
        for field_name, counts in info.counts.items():
            if counts is None:
                continue
            total = summary.counts.setdefault(field_name, {})
            for value, n in counts.items():
                total[value] = total.get(value, 0) + n
    for summary in summaries.values():
        summary.counts = {f: {v: c[v] for v in sorted(c, key=_value_order)} for f, c in summary.counts.items()}
    return list(summaries.values())


def flatten_config(config: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts into dotted keys: ``{"a": {"b": 1}}`` -> ``{"a.b": 1}``.

    Lists and empty dicts are leaves.
    """
    if not isinstance(config, dict) or (not config and prefix):
        return {prefix: config}
    out: dict[str, Any] = {}
    for key, value in config.items():
        out.update(flatten_config(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _short(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def compact_config(config: dict[str, Any] | None, value_limit: int = 40) -> list[tuple[str, str]]:
    """The config as ``(section, "key=value key=value")`` lines, one per innermost section.

    Args:
        config: The config recorded in a store's metadata.
        value_limit: Longer values are cut to this many characters.

    Returns:
        Lines in the config's own order; top-level values are their own section.
    """
    if not config:
        return []
    sections: dict[str, list[str]] = {}
    for dotted, value in flatten_config(config).items():
        section, _, key = dotted.rpartition(".")
        if not section:
            sections[key] = [_short(value, value_limit)]
        else:
            sections.setdefault(section, []).append(f"{key}={_short(value, value_limit)}")
    return [(section, " ".join(items)) for section, items in sections.items()]
