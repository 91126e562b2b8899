"""Find the main face in every stored frame, at any resolution, and say honestly where it is missing.

The detector never sees a fixed downscale of the frame. A full-frame detection
runs at the scale that brings the smallest face asked for (``min_face_px``, in
source pixels) to the detector's own minimum (dlib HOG: about 80 px), capped so
the image's longer side stays under ``max_side``. Once a face is found it is
*tracked*: later detections run on a region around the previous box, scaled so
the face has ``track_face_px`` pixels, which is cheaper than the full frame and
finds a 60 px face in a 224 px frame as well as a 100 px face in a 1080p frame.
When the region holds no face, the whole frame is searched again.

Shots are cut where consecutive stored frames' grey histograms differ
(Bhattacharyya distance over ``cut_threshold``). A box is never carried across a
cut: each shot is tracked on its own, and a frame is *present* only where the
face was detected, or lies between two detections of the same shot (then the box
is interpolated). Frames before the first or after the last detection of a shot,
where the detector ran and found nothing, are absent. With several faces, the
track starts at the largest, most central face and follows it by position and
size; a box too far from the previous one is a miss, never a switch to another
person.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from src.errors import ConfigError
from src.preprocessing.faces import Box, FaceDetector, box_iou

__all__ = ["FaceTrack", "TrackOptions", "choose_main", "detect_full", "detect_near", "follow", "full_scales", "scene_cuts", "track_faces"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrackOptions:
    """How faces are searched and followed.

    Attributes:
        min_face_px: Smallest face side to find, in source pixels.
        max_side: Longest side of a full-frame detection image (caps the upscale).
        detect_every: Detect on every n-th stored frame of a shot (and its last).
        refine_iou: Also detect halfway between detections whose boxes overlap less
            (or where one side has none), recursively; None disables it.
        cut_threshold: Histogram distance between consecutive stored frames that
            starts a new shot (0-1); None disables cut detection.
        roi_scale: Side of the tracking region over the face box side.
        track_face_px: Face side the tracking region is scaled to.
    """

    min_face_px: int = 40
    max_side: int = 1920
    detect_every: int = 8
    refine_iou: float | None = 0.5
    cut_threshold: float | None = 0.5
    roi_scale: float = 2.2
    track_face_px: int = 96

    def __post_init__(self) -> None:
        if self.min_face_px < 8 or self.max_side < 64 or self.detect_every < 1:
            raise ConfigError(f"invalid tracking options: min_face_px >= 8, max_side >= 64, detect_every >= 1; got {self}")


@dataclass
class FaceTrack:
    """The main face per stored frame.

    Attributes:
        boxes: Per frame, the face box (interpolated between detections of a
            shot), or None where the face is absent.
        detected: Per frame, whether a detection is on the track there.
        presence: Per frame, whether the frame shows the tracked face.
        shots: Index of the first frame of each shot.
        detections: Detector calls made (full frame, region).
    """

    boxes: list[Box | None]
    detected: list[bool]
    presence: list[bool]
    shots: list[int]
    detections: dict[str, int]


def scene_cuts(frames: np.ndarray, threshold: float | None) -> list[int]:
    """Indices of the first frame of each shot (always 0).

    Args:
        frames: uint8 RGB (T, H, W, 3).
        threshold: Bhattacharyya distance of 32-bin grey histograms above which a
            new shot starts; None: one shot.
    """
    starts = [0]
    if threshold is None or len(frames) < 2:
        return starts
    hists = []
    for frame in frames:
        small = cv2.resize(frame, (64, 64), interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        h = cv2.calcHist([grey], [0], None, [32], [0, 256])
        hists.append(cv2.normalize(h, h).astype(np.float32))
    for i in range(1, len(frames)):
        if cv2.compareHist(hists[i - 1], hists[i], cv2.HISTCMP_BHATTACHARYYA) > threshold:
            starts.append(i)
    return starts


def _full_scale(shape: tuple[int, ...], detector: FaceDetector, opts: TrackOptions) -> float:
    h, w = shape[:2]
    scale = detector.native_min_face / opts.min_face_px
    return min(scale, opts.max_side / max(h, w))


def full_scales(shape: tuple[int, ...], detector: FaceDetector, opts: TrackOptions) -> list[float]:
    """Coarse-to-fine scales of a full-frame search: the finest finds ``min_face_px`` faces;
    each coarser one (half the previous) finds faces twice as large at a quarter of the cost."""
    finest = _full_scale(shape, detector, opts)
    short = min(shape[:2])
    scales = [finest]
    while len(scales) < 3 and short * scales[-1] / 2 >= 1.5 * detector.native_min_face:
        scales.append(scales[-1] / 2)
    return scales[::-1]


def detect_full(detector: FaceDetector, frame: np.ndarray, opts: TrackOptions) -> list[Box]:
    """Search the whole frame coarse to fine, stopping at the first scale that finds a face.

    A large face is found on a small image; only when none is there does the
    search go on to the scale that makes ``min_face_px`` faces detectable.
    """
    for scale in full_scales(frame.shape, detector, opts):
        boxes = detector.detect_at(frame, scale)
        if boxes:
            return boxes
    return []


def detect_near(detector: FaceDetector, frame: np.ndarray, box: Box, opts: TrackOptions, frames_apart: int = 1) -> list[Box]:
    """Search a region around ``box``, scaled so the face has ``track_face_px`` pixels.

    The region grows with the frames since ``box`` was seen (the face may have moved).
    """
    h, w = frame.shape[:2]
    side = max(box.width, box.height) * (opts.roi_scale + 0.6 * (min(frames_apart, 8) - 1))
    cx, cy = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2
    x0, y0 = max(0, int(cx - side / 2)), max(0, int(cy - side / 2))
    x1, y1 = min(w, int(cx + side / 2) + 1), min(h, int(cy + side / 2) + 1)
    if x1 - x0 < 16 or y1 - y0 < 16:
        return []
    scale = opts.track_face_px / max(box.width, box.height, 1.0)
    return detector.detect_at(frame[y0:y1, x0:x1], scale, (float(x0), float(y0)))


def choose_main(boxes: Sequence[Box], width: int, height: int) -> Box:
    """The largest, most central face: area weighted down by distance from the frame centre."""

    def weight(b: Box) -> float:
        dx = ((b.x0 + b.x1) / 2 - width / 2) / width
        dy = ((b.y0 + b.y1) / 2 - height / 2) / height
        return b.area * (1.0 - min(0.8, 1.2 * float(np.hypot(dx, dy)))) + 1e-6 * b.score

    return max(boxes, key=weight)


def follow(previous: Box, boxes: Sequence[Box], frames_apart: int = 1) -> Box | None:
    """The box continuing ``previous``: close in position and size; None when none qualifies.

    Stored frames may be far apart in time (uniform sampling of a long video), so
    a face may move more than its width between them; boxes beyond
    ``1.5 + 0.5 * frames_apart`` face widths, or of another size, belong to someone
    else (or are false detections) and are not followed.
    """
    best, best_cost = None, None
    size = max(previous.width, previous.height)
    reach = size * (1.5 + 0.5 * min(frames_apart, 6))
    pcx, pcy = (previous.x0 + previous.x1) / 2, (previous.y0 + previous.y1) / 2
    for b in boxes:
        ratio = max(b.width, b.height) / size
        dist = float(np.hypot((b.x0 + b.x1) / 2 - pcx, (b.y0 + b.y1) / 2 - pcy))
        if not 0.55 <= ratio <= 1.8 or dist > reach:
            continue
        cost = dist / size + abs(np.log(ratio)) - box_iou(b, previous)
        if best_cost is None or cost < best_cost:
            best, best_cost = b, cost
    return best


class _ShotTracker:
    """Detections and the chosen box of one shot ``[start, end)``."""

    def __init__(self, frames: np.ndarray, detector: FaceDetector, opts: TrackOptions, start: int, end: int, counts: dict[str, int]) -> None:
        self.frames, self.detector, self.opts = frames, detector, opts
        self.start, self.end = start, end
        self.counts = counts
        self.chosen: dict[int, Box | None] = {}

    def _nearest_known(self, i: int) -> tuple[Box, int, int] | None:
        """``(expected box at i, frames from the nearest known face, its frame)``.

        With two known faces on the same side, the box is moved on at their velocity.
        """
        known = sorted((abs(j - i), j) for j, b in self.chosen.items() if b is not None)
        if not known:
            return None
        _, j = known[0]
        box = self.chosen[j]
        before = [k for _, k in known[1:] if (k - j) * (i - j) < 0 and abs(k - j) <= 2 * abs(i - j) + 8]
        if before:
            k = before[0]
            t = (i - j) / (j - k)
            other = self.chosen[k]
            box = Box(*(float(a + (a - b) * t) for a, b in zip(tuple(box)[:4], tuple(other)[:4], strict=True)), box.score)
        return box, abs(j - i), j

    def detect(self, i: int, depth: int = 0) -> None:
        """Detect in frame ``i``: in a region around the nearest known face, else the whole frame.

        When the whole frame has faces but none continues the track and the known
        face is several frames away (it may have moved far), the frame halfway is
        detected first, then ``i`` again from there.
        """
        frame = self.frames[i]
        h, w = frame.shape[:2]
        near = self._nearest_known(i)
        if near is not None:
            self.counts["region"] += 1
            found = follow(near[0], detect_near(self.detector, frame, near[0], self.opts, near[1]), near[1])
            if found is None:
                self.counts["full"] += 1
                boxes = detect_full(self.detector, frame, self.opts)
                found = follow(near[0], boxes, near[1])
                j = near[2]
                if found is None and boxes and abs(i - j) >= 2 and depth < 4 and (i + j) // 2 not in self.chosen:
                    self.detect((i + j) // 2, depth + 1)
                    if self.chosen[(i + j) // 2] is not None:
                        self.detect(i, depth + 1)
                        return
            self.chosen[i] = found
            return
        self.counts["full"] += 1
        boxes = detect_full(self.detector, frame, self.opts)
        self.chosen[i] = choose_main(boxes, w, h) if boxes else None

    def run(self) -> None:
        frames = list(range(self.start, self.end, self.opts.detect_every))
        if frames[-1] != self.end - 1:
            frames.append(self.end - 1)
        if getattr(self.detector, "batched", False):
            self._detect_batch(frames)
        else:
            for i in frames:
                self.detect(i)
        if self.opts.refine_iou is not None:
            self._refine(frames)

    def _detect_batch(self, scheduled: list[int]) -> None:
        """A batched detector (a GPU network) searches all scheduled frames in one pass;
        the track then follows through the results, falling back to single detections."""
        scale = _full_scale(self.frames.shape[1:], self.detector, self.opts)
        found = self.detector.detect_many([self.frames[i] for i in scheduled], scale)
        self.counts["full"] += len(scheduled)
        for i, boxes in zip(scheduled, found, strict=True):
            near = self._nearest_known(i)
            if near is None:
                h, w = self.frames.shape[1:3]
                self.chosen[i] = choose_main(boxes, w, h) if boxes else None
            else:
                self.chosen[i] = follow(near[0], boxes, near[1])
                if self.chosen[i] is None and boxes:
                    del self.chosen[i]
                    self.detect(i)

    def _refine(self, done: list[int]) -> None:
        stack = list(zip(done, done[1:]))
        while stack:
            a, b = stack.pop()
            if b - a < 2:
                continue
            ba, bb = self.chosen.get(a), self.chosen.get(b)
            if ba is not None and bb is not None and box_iou(ba, bb) >= self.opts.refine_iou:
                continue
            if ba is None and bb is None:
                continue
            mid = (a + b) // 2
            self.detect(mid)
            stack += [(a, mid), (mid, b)]


def _interpolate(a: Box, b: Box, t: float) -> Box:
    return Box(*(float(x + (y - x) * t) for x, y in zip(a, b, strict=True)))


def track_faces(frames: np.ndarray, detector: FaceDetector, opts: TrackOptions | None = None) -> FaceTrack:
    """Find and follow the main face of a clip, shot by shot.

    Args:
        frames: uint8 RGB frames (T, H, W, 3).
        detector: A face detector.
        opts: Tracking options.

    Returns:
        The :class:`FaceTrack`.
    """
    opts = opts or TrackOptions()
    num = len(frames)
    shots = scene_cuts(frames, opts.cut_threshold)
    counts = {"full": 0, "region": 0}
    boxes: list[Box | None] = [None] * num
    detected = [False] * num
    for start, end in zip(shots, [*shots[1:], num]):
        shot = _ShotTracker(frames, detector, opts, start, end, counts)
        shot.run()
        tried = sorted(shot.chosen)
        for i in tried:
            if shot.chosen[i] is not None:
                boxes[i], detected[i] = shot.chosen[i], True
        # Interpolate only between neighbouring detection attempts that both found the face:
        # next to a failed attempt the face may already be gone, so those frames stay absent.
        for a, b in zip(tried, tried[1:]):
            ba, bb = shot.chosen[a], shot.chosen[b]
            if ba is not None and bb is not None:
                for i in range(a + 1, b):
                    boxes[i] = _interpolate(ba, bb, (i - a) / (b - a))
    presence = [b is not None for b in boxes]
    if len(shots) > 1:
        logger.debug("%d shots; face present in %d of %d frames", len(shots), sum(presence), num)
    return FaceTrack(boxes, detected, presence, shots, counts)
