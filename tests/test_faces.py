"""Tests of src.preprocessing.faces: box math, detectors and the crop pipeline."""

from __future__ import annotations

import math
import pickle

import cv2
import numpy as np
import pytest

from src.errors import ConfigError
from src.preprocessing.faces import (
    DETECTORS,
    Box,
    FaceDetector,
    box_iou,
    center_crop_box,
    create_detector,
    crop_and_resize,
    detect_and_crop,
    fill_missing,
    pick_track,
    smooth_boxes,
    square_crop_box,
)
from src.preprocessing.video import decode_video
from tests.media import make_face_video


def B(x0, y0, x1, y1, score=1.0):
    return Box(float(x0), float(y0), float(x1), float(y1), float(score))


# --------------------------------------------------------------------------- box math


def test_box_properties():
    b = B(10, 20, 50, 40)
    assert (b.width, b.height, b.area) == (40, 20, 800)
    assert B(5, 5, 3, 8).area == 0


def test_iou():
    assert box_iou(B(0, 0, 10, 10), B(0, 0, 10, 10)) == 1.0
    assert box_iou(B(0, 0, 10, 10), B(5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou(B(0, 0, 10, 10), B(10, 0, 20, 10)) == 0.0
    assert box_iou(B(0, 0, 0, 0), B(0, 0, 0, 0)) == 0.0


def test_pick_track_empty():
    assert pick_track([]) == []
    assert pick_track([[], []]) == [None, None]


def test_pick_track_follows_largest_face_through_distractors():
    face = [B(100 + 3 * i, 50, 180 + 3 * i, 130) for i in range(5)]
    distractor = B(0, 0, 30, 30, score=5.0)
    dets = [[distractor, face[0]], [face[1]], [], [distractor, face[3]], [face[4], distractor]]
    assert pick_track(dets) == [face[0], face[1], None, face[3], face[4]]


def test_pick_track_prefers_overlap_over_size():
    # The track starts at the biggest box (frame 0) and keeps to the face it
    # overlaps even when a bigger box appears elsewhere later.
    dets = [
        [B(0, 0, 100, 100)],
        [B(5, 0, 95, 90), B(150, 150, 245, 245)],
        [B(10, 0, 100, 90), B(150, 150, 245, 245)],
    ]
    track = pick_track(dets)
    assert track == [dets[0][0], dets[1][0], dets[2][0]]


def test_pick_track_walks_backwards_from_the_anchor():
    small_then_big = [
        [B(0, 0, 20, 20), B(100, 100, 150, 150)],
        [B(102, 100, 152, 150)],
        [B(105, 100, 175, 170)],
    ]
    track = pick_track(small_then_big)
    assert track[0] == small_then_big[0][1]  # overlaps the track, not the left box


def test_pick_track_falls_back_to_largest_without_overlap():
    dets = [[B(0, 0, 50, 50)], [B(100, 100, 120, 120), B(150, 150, 190, 190)]]
    assert pick_track(dets)[1] == dets[1][1]


def test_fill_missing_interpolates_and_extends():
    boxes = [None, B(0, 0, 10, 10, 1.0), None, None, B(30, 0, 40, 10, 4.0), None]
    filled = fill_missing(boxes)
    assert [b.x0 for b in filled] == [0, 0, 10, 20, 30, 30]
    assert [b.score for b in filled] == [1, 1, 2, 3, 4, 4]
    assert filled[1] == boxes[1]


def test_fill_missing_none_and_noop():
    assert fill_missing([None, None]) is None
    assert fill_missing([]) is None
    boxes = [B(0, 0, 10, 10), B(1, 1, 11, 11)]
    assert fill_missing(boxes) == boxes


def test_smooth_keeps_constant_and_linear_motion():
    still = [B(10, 10, 50, 60)] * 5
    assert smooth_boxes(still) == still
    moving = [B(2 * i, 0, 2 * i + 20, 20) for i in range(6)]
    smoothed = smooth_boxes(moving, 3)
    for a, b in zip(moving[1:-1], smoothed[1:-1], strict=True):
        assert b.x0 == pytest.approx(a.x0) and b.x1 == pytest.approx(a.x1)


def test_smooth_reduces_jitter():
    jitter = [B(100 + (5 if i % 2 else -5), 100, 160 + (5 if i % 2 else -5), 160) for i in range(9)]
    smoothed = smooth_boxes(jitter, 5)
    spread = np.ptp([b.x0 for b in smoothed[2:-2]])
    assert spread < np.ptp([b.x0 for b in jitter]) / 3


def test_smooth_shrinks_window_at_ends_and_short_inputs():
    boxes = [B(0, 0, 10, 10), B(10, 0, 20, 10)]
    smoothed = smooth_boxes(boxes, 5)
    assert smoothed[0].x0 == pytest.approx(5) and smoothed[1].x0 == pytest.approx(5)
    assert smooth_boxes(boxes, 1) == boxes
    assert smooth_boxes([], 3) == []


@pytest.mark.parametrize("window", [0, 2, -1, 1.5, True])
def test_smooth_window_validated(window):
    with pytest.raises(ConfigError):
        smooth_boxes([B(0, 0, 1, 1)], window)


def test_square_crop_box_centred_with_margin():
    x0, y0, x1, y1 = square_crop_box(B(100, 100, 180, 140), margin=1.5)
    assert x1 - x0 == y1 - y0 == 120
    assert ((x0 + x1) / 2, (y0 + y1) / 2) == (140, 120)


def test_square_crop_box_not_shifted_inside_frame():
    crop = square_crop_box(B(-20, 0, 40, 60), 1.3, 224, 224)
    assert crop[0] < 0  # the face stays centred; padding happens later
    assert (crop[0] + crop[2]) / 2 == pytest.approx(10, abs=0.5)


def test_square_crop_box_capped_by_frame():
    crop = square_crop_box(B(0, 0, 300, 300), 2.0, 320, 240)
    assert crop[2] - crop[0] == 320
    assert square_crop_box((10, 10, 20, 20)) == (8, 8, 21, 21)


def test_square_crop_box_bad_margin():
    with pytest.raises(ConfigError):
        square_crop_box(B(0, 0, 10, 10), 0)


def test_center_crop_box():
    assert center_crop_box(320, 240) == (40, 0, 280, 240)
    assert center_crop_box(240, 320) == (0, 40, 240, 280)
    assert center_crop_box(224, 224) == (0, 0, 224, 224)


def test_crop_and_resize_inside_matches_cv2():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, size=(2, 100, 120, 3), dtype=np.uint8)
    out = crop_and_resize(frames, [(10, 20, 74, 84), (0, 0, 16, 16)], 32)
    assert out.shape == (2, 32, 32, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(
        out[0], cv2.resize(frames[0, 20:84, 10:74], (32, 32), interpolation=cv2.INTER_AREA)
    )
    np.testing.assert_array_equal(
        out[1], cv2.resize(frames[1, 0:16, 0:16], (32, 32), interpolation=cv2.INTER_LINEAR)
    )


def test_crop_and_resize_pads_outside():
    frames = np.full((1, 10, 10, 3), 200, np.uint8)
    zero = crop_and_resize(frames, [(-10, 0, 10, 20)], 20)
    assert zero[0, :10, :10].max() == 0 and zero[0, :10, 10:].min() == 200
    assert zero[0, 10:].max() == 0
    edge = crop_and_resize(frames, [(-10, 0, 10, 20)], 20, pad_mode="edge")
    assert edge.min() == 200
    far = crop_and_resize(frames, [(50, 50, 60, 60)], 4)
    assert far.max() == 0


def test_crop_and_resize_validates():
    frames = np.zeros((2, 10, 10, 3), np.uint8)
    with pytest.raises(ValueError):
        crop_and_resize(frames, [(0, 0, 5, 5)], 8)
    with pytest.raises(ValueError):
        crop_and_resize(frames, [(0, 0, 5, 5)] * 2, 8, pad_mode="reflect")
    with pytest.raises(ValueError):
        crop_and_resize(frames, [(0, 0, 0, 5)] * 2, 8)
    with pytest.raises(ValueError):
        crop_and_resize(frames, [(0, 0, 5, 5)] * 2, 0)


# --------------------------------------------------------------------------- detectors


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("faces")


@pytest.fixture(scope="module")
def still(media_dir):
    gt = make_face_video(
        media_dir / "still.mp4", num_frames=25, face_center=(120, 104), face_size=120, audio=False
    )
    frames, indices, _ = decode_video(gt["path"], 16)
    return gt, frames, indices


@pytest.fixture(scope="module")
def panning(media_dir):
    gt = make_face_video(
        media_dir / "pan.mp4",
        num_frames=40,
        face_size=110,
        audio=False,
        motion=lambda i: (80 + 1.5 * i, 112 + 8 * math.sin(i / 6)),
    )
    frames, indices, _ = decode_video(gt["path"], 16)
    return gt, frames, indices


@pytest.fixture(scope="module")
def no_face(media_dir):
    gt = make_face_video(media_dir / "noface.mp4", num_frames=20, face=False, audio=False)
    frames, indices, _ = decode_video(gt["path"], 8)
    return gt, frames, indices


def centre(box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def test_registry_and_unknown_name():
    assert set(DETECTORS) >= {"dlib_hog", "haar"}
    with pytest.raises(ConfigError, match="dlib_hog.*haar"):
        create_detector("nosuch")


def test_bad_detector_options():
    with pytest.raises(ConfigError, match="invalid options"):
        create_detector("haar", nonsense=1)
    with pytest.raises(ConfigError):
        create_detector("dlib_hog", max_side=8)
    with pytest.raises(ConfigError):
        create_detector("dlib_hog", upsample=5)


@pytest.mark.parametrize("name,tolerance", [("dlib_hog", 6), ("haar", 0.15 * 120)])
def test_detector_finds_face_centre(still, name, tolerance):
    gt, frames, indices = still
    detector = create_detector(name)
    for frame, i in zip(frames[:4], indices[:4], strict=True):
        boxes = detector.detect(frame)
        assert len(boxes) == 1
        cx, cy = centre(boxes[0])
        tx, ty = gt["face_centers"][i]
        assert abs(cx - tx) <= tolerance and abs(cy - ty) <= tolerance


def test_detector_downscales_large_frames_and_maps_back(still):
    _, frames, _ = still
    big = cv2.resize(frames[0], (448, 448), interpolation=cv2.INTER_LINEAR)
    detector = create_detector("dlib_hog", max_side=224, upsample=0)
    boxes = detector.detect(big)
    assert len(boxes) == 1
    cx, cy = centre(boxes[0])
    assert abs(cx - 2 * 120) <= 12 and abs(cy - 2 * 104) <= 12


def test_detector_finds_nothing_in_noise(no_face):
    _, frames, _ = no_face
    for name in DETECTORS:
        assert create_detector(name).detect(frames[0]) == []


def test_detector_rejects_non_rgb():
    with pytest.raises(ValueError):
        create_detector("haar").detect(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError):
        create_detector("haar").detect(np.zeros((10, 10, 3), np.float32))


def test_detector_pickles_after_use(still):
    _, frames, _ = still
    detector = create_detector("haar", min_neighbors=4)
    before = detector.detect(frames[0])
    clone = pickle.loads(pickle.dumps(detector))
    assert clone.min_neighbors == 4 and clone.detect(frames[0]) == before
    assert "HaarDetector(" in repr(clone)


# --------------------------------------------------------------------------- detect_and_crop


class ScriptedDetector(FaceDetector):
    """Returns pre-set boxes per call, to test the pipeline without a model."""

    name = "scripted"

    def __init__(self, script: list[list[Box]]) -> None:
        super().__init__()
        self.script = script
        self.calls = 0

    def _build(self):
        return object()

    def _detect(self, model, frame_rgb):
        boxes = self.script[self.calls]
        self.calls += 1
        return boxes


@pytest.mark.parametrize(
    "every,expected",
    [
        (1, [True] * 6),
        (2, [True, False, True, False, True, True]),
        (4, [True, False, False, False, True, True]),
    ],
)
def test_detect_every_runs_on_selected_frames(every, expected):
    frames = np.zeros((6, 64, 64, 3), np.uint8)
    detector = ScriptedDetector([[B(10, 10, 30, 30)]] * 6)
    result = detect_and_crop(frames, detector, image_size=16, detect_every=every)
    assert result.detected == expected
    assert detector.calls == sum(expected)
    assert result.face_found and result.crops.shape == (6, 16, 16, 3)


def test_interpolates_between_detections():
    frames = np.zeros((5, 100, 100, 3), np.uint8)
    script = [[B(0, 0, 20, 20)], [B(40, 0, 60, 20)], [B(80, 0, 100, 20)]]
    result = detect_and_crop(frames, ScriptedDetector(script), detect_every=2, smooth_window=1)
    assert [b[0] for b in result.boxes] == [0, 20, 40, 60, 80]
    assert result.detected == [True, False, True, False, True]


def test_detect_and_crop_centres_the_face(still):
    gt, frames, indices = still
    result = detect_and_crop(frames, create_detector("dlib_hog"), image_size=112)
    assert result.face_found and all(result.detected)
    assert result.crops.shape == (16, 112, 112, 3) and result.crops.dtype == np.uint8
    for crop, i in zip(result.crop_boxes, indices, strict=True):
        cx, cy = centre(crop)
        tx, ty = gt["face_centers"][i]
        assert abs(cx - tx) <= 6 and abs(cy - ty) <= 6
    # In the crop the face is centred too: the detector agrees on the crop.
    boxes = create_detector("dlib_hog", upsample=1).detect(result.crops[0])
    assert boxes and abs(centre(boxes[0])[0] - 56) <= 6 and abs(centre(boxes[0])[1] - 56) <= 6


@pytest.mark.parametrize("every", [1, 2, 4])
def test_detect_and_crop_tracks_panning_face(panning, every):
    gt, frames, indices = panning
    result = detect_and_crop(frames, create_detector("dlib_hog"), detect_every=every)
    assert result.face_found
    errors = [
        np.hypot(*np.subtract(centre(c), gt["face_centers"][i]))
        for c, i in zip(result.crop_boxes, indices, strict=True)
    ]
    assert max(errors) <= 8


def test_no_face_center_policy(no_face):
    _, frames, _ = no_face
    result = detect_and_crop(frames, create_detector("dlib_hog"), image_size=64)
    assert result.face_found is False
    assert not any(result.detected)
    assert result.crops.shape == (8, 64, 64, 3)
    assert result.crop_boxes == [(0, 0, 224, 224)] * 8
    assert result.boxes[0] == [0.0, 0.0, 224.0, 224.0]


def test_no_face_skip_policy(no_face):
    _, frames, _ = no_face
    result = detect_and_crop(frames, create_detector("haar"), on_no_face="skip")
    assert result.face_found is False and result.crops is None


@pytest.mark.parametrize(
    "kwargs", [{"on_no_face": "drop"}, {"detect_every": 0}, {"smooth_window": 2}]
)
def test_detect_and_crop_validates(kwargs):
    frames = np.zeros((2, 32, 32, 3), np.uint8)
    with pytest.raises(ConfigError):
        detect_and_crop(frames, ScriptedDetector([[]] * 2), **kwargs)


def test_detect_and_crop_rejects_bad_frames():
    with pytest.raises(ValueError):
        detect_and_crop(np.zeros((32, 32, 3), np.uint8), ScriptedDetector([]))
