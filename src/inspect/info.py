"""Describe a store from its metadata and indexes alone: no sample is decoded.

:func:`collect_info` returns a :class:`StoreInfo`; :func:`flatten_config` and
:func:`compact_config` give the short view of the preprocessing config that
``inspect_data.py info`` prints.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from src.data.storage import Storage
from src.inspect.stores import StoreTarget, store_size

__all__ = ["COUNT_FIELDS", "LABEL_NAMES", "StoreInfo", "collect_info", "flatten_config", "compact_config"]

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
    )


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
