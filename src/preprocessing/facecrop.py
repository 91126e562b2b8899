"""From frames to the stored face clip: track, landmark, align, crop, and record presence.

:func:`crop_faces` is what the pipeline calls for every video:

    frames --track_faces--> box or None per frame, shots
           --landmarks (optional)--> points per present frame, smoothed over time
           --align or square crop--> a 2x3 crop transform per frame --warp--> (T, S, S, 3)

A frame without the face keeps the clip shape: it holds the nearest present
frame's crop (``absent: hold``, the default) or zeros (``absent: black``), and
its ``face_presence`` flag is false. Landmarks are stored in crop pixels, NaN
where there is no face; the transforms map source pixels to crop pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from src.errors import ConfigError
from src.preprocessing.align import box_transform, similarity, smooth_runs, template, transform_points, warp
from src.preprocessing.faces import Box, FaceDetector, center_crop_box, crop_and_resize, square_crop_box
from src.preprocessing.landmarks import LandmarkModel
from src.preprocessing.tracking import FaceTrack, TrackOptions, track_faces

__all__ = ["ABSENT_POLICIES", "CropOptions", "FaceCrops", "crop_faces"]

#: What a frame without the face stores.
ABSENT_POLICIES = ("hold", "black")


@dataclass(frozen=True)
class CropOptions:
    """How the crops are made.

    Attributes:
        image_size: Output side.
        margin: Crop scale around the face (DeepfakeBench: 1.3).
        align: Warp with the landmark similarity (needs a landmark model).
        absent: One of :data:`ABSENT_POLICIES`.
        on_no_face: ``center`` (centre crops, ``face_found`` false) or ``skip``.
        smooth_window: Moving-average window over boxes and landmarks (odd).
        landmarks_on: ``detected``: run the landmark model where a detection is on
            the track (and at both ends of each run of present frames), and
            interpolate the points in between; ``all``: on every present frame
            (about 1-3 ms more per frame).
    """

    image_size: int = 224
    margin: float = 1.3
    align: bool = True
    absent: str = "hold"
    on_no_face: str = "center"
    smooth_window: int = 3
    landmarks_on: str = "detected"

    def __post_init__(self) -> None:
        if self.landmarks_on not in ("detected", "all"):
            raise ConfigError(f"faces.landmarks_on must be detected or all; got {self.landmarks_on!r}")
        if self.absent not in ABSENT_POLICIES:
            raise ConfigError(f"faces.absent must be one of {', '.join(ABSENT_POLICIES)}; got {self.absent!r}")


@dataclass
class FaceCrops:
    """The face clip of one video.

    Attributes:
        crops: uint8 (T, S, S, 3), or None (no face and ``on_no_face: skip``).
        boxes: Per frame, the face box in source pixels, or None where absent.
        transforms: Per frame, the 2x3 source-to-crop matrix.
        landmarks: float32 (T, K, 2) in crop pixels, NaN where absent; None without a model.
        presence: Per frame, whether it shows the tracked face.
        detected: Per frame, whether a detection is on the track there.
        shots: First frame of each shot.
        detections: Detector calls made (full frame, region).
    """

    crops: np.ndarray | None
    boxes: list[Box | None]
    transforms: np.ndarray
    landmarks: np.ndarray | None
    presence: list[bool]
    detected: list[bool]
    shots: list[int]
    detections: dict[str, int]

    @property
    def coverage(self) -> float:
        """Fraction of stored frames showing the face."""
        return sum(self.presence) / len(self.presence) if self.presence else 0.0

    @property
    def face_found(self) -> bool:
        """Whether any stored frame shows the face."""
        return any(self.presence)


def _smoothed_boxes(track: FaceTrack, window: int) -> np.ndarray:
    arr = np.array([tuple(b) if b is not None else (np.nan,) * 5 for b in track.boxes], dtype=np.float64)
    centre_size = np.stack([(arr[:, 0] + arr[:, 2]) / 2, (arr[:, 1] + arr[:, 3]) / 2, arr[:, 2] - arr[:, 0], arr[:, 3] - arr[:, 1]], axis=1)
    cs = smooth_runs(centre_size, track.presence, track.shots, window)
    return np.stack([cs[:, 0] - cs[:, 2] / 2, cs[:, 1] - cs[:, 3] / 2, cs[:, 0] + cs[:, 2] / 2, cs[:, 1] + cs[:, 3] / 2], axis=1)


def _nearest_present(presence: list[bool]) -> list[int]:
    """For each frame, the nearest present frame (itself when present); earlier wins ties."""
    idx = [i for i, p in enumerate(presence) if p]
    pos = np.asarray(idx)
    return [int(pos[np.argmin(np.abs(pos - i))]) for i in range(len(presence))]


def _runs(track: FaceTrack) -> list[tuple[int, int]]:
    """``[start, end)`` of each run of present frames within one shot."""
    starts, runs, i, n = set(track.shots), [], 0, len(track.presence)
    while i < n:
        if not track.presence[i]:
            i += 1
            continue
        j = i + 1
        while j < n and track.presence[j] and j not in starts:
            j += 1
        runs.append((i, j))
        i = j
    return runs


def _landmarks(frames: np.ndarray, boxes: np.ndarray, track: FaceTrack, landmarker: LandmarkModel, every_frame: bool) -> np.ndarray:
    """Landmarks per present frame: predicted on key frames, linearly interpolated between."""
    out = np.full((len(frames), landmarker.num_points, 2), np.nan)
    for start, end in _runs(track):
        keys = list(range(start, end)) if every_frame else sorted({start, end - 1, *(i for i in range(start, end) if track.detected[i])})
        for i in keys:
            out[i] = landmarker.predict(frames[i], Box(*boxes[i], 0.0))
        for a, b in zip(keys, keys[1:]):
            for i in range(a + 1, b):
                t = (i - a) / (b - a)
                out[i] = out[a] * (1 - t) + out[b] * t
    return out


def crop_faces(frames: np.ndarray, detector: FaceDetector, landmarker: LandmarkModel | None, track_opts: TrackOptions, opts: CropOptions) -> FaceCrops:
    """Track the main face of a clip and cut its crops.

    Args:
        frames: uint8 RGB (T, H, W, 3).
        detector: Face detector.
        landmarker: Landmark model, or None (then no landmarks and no alignment).
        track_opts: Detection and tracking options.
        opts: Crop options.

    Returns:
        The :class:`FaceCrops`.
    """
    num, height, width = frames.shape[:3]
    size = opts.image_size
    track = track_faces(frames, detector, track_opts)
    if not any(track.presence):
        crop = center_crop_box(width, height)
        matrices = np.repeat(box_transform(crop, size)[None], num, axis=0)
        crops = crop_and_resize(frames, [crop] * num, size) if opts.on_no_face == "center" else None
        landmarks = None if landmarker is None else np.full((num, landmarker.num_points, 2), np.nan, np.float32)
        return FaceCrops(crops, track.boxes, matrices, landmarks, track.presence, track.detected, track.shots, track.detections)

    boxes = _smoothed_boxes(track, opts.smooth_window)
    points = None
    if landmarker is not None:
        raw = _landmarks(frames, boxes, track, landmarker, opts.landmarks_on == "all")
        points = smooth_runs(raw, track.presence, track.shots, opts.smooth_window)
    source = _nearest_present(track.presence)
    matrices = np.empty((num, 2, 3))
    for i in range(num):
        j = source[i]
        if opts.align and points is not None:
            anchors = landmarker.anchors(points[j])
            matrices[i] = similarity(anchors, template(size, opts.margin, len(anchors)))
        else:
            matrices[i] = box_transform(square_crop_box(boxes[j], opts.margin, width, height), size)
    crops = np.empty((num, size, size, frames.shape[3]), dtype=np.uint8)
    for i in range(num):
        if not track.presence[i] and opts.absent == "black":
            crops[i] = 0
        elif opts.align and points is not None:
            crops[i] = warp(frames[i], matrices[i], size)
        else:
            crops[i] = crop_and_resize(frames[i : i + 1], [square_crop_box(boxes[source[i]], opts.margin, width, height)], size)[0]
    landmarks = None
    if points is not None:
        landmarks = np.full(points.shape, np.nan, np.float32)
        for i in range(num):
            if track.presence[i]:
                landmarks[i] = transform_points(matrices[i], points[i])
    kept = [Box(*boxes[i], 0.0) if track.presence[i] else None for i in range(num)]
    return FaceCrops(crops, kept, matrices, landmarks, track.presence, track.detected, track.shots, track.detections)
