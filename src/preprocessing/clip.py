"""Frames and audio of one clip in a single pass over the file.

Opening a file, probing it, decoding its video and then opening it again for the
audio costs three opens and two demux passes. :func:`decode_clip` opens once,
selects frame indices from the header, and demuxes both streams together: video
frames are decoded up to the last wanted one, audio frames up to the end of the
span the wanted frames cover. The audio is taken straight from the decoded
planes, downmixed to mono and resampled with a polyphase filter, which is several
times cheaper per frame than a per-frame resampler call.

Files whose header lacks a frame count, or whose streams misbehave, fall back to
the separate stage functions (:func:`~src.preprocessing.video.decode_video`,
:func:`~src.preprocessing.audio.load_audio`), which handle every corner case.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from math import gcd
from pathlib import Path

import av
import numpy as np
from scipy.signal import firwin, resample_poly

from src.errors import VideoDecodeError
from src.preprocessing.audio import audio_span_for_frames, load_audio, num_samples
from src.preprocessing.video import VideoInfo, _info, _to_rgb, _video_stream, decode_video, open_media, select_frame_indices

__all__ = ["Clip", "decode_clip", "resampled_indices", "to_mono_resampled"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Clip:
    """Decoded frames and audio of one clip.

    Attributes:
        frames: uint8 RGB (T, H, W, 3).
        indices: Decoded-frame index of each frame.
        info: The video's :class:`~src.preprocessing.video.VideoInfo`.
        audio: float32 mono samples covering ``audio_span``, or None when not asked for.
        has_audio: Whether the file has an audio stream.
        audio_span: ``(start_s, end_s)`` of the audio.
    """

    frames: np.ndarray
    indices: np.ndarray
    info: VideoInfo
    audio: np.ndarray | None
    has_audio: bool
    audio_span: tuple[float, float]


@lru_cache(maxsize=8)
def _fir(up: int, down: int) -> np.ndarray:
    """resample_poly's default Kaiser low-pass for up/down, designed once per rate pair."""
    max_rate = max(up, down)
    half_len = 10 * max_rate
    return firwin(2 * half_len + 1, 1.0 / max_rate, window=("kaiser", 5.0)) * up


