"""Synthetic talking-head clips: a real face photo, a tone, written as a real mp4.

The building blocks shared by the demo dataset (:mod:`src.datasets.demo`) and the
test helpers (``tests/media.py``). The face is the astronaut portrait shipped with
scikit-image (``skimage.data.astronaut()``), so real face detectors find it without
downloading anything. Every function is deterministic for its arguments.

Geometry convention: a *face patch* is a square cut from the portrait around the
face, :data:`FACE_SOURCE_BOX`; the face found by dlib on the portrait is centred in
it and spans about half its side (0.54). Pasting the patch at side ``face_size``
centred on ``(cx, cy)`` therefore puts a detectable face centred on ``(cx, cy)``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

__all__ = [
    "FACE_SOURCE_BOX",
    "FRAME_CODE_BITS",
    "FRAME_CODE_BLOCK",
    "astronaut_face",
    "decode_frame_index",
    "encode_frame_index",
    "noise_background",
    "paste_patch",
    "single_threaded",
    "tone",
    "write_video",
]

logger = logging.getLogger(__name__)

#: Face square in ``skimage.data.astronaut()`` as (x0, y0, x1, y1): centred on the
#: face dlib finds in the full portrait, (179, 83)-(266, 170), with hair and chin.
FACE_SOURCE_BOX: tuple[int, int, int, int] = (142, 47, 302, 207)

#: Number of bits of the frame-index code drawn in the top-left corner.
FRAME_CODE_BITS = 10
#: Side in pixels of one bit block of the frame-index code (8 survives H.264 at crf 20).
FRAME_CODE_BLOCK = 8


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Run OpenCV on one thread inside the block (restored after).

    OpenCV splits resizes and blurs into stripes, one per thread, and float
    sums over a stripe boundary can differ in the last bit with another split,
    which flips pixels after the uint8 cast. Synthetic media must be
    byte-identical for a seed whatever the process's thread settings or CPU
    affinity, so the writers render on one thread.
    """
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(threads)


@functools.lru_cache(maxsize=1)
def astronaut_face() -> np.ndarray:
    """Return the face patch cut from the scikit-image astronaut portrait.

    Returns:
        A read-only uint8 RGB array of shape (160, 160, 3).
    """
    from skimage import data  # deferred: scikit-image is only needed to synthesise

    x0, y0, x1, y1 = FACE_SOURCE_BOX
    patch = np.ascontiguousarray(data.astronaut()[y0:y1, x0:x1])
    patch.setflags(write=False)
    return patch


