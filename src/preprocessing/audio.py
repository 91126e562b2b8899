"""Audio extraction with PyAV: the mono waveform that goes with a set of video frames.

:func:`audio_span_for_frames` turns selected frame indices into a time span (pure);
:func:`load_audio` decodes the audio stream, resamples it to mono float32 and cuts
exactly that span. A file without an audio stream is not an error: it yields
silence and ``has_audio=False`` so the caller can record the fact.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import av
import av.error
import numpy as np

from src.errors import ConfigError, VideoDecodeError
from src.preprocessing.video import open_media

__all__ = ["audio_span_for_frames", "load_audio", "num_samples"]

logger = logging.getLogger(__name__)


def audio_span_for_frames(
    frame_indices: Sequence[int] | np.ndarray,
    fps: float,
) -> tuple[float, float]:
    """Return the time span covered by a set of video frames.

    The span runs from the start of the first selected frame to the end of the last
    one: ``(min(i) / fps, (max(i) + 1) / fps)``.

    Args:
        frame_indices: Selected decoded-frame indices (any order, may repeat).
        fps: Video frame rate.

    Returns:
        ``(start_s, end_s)`` in seconds.

    Raises:
        ConfigError: No indices, a negative index, or a non-positive frame rate.
    """
    idx = np.asarray(frame_indices)
    if idx.size == 0:
        raise ValueError("frame_indices must not be empty")
    if not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    first, last = int(idx.min()), int(idx.max())
    if first < 0:
        raise ValueError(f"frame indices must be >= 0, got {first}")
    return first / fps, (last + 1) / fps


def num_samples(start_s: float, end_s: float, sample_rate: int) -> int:
    """Return the number of samples :func:`load_audio` returns for a span.

    Args:
        start_s: Span start in seconds.
        end_s: Span end in seconds.
        sample_rate: Samples per second.

    Returns:
        ``round((end_s - start_s) * sample_rate)``.
    """
    return round((end_s - start_s) * sample_rate)


def _check_span(start_s: float, end_s: float, sample_rate: int) -> int:
    """Validate the arguments of load_audio and return the output length."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate < 1:
        raise ConfigError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    if not (math.isfinite(start_s) and math.isfinite(end_s)) or start_s < 0:
        raise ValueError(f"invalid audio span [{start_s!r}, {end_s!r}): start must be >= 0")
    n = num_samples(start_s, end_s, sample_rate)
    if n < 1:
        raise ValueError(f"audio span [{start_s}, {end_s}) holds no sample at {sample_rate} Hz")
    return n


def _decode_mono(
    container: av.container.InputContainer,
    stream: av.AudioStream,
    end_s: float,
    sample_rate: int,
    path: Path,
) -> tuple[np.ndarray, float]:
    """Decode and resample the stream until ``end_s``; return samples and start time."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    chunks: list[np.ndarray] = []
    collected = 0
    first_time: float | None = None

    def take(frames: list[av.AudioFrame]) -> None:
        nonlocal collected
        for out in frames:
            chunks.append(out.to_ndarray().reshape(-1))
            collected += out.samples

    try:
        for frame in container.decode(stream):
            if first_time is None:
                first_time = float(frame.time) if frame.time is not None else 0.0
            take(resampler.resample(frame))
            if first_time + collected / sample_rate >= end_s:
                break
        take(resampler.resample(None))  # flush what the resampler still holds
    except av.error.FFmpegError as exc:
        if collected == 0:
            raise VideoDecodeError(f"{path}: cannot decode audio: {exc}") from exc
        logger.warning("%s: audio decoding stopped after %d samples: %s", path, collected, exc)
    if collected == 0:
        raise VideoDecodeError(f"{path}: audio stream has no decodable samples")
    samples = np.concatenate(chunks).astype(np.float32, copy=False)
    return samples, first_time or 0.0


def load_audio(
    path: str | Path,
    start_s: float,
    end_s: float,
    sample_rate: int = 16000,
) -> tuple[np.ndarray, bool]:
    """Decode the audio of ``[start_s, end_s)`` as mono float32 at ``sample_rate``.

    The first audio stream is decoded from the start of the file up to ``end_s``,
    downmixed and resampled with ``av.AudioResampler``. Parts of the span the audio
    does not cover are zeros (a warning is logged when that is more than half).

    Args:
        path: Media file.
        start_s: Span start in seconds (>= 0).
        end_s: Span end in seconds (> start_s).
        sample_rate: Output sample rate in Hz.

    Returns:
        ``(samples, has_audio)``: float32 1-D array of exactly
        ``round((end_s - start_s) * sample_rate)`` samples, and whether the file has
        an audio stream (zeros and False when it has none).

    Raises:
        ConfigError: Invalid span or sample rate.
        VideoDecodeError: The file cannot be opened or its audio cannot be decoded.
    """
    path = Path(path)
    n = _check_span(start_s, end_s, sample_rate)
    out = np.zeros(n, dtype=np.float32)
    with open_media(path) as container:
        if not container.streams.audio:
            return out, False
        samples, first_time = _decode_mono(
            container, container.streams.audio[0], end_s, sample_rate, path
        )
    # Sample k of `samples` plays at first_time + k / sample_rate.
    offset = round((start_s - first_time) * sample_rate)
    src_lo, src_hi = max(offset, 0), min(offset + n, samples.size)
    if src_hi > src_lo:
        out[src_lo - offset : src_hi - offset] = samples[src_lo:src_hi]
    covered = max(src_hi - src_lo, 0)
    if covered < n / 2:
        logger.warning(
            "%s: audio covers only %d of %d samples of [%.3f, %.3f) s; the rest is silence",
            path,
            covered,
            n,
            start_s,
            end_s,
        )
    return out, True
