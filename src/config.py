"""Typed configuration: frozen dataclasses mirroring ``configs/preprocessing.yaml``.

``load_config(path)`` reads the YAML, rejects unknown keys and wrong types with a
:class:`~src.errors.ConfigError` naming the key (and the allowed keys or values),
and returns a :class:`Config`. Every section has defaults, so an empty file is a
valid config.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from src.data.codecs import CODECS
from src.data.storage import backend_names
from src.datasets.catalog import catalog_spec
from src.errors import ConfigError
from src.preprocessing.registries import DETECTORS, EXECUTORS, FRAME_SELECTORS

__all__ = [
    "LMDBOptions",
    "OutputConfig",
    "DatasetConfig",
    "FramesConfig",
    "FacesConfig",
    "AudioConfig",
    "SplitsConfig",
    "ProcessingConfig",
    "LoaderConfig",
    "Config",
    "FORMATS",
    "CODECS",
    "LABEL_POLICIES",
    "load_config",
    "config_from_dict",
    "config_to_dict",
]

# Choices that are extension points are read from their registries when a config is built,
# so a plugin's registered name is accepted. FORMATS is the built-in snapshot, kept for callers.
FORMATS = backend_names()
#: The built-in audio-visual label policies; each dataset's spec says which it accepts.
LABEL_POLICIES = ("multimodal", "video", "audio")
NO_FACE_POLICIES = ("center", "skip")
GROUPINGS = ("source", "connected")


def _choice(section: str, name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{section}.{name}: invalid value {value!r}; must be one of {', '.join(map(str, allowed))}")


def _positive(section: str, name: str, value: float | int | None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or value <= 0:
        raise ConfigError(f"{section}.{name}: must be a positive number; got {value!r}")


@dataclass(frozen=True)
class LMDBOptions:
    """LMDB-specific output options (spec section "Configuration").

    Attributes:
        map_size_gb: Initial map size; the store grows itself when full.
        max_readers: Maximum simultaneous read transactions.
        create_indexes: Whether to maintain the per-field indexes.
        index_fields: Metadata fields to index (``label`` is the sample label).
        commit_every: Samples per committed write transaction.
    """

    map_size_gb: float = 10
    max_readers: int = 1024
    create_indexes: bool = True
    index_fields: tuple[str, ...] = ("label", "category", "method")
    commit_every: int = 64

    def __post_init__(self) -> None:
        _positive("output.lmdb", "map_size_gb", self.map_size_gb)
        _positive("output.lmdb", "max_readers", self.max_readers)
        _positive("output.lmdb", "commit_every", self.commit_every)


@dataclass(frozen=True)
class OutputConfig:
    """Where and how samples are written.

    Attributes:
        dir: Parent directory of the ``FakeAVCeleb_v1.2/`` output tree.
        format: Store format, one of :data:`FORMATS`.
        codec: Codec of the clip array: ``raw`` (default, lossless), ``zstd``
            (lossless) or ``jpeg`` (lossy).
        jpeg_quality: JPEG quality when ``codec`` is ``jpeg``.
        zstd_level: Zstandard level when ``codec`` is ``zstd``.
        lmdb: LMDB options.
    """

    dir: str = "data/processed"
    format: str = "lmdb"
    codec: str = "raw"
    jpeg_quality: int = 95
    zstd_level: int = 3
    lmdb: LMDBOptions = field(default_factory=LMDBOptions)

    def __post_init__(self) -> None:
        _choice("output", "format", self.format, backend_names())
        _choice("output", "codec", self.codec, CODECS.names())
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"output.jpeg_quality: must be in 1..100; got {self.jpeg_quality!r}")
        if not 1 <= self.zstd_level <= 22:
            raise ConfigError(f"output.zstd_level: must be in 1..22; got {self.zstd_level!r}")


@dataclass(frozen=True)
class DatasetConfig:
    """Which raw dataset to read.

    Attributes:
        name: Dataset catalog name (``fakeavceleb`` or ``demo``).
        input_dir: Dataset root holding ``meta_data.csv``.
        label_policy: ``multimodal`` (fake if video or audio is fake),
            ``video`` or ``audio`` (the policies the chosen dataset offers).
        compression: FaceForensics++ quality folder (``raw``, ``c23``, ``c40``);
            ignored by datasets without one.
        include_unlabelled: Also store a dataset's unlabelled videos (AV-Deepfake1M's
            ``test/``) in the test split, with label -1; off by default.
    """

    name: str = "fakeavceleb"
    input_dir: str = "data/raw/FakeAVCeleb_v1.2"
    label_policy: str = "multimodal"
    compression: str = "c23"
    include_unlabelled: bool = False

    def __post_init__(self) -> None:
        # The policies are the chosen dataset's (its DatasetSpec); an unknown dataset name fails here too.
        _choice("dataset", "label_policy", self.label_policy, tuple(catalog_spec(self.name).label_policies))
        _choice("dataset", "compression", self.compression, ("raw", "c23", "c40"))


@dataclass(frozen=True)
class FramesConfig:
    """Frame sampling.

    Attributes:
        num_frames: Frames stored per video (T).
        sampling: ``uniform`` (spread over the video) or ``window``
            (consecutive frames, for lip-sync detectors).
        num_windows: Number of windows in ``window`` mode.
        fps: Select frames on this frame rate's timeline (resampled from the
            source rate; e.g. 25 for audio-visual sync models); null: the source rate.
    """

    num_frames: int = 16
    sampling: str = "uniform"
    num_windows: int = 1
    fps: float | None = None

    def __post_init__(self) -> None:
        _positive("frames", "num_frames", self.num_frames)
        _positive("frames", "num_windows", self.num_windows)
        _positive("frames", "fps", self.fps, allow_none=True)
        _choice("frames", "sampling", self.sampling, FRAME_SELECTORS.names())
        if self.sampling == "window" and self.num_frames % self.num_windows:
            raise ConfigError(f"frames.num_frames ({self.num_frames}) must be divisible by frames.num_windows ({self.num_windows})")


@dataclass(frozen=True)
class FacesConfig:
    """Face detection and cropping.

    Attributes:
        detector: Detector backend, one of ``dlib_hog``, ``haar`` or ``mtcnn``.
        image_size: Side of the square output crops.
        margin: Crop side as a multiple of the face box side.
        detect_every: Run the detector on every n-th sampled frame (and the
            last) and interpolate the boxes in between.
        refine_iou: Adaptive detection: where two neighbouring detections
            overlap less than this IoU (the face moved, or one frame has no
            face), also detect halfway between, recursively. ``null`` disables.
        max_side: Longest side of a full-frame detection image (caps the upscale
            that ``min_face_px`` asks for).
        on_no_face: ``center`` (keep, centre crop, ``face_found: false``) or ``skip``.
        min_face_px: Smallest face side to find, in source pixels: full-frame
            detection runs at the scale that brings it to the detector's minimum.
        track_face_px: Once found, the face is tracked in a region around it,
            scaled so the face has this many pixels.
        cut_threshold: Histogram distance between consecutive stored frames that
            starts a new shot (no box is carried across it); ``null`` disables.
        landmarks: Landmark model (``dlib5``: public domain; ``dlib68``: iBUG
            300-W, non-commercial), or ``null``.
        align: Warp each frame with the landmarks' similarity to the ArcFace
            template (scaled by ``margin``); false: square crops around the box.
        absent: What a frame without the face stores: ``hold`` (the nearest
            present frame's crop window) or ``black``; its ``face_presence`` is false.
        landmarks_on: ``detected`` (the landmark model runs where a detection is on
            the track, points are interpolated between) or ``all`` present frames.
    """

    detector: str = "dlib_hog"
    image_size: int = 224
    margin: float = 1.3
    detect_every: int = 8
    refine_iou: float | None = 0.5
    max_side: int = 1920
    on_no_face: str = "center"
    min_face_px: int = 40
    track_face_px: int = 96
    cut_threshold: float | None = 0.5
    landmarks: str | None = "dlib5"
    align: bool = True
    absent: str = "hold"
    landmarks_on: str = "detected"

    def __post_init__(self) -> None:
        _choice("faces", "detector", self.detector, DETECTORS.names())
        _choice("faces", "on_no_face", self.on_no_face, NO_FACE_POLICIES)
        _positive("faces", "image_size", self.image_size)
        _positive("faces", "detect_every", self.detect_every)
        _positive("faces", "max_side", self.max_side)
        if self.refine_iou is not None and not 0.0 < self.refine_iou <= 1.0:
            raise ConfigError(f"faces.refine_iou: must be in (0, 1] or null; got {self.refine_iou!r}")
        if self.margin < 1.0:
            raise ConfigError(f"faces.margin: must be >= 1.0; got {self.margin!r}")
        _positive("faces", "min_face_px", self.min_face_px)
        _positive("faces", "track_face_px", self.track_face_px)
        _choice("faces", "absent", self.absent, ("hold", "black"))
        _choice("faces", "landmarks_on", self.landmarks_on, ("detected", "all"))
        if self.landmarks is not None:
            from src.preprocessing.landmarks import LANDMARKERS

            _choice("faces", "landmarks", self.landmarks, LANDMARKERS.names())
        if self.align and self.landmarks is None:
            raise ConfigError("faces.align: true needs faces.landmarks (dlib5 or dlib68); set align: false for square crops")
        if self.cut_threshold is not None and not 0.0 < self.cut_threshold <= 1.0:
            raise ConfigError(f"faces.cut_threshold: must be in (0, 1] or null; got {self.cut_threshold!r}")


@dataclass(frozen=True)
class AudioConfig:
    """Audio extraction.

    Attributes:
        enabled: Store the audio waveform with each clip.
        sample_rate: Output sample rate in Hz (mono float32).
    """

    enabled: bool = True
    sample_rate: int = 16000

    def __post_init__(self) -> None:
        _positive("audio", "sample_rate", self.sample_rate)


@dataclass(frozen=True)
class SplitsConfig:
    """Identity-disjoint train/val/test split.

    Attributes:
        train: Fraction of identities in train.
        val: Fraction in val.
        test: Fraction in test.
        seed: Seed of the identity shuffle.
        group_by: ``source`` (all videos of one source identity in one split)
            or ``connected`` (also keep every identity a fake borrows, target1
            and target2, with its source: identities linked through any video
            share a split, so no face crosses splits; may leave few, large groups).
        official: Keep the split a dataset's own split file or field gives a video
            (FaceForensics++, Celeb-DF's test list, LAV-DF, ...); the ratios then
            divide only the videos without one. ``false`` ignores official splits.
    """

    train: float = 0.70
    val: float = 0.15
    test: float = 0.15
    seed: int = 42
    group_by: str = "source"
    official: bool = True

    def __post_init__(self) -> None:
        _choice("splits", "group_by", self.group_by, GROUPINGS)
        for name in ("train", "val", "test"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"splits.{name}: must be in [0, 1]; got {value!r}")
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ConfigError(f"splits: train + val + test must be 1.0; got {total:.4f}")


@dataclass(frozen=True)
class ProcessingConfig:
    """How the preprocessing run executes.

    Attributes:
        workers: Worker processes, or Ray actors (``null``: the CPU cores this
            process may use; executor ``ray`` with a ``ray_address``: one actor
            per CPU of the cluster).
        executor: ``process`` (a process pool), ``serial`` (in-process, for
            debugging) or ``ray`` (Ray actors, local or on a cluster).
        limit: Process at most this many videos (``null``: all).
        max_in_flight: Videos submitted ahead of the writer, per worker (bounds memory).
        ray_address: Executor ``ray``: null starts a local Ray instance; ``auto`` or
            ``HOST:PORT`` joins that cluster.
        max_retries: Executor ``ray``: retries of a video whose worker died (a crash,
            a lost node); then it is reported failed.
        ray_batch: Executor ``ray``: videos per actor call (divides the driver's
            per-call cost; a video that kills its actor is found by retrying its
            batch one video per call). ``null``: one per 8 actors, 1 to 16.
        ray_write: Executor ``ray``: who writes the stores. ``shards``: every
            actor writes LMDB shards on its node's local disk and publishes
            each sealed shard (with a manifest, the commit point) into the
            split's ``data.lmdb``, which reads as one store; ``driver``: the
            samples stream to the driver's one writer; ``auto``: shards for
            ``output.format: lmdb``, else driver.
        shard_dir: Node-local scratch directory for open shards (``null``: the
            system temp dir of each node). Never a network file system.
        shard_mb: Seal and publish a shard once its samples' arrays reach this
            many megabytes (raw, before the codec: with jpeg or zstd the shard
            on disk is smaller).
        shard_seconds: ... or once it has been open this long (bounds the work a
            killed driver loses).
    """

    workers: int | None = None
    executor: str = "process"
    limit: int | None = None
    max_in_flight: int = 4
    ray_address: str | None = None
    max_retries: int = 2
    ray_batch: int | None = None
    ray_write: str = "auto"
    shard_dir: str | None = None
    shard_mb: float = 2048
    shard_seconds: float = 300

    def __post_init__(self) -> None:
        _positive("processing", "workers", self.workers, allow_none=True)
        _choice("processing", "ray_write", self.ray_write, ("auto", "shards", "driver"))
        _positive("processing", "ray_batch", self.ray_batch, allow_none=True)
        _positive("processing", "shard_mb", self.shard_mb)
        _positive("processing", "shard_seconds", self.shard_seconds)
        _positive("processing", "limit", self.limit, allow_none=True)
        _positive("processing", "max_in_flight", self.max_in_flight)
        _choice("processing", "executor", self.executor, EXECUTORS.names())
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ConfigError(f"processing.max_retries: must be 0 or more; got {self.max_retries!r}")
        if self.ray_address is not None:
            host, _, port = str(self.ray_address).rpartition(":")
            if self.ray_address != "auto" and not (host and port.isdigit() and 0 < int(port) < 65536):
                raise ConfigError(f"processing.ray_address: invalid value '{self.ray_address}'; must be auto or HOST:PORT")
            if self.executor != "ray":
                raise ConfigError(f"processing.ray_address is only used by executor ray; processing.executor is '{self.executor}'")

    @property
    def num_workers(self) -> int:
        """The resolved worker count."""
        if self.workers:
            return self.workers
        try:  # the cores this process may use (a SLURM/cgroup share), not the whole machine
            return len(os.sched_getaffinity(0)) or 1
        except AttributeError:  # platforms without sched_getaffinity
            return os.cpu_count() or 1


@dataclass(frozen=True)
class LoaderConfig:
    """Training-loader defaults.

    Attributes:
        mean: Per-channel mean for normalisation (on the 0..1 scale).
        std: Per-channel standard deviation.
    """

    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.std):
            raise ConfigError(f"loader.mean and loader.std must have the same length; got {len(self.mean)} and {len(self.std)}")
        if any(s <= 0 for s in self.std):
            raise ConfigError(f"loader.std: values must be positive; got {list(self.std)}")


@dataclass(frozen=True)
class Config:
    """The whole preprocessing/loading configuration."""

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    frames: FramesConfig = field(default_factory=FramesConfig)
    faces: FacesConfig = field(default_factory=FacesConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    splits: SplitsConfig = field(default_factory=SplitsConfig)
    processing: ProcessingConfig = field(default_factory=ProcessingConfig)
    loader: LoaderConfig = field(default_factory=LoaderConfig)

    def __post_init__(self) -> None:
        if self.processing.ray_write == "shards" and self.output.format != "lmdb":
            raise ConfigError(f"processing.ray_write: shards writes LMDB shards; output.format is '{self.output.format}' (use ray_write: driver or auto)")

    @property
    def writes_shards(self) -> bool:
        """Whether the run's samples are written as LMDB shards by the workers (executor ``ray``)."""
        p = self.processing
        return p.executor == "ray" and self.output.format == "lmdb" and p.ray_write in ("auto", "shards")


# ----------------------------------------------------------------------------- loading


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping of options; got {type(value).__name__} {value!r}")
        return _build(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list; got {type(value).__name__} {value!r}")
        return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false; got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer; got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number; got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string; got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported option type {hint!r}")  # pragma: no cover - programming error


def _build(cls: type, data: Mapping[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"unknown config key {prefix}{unknown[0]}; allowed keys{' in ' + where if where else ''}: {', '.join(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def config_from_dict(data: Mapping[str, Any] | None) -> Config:
    """Build and validate a :class:`Config` from a plain mapping.

    Args:
        data: Parsed YAML (``None`` means all defaults).

    Returns:
        The validated config.

    Raises:
        ConfigError: Unknown keys, wrong types or invalid values.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"the config must be a mapping of sections; got {type(data).__name__}")
    return _build(Config, data, "")


def load_config(path: str | os.PathLike | None = None, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Config:
    """Load ``configs/preprocessing.yaml`` (or another file) into a :class:`Config`.

    Args:
        path: YAML file; ``None`` gives the defaults.
        overrides: ``{section: {key: value}}`` applied on top of the file
            (used by command-line flags).

    Returns:
        The validated config.

    Raises:
        ConfigError: Missing or unparsable file, unknown keys, invalid values.
    """
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: the config must be a mapping of sections; got {type(data).__name__}")
    for section, values in (overrides or {}).items():
        merged = dict(data.get(section) or {})
        merged.update({k: v for k, v in values.items() if v is not None})
        data[section] = merged
    return config_from_dict(data)


def config_to_dict(config: Any) -> dict[str, Any]:
    """Return a config (or section) as plain dicts and lists, e.g. to store it beside the data."""
    out = dataclasses.asdict(config)

    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return plain(out)
