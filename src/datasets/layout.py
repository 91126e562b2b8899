"""What every catalog needs from a dataset tree: safe relative paths, the real root, records.

The datasets' metadata files are written by other people's scripts, on other
operating systems, and unpacked from archives that nest their top folder. The
helpers here turn their paths into safe POSIX paths under the root (refusing
absolute, drive-letter and ``..`` paths, normalising ``\\`` separators with a
report line), find the dataset root one level up or down from the one given,
and build :class:`~src.datasets.catalog.VideoRecord` objects with the metadata
fields every catalog shares (``dataset``, ``method``, ``source``, labels).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from src.datasets.catalog import AUDIO_VISUAL_POLICIES, CatalogProblem, DatasetSpec, VideoRecord
from src.errors import DatasetError

__all__ = [
    "VIDEO_EXTENSIONS",
    "VIDEO_ONLY_POLICIES",
    "CatalogBuilder",
    "PathRefused",
    "clean_relpath",
    "list_videos",
    "load_json",
    "file_entries",
    "locate_root",
    "parse_segments",
    "video_only_spec",
]

logger = logging.getLogger(__name__)

#: File suffixes treated as videos when a catalog scans folders.
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")

#: Label policies of a dataset whose audio is never manipulated: every policy is the video label.
VIDEO_ONLY_POLICIES = {"multimodal": AUDIO_VISUAL_POLICIES["video"], "video": AUDIO_VISUAL_POLICIES["video"]}

_DRIVE = re.compile(r"^[A-Za-z]:")


def video_only_spec(dir_name: str | None, index_fields: tuple[str, ...] = ("label", "method")) -> DatasetSpec:
    """The :class:`DatasetSpec` of a dataset with one label per video (FF++, Celeb-DF, folders)."""
    return DatasetSpec(
        label_policies=VIDEO_ONLY_POLICIES,
        index_fields=index_fields,
        summary_fields=("video_path", "label", "method", "source", "split_origin", "num_frames", "face_found", "has_audio"),
        count_fields=("label", "method", "split_origin"),
        dir_name=dir_name,
    )


class PathRefused(ValueError):
    """A metadata path that cannot be used (absolute, a drive letter, ``..``, empty)."""


def clean_relpath(raw: Any) -> tuple[str, bool]:
    """Turn a path from a metadata file into a safe relative POSIX path.

    Args:
        raw: The path as the metadata gives it.

    Returns:
        ``(relpath, normalised)``: ``normalised`` is True when ``\\`` separators
        or a leading ``./`` were rewritten (worth a report line).

    Raises:
        PathRefused: Not a string, empty, absolute, with a drive letter, or with ``..``.
    """
    if not isinstance(raw, str) or not raw.strip():
        raise PathRefused(f"empty or non-text path {raw!r}")
    text = raw.strip()
    if _DRIVE.match(text) or text.startswith(("/", "\\")):
        raise PathRefused(f"absolute path {raw!r} (paths must be relative to the dataset root)")
    posix = text.replace("\\", "/")
    rel = PurePosixPath(posix)
    if ".." in rel.parts:
        raise PathRefused(f"path {raw!r} escapes the dataset root")
    clean = rel.as_posix()
    return clean, clean != text


def locate_root(root: str | Path, is_root: Callable[[Path], bool], what: str) -> Path:
    """Find the dataset root at ``root``, one level down (a nested archive folder) or one level up.

    Args:
        root: The root the user gave.
        is_root: Whether a folder is the dataset root (e.g. holds its metadata file).
        what: What the root should hold, for the error message.

    Returns:
        The folder that ``is_root`` accepts.

    Raises:
        DatasetError: ``root`` does not exist, or no folder within one level qualifies.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"input root not found: {root} (expected the folder holding {what})")
    if is_root(root):
        return root
    below = sorted(p for p in root.iterdir() if p.is_dir() and is_root(p))
    if len(below) == 1:
        logger.info("%s: using the nested folder %s (it holds %s)", root, below[0].name, what)
        return below[0]
    if len(below) > 1:
        raise DatasetError(f"{root}: several subfolders hold {what} ({', '.join(p.name for p in below)}); pass one of them")
    if root.parent != root and is_root(root.parent):
        logger.info("%s: using the parent folder %s (it holds %s)", root, root.parent, what)
        return root.parent
    raise DatasetError(f"{root}: no {what} here, in a subfolder, or in the parent folder: is this the dataset root?")


def load_json(path: Path) -> Any:
    """Read a metadata JSON file.

    Raises:
        DatasetError: Missing, unreadable or malformed (the message names the file
            and the position of the error).
    """
    try:
        with open(path, encoding="utf-8-sig") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise DatasetError(f"{path}: not found") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read: {exc}") from None


