"""Faces v2 on generated real video with known face positions: small faces, 1080p pans,
rolled heads, scene cuts and two faces; crops centred, aligned, and honest about presence."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from src.datasets import synth
from src.preprocessing.align import invert, transform_points
from src.preprocessing.clip import decode_clip
from src.preprocessing.facecrop import CropOptions, crop_faces
from src.preprocessing.faces import create_detector
from src.preprocessing.landmarks import create_landmarker
from src.preprocessing.tracking import TrackOptions, scene_cuts

#: The detectable face spans about this fraction of the pasted patch (see synth).
FACE_FRAC = 0.54


def _rotated(patch: np.ndarray, angle: float) -> np.ndarray:
    side = patch.shape[0]
    m = cv2.getRotationMatrix2D((side / 2, side / 2), angle, 1.0)
    return cv2.warpAffine(patch, m, (side, side), borderMode=cv2.BORDER_REFLECT)


def _video(tmp_path, name, size, frames_spec, fps=25.0):
    """Write frames from ``frames_spec``: per frame a list of (cx, cy, face_px, angle) faces
    and a background colour; return the decoded frames and the truth."""
    w, h = size
    face = synth.astronaut_face()
    frames = []
    for faces, colour in frames_spec:
        frame = synth.noise_background(w, h, color=colour, seed=len(frames) % 3)
        for cx, cy, face_px, angle in faces:
            side = round(face_px / FACE_FRAC)
            synth.paste_patch(frame, _rotated(face, angle) if angle else face, (cx, cy), side)
        frames.append(frame)
    path = tmp_path / f"{name}.mp4"
    synth.write_video(path, frames, fps=fps)
    clip = decode_clip(path, len(frames_spec), "uniform", 1, None)
    return clip.frames


def _crop_centres(result, size):
    """Source-pixel centre of every crop."""
    centre = np.array([[size / 2, size / 2]])
    return [transform_points(invert(m), centre)[0] for m in result.transforms]


def _run(frames, *, align=True, landmarks="dlib5", size=128, **track):
    det = create_detector("dlib_hog")
    lm = create_landmarker(landmarks) if landmarks else None
    return crop_faces(frames, det, lm, TrackOptions(**track), CropOptions(image_size=size, align=align))


def _assert_centred(result, truth, size, tolerance=0.35):
    for i, (centre, (cx, cy, face_px)) in enumerate(zip(_crop_centres(result, size), truth, strict=True)):
        if face_px is None:
            continue
        off = np.hypot(centre[0] - cx, centre[1] - cy) / face_px
        assert off <= tolerance, f"frame {i}: crop centre {centre} is {off:.2f} face widths from the face at {(cx, cy)}"


@pytest.mark.parametrize("align", [True, False])
def test_small_face_in_a_small_frame_is_found_and_centred(tmp_path, align):
    spec, truth = [], []
    for i in range(16):
        cx, cy = 112 + 18 * np.sin(i / 4), 100 + 10 * np.cos(i / 5)
        spec.append(([(cx, cy, 60, 0)], (110, 110, 110)))
        truth.append((cx, cy, 60))
    frames = _video(tmp_path, "small", (224, 224), spec)
    result = _run(frames, align=align)
    assert all(result.presence) and result.coverage == 1.0
    _assert_centred(result, truth, 128)


def test_hundred_px_face_panning_across_1080p(tmp_path):
    spec, truth = [], []
    for i in range(12):
        cx, cy = 300 + 110 * i, 540 + 60 * np.sin(i / 3)
        spec.append(([(cx, cy, 100, 0)], (100, 120, 110)))
        truth.append((cx, cy, 100))
    frames = _video(tmp_path, "pan1080", (1920, 1080), spec)
    result = _run(frames)
    assert all(result.presence)
    _assert_centred(result, truth, 128)
    assert result.detections["region"] >= result.detections["full"]  # tracked in a region, not the whole frame


def _roll_deg(crop: np.ndarray) -> float | None:
    """Eye-line angle of the face in a crop, measured with the 68-point model."""
    det = create_detector("dlib_hog")
    boxes = det.detect_at(crop, 2.0)
    if not boxes:
        return None
    pts = create_landmarker("dlib68").predict(crop, max(boxes, key=lambda b: b.area))
    left, right = pts[36:42].mean(axis=0), pts[42:48].mean(axis=0)
    return float(np.degrees(np.arctan2(right[1] - left[1], right[0] - left[0])))


def test_rolled_face_comes_out_level(tmp_path):
    angles = np.linspace(-25, 25, 11)
    spec = [([(160, 160, 120, a)], (110, 110, 110)) for a in angles]
    frames = _video(tmp_path, "roll", (320, 320), spec)
    aligned = _run(frames, size=192)
    square = _run(frames, size=192, align=False)
    rolls = [_roll_deg(c) for c in aligned.crops]
    raw = [_roll_deg(c) for c in square.crops]
    assert sum(r is not None for r in rolls) >= 9
    assert max(abs(r) for r in rolls if r is not None) < 5.0, rolls
    assert max(abs(r) for r in raw if r is not None) > 15.0, raw  # the unaligned crops really are rolled
    _assert_centred(aligned, [(160, 160, 120)] * len(angles), 192)


def test_scene_cut_to_a_shot_without_a_face(tmp_path):
    spec = [([(112, 112, 90, 0)], (110, 110, 110))] * 8 + [([], (200, 60, 40))] * 8
    frames = _video(tmp_path, "cut", (224, 224), spec)
    assert scene_cuts(frames, 0.5) == [0, 8]
    result = _run(frames)
    assert result.presence == [True] * 8 + [False] * 8
    assert result.coverage == 0.5 and result.face_found
    assert np.isnan(result.landmarks[8:]).all() and not np.isnan(result.landmarks[:8]).any()
    assert result.crops.shape[0] == 16  # the clip keeps its shape
    _assert_centred(result, [(112, 112, 90)] * 8 + [(0, 0, None)] * 8, 128)


def test_face_leaving_the_frame_is_not_extrapolated(tmp_path):
    # the face walks out of the right edge at frame 9; no cut (same background)
    spec, truth = [], []
    for i in range(16):
        cx = 100 + 40 * i
        spec.append(([(cx, 180, 80, 0)] if cx < 500 else [], (110, 110, 110)))
        truth.append((cx, 180, 80 if cx < 440 else None))
    frames = _video(tmp_path, "leave", (480, 360), spec)
    result = _run(frames)
    gone = [i for i, t in enumerate(truth) if spec[i][0] == []]
    assert not any(result.presence[i] for i in gone)
    assert all(result.presence[i] for i in range(7))
    _assert_centred(result, [t if result.presence[i] else (0, 0, None) for i, t in enumerate(truth)], 128)


def test_two_faces_the_crop_follows_the_larger_one(tmp_path):
    spec, truth = [], []
    for i in range(16):
        big = (150 + 4 * i, 170, 110, 0)
        small = (460 - 3 * i, 150, 70, 0)
        spec.append(([big, small], (110, 110, 110)))
        truth.append((big[0], big[1], 110))
    frames = _video(tmp_path, "two", (640, 360), spec)
    result = _run(frames)
    assert all(result.presence)
    _assert_centred(result, truth, 128)


def test_landmarks_are_stored_in_crop_pixels_and_map_back(tmp_path):
    spec = [([(112, 112, 90, 0)], (110, 110, 110))] * 6
    frames = _video(tmp_path, "lm", (224, 224), spec)
    result = _run(frames, landmarks="dlib5")
    assert result.landmarks.shape == (6, 5, 2) and result.landmarks.dtype == np.float32
    assert (result.landmarks >= 0).all() and (result.landmarks < 128).all()
    # mapped back, the landmarks lie on the face in the source frame
    back = transform_points(invert(result.transforms[0]), result.landmarks[0])
    assert np.all(np.abs(back - [112, 112]) < 60)


def test_mtcnn_batched_matches_single_and_tracks_on_cpu(tmp_path):
    from src.preprocessing.mtcnn import MTCNNDetector

    spec, truth = [], []
    for i in range(8):
        cx = 120 + 12 * i
        spec.append(([(cx, 120, 70, 0)], (110, 110, 110)))
        truth.append((cx, 120, 70))
    frames = _video(tmp_path, "mtcnn", (256, 240), spec)
    det = MTCNNDetector(device="cpu")  # the GPU path with the device abstracted
    batch = det.detect_many(list(frames[:3]), 1.0)
    for frame, boxes in zip(frames[:3], batch, strict=True):
        single = det.detect_at(frame, 1.0)
        assert len(single) == len(boxes) == 1
        assert np.allclose(tuple(single[0])[:4], tuple(boxes[0])[:4], atol=1.0)
    result = crop_faces(frames, det, create_landmarker("dlib5"), TrackOptions(), CropOptions(image_size=128))
    assert all(result.presence)
    _assert_centred(result, truth, 128)
