"""What a dataset catalog produces: one :class:`VideoRecord` per video, and the catalog registry.

A catalog turns a raw dataset tree into records (path, labels, metadata, identity)
without decoding anything. The preprocessing pipeline only ever sees records, so a
new dataset means a new catalog module registered here, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from src.registry import Registry

__all__ = [
    "AUDIO_VISUAL_POLICIES",
    "CATALOGS",
    "GENERIC_SPEC",
    "Catalog",
    "CatalogProblem",
    "DatasetCatalog",
    "DatasetSpec",
    "VideoRecord",
    "catalog_names",
    "catalog_spec",
    "get_catalog",
    "read_dataset",
]


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
        linked_identities: Other people whose faces this video shows (a face
            swap's target); ``splits.group_by: connected`` keeps them in the
            split of ``identity``.
        split: The split the dataset's own split file or field gives the video
            (``split_origin: official``), or None.
        split_pool: The splits a generated split may choose for it (Celeb-DF's
            unlisted videos: train or val; the official test set is fixed).
    """

    relpath: str
    path: Path
    label: int
    video_label: int
    audio_label: int
    identity: str
    metadata: dict[str, Any] = field(default_factory=dict)
    linked_identities: tuple[str, ...] = ()
    split: str | None = None
    split_pool: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class CatalogProblem:
    """A row of the dataset's metadata that was skipped (or fixed), and why.

    Attributes:
        line: Line number in the metadata file (1 = header), or entry number.
        reason: What was wrong.
        relpath: The video the row points at, when known.
        skipped: False for a row that was kept after a fix (a rewritten ``\\`` path).
    """

    line: int
    reason: str
    relpath: str | None = None
    skipped: bool = True


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


def _multimodal(video: int, audio: int) -> int:
    return int(video or audio)


def _video(video: int, audio: int) -> int:
    return int(video)


def _audio(video: int, audio: int) -> int:
    return int(audio)


#: The label policies of an audio-visual dataset: fake if either track is fake, or one track decides.
AUDIO_VISUAL_POLICIES: dict[str, Callable[[int, int], int]] = {"multimodal": _multimodal, "video": _video, "audio": _audio}


@dataclass(frozen=True)
class DatasetSpec:
    """What the rest of the pipeline needs to know about a dataset, kept with its catalog.

    Attributes:
        label_policies: ``{policy name: fn(video_label, audio_label) -> label}``
            (the values ``dataset.label_policy`` accepts).
        index_fields: Fields worth indexing in the stores (``label`` plus metadata keys).
        summary_fields: Per-sample fields of ``metadata.json`` (``label`` is the
            sample label; the others are metadata keys).
        count_fields: Fields ``metadata.json`` counts samples by.
        dir_name: The dataset's usual folder name (``FaceForensics++``): the default
            input folder beside the configured one, when ``--dataset`` names
            another dataset than the config file and no ``--input-dir`` is given.
    """

    label_policies: Mapping[str, Callable[[int, int], int]] = field(default_factory=lambda: dict(AUDIO_VISUAL_POLICIES))
    index_fields: tuple[str, ...] = ("label",)
    summary_fields: tuple[str, ...] = ("video_path", "label", "num_frames", "face_found", "has_audio")
    count_fields: tuple[str, ...] = ("label",)
    dir_name: str | None = None


#: The spec of a catalog registered as a bare reader function.
GENERIC_SPEC = DatasetSpec()


@dataclass(frozen=True)
class DatasetCatalog:
    """A registered dataset: its :class:`DatasetSpec` and its reader.

    Calling it reads the catalog: ``catalog(root, label_policy, **options) -> Catalog``.

    Attributes:
        spec: What the pipeline needs to know about the dataset.
        read: ``fn(root, label_policy, **options) -> Catalog``.
        options: Names of the ``dataset:`` config keys the reader takes as keyword
            arguments (FaceForensics++: ``compression``).
    """

    spec: DatasetSpec
    read: Callable[..., Catalog]
    options: tuple[str, ...] = ()

    def __call__(self, root: Path, label_policy: str, **options: Any) -> Catalog:
        return self.read(root, label_policy, **{k: v for k, v in options.items() if k in self.options})


#: Datasets by name (``preprocess.py --dataset``): :class:`DatasetCatalog` objects, or plain
#: reader functions ``fn(root, label_policy) -> Catalog`` (which get :data:`GENERIC_SPEC`).
CATALOGS: Registry[Any] = Registry(
    "dataset",
    {
        "fakeavceleb": "src.datasets.fakeavceleb:CATALOG",
        "faceforensics": "src.datasets.faceforensics:CATALOG",
        "celebdf": "src.datasets.celebdf:CATALOG",
        "dfdc": "src.datasets.dfdc:CATALOG",
        "lavdf": "src.datasets.lavdf:CATALOG",
        "avdeepfake1m": "src.datasets.avdeepfake1m:CATALOG",
        "folder": "src.datasets.folder:CATALOG",
    },
)


def catalog_names() -> tuple[str, ...]:
    """Names accepted by ``preprocess.py --dataset``."""
    return CATALOGS.names()


def get_catalog(name: str) -> Callable[[Path, str], Catalog]:
    """Return the catalog reader for a dataset name (case-insensitive).

    Raises:
        ConfigError: Unknown dataset name (the message lists the known ones).
    """
    return CATALOGS.get(name.lower() if name.lower() in CATALOGS else name)


def read_dataset(name: str, root: str | Path, label_policy: str, **options: Any) -> Catalog:
    """Read a dataset's catalog by name, passing the ``dataset:`` options its reader takes.

    Args:
        name: Registered dataset name.
        root: Dataset root.
        label_policy: One of the dataset's label policies.
        **options: ``dataset:`` config values (e.g. ``compression``); a reader gets
            only the ones it declares.

    Raises:
        ConfigError: Unknown dataset name.
        DatasetError: The root or its metadata cannot be read.
    """
    catalog = get_catalog(name)
    if isinstance(catalog, DatasetCatalog):
        return catalog(Path(root), label_policy, **options)
    return catalog(Path(root), label_policy)


def catalog_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of a dataset name.

    Raises:
        ConfigError: Unknown dataset name.
    """
    return getattr(get_catalog(name), "spec", GENERIC_SPEC)
