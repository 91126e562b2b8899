"""FaceForensics++ catalog: the folder layout and the official pair splits.

Layout (ondyari/FaceForensics, ``dataset/README.md``)::

    original_sequences/youtube/<comp>/videos/NNN.mp4             real, ids 000-999
    manipulated_sequences/<Method>/<comp>/videos/TTT_SSS.mp4     fake: target video TTT, source face SSS

``<comp>`` is ``raw`` (older downloads: ``c0``), ``c23`` or ``c40``: only the
configured one (``dataset.compression``, default ``c23``) is read, so no other
quality and no ``masks/`` videos are stored. The five face-manipulation methods
with official splits are read (``DeepFakeDetection``, the DFD set, has none and
is left out); the method is the folder name, ``real`` for originals.

Splits are the official ``splits/{train,val,test}.json`` of the FaceForensics
repository (shipped in ``src/datasets/data/faceforensics``): lists of id pairs
``[a, b]``, 360/70/70. A pair puts both real videos ``a`` and ``b`` and both
fakes ``a_b`` and ``b_a`` in its split. A fake whose two ids are not a pair of
one split is reported and left out.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

from src.datasets.catalog import Catalog, DatasetCatalog
from src.datasets.layout import VIDEO_ONLY_POLICIES, CatalogBuilder, list_videos, locate_root, video_only_spec
from src.errors import ConfigError

__all__ = ["CATALOG", "DATASET_NAME", "METHODS", "SPEC", "official_splits", "read_catalog"]

DATASET_NAME = "FaceForensics++"
#: Manipulation methods with official splits, as FF++ names their folders.
METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures", "FaceShifter")
_SPLIT_DIR = Path(__file__).with_name("data") / "faceforensics"
_REAL_NAME = re.compile(r"^(\d{3})$")
_FAKE_NAME = re.compile(r"^(\d{3})_(\d{3})$")

SPEC = video_only_spec(DATASET_NAME)


@lru_cache(maxsize=1)
def official_splits() -> dict[frozenset[str], str]:
    """The official pairs: ``{frozenset({a, b}): split}`` (500 pairs over the 1,000 ids)."""
    out: dict[frozenset[str], str] = {}
    for split in ("train", "val", "test"):
        with open(_SPLIT_DIR / f"{split}.json", encoding="utf-8") as fh:
            for a, b in json.load(fh):
                out[frozenset((a, b))] = split
    return out


def _id_split() -> dict[str, str]:
    return {i: split for pair, split in official_splits().items() for i in pair}


def _comp_dir(parent: Path, compression: str) -> Path:
    """``parent/<comp>/videos``; ``raw`` also accepts the older ``c0`` name."""
    for name in (compression, "c0") if compression == "raw" else (compression,):
        if (parent / name / "videos").is_dir():
            return parent / name / "videos"
    return parent / compression / "videos"


def read_catalog(root: str | Path, label_policy: str = "video", compression: str = "c23") -> Catalog:
    """Read FaceForensics++ videos of one compression level into records with official splits.

    Args:
        root: The FaceForensics++ root (holding ``original_sequences``).
        label_policy: ``video`` (or ``multimodal``, the same here: FF++ audio is never fake).
        compression: ``raw``, ``c23`` or ``c40``.

    Returns:
        The catalog.

    Raises:
        DatasetError: No FaceForensics++ tree at or next to ``root``.
        ConfigError: Unknown label policy or compression.
    """
    if label_policy not in VIDEO_ONLY_POLICIES:
        raise ConfigError(f"unknown label policy {label_policy!r} for faceforensics; must be one of {', '.join(VIDEO_ONLY_POLICIES)}")
    if compression not in ("raw", "c23", "c40"):
        raise ConfigError(f"dataset.compression must be raw, c23 or c40; got {compression!r}")
    root = locate_root(root, lambda p: (p / "original_sequences").is_dir(), "original_sequences/ and manipulated_sequences/")
    builder = CatalogBuilder(root, "faceforensics", VIDEO_ONLY_POLICIES[label_policy])
    id_split, pairs = _id_split(), official_splits()
    for n, path in enumerate(list_videos(_comp_dir(root / "original_sequences" / "youtube", compression)), start=1):
        rel = path.relative_to(root).as_posix()
        m = _REAL_NAME.match(path.stem)
        if not m:
            builder.problem(n, f"not an FF++ original name (NNN.mp4): {path.name}", rel)
            continue
        builder.add(n, rel, video_label=0, identity=m[1], method="real", metadata={"compression": compression}, split=id_split.get(m[1]))
    for method in METHODS:
        for n, path in enumerate(list_videos(_comp_dir(root / "manipulated_sequences" / method, compression)), start=1):
            rel = path.relative_to(root).as_posix()
            m = _FAKE_NAME.match(path.stem)
            if not m:
                builder.problem(n, f"not an FF++ manipulated name (TTT_SSS.mp4): {path.name}", rel)
                continue
            target, source = m[1], m[2]
            split = pairs.get(frozenset((target, source)))
            if split is None and (target in id_split or source in id_split):
                builder.problem(n, f"{target} and {source} are not an official pair: the fake has no official split", rel)
                continue
            builder.add(
                n,
                rel,
                video_label=1,
                identity=target,
                method=method,
                metadata={"compression": compression, "target": target, "source": source},
                split=split,
                linked=(source,),
            )
    return Catalog(name=DATASET_NAME, records=builder.records_sorted(), problems=builder.problems)


#: The registered dataset (``--dataset faceforensics``).
CATALOG = DatasetCatalog(SPEC, read_catalog, options=("compression",))
