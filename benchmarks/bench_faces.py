#!/usr/bin/env python
"""Face detection, tracking and alignment: recall, centring, presence and speed per detector.

    python benchmarks/bench_faces.py [--detectors dlib_hog,haar,mtcnn] [--frames 16]

Writes real mp4 clips with the astronaut face at known positions (the scenarios of
tests/test_faces_v2.py: a 60 px face in 224x224, a 100 px face panning across
1920x1080, a head rolling +-25 deg, a cut to a shot without a face, two faces of
different sizes), decodes them, and runs ``crop_faces`` with each detector
(default settings: 5-point alignment). Per detector and scenario it prints:

* ``centred``: frames with a face whose crop centre lies within 0.35 face widths
  of the true face centre, over frames with a face;
* ``presence``: frames whose ``face_presence`` flag is right;
* ``ms_per_frame``: the faces stage per stored frame (median of --repeats), one process.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from src.datasets import synth  # noqa: E402
from src.preprocessing.align import invert, transform_points  # noqa: E402
from src.preprocessing.clip import decode_clip  # noqa: E402
from src.preprocessing.facecrop import CropOptions, crop_faces  # noqa: E402
from src.preprocessing.faces import create_detector  # noqa: E402
from src.preprocessing.landmarks import create_landmarker  # noqa: E402
from src.preprocessing.tracking import TrackOptions  # noqa: E402

FACE_FRAC = 0.54


def _scenarios(n: int) -> dict[str, tuple[tuple[int, int], list]]:
    """name -> (frame size, per frame (faces [(cx, cy, face_px, angle)], background))."""
    grey = (110, 110, 110)
    return {
        "small_60px_224": ((224, 224), [([(112 + 18 * np.sin(i / 4), 100, 60, 0)], grey) for i in range(n)]),
        "pan_100px_1080p": ((1920, 1080), [([(300 + 1300 * i / max(n - 1, 1), 540, 100, 0)], grey) for i in range(n)]),
        "roll_25deg": ((320, 320), [([(160, 160, 120, -25 + 50 * i / max(n - 1, 1))], grey) for i in range(n)]),
        "cut_to_no_face": ((224, 224), [([(112, 112, 90, 0)], grey) if i < n // 2 else ([], (200, 60, 40)) for i in range(n)]),
        "two_faces": ((640, 360), [([(150 + 4 * i, 170, 110, 0), (460 - 3 * i, 150, 70, 0)], grey) for i in range(n)]),
    }


def _write(path: Path, size: tuple[int, int], spec: list) -> np.ndarray:
    face = synth.astronaut_face()
    frames = []
    for k, (faces, colour) in enumerate(spec):
        frame = synth.noise_background(size[0], size[1], color=colour, seed=k % 3)
        for cx, cy, px, angle in faces:
            side = round(px / FACE_FRAC)
            patch = face
            if angle:
                m = cv2.getRotationMatrix2D((80, 80), angle, 1.0)
                patch = cv2.warpAffine(face, m, (160, 160), borderMode=cv2.BORDER_REFLECT)
            synth.paste_patch(frame, patch, (cx, cy), side)
        frames.append(frame)
    synth.write_video(path, frames, fps=25)
    return decode_clip(path, len(spec), "uniform", 1, None).frames


def _score(result, spec, size: int) -> tuple[float, float]:
    centred = total = right = 0
    centre = np.array([[size / 2, size / 2]])
    for i, (faces, _) in enumerate(spec):
        truth = bool(faces)
        right += result.presence[i] == truth
        if truth:
            total += 1
            cx, cy, px, _ = faces[0]
            c = transform_points(invert(result.transforms[i]), centre)[0]
            centred += result.presence[i] and np.hypot(c[0] - cx, c[1] - cy) / px <= 0.35
    return centred / max(total, 1), right / len(spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--detectors", default="dlib_hog,haar,mtcnn")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    landmarker = create_landmarker("dlib5")
    landmarker.load()
    tmp = Path(tempfile.mkdtemp(prefix="bench_faces_"))
    clips = {name: (_write(tmp / f"{name}.mp4", size, spec), spec) for name, (size, spec) in _scenarios(args.frames).items()}
    print(f"# {platform.machine()} {platform.processor() or ''}, {args.frames} frames per clip, 128 px aligned crops, one process")
    print("detector,scenario,centred,presence,ms_per_frame")
    for name in args.detectors.split(","):
        detector = create_detector(name)
        detector.detect(np.zeros((64, 64, 3), np.uint8))  # load the model
        for scenario, (frames, spec) in clips.items():
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                result = crop_faces(frames, detector, landmarker, TrackOptions(), CropOptions(image_size=128))
                times.append((time.perf_counter() - t) / len(frames))
            centred, presence = _score(result, spec, 128)
            print(f"{name},{scenario},{centred:.2f},{presence:.2f},{statistics.median(times) * 1000:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
