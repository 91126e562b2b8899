#!/usr/bin/env python
"""Preprocessing speed: this pipeline vs just decoding vs a DeepfakeBench-style pipeline.

    python benchmarks/bench_preprocess.py [--videos 12] [--seconds 5] [--workers 2] [--quick]

Generates N real 224x224 talking-head mp4 files (H.264 + AAC 44.1 kHz stereo,
the astronaut face panning slowly) in a FakeAVCeleb-layout tree, then measures,
interleaved in one process (median over videos and repeats):

* ``decode_only``: demux and decode every video and audio frame, nothing else
  (the floor any pipeline pays);
* ``pipeline``: this project's per-video work with the default settings
  (``process_video``: frame selection, face detection/tracking, 5-point
  landmarks and alignment, audio cut and resampling);
* ``pipeline_noalign``: the same with ``faces.landmarks: null, align: false``
  (square crops around the tracked box);
* ``deepfakebench_style``: cv2.VideoCapture reads every frame, dlib HOG on each
  of the 16 sampled frames, crop, resize, one PNG written per frame (the layout
  DeepfakeBench-style repos store);
* ``run_videos_per_s``: a whole ``run_preprocessing`` with N worker processes
  writing LMDB (start-up included).

Prints CSV rows ``name,metric,value,unit`` then a summary.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from src.config import config_from_dict  # noqa: E402
from src.preprocessing.faces import create_detector  # noqa: E402
from src.preprocessing.landmarks import create_landmarker  # noqa: E402
from src.preprocessing.pipeline import VideoTask, process_video  # noqa: E402
from src.preprocessing.runner import run_preprocessing  # noqa: E402
from src.preprocessing.video import select_frame_indices  # noqa: E402
from tests.media import make_face_video  # noqa: E402

HEADER = "source,target1,target2,method,category,type,race,gender,path,\n"


def make_dataset(root: Path, n: int, seconds: float, fps: float = 25.0) -> list[Path]:
    """Write n videos and a meta_data.csv in the FakeAVCeleb layout."""
    rows, paths = [], []
    for i in range(n):
        ident = f"id{i:05d}"
        category, folder, method = ("A", "RealVideo-RealAudio", "real") if i % 4 == 0 else ("C", "FakeVideo-RealAudio", "faceswap")
        rel_dir = f"{folder}/African/men/{ident}"
        path = root / rel_dir / f"{i:05d}.mp4"
        frames = int(seconds * fps)
        make_face_video(path, num_frames=frames, fps=fps, face_size=120, audio_freq=300 + 20 * i, seed=i,
                        motion=lambda k, i=i: (112 + 10 * np.sin(k / 20 + i), 112 + 5 * np.cos(k / 25)))
        rows.append(f"{ident},-,-,{method},{category},{folder},African,men,{path.name},FakeAVCeleb/{rel_dir}\n")
        paths.append(path)
    (root / "meta_data.csv").write_text(HEADER + "".join(rows))
    return paths


def decode_only(path: Path) -> None:
    with av.open(str(path)) as c:
        for packet in c.demux(*c.streams.video, *c.streams.audio):
            for _ in packet.decode():
                pass


def deepfakebench_style(path: Path, out_dir: Path, detector, num_frames: int = 16, size: int = 224) -> None:
    """cv2 decode of every frame, dlib HOG per sampled frame, crop + resize, PNG per frame."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    idx = select_frame_indices(len(frames), num_frames)
    out_dir.mkdir(parents=True, exist_ok=True)
    for j, i in enumerate(idx):
        frame = frames[i]
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        faces = detector(gray, 0)
        if len(faces):
            f = max(faces, key=lambda r: r.area())
            cx, cy, side = (f.left() + f.right()) / 2, (f.top() + f.bottom()) / 2, 1.3 * max(f.width(), f.height())
            x0, y0 = int(max(cx - side / 2, 0)), int(max(cy - side / 2, 0))
            crop = frame[y0 : int(y0 + side), x0 : int(x0 + side)]
        else:
            crop = frame
        cv2.imwrite(str(out_dir / f"{j:03d}.png"), cv2.resize(crop, (size, size)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="4 videos of 2 s, 1 repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.videos, args.seconds, args.repeats = 4, 2.0, 1

    import dlib

    tmp = Path(tempfile.mkdtemp(prefix="bench_preprocess_"))
    try:
        root = tmp / "raw" / "FakeAVCeleb_v1.2"
        paths = make_dataset(root, args.videos, args.seconds)
        config = config_from_dict({"dataset": {"input_dir": str(root)}, "output": {"dir": str(tmp / "out")}, "processing": {"workers": args.workers}})
        plain = config_from_dict({"dataset": {"input_dir": str(root)}, "faces": {"landmarks": None, "align": False}})
        detector = create_detector(config.faces.detector, max_side=config.faces.max_side)
        landmarker = create_landmarker(config.faces.landmarks)
        hog = dlib.get_frontal_face_detector()
        tasks = [VideoTask("k", "train", p.name, str(p), 1, 1, 0, {}) for p in paths]
        process_video(tasks[0], config, detector, None, landmarker)  # warm-up: models, caches
        deepfakebench_style(paths[0], tmp / "png_warm", hog)

        times: dict[str, list[float]] = {"decode_only": [], "pipeline": [], "pipeline_noalign": [], "deepfakebench_style": []}
        for r in range(args.repeats):
            for i, (path, task) in enumerate(zip(paths, tasks)):
                png_dir = tmp / "png" / f"{r}_{i}"
                for name, fn, arg in (
                    ("decode_only", decode_only, (path,)),
                    ("pipeline", process_video, (task, config, detector, None, landmarker)),
                    ("pipeline_noalign", process_video, (task, plain, detector)),
                    ("deepfakebench_style", deepfakebench_style, (path, png_dir, hog)),
                ):
                    t = time.perf_counter()
                    fn(*arg)
                    times[name].append(time.perf_counter() - t)

        print("name,metric,value,unit")
        med = {k: statistics.median(v) * 1000 for k, v in times.items()}
        for name, value in med.items():
            print(f"{name},per_video_median,{value:.2f},ms")
        t = time.perf_counter()
        report = run_preprocessing(config, overwrite=True)
        wall = time.perf_counter() - t
        run_rate = report.stored / wall
        print(f"run_preprocessing,videos_per_s,{run_rate:.2f},videos/s")
        print(f"run_preprocessing,workers,{args.workers},count")
        print(f"pipeline_vs_decode_only,ratio,{med['pipeline'] / med['decode_only']:.2f},x")
        print(f"pipeline_noalign_vs_decode_only,ratio,{med['pipeline_noalign'] / med['decode_only']:.2f},x")
        print(f"deepfakebench_vs_pipeline,speedup,{med['deepfakebench_style'] / med['pipeline']:.2f},x")
        print(
            f"\n# {args.videos} videos, 224x224, {args.seconds:g} s at 25 fps, {args.repeats} repeats, serial per-video timings\n"
            f"# pipeline {med['pipeline']:.1f} ms/video = {med['pipeline'] / med['decode_only']:.2f}x decode-only ({med['decode_only']:.1f} ms); "
            f"DeepfakeBench-style {med['deepfakebench_style']:.1f} ms = {med['deepfakebench_style'] / med['pipeline']:.2f}x slower than the pipeline\n"
            f"# whole run with {args.workers} workers: {run_rate:.2f} videos/s ({report.stored} stored, {len(report.failed)} failed)",
            file=sys.stderr,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
