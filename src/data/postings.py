"""An in-memory postings index: for each indexed field, value -> the set of keys having it.

Shared by the backends that keep their index in memory (HDF5, the directory
stores); LMDB keeps the same mapping on disk as dupsort sub-databases.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["PostingsIndex"]


class PostingsIndex:
    """``{field: {value: {keys}}}`` with add, drop, query and counts."""

    def __init__(self) -> None:
        self._fields: dict[str, dict[str, set[str]]] = {}

    def clear(self) -> None:
        """Forget every entry."""
        self._fields = {}

    def add(self, key: str, values: Mapping[str, str]) -> None:
        """Record ``key`` under each ``{field: value}``."""
        for field, value in values.items():
            self._fields.setdefault(field, {}).setdefault(str(value), set()).add(key)

    def drop(self, key: str, values: Mapping[str, str]) -> None:
        """Remove ``key`` from each ``{field: value}`` (values that become empty disappear)."""
        for field, value in values.items():
            keys = self._fields.get(field, {}).get(str(value))
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._fields[field][str(value)]

    def query(self, field: str, value: str) -> list[str]:
        """Keys whose ``field`` is ``value``, sorted."""
        return sorted(self._fields.get(field, {}).get(value, ()))

    def counts(self, field: str) -> dict[str, int]:
        """``{value: number of keys}`` for ``field``, sorted by value."""
        return {value: len(keys) for value, keys in sorted(self._fields.get(field, {}).items()) if keys}
