"""Which dataset a store holds, from its self-description or its place in the output tree.

Kept apart from :mod:`src.data.multi_store` (which needs torch) so that the
inspection tools can name datasets without importing torch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["SPLIT_DIRS", "store_dataset_name"]

#: Split directory names: a store at ``<dataset dir>/<split>/data.lmdb`` is named after ``<dataset dir>``.
SPLIT_DIRS = ("train", "val", "test", "dev", "validation", "valid")


def store_dataset_name(storage: Any, path: str | os.PathLike | None = None) -> str:
    """The dataset a store holds, for the ``dataset`` tag of its samples.

    Args:
        storage: The open store (anything with ``meta`` and ``path``).
        path: Its path (default: ``storage.path``).

    Returns:
        ``meta["config"]["preprocessing"]["dataset"]["name"]`` when the store
        records it, else the dataset folder of the path
        (``FaceForensics++`` for ``.../FaceForensics++/train/data.lmdb``),
        else the folder holding the store.
    """
    section: Any = getattr(storage, "meta", None)
    for name in ("config", "preprocessing", "dataset", "name"):
        section = section.get(name) if isinstance(section, Mapping) else None
    if isinstance(section, str) and section:
        return section
    p = Path(path if path is not None else storage.path)
    parent = p.parent
    if parent.name.lower() in SPLIT_DIRS and parent.parent.name:
        return parent.parent.name
    return parent.name or p.stem
