"""Test media: small real mp4 files with a real face at a known position and a tone.

Used across the test suite; the API below is stable.

* :func:`make_face_video` writes an H.264/AAC mp4 whose frames show the scikit-image
  astronaut face pasted at a known position and whose audio is a sine tone, and
  returns the ground truth (face boxes per frame, tone frequency, ...).
* :func:`read_frame_index` tells which source frame a decoded frame is: every frame
  carries its index as black/white bit blocks in its top-left corner.
* :func:`make_broken_files` writes the damaged and awkward files the decoders must
  survive.

The writing code lives in :mod:`src.datasets.synth` and is shared with the demo
dataset; nothing here needs a network.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from src.datasets import synth

__all__ = ["BROKEN_EXPECTATIONS", "make_broken_files", "make_face_video", "read_frame_index"]


def read_frame_index(frame: np.ndarray) -> int:
    """Return the source frame index encoded in a decoded frame of :func:`make_face_video`.

    Args:
        frame: uint8 RGB frame (H, W, 3) at the video's original size.

    Returns:
        The index of the frame in the written video.
    """
    return synth.decode_frame_index(frame)


def make_face_video(
    path: str | Path,
    *,
    num_frames: int = 50,
    fps: float = 25.0,
    size: tuple[int, int] = (224, 224),
    face_center: tuple[float, float] = (112, 112),
    face_size: int = 120,
    audio: bool = True,
    audio_freq: float = 440.0,
    sample_rate: int = 44100,
    stereo: bool = True,
    codec: str = "libx264",
    seed: int = 0,
    motion: Callable[[int], tuple[float, float]] | None = None,
    faststart: bool = False,
    face: bool = True,
    container_format: str | None = None,
) -> dict[str, Any]:
    """Write a small real video with a face at a known position and a sine tone.

    The face patch (astronaut portrait, hair to chin) is pasted as a square of side
    ``face_size`` centred on ``face_center`` (or ``motion(i)`` for frame ``i``) on a
    static noisy grey background. dlib's HOG detector finds the face with
    ``face_size`` >= 100 in a 224x224 frame; its box is centred on the patch centre
    (within ~5 px) and about half the patch side.

    Args:
        path: Output file (parent directories are created).
        num_frames: Number of video frames.
        fps: Frame rate.
        size: Frame (width, height), even numbers.
        face_center: (cx, cy) of the face when ``motion`` is None.
        face_size: Side in pixels of the pasted face patch.
        audio: Whether to add an AAC audio stream.
        audio_freq: Frequency of the tone in Hz.
        sample_rate: Audio sample rate in Hz.
        stereo: Two identical channels if True, else mono.
        codec: Video encoder (``libx264`` or ``mpeg4``).
        seed: Seed of the background noise.
        motion: Optional callable frame index -> (cx, cy) panning the face.
        faststart: Write the mp4 index first (a truncated copy then still opens).
        face: If False, no face is pasted (noise only).
        container_format: Muxer name; None infers it from the suffix.

    Returns:
        Ground truth: ``path`` (str), ``num_frames``, ``fps``, ``size`` (w, h),
        ``face_boxes`` (per frame [x0, y0, x1, y1] of the pasted patch, empty lists
        when ``face`` is False), ``face_centers`` (per frame [cx, cy]),
        ``audio_freq``, ``sample_rate``, ``has_audio``, ``duration_s`` and
        ``frame_code`` (how each frame's index is drawn; read it with
        :func:`read_frame_index`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    background = synth.noise_background(width, height, seed=seed)
    patch = synth.astronaut_face()
    boxes: list[list[float]] = []
    centers: list[list[float]] = []

    def frames():
        for i in range(num_frames):
            frame = background.copy()
            cx, cy = motion(i) if motion is not None else face_center
            if face:
                boxes.append(list(synth.paste_patch(frame, patch, (cx, cy), face_size)))
                centers.append([float(cx), float(cy)])
            else:
                boxes.append([])
                centers.append([])
            synth.encode_frame_index(frame, i)
            yield frame

    duration_s = num_frames / fps
    samples = None
    if audio:
        samples = synth.tone(audio_freq, duration_s, sample_rate, channels=2 if stereo else 1)
    synth.write_video(
        path,
        frames(),
        fps=fps,
        audio=samples,
        sample_rate=sample_rate,
        codec=codec,
        faststart=faststart,
        container_format=container_format,
    )
    return {
        "path": str(path),
        "num_frames": num_frames,
        "fps": fps,
        "size": (width, height),
        "face_boxes": boxes,
        "face_centers": centers,
        "audio_freq": audio_freq,
        "sample_rate": sample_rate,
        "has_audio": audio,
        "duration_s": duration_s,
        "frame_code": {"bits": synth.FRAME_CODE_BITS, "block": synth.FRAME_CODE_BLOCK},
    }


#: What each file of :func:`make_broken_files` is expected to do in the decoders.
BROKEN_EXPECTATIONS: dict[str, str] = {
    "zero_byte": "VideoDecodeError (empty file)",
    "truncated": "VideoDecodeError (first 30% of an mp4 whose index is at the end)",
    "truncated_faststart": "decodes the frames before the cut, with a warning",
    "text": "VideoDecodeError (not a media file)",
    "avi_as_mp4": "decodes: the container is probed from the content, not the name",
    "no_audio": "decodes; load_audio returns zeros and has_audio False",
    "one_frame": "decodes one frame; selections repeat it",
    "no_face": "decodes; detect_and_crop reports face_found False",
}


def make_broken_files(directory: str | Path) -> dict[str, Path]:
    """Write damaged and awkward video files into ``directory``.

    Args:
        directory: Output folder (created if missing).

    Returns:
        Name -> path, with the names of :data:`BROKEN_EXPECTATIONS`: a zero-byte
        ``.mp4``; the first 30% of a real mp4 (index at the end, so it cannot be
        opened); the first 60% of a faststart mp4 (opens, ends early); a text file
        named ``.mp4``; an AVI (mpeg4) named ``.mp4``; a video without audio; a
        one-frame video; a 1 s video of noise without a face.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}

    files["zero_byte"] = directory / "zero_byte.mp4"
    files["zero_byte"].write_bytes(b"")

    full = make_face_video(directory / "full_for_truncation.mp4", num_frames=25)
    data = Path(full["path"]).read_bytes()
    files["truncated"] = directory / "truncated.mp4"
    files["truncated"].write_bytes(data[: int(len(data) * 0.3)])

    fast = make_face_video(directory / "full_faststart.mp4", num_frames=25, faststart=True)
    data = Path(fast["path"]).read_bytes()
    files["truncated_faststart"] = directory / "truncated_faststart.mp4"
    files["truncated_faststart"].write_bytes(data[: int(len(data) * 0.6)])

    files["text"] = directory / "text.mp4"
    files["text"].write_text("this is not a video\n" * 20, encoding="utf-8")

    files["avi_as_mp4"] = directory / "avi_as_mp4.mp4"
    make_face_video(
        files["avi_as_mp4"],
        num_frames=10,
        codec="mpeg4",
        container_format="avi",
        audio=False,
    )

    files["no_audio"] = directory / "no_audio.mp4"
    make_face_video(files["no_audio"], num_frames=10, audio=False)

    files["one_frame"] = directory / "one_frame.mp4"
    make_face_video(files["one_frame"], num_frames=1)

    files["no_face"] = directory / "no_face.mp4"
    make_face_video(files["no_face"], num_frames=25, face=False)
    return files
