"""AV-Deepfake1M catalog: train/val metadata lists, per-modality fake segments, withheld test labels.

Layout (ControlNet/AV-Deepfake1M ``README.md``)::

    train_metadata.json   [{"file": "id06744/_c3CCbnZEbU/00011/real_video_fake_audio.mp4",
                            "original": ..., "split": "train", "modify_type": "audio_modified",
                            "fake_segments": [[s, e], ...], "visual_fake_segments": [...],
                            "audio_fake_segments": [...], "video_frames": ..., "audio_frames": ...}]
    val_metadata.json     the same for val/
    train/<file>, val/<file>, test/<file>, test_files.txt

Test labels are withheld (a challenge), so the official ``val`` set becomes our
``test`` split, as DeepfakeBench-MM does, and ``val`` is carved out of ``train``,
grouped by the VoxCeleb2 identity (the ``idNNNNN`` path component). The
unlabelled ``test/`` videos are stored only with ``dataset.include_unlabelled``
(label -1). ``modify_type`` is read in both spellings the project's own code
uses (``both_modified`` and ``both-modified``). The metadata's ``audio_frames``
is known not to match the decoded audio of fake tracks, so no count from the
metadata is trusted: labels come from the segments and the decoded timestamps.
"""

from __future__ import annotations

from pathlib import Path

from src.datasets.catalog import AUDIO_VISUAL_POLICIES, Catalog, DatasetCatalog, DatasetSpec
from src.datasets.layout import CatalogBuilder, file_entries, locate_root, parse_segments
from src.errors import ConfigError

__all__ = ["CATALOG", "DATASET_NAME", "MODIFY_TYPES", "SPEC", "read_catalog"]

DATASET_NAME = "AV-Deepfake1M"
#: modify_type -> (video_label, audio_label)
MODIFY_TYPES = {"real": (0, 0), "visual_modified": (1, 0), "audio_modified": (0, 1), "both_modified": (1, 1)}
#: metadata file -> (folder of its videos, the split we give them, official)
_SOURCES = {"train_metadata.json": ("train", None), "val_metadata.json": ("val", "test")}

SPEC = DatasetSpec(
    label_policies=AUDIO_VISUAL_POLICIES,
    index_fields=("label", "method"),
    summary_fields=("video_path", "label", "method", "source", "video_label", "audio_label", "split_origin", "num_frames", "face_found", "has_audio"),
    count_fields=("label", "method", "split_origin"),
    dir_name=DATASET_NAME,
)


def _read_list(root: Path, meta_name: str, builder: CatalogBuilder) -> None:
    folder, split = _SOURCES[meta_name]
    meta_path = root / meta_name
    if not meta_path.is_file():
        builder.problem(0, f"{meta_name} not found: no {folder} videos", skipped=False)
        return
    for n, entry, inner, where in file_entries(meta_path, builder):
        rel = f"{folder}/{inner}"
        if entry.get("split", folder) != folder:
            builder.problem(n, f"{where}split {entry.get('split')!r} does not match its list ({folder})", rel)
            continue
        modify = str(entry.get("modify_type", "")).replace("-", "_")
        if modify not in MODIFY_TYPES:
            builder.problem(n, f"{where}unknown modify_type {entry.get('modify_type')!r} (expected {', '.join(MODIFY_TYPES)})", rel)
            continue
        try:
            segments = {k: parse_segments(entry.get(k), k) for k in ("fake_segments", "visual_fake_segments", "audio_fake_segments")}
        except ValueError as exc:
            builder.problem(n, f"{where}{exc}", rel)
            continue
        video, audio = MODIFY_TYPES[modify]
        identity = inner.split("/", 1)[0]
        builder.add(
            n,
            rel,
            video_label=video,
            audio_label=audio,
            identity=identity,
            method=modify,
            metadata={"original": entry.get("original"), "audio_model": entry.get("audio_model"), **segments},
            split=split,
            split_pool=("train", "val"),
        )


def _read_unlabelled(root: Path, builder: CatalogBuilder) -> None:
    listing = root / "test_files.txt"
    if not listing.is_file():
        builder.problem(0, "test_files.txt not found: no unlabelled test videos", skipped=False)
        return
    for n, line in enumerate(listing.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        inner = builder.relpath(n, line.strip(), "test_files.txt: ")
        if inner is not None:
            builder.add(
                n, f"test/{inner}", video_label=-1, audio_label=-1, label=-1, identity=inner.split("/", 1)[0], method="unlabelled", split="test"
            )


def read_catalog(root: str | Path, label_policy: str = "multimodal", include_unlabelled: bool = False) -> Catalog:
    """Read AV-Deepfake1M's train and val metadata into records.

    Args:
        root: The AV-Deepfake1M root (holding ``train_metadata.json``).
        label_policy: ``multimodal``, ``video`` or ``audio``.
        include_unlabelled: Also read ``test_files.txt`` (label -1, test split).

    Returns:
        The catalog.

    Raises:
        DatasetError: No metadata at or next to ``root``, or a malformed metadata file.
        ConfigError: Unknown label policy.
    """
    if label_policy not in AUDIO_VISUAL_POLICIES:
        raise ConfigError(f"unknown label policy {label_policy!r} for avdeepfake1m; must be one of {', '.join(AUDIO_VISUAL_POLICIES)}")
    root = locate_root(root, lambda p: any((p / m).is_file() for m in _SOURCES), "train_metadata.json or val_metadata.json")
    builder = CatalogBuilder(root, "avdeepfake1m", AUDIO_VISUAL_POLICIES[label_policy])
    for meta_name in _SOURCES:
        _read_list(root, meta_name, builder)
    if include_unlabelled:
        _read_unlabelled(root, builder)
    return Catalog(name=DATASET_NAME, records=builder.records_sorted(), problems=builder.problems)


#: The registered dataset (``--dataset avdeepfake1m``).
CATALOG = DatasetCatalog(SPEC, read_catalog, options=("include_unlabelled",))