def list_videos(folder: Path) -> list[Path]:
    """Video files under ``folder`` (recursive, sorted); an absent folder gives none."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())


class CatalogBuilder:
    """Collects a catalog's records and problems, refusing unsafe and duplicate paths.

    Args:
        root: The dataset root (after :func:`locate_root`).
        dataset: The dataset's registered name, stored as metadata ``dataset``.
        label_policy: Function ``(video_label, audio_label) -> label``.
    """

    def __init__(self, root: Path, dataset: str, label_policy: Callable[[int, int], int]) -> None:
        self.root = root
        self.real_root = root.resolve()
        self.dataset = dataset
        self.policy = label_policy
        self.records: dict[str, VideoRecord] = {}
        self.problems: list[CatalogProblem] = []

    def problem(self, line: int, reason: str, relpath: str | None = None, *, skipped: bool = True) -> None:
        """Report a row: skipped, or (``skipped=False``) kept after a fix such as a rewritten separator."""
        self.problems.append(CatalogProblem(line, reason, relpath, skipped))

    def relpath(self, line: int, raw: Any, where: str = "") -> str | None:
        """A metadata path made safe, or None after reporting why it was refused."""
        try:
            rel, normalised = clean_relpath(raw)
        except PathRefused as exc:
            self.problem(line, f"{where}{exc}")
            return None
        if normalised:
            self.problem(line, f"{where}path {raw!r} normalised to {rel!r}", rel, skipped=False)
        if not (self.real_root / rel).resolve().is_relative_to(self.real_root):
            self.problem(line, f"{where}path escapes the dataset root through a symbolic link", rel)
            return None
        return rel

    def add(
        self,
        line: int,
        rel: str,
        *,
        video_label: int,
        audio_label: int = 0,
        identity: str,
        method: str,
        metadata: dict[str, Any] | None = None,
        split: str | None = None,
        split_pool: tuple[str, ...] = ("train", "val", "test"),
        linked: Iterable[str] = (),
        label: int | None = None,
    ) -> VideoRecord | None:
        """Add one video; a second entry for the same path is reported and dropped (the first wins).

        Args:
            line: Row or entry number, for reports.
            rel: Safe relative path (from :meth:`relpath`).
            video_label: 1 when the video track is manipulated.
            audio_label: 1 when the audio track is manipulated.
            identity: The person (or source video) the split groups by.
            method: Manipulation method (``real`` for real videos).
            metadata: Further metadata fields.
            split: The official split, or None.
            split_pool: Splits a generated split may choose.
            linked: Other identities the video shows.
            label: The label when no label policy applies (-1: unlabelled).

        Returns:
            The record, or None for a duplicate.
        """
        if rel in self.records:
            kept = self.records[rel].metadata.get("method")
            self.problem(line, f"duplicate entry for {rel} (method {method}); kept the first (method {kept})", rel)
            return None
        meta = {"dataset": self.dataset, "method": method, "source": identity, **(metadata or {})}
        meta["video_path"] = rel
        record = VideoRecord(
            relpath=rel,
            path=self.root / rel,
            label=self.policy(video_label, audio_label) if label is None else label,
            video_label=int(video_label),
            audio_label=int(audio_label),
            identity=identity,
            metadata=meta,
            linked_identities=tuple(i for i in linked if i and i != identity),
            split=split,
            split_pool=split_pool,
        )
        self.records[rel] = record
        return record

    def records_sorted(self) -> list[VideoRecord]:
        """The records sorted by relative path."""
        skipped = sum(p.skipped for p in self.problems)
        if skipped:
            logger.warning("%s: skipped %d entries (see the run report)", self.dataset, skipped)
        return [self.records[k] for k in sorted(self.records)]


def parse_segments(raw: Any, what: str = "segments") -> list[list[float]]:
    """Validate temporal fake segments ``[[start_s, end_s], ...]`` (seconds).

    Args:
        raw: The metadata value (None or missing means no segments).
        what: Field name, for the error message.

    Returns:
        Sorted ``[start, end]`` pairs of floats.

    Raises:
        ValueError: Not a list of two-number lists with ``0 <= start <= end``.
    """
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ValueError(f"{what}: expected a list of [start, end] pairs; got {type(raw).__name__}")
    out = []
    for seg in raw:
        if not (isinstance(seg, (list, tuple)) and len(seg) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in seg)):
            raise ValueError(f"{what}: {seg!r} is not a [start, end] pair of numbers")
        start, end = float(seg[0]), float(seg[1])
        if not 0.0 <= start <= end:
            raise ValueError(f"{what}: [{start}, {end}] is not an interval of non-negative seconds")
        out.append([start, end])
    return sorted(out)


def file_entries(meta_path: Path, builder: CatalogBuilder) -> Iterable[tuple[int, dict, str, str]]:
    """The entries of a metadata list file (LAV-DF, AV-Deepfake1M) that name a safe file.

    Yields:
        ``(entry number, entry, safe relative path of its 'file', report prefix)``;
        entries that are not objects with a ``file`` field, or whose path is
        refused, are reported to ``builder`` and skipped.

    Raises:
        DatasetError: Malformed JSON, or not a list.
    """
    entries = load_json(meta_path)
    if not isinstance(entries, list):
        raise DatasetError(f"{meta_path}: expected a list of entries; got {type(entries).__name__}")
    for n, entry in enumerate(entries, start=1):
        where = f"{meta_path.name} entry {n}: "
        if not isinstance(entry, dict) or "file" not in entry:
            builder.problem(n, f"{where}not an object with a 'file' field")
            continue
        rel = builder.relpath(n, entry["file"], where)
        if rel is not None:
            yield n, entry, rel, where