def to_mono_resampled(planes: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """Downmix (channels, samples) float audio to mono and resample it.

    Args:
        planes: float32 (channels, samples).
        in_rate: Input sample rate.
        out_rate: Output sample rate.

    Returns:
        float32 mono samples at ``out_rate``.
    """
    mono = planes[0] if len(planes) == 1 else np.add.reduce(planes, axis=0, dtype=np.float32) / np.float32(len(planes))
    if in_rate != out_rate:
        g = gcd(int(in_rate), int(out_rate))
        up, down = out_rate // g, in_rate // g
        mono = resample_poly(mono, up, down, window=_fir(up, down) / up)
    return np.asarray(mono, dtype=np.float32)


def _frame_planes(frame: av.AudioFrame) -> list[np.ndarray] | None:
    """Per-channel float32 views of a decoded planar-float frame, or None for other formats."""
    if frame.format.name != "fltp":
        return None
    n = frame.samples
    return [np.frombuffer(p, dtype=np.float32, count=n) for p in frame.planes[: len(frame.layout.channels)]]


def _span_from_times(indices: np.ndarray, times: dict[int, float | None], fps: float, estimate: tuple[float, float]) -> tuple[float, float]:
    """The audio span from the selected frames' own timestamps (right for variable frame rate),
    or the index-based ``estimate`` when a timestamp is missing."""
    first, last = times.get(int(indices[0])), times.get(int(indices[-1]))
    if first is None or last is None:
        return estimate
    return float(first), float(last) + 1.0 / fps


def _fallback(path: Path, num_frames: int, mode: str, num_windows: int, audio_rate: int | None) -> Clip:
    frames, indices, info = decode_video(path, num_frames, mode, num_windows)
    span = audio_span_for_frames(indices, info.fps)
    audio, has_audio = (None, info.has_audio) if audio_rate is None else load_audio(path, span[0], span[1], audio_rate)
    return Clip(frames, indices, info, audio, has_audio, span)


def resampled_indices(num_source: int, source_fps: float, target_fps: float, num_frames: int, mode: str, num_windows: int) -> tuple[np.ndarray, tuple[float, float]]:
    """Select frames on a ``target_fps`` timeline and map them to source frames.

    The selection (uniform or windows) runs over the frames the video would have at
    ``target_fps``; each selected time takes the source frame showing at that time.

    Returns:
        ``(source indices, (start_s, end_s))``: the span is that of the resampled frames.
    """
    n = max(1, int(np.floor(num_source * target_fps / source_fps + 1e-6)))
    grid = select_frame_indices(n, num_frames, mode, num_windows)
    source = np.minimum(np.floor(grid * (source_fps / target_fps) + 1e-6).astype(np.int64), num_source - 1)
    return source, (float(grid[0]) / target_fps, float(grid[-1] + 1) / target_fps)


def decode_clip(
    path: str | Path,
    num_frames: int,
    mode: str = "uniform",
    num_windows: int = 1,
    audio_rate: int | None = 16000,
    threaded: bool = False,
    target_fps: float | None = None,
) -> Clip:
    """Decode the selected frames and the audio they span, in one pass.

    Args:
        path: Media file.
        num_frames: Frames to select (see :func:`~src.preprocessing.video.select_frame_indices`).
        mode: ``uniform`` or ``window``.
        num_windows: Windows in ``window`` mode.
        audio_rate: Output audio rate in Hz; None skips the audio.
        threaded: Let FFmpeg decode with several threads. Off by default: the
            pipeline already runs one worker per core, and measured here frame
            threading then only adds contention.
        target_fps: Select frames on this frame rate's timeline (e.g. 25 for
            audio-visual sync models), taking the source frame shown at each time;
            the audio spans the resampled frames exactly. None: the source rate.

    Returns:
        The :class:`Clip`.

    Raises:
        VideoDecodeError: The file cannot be opened or has no decodable video.
        ConfigError: Invalid selection arguments.
    """
    path = Path(path)
    with open_media(path) as container:
        vstream = _video_stream(container, path)
        if not vstream.frames or vstream.frames <= 0:
            # No trustworthy frame count in the header: the stage functions count packets first.
            if target_fps is not None:
                logger.warning("%s: no frame count in the header; frames are selected at the source rate, not %s fps", path, target_fps)
            return _fallback(path, num_frames, mode, num_windows, audio_rate)
        info = _info(container, vstream, path)
        if target_fps is None:
            indices = select_frame_indices(info.num_frames, num_frames, mode, num_windows)
            start_s, end_s = audio_span_for_frames(indices, info.fps)
        else:
            indices, (start_s, end_s) = resampled_indices(info.num_frames, info.fps, target_fps, num_frames, mode, num_windows)
        astream = container.streams.audio[0] if container.streams.audio and audio_rate is not None else None
        wanted = {int(i) for i in indices}
        last_wanted = max(wanted)
        kept: dict[int, np.ndarray] = {}
        times: dict[int, float | None] = {}
        count = 0
        video_done = False
        audio_done = astream is None
        chunks: list[list[np.ndarray]] = []
        first_time: float | None = None
        audio_reached = -1.0
        in_rate = 0
        if threaded:
            vstream.thread_type = "AUTO"
        streams = [vstream] + ([astream] if astream is not None else [])
        try:
            for packet in container.demux(*streams):
                if packet.stream is vstream:
                    if video_done:
                        continue
                    for frame in packet.decode():
                        if count in wanted:
                            kept[count] = _to_rgb(frame)
                            times[count] = frame.time
                        count += 1
                        if count > last_wanted:
                            video_done = True
                            if target_fps is None:
                                start_s, end_s = _span_from_times(indices, times, info.fps, (start_s, end_s))
                            break
                elif not audio_done:
                    for frame in packet.decode():
                        planes = _frame_planes(frame)
                        if planes is None:
                            return _fallback(path, num_frames, mode, num_windows, audio_rate)
                        if first_time is None:
                            first_time = float(frame.time) if frame.time is not None else 0.0
                            in_rate = frame.sample_rate
                        chunks.append(planes)
                        if frame.time is not None:
                            audio_reached = float(frame.time) + frame.samples / frame.sample_rate
                # Audio stops once it covers the span, which is final only when the video is done.
                audio_done = audio_done or (video_done and audio_reached >= end_s)
                if video_done and audio_done:
                    break
        except av.error.FFmpegError as exc:
            logger.info("%s: single-pass decoding stopped (%s); using the stage decoders", path, exc)
            return _fallback(path, num_frames, mode, num_windows, audio_rate)
    if not video_done:
        # The header overstated the frame count: let the stage decoder reselect over what exists.
        return _fallback(path, num_frames, mode, num_windows, audio_rate)
    frames = np.stack([kept[int(i)] for i in indices])

    audio = None
    has_audio = bool(info.has_audio)
    if audio_rate is not None:
        n = num_samples(start_s, end_s, audio_rate)
        audio = np.zeros(n, dtype=np.float32)
        if chunks:
            channels = min(len(c) for c in chunks)
            planes = np.stack([np.concatenate([c[ch] for c in chunks]) for ch in range(channels)])
            samples = to_mono_resampled(planes, in_rate, audio_rate)
            offset = round((start_s - (first_time or 0.0)) * audio_rate)
            lo, hi = max(offset, 0), min(offset + n, samples.size)
            if hi > lo:
                audio[lo - offset : hi - offset] = samples[lo:hi]
        elif has_audio:
            raise VideoDecodeError(f"{path}: audio stream has no decodable samples")
    return Clip(frames, indices, info, audio, has_audio, (start_s, end_s))