def noise_background(
    width: int,
    height: int,
    *,
    color: tuple[int, int, int] = (110, 110, 110),
    noise: float = 12.0,
    seed: int = 0,
) -> np.ndarray:
    """Return a plain background with Gaussian noise.

    Args:
        width: Frame width in pixels.
        height: Frame height in pixels.
        color: Mean RGB colour.
        noise: Standard deviation of the per-pixel noise.
        seed: Seed of the noise.

    Returns:
        uint8 RGB array of shape (height, width, 3).
    """
    rng = np.random.default_rng(seed)
    base = np.asarray(color, dtype=np.float32)
    img = base + rng.normal(0.0, noise, size=(height, width, 3)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def paste_patch(
    frame: np.ndarray,
    patch: np.ndarray,
    center: tuple[float, float],
    side: int,
) -> tuple[float, float, float, float]:
    """Resize a square patch to ``side`` pixels and paste it centred on ``center``.

    The part of the patch that falls outside the frame is dropped.

    Args:
        frame: uint8 RGB frame, modified in place.
        patch: uint8 RGB square patch.
        center: (cx, cy) of the pasted patch in frame pixels.
        side: Side of the pasted patch in pixels.

    Returns:
        The pasted square (x0, y0, x1, y1) in frame pixels, possibly partly outside
        the frame.
    """
    h, w = frame.shape[:2]
    interp = cv2.INTER_AREA if side < patch.shape[0] else cv2.INTER_LINEAR
    resized = cv2.resize(patch, (side, side), interpolation=interp)
    x0 = round(center[0] - side / 2)
    y0 = round(center[1] - side / 2)
    fx0, fy0 = max(x0, 0), max(y0, 0)
    fx1, fy1 = min(x0 + side, w), min(y0 + side, h)
    if fx1 > fx0 and fy1 > fy0:
        frame[fy0:fy1, fx0:fx1] = resized[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0]
    return float(x0), float(y0), float(x0 + side), float(y0 + side)


def encode_frame_index(frame: np.ndarray, index: int) -> None:
    """Draw ``index`` as black/white bit blocks along the top-left edge, in place.

    Bit ``b`` (least significant first) is the block at x = b * FRAME_CODE_BLOCK.

    Args:
        frame: uint8 RGB frame at least ``FRAME_CODE_BITS * FRAME_CODE_BLOCK`` wide.
        index: Frame index in [0, 2 ** FRAME_CODE_BITS).
    """
    for bit in range(FRAME_CODE_BITS):
        value = 255 if (index >> bit) & 1 else 0
        x = bit * FRAME_CODE_BLOCK
        frame[:FRAME_CODE_BLOCK, x : x + FRAME_CODE_BLOCK] = value


def decode_frame_index(frame: np.ndarray) -> int:
    """Read the index drawn by :func:`encode_frame_index` from a decoded frame.

    Args:
        frame: uint8 RGB frame (H, W, 3) as decoded, at its original size.

    Returns:
        The frame index.
    """
    index = 0
    inner = slice(2, FRAME_CODE_BLOCK - 2)  # block centres: compression blurs edges
    for bit in range(FRAME_CODE_BITS):
        x = bit * FRAME_CODE_BLOCK
        block = frame[inner, x + 2 : x + FRAME_CODE_BLOCK - 2]
        if float(block.mean()) > 127.5:
            index |= 1 << bit
    return index


def tone(
    freq: float,
    duration_s: float,
    sample_rate: int,
    *,
    amplitude: float = 0.3,
    channels: int = 2,
    noise: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """Return a sine tone, optionally with white noise, as planar float32 samples.

    Args:
        freq: Frequency in Hz.
        duration_s: Length in seconds.
        sample_rate: Samples per second.
        amplitude: Peak amplitude of the sine.
        channels: Number of (identical) channels.
        noise: Standard deviation of added white noise.
        seed: Seed of the noise.

    Returns:
        float32 array of shape (channels, round(duration_s * sample_rate)).
    """
    n = round(duration_s * sample_rate)
    t = np.arange(n, dtype=np.float64) / sample_rate
    wave = amplitude * np.sin(2.0 * np.pi * freq * t)
    if noise > 0:
        wave = wave + np.random.default_rng(seed).normal(0.0, noise, size=n)
    wave = np.clip(wave, -1.0, 1.0).astype(np.float32)
    return np.ascontiguousarray(np.repeat(wave[None, :], channels, axis=0))


_LAYOUTS = {1: "mono", 2: "stereo"}


def write_video(
    path: str | Path,
    frames: Iterable[np.ndarray],
    *,
    fps: float,
    audio: np.ndarray | None = None,
    sample_rate: int = 44100,
    codec: str = "libx264",
    container_format: str | None = None,
    faststart: bool = False,
    crf: int = 20,
) -> int:
    """Encode RGB frames (and optionally planar float audio) into a video file.

    Video is yuv420p; with ``libx264`` the preset is ``veryfast``. The colour
    conversion and the encoder run on one thread each, so the same frames always
    give the same bytes. Audio is AAC
    (``fltp``). Audio packets are interleaved with the video as the muxer expects.

    Args:
        path: Output file; its parent must exist.
        frames: uint8 RGB frames, all of the same even width and height.
        fps: Frame rate (29.97 is written as 30000/1001).
        audio: float32 samples of shape (channels, n) in [-1, 1], or None for a
            file without an audio stream.
        sample_rate: Audio sample rate in Hz.
        codec: Video encoder name, e.g. ``libx264`` or ``mpeg4``.
        container_format: Muxer name (e.g. ``avi``); None infers it from the suffix.
        faststart: Put the mp4 index (moov) before the media data.
        crf: libx264 constant rate factor.

    Returns:
        The number of video frames written.
    """
    rate = Fraction(fps).limit_denominator(1001)
    options = {"movflags": "+faststart"} if faststart else {}
    frames_written = 0
    with av.open(str(path), mode="w", format=container_format, options=options) as container:
        vstream = None
        astream = None
        audio_pos = 0
        for frame_rgb in frames:
            if vstream is None:
                height, width = frame_rgb.shape[:2]
                vstream = container.add_stream(codec, rate=rate)
                vstream.width, vstream.height = width, height
                vstream.pix_fmt = "yuv420p"
                if codec == "libx264":
                    vstream.options = {"preset": "veryfast", "crf": str(crf)}
                # x264's output depends on its thread count, and "auto" follows the CPU
                # affinity of the calling thread, which other libraries may pin: fix it.
                vstream.codec_context.thread_count = 1
                if audio is not None:
                    astream = container.add_stream(
                        "aac", rate=sample_rate, layout=_LAYOUTS[audio.shape[0]]
                    )
            vframe = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame_rgb), format="rgb24")
            # Convert here on one thread: the encoder's own conversion uses swscale with an
            # automatic thread count, whose slices gave other pixels from run to run under load.
            vframe = vframe.reformat(format="yuv420p", threads=1)
            vframe.pts = frames_written
            container.mux(vstream.encode(vframe))
            frames_written += 1
            if astream is not None:
                until = min(audio.shape[1], round(frames_written / float(rate) * sample_rate))
                audio_pos = _mux_audio(container, astream, audio, audio_pos, until, sample_rate)
        if vstream is None:
            raise ValueError(f"{path}: no frames to write")
        container.mux(vstream.encode(None))
        if astream is not None:
            _mux_audio(container, astream, audio, audio_pos, audio.shape[1], sample_rate)
            container.mux(astream.encode(None))
    return frames_written


def _mux_audio(
    container: av.container.OutputContainer,
    astream: av.AudioStream,
    audio: np.ndarray,
    start: int,
    stop: int,
    sample_rate: int,
) -> int:
    """Encode and mux ``audio[:, start:stop]``; return ``stop``."""
    if stop <= start:
        return start
    chunk = np.ascontiguousarray(audio[:, start:stop], dtype=np.float32)
    aframe = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=_LAYOUTS[audio.shape[0]])
    aframe.sample_rate = sample_rate
    aframe.pts = start
    aframe.time_base = Fraction(1, sample_rate)
    container.mux(astream.encode(aframe))
    return stop
