"""Per-frame labels from temporal fake segments (LAV-DF, AV-Deepfake1M).

A frame is fake when its timestamp lies inside a fake segment ``[start, end)``.
Timestamps come from the decoded video (frame index over the decoded frame
rate), never from the metadata's frame counts, which do not always match the
media (AV-Deepfake1M's ``audio_frames`` of fake tracks).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["clip_segments", "frame_labels", "temporal_metadata"]

#: Segment fields a catalog may give, and the per-frame label field each becomes.
_FIELDS = {"fake_segments": "frame_labels", "visual_fake_segments": "visual_frame_labels"}


def frame_labels(times: Sequence[float], segments: Sequence[Sequence[float]]) -> list[int]:
    """1 for each timestamp inside a segment ``[start, end)``, else 0.

    Args:
        times: Frame timestamps in seconds.
        segments: ``[start_s, end_s]`` pairs.
    """
    t = np.asarray(times, dtype=np.float64)
    fake = np.zeros(t.shape, dtype=bool)
    for start, end in segments:
        fake |= (t >= start) & (t < end)
    return fake.astype(int).tolist()


def clip_segments(segments: Sequence[Sequence[float]], span: tuple[float, float]) -> list[list[float]]:
    """The parts of ``segments`` inside the clip's audio ``span``, in seconds from the span's start.

    Sample ``i`` of the stored audio is fake when ``i / sample_rate`` lies in one of them.
    """
    start, end = span
    out = []
    for s, e in segments:
        lo, hi = max(s, start), min(e, end)
        if hi > lo:
            out.append([round(lo - start, 6), round(hi - start, 6)])
    return out


def temporal_metadata(metadata: dict, indices: Sequence[int], fps: float, audio_span: tuple[float, float] | None) -> dict:
    """The per-frame and per-clip temporal labels for a sample whose catalog gave segments.

    Args:
        metadata: The catalog metadata (with ``fake_segments`` etc.).
        indices: Decoded-frame index of each stored frame.
        fps: Decoded frame rate.
        audio_span: ``(start_s, end_s)`` of the stored audio, or None.

    Returns:
        ``frame_times_s``, ``frame_labels`` (and ``visual_frame_labels``), and with
        audio ``audio_clip_fake_segments`` (from ``audio_fake_segments``); empty
        when the metadata has no segments.
    """
    if "fake_segments" not in metadata:
        return {}
    times = [float(i) / float(fps) for i in indices] if fps else [0.0] * len(indices)
    out: dict = {"frame_times_s": [round(t, 6) for t in times]}
    for field, label_field in _FIELDS.items():
        if field in metadata:
            out[label_field] = frame_labels(times, metadata[field])
    if audio_span is not None and "audio_fake_segments" in metadata:
        out["audio_clip_fake_segments"] = clip_segments(metadata["audio_fake_segments"], audio_span)
    return out
