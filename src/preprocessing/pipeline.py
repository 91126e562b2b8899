"""One video in, one stored sample out: decode frames, crop the face, cut the audio.

:class:`VideoProcessor` holds what is expensive to build (the face detector) and
is created once per worker process. Only building it can stop a run (a broken
detector install, invalid detector options: :class:`~src.errors.ConfigError`);
calling it on a :class:`VideoTask` never raises: any problem of one video, a
stage's ``ValueError`` included, becomes a failed :class:`TaskResult` whose
``error`` says why.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from src.config import Config
from src.errors import DeepfakeDataError
from src.preprocessing.clip import decode_clip
from src.preprocessing.facecrop import CropOptions, crop_faces
from src.preprocessing.faces import create_detector
from src.preprocessing.landmarks import LandmarkModel, create_landmarker
from src.preprocessing.temporal import temporal_metadata
from src.preprocessing.tracking import TrackOptions

__all__ = ["VideoTask", "TaskResult", "VideoProcessor", "process_video"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoTask:
    """One video to process and where its sample goes.

    Attributes:
        key: Sample key in the split's store.
        split: ``train``, ``val`` or ``test``.
        relpath: Video path relative to the dataset root.
        path: Absolute video path.
        label: Training label.
        video_label: 1 when the video track is fake.
        audio_label: 1 when the audio track is fake.
        metadata: Catalog metadata (category, method, source, ...).
    """

    key: str
    split: str
    relpath: str
    path: str
    label: int
    video_label: int
    audio_label: int
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class TaskResult:
    """What processing one video produced.

    Attributes:
        task: The task.
        sample: The sample to store, or None.
        error: Why there is no sample (None on success).
        status: ``ok``, ``failed`` (bad video) or ``skipped`` (no face under the ``skip`` policy).
        timings: Seconds spent per stage.
        stored: The worker wrote the sample itself (into a published shard); ``sample`` is then None.
    """

    task: VideoTask
    sample: dict[str, Any] | None
    error: str | None = None
    status: str = "ok"
    timings: dict[str, float] = field(default_factory=dict)
    stored: bool = False


class VideoProcessor:
    """Turns video tasks into samples with a detector built once.

    Args:
        config: The preprocessing config.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.detector = create_detector(config.faces.detector, max_side=config.faces.max_side)
        # Load the models now: a broken install must stop the run, not fail every video.
        self.detector.detect(np.zeros((64, 64, 3), dtype=np.uint8))
        self.landmarker = None
        if config.faces.landmarks is not None:
            self.landmarker = create_landmarker(config.faces.landmarks)
            self.landmarker.load()

    def __call__(self, task: VideoTask) -> TaskResult:
        """Process one video; errors become a failed :class:`TaskResult`."""
        timings: dict[str, float] = {}
        try:
            sample = process_video(task, self.config, self.detector, timings, self.landmarker)
        except (DeepfakeDataError, ValueError) as exc:  # a bad video, or data a stage rejects
            return TaskResult(task, None, str(exc), "failed", timings)
        except Exception as exc:  # a decoder bug must cost one video, not the run of thousands
            logger.exception("%s: unexpected error", task.relpath)
            return TaskResult(task, None, f"unexpected {type(exc).__name__}: {exc}", "failed", timings)
        if sample is None:
            return TaskResult(task, None, "no face found (faces.on_no_face: skip)", "skipped", timings)
        return TaskResult(task, sample, None, "ok", timings)


def _options(faces_cfg: Any) -> tuple[TrackOptions, CropOptions]:
    track = TrackOptions(
        min_face_px=faces_cfg.min_face_px,
        max_side=faces_cfg.max_side,
        detect_every=faces_cfg.detect_every,
        refine_iou=faces_cfg.refine_iou,
        cut_threshold=faces_cfg.cut_threshold,
        track_face_px=faces_cfg.track_face_px,
    )
    crop = CropOptions(
        image_size=faces_cfg.image_size,
        margin=faces_cfg.margin,
        align=faces_cfg.align,
        absent=faces_cfg.absent,
        on_no_face=faces_cfg.on_no_face,
        landmarks_on=faces_cfg.landmarks_on,
    )
    return track, crop


