"""What a dataset catalog produces: one :class:`VideoRecord` per video, and the catalog registry.

A catalog turns a raw dataset tree into records (path, labels, metadata, identity)
without decoding anything. The preprocessing pipeline only ever sees records, so a
new dataset means a new catalog module registered here, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from src.registry import Registry

__all__ = ["VideoRecord", "CatalogProblem", "Catalog", "CATALOGS", "get_catalog", "catalog_names"]


@dataclass(frozen=True)
class VideoRecord:
    """One video of a raw dataset.

    Attributes:
        relpath: Path relative to the dataset root, with forward slashes; the
            video's identity (file names repeat across folders).
        path: Absolute path of the file.
        label: Training label under the configured label policy (0 real, 1 fake).
        video_label: 1 when the video track is manipulated.
        audio_label: 1 when the audio track is manipulated.
        identity: The person the split groups by (FakeAVCeleb: ``source``).
        metadata: The spec's metadata fields (category, method, source, target1,
            target2, type, gender, race, ...).
    """

    relpath: str
    path: Path
    label: int
    video_label: int
    audio_label: int
    identity: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CatalogProblem:
    """A row of the dataset's metadata that was skipped, and why.

    Attributes:
        line: Line number in the metadata file (1 = header).
        reason: What was wrong.
        relpath: The video the row points at, when known.
    """

    line: int
    reason: str
    relpath: str | None = None


@dataclass(frozen=True)
class Catalog:
    """A catalog's result.

    Attributes:
        name: Dataset name (the output folder, e.g. ``FakeAVCeleb_v1.2``).
        records: The usable videos, sorted by ``relpath``.
        problems: Skipped rows with their reasons.
    """

    name: str
    records: list[VideoRecord]
    problems: list[CatalogProblem]


#: Catalog readers ``fn(root, label_policy) -> Catalog`` by dataset name (``preprocess.py --dataset``).
CATALOGS: Registry[Callable[[Path, str], Catalog]] = Registry("dataset", {"fakeavceleb": "src.datasets.fakeavceleb:read_catalog"})


def catalog_names() -> tuple[str, ...]:
    """Names accepted by ``preprocess.py --dataset``."""
    return CATALOGS.names()


def get_catalog(name: str) -> Callable[[Path, str], Catalog]:
    """Return the catalog reader for a dataset name (case-insensitive).

    Raises:
        ConfigError: Unknown dataset name (the message lists the known ones).
    """
    return CATALOGS.get(name.lower() if name.lower() in CATALOGS else name)
