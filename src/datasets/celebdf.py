"""Celeb-DF v2 catalog: three folders, and a test list whose labels are inverted.

Layout (yuezunli/celeb-deepfakeforensics, ``Celeb-DF-v2/README.md``)::

    Celeb-real/idX_NNNN.mp4             real (celebrity X)
    YouTube-real/NNNNN.mp4              real (unnamed people)
    Celeb-synthesis/idS_idT_NNNN.mp4    fake: the video of S with the face of T
    List_of_testing_videos.txt          lines "<label> <folder>/<file>"

In the test list **1 means real and 0 fake**, the inverse of our labels. The
listed videos are the official test split; a listed label that contradicts the
folder is reported (the folder decides). Every other video goes to train or val,
identity-disjoint by the person whose video it is (``S`` for a fake). There are
890 real videos on disk where the papers count 590 (the 300 YouTube ones are
usually left out of the count): all of them are read.
"""

from __future__ import annotations

import re
from pathlib import Path

from src.datasets.catalog import Catalog, DatasetCatalog
from src.datasets.layout import VIDEO_ONLY_POLICIES, CatalogBuilder, list_videos, locate_root, video_only_spec
from src.errors import ConfigError, DatasetError

__all__ = ["CATALOG", "DATASET_NAME", "SPEC", "TEST_LIST", "read_catalog", "read_test_list"]

DATASET_NAME = "Celeb-DF-v2"
TEST_LIST = "List_of_testing_videos.txt"
_FOLDERS = {"Celeb-real": 0, "YouTube-real": 0, "Celeb-synthesis": 1}
_CELEB = re.compile(r"^(id\d+)_(\d+)$")
_SYNTH = re.compile(r"^(id\d+)_(id\d+)_(\d+)$")

SPEC = video_only_spec(DATASET_NAME)


def read_test_list(path: Path, builder: CatalogBuilder) -> dict[str, int]:
    """Parse the test list into ``{relpath: our label}`` (1 fake), reporting bad lines.

    Raises:
        DatasetError: The file cannot be read.
    """
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read: {exc}") from None
    out: dict[str, int] = {}
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0] not in ("0", "1"):
            builder.problem(n, f"{TEST_LIST}: malformed line {line!r} (expected '<1 real|0 fake> <folder>/<file>')")
            continue
        rel = builder.relpath(n, parts[1], f"{TEST_LIST}: ")
        if rel is None:
            continue
        if rel in out:
            builder.problem(n, f"{TEST_LIST}: {rel} listed twice", rel)
            continue
        out[rel] = 1 - int(parts[0])  # the list's 1 is real
    return out


def read_catalog(root: str | Path, label_policy: str = "video") -> Catalog:
    """Read Celeb-DF v2 into records: the test list is the official test split.

    Args:
        root: The Celeb-DF-v2 root (holding ``Celeb-real`` and ``Celeb-synthesis``).
        label_policy: ``video`` (or ``multimodal``, the same here).

    Returns:
        The catalog.

    Raises:
        DatasetError: No Celeb-DF tree at or next to ``root``, or an unreadable test list.
        ConfigError: Unknown label policy.
    """
    if label_policy not in VIDEO_ONLY_POLICIES:
        raise ConfigError(f"unknown label policy {label_policy!r} for celebdf; must be one of {', '.join(VIDEO_ONLY_POLICIES)}")
    root = locate_root(root, lambda p: (p / "Celeb-synthesis").is_dir() and (p / "Celeb-real").is_dir(), "Celeb-real/ and Celeb-synthesis/")
    builder = CatalogBuilder(root, "celebdf", VIDEO_ONLY_POLICIES[label_policy])
    test = read_test_list(root / TEST_LIST, builder) if (root / TEST_LIST).is_file() else {}
    has_list = bool(test)
    if not has_list:
        builder.problem(0, f"{TEST_LIST} not found or empty: every split is generated", skipped=False)
    for folder, fake in _FOLDERS.items():
        for n, path in enumerate(list_videos(root / folder), start=1):
            rel = path.relative_to(root).as_posix()
            stem = path.stem
            if fake:
                m = _SYNTH.match(stem)
                if not m:
                    builder.problem(n, f"not a Celeb-synthesis name (idS_idT_NNNN.mp4): {path.name}", rel)
                    continue
                identity, meta, linked = m[1], {"source": m[1], "target": m[2]}, (m[2],)
            elif folder == "Celeb-real":
                m = _CELEB.match(stem)
                if not m:
                    builder.problem(n, f"not a Celeb-real name (idX_NNNN.mp4): {path.name}", rel)
                    continue
                identity, meta, linked = m[1], {}, ()
            else:
                identity, meta, linked = f"youtube_{stem}", {}, ()
            listed = test.pop(rel, None)
            if listed is not None and listed != fake:
                builder.problem(n, f"{TEST_LIST} labels {rel} {'fake' if listed else 'real'} but its folder says {'fake' if fake else 'real'}; the folder decides", rel, skipped=False)
            builder.add(
                n,
                rel,
                video_label=fake,
                identity=identity,
                method="celeb-synthesis" if fake else "real",
                metadata={**meta, "origin_folder": folder},
                split="test" if listed is not None else None,
                split_pool=("train", "val") if has_list else ("train", "val", "test"),
                linked=linked,
            )
    for rel in sorted(test):
        builder.problem(0, f"{TEST_LIST} lists {rel}, which is not on disk", rel)
    return Catalog(name=DATASET_NAME, records=builder.records_sorted(), problems=builder.problems)


#: The registered dataset (``--dataset celebdf``).
CATALOG = DatasetCatalog(SPEC, read_catalog)