def _rounded(values: Any, digits: int) -> Any:
    """Nested lists of rounded floats (NaN kept) for the metadata."""
    return np.round(np.asarray(values, dtype=np.float64), digits).tolist()


def process_video(
    task: VideoTask, config: Config, detector: Any, timings: dict[str, float] | None = None, landmarker: LandmarkModel | None = None
) -> dict[str, Any] | None:
    """Decode, crop and cut one video into a sample.

    Args:
        task: The video.
        config: The preprocessing config.
        detector: A face detector from :func:`~src.preprocessing.faces.create_detector`.
        timings: Optional dict receiving seconds per stage (``decode``: video and audio; ``faces``).
        landmarker: Landmark model (``faces.landmarks``); built here when None and configured.

    Returns:
        ``{"data": uint8 (3, T, S, S), "label", "metadata", "audio"?}``, or None when
        no face was found and the policy is ``skip``.

    Raises:
        VideoDecodeError: The video cannot be decoded.
    """
    timings = {} if timings is None else timings
    fc, faces_cfg, audio_cfg = config.frames, config.faces, config.audio

    t0 = time.perf_counter()
    clip = decode_clip(task.path, fc.num_frames, fc.sampling, fc.num_windows, audio_cfg.sample_rate if audio_cfg.enabled else None, target_fps=fc.fps)
    frames, indices, info = clip.frames, clip.indices, clip.info
    t1 = time.perf_counter()
    if landmarker is None and faces_cfg.landmarks is not None:
        landmarker = create_landmarker(faces_cfg.landmarks)
    track_opts, crop_opts = _options(faces_cfg)
    faces = crop_faces(frames, detector, landmarker, track_opts, crop_opts)
    t2 = time.perf_counter()
    timings["decode"] = t1 - t0  # video and audio, one pass
    timings["faces"] = t2 - t1
    if faces.crops is None:
        return None

    metadata = dict(task.metadata)
    metadata.update(
        num_frames=int(faces.crops.shape[0]),
        video_path=task.relpath,
        video_label=task.video_label,
        audio_label=task.audio_label,
        frame_indices=[int(i) for i in indices],
        source_num_frames=info.num_frames,
        fps=float(info.fps),
        source_size=[info.width, info.height],
        face_boxes=[None if b is None else [round(float(v), 2) for v in tuple(b)[:4]] for b in faces.boxes],
        face_detected=[bool(d) for d in faces.detected],
        face_presence=[bool(p) for p in faces.presence],
        face_coverage=round(faces.coverage, 4),
        face_found=bool(faces.face_found),
        face_shots=[int(i) for i in faces.shots],
        crop_transforms=_rounded(faces.transforms, 5),
        aligned=bool(crop_opts.align and faces.landmarks is not None and faces.face_found),
        landmark_model=faces_cfg.landmarks,
    )
    if faces.landmarks is not None:
        metadata["landmarks"] = _rounded(faces.landmarks, 2)
    sample: dict[str, Any] = {
        "data": np.ascontiguousarray(faces.crops.transpose(3, 0, 1, 2)),
        "label": task.label,
        "metadata": metadata,
    }
    if clip.audio is not None:
        sample["audio"] = clip.audio
        start_s, end_s = clip.audio_span
        metadata.update(has_audio=clip.has_audio, audio_sample_rate=audio_cfg.sample_rate, audio_span_s=[round(start_s, 4), round(end_s, 4)])
    else:
        metadata.update(has_audio=False, audio_sample_rate=None)
    metadata.update(temporal_metadata(metadata, indices, info.fps, clip.audio_span if clip.audio is not None else None))
    return sample
