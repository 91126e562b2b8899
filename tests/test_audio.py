"""Tests of src.preprocessing.audio on small real videos written by tests.media."""

from __future__ import annotations

import logging

import av.error
import numpy as np
import pytest

from src.errors import VideoDecodeError
from src.preprocessing.audio import audio_span_for_frames, load_audio, num_samples
from src.preprocessing.video import select_frame_indices
from tests.media import make_broken_files, make_face_video


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("audio")


@pytest.fixture(scope="module")
def clip(media_dir):
    return make_face_video(media_dir / "tone.mp4", num_frames=50, fps=25.0, audio_freq=440.0)


@pytest.fixture(scope="module")
def broken(media_dir):
    return make_broken_files(media_dir / "broken")


def dominant_hz(x: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1.0 / sample_rate)[spectrum.argmax()])


# --------------------------------------------------------------------------- span


def test_span_first_start_to_last_end():
    assert audio_span_for_frames([10, 11, 12, 13], 25.0) == (0.4, 0.56)


def test_span_unsorted_and_repeated():
    assert audio_span_for_frames(np.array([5, 0, 5, 2]), 10.0) == (0.0, 0.6)


def test_span_matches_selected_window():
    idx = select_frame_indices(100, 16, "window", 1)
    start, end = audio_span_for_frames(idx, 25.0)
    assert (end - start) * 25.0 == pytest.approx(16)
    assert num_samples(start, end, 16000) == 16 * 640


@pytest.mark.parametrize(
    "indices,fps", [([], 25.0), ([1], 0.0), ([1], -5.0), ([-1, 2], 25.0), ([1], float("nan"))]
)
def test_span_rejects_bad_input(indices, fps):
    with pytest.raises(ValueError):
        audio_span_for_frames(indices, fps)


# --------------------------------------------------------------------------- loading


def test_load_whole_track_mono_16k_with_the_tone(clip):
    x, has_audio = load_audio(clip["path"], 0.0, 2.0)
    assert has_audio is True
    assert x.dtype == np.float32 and x.ndim == 1 and x.shape == (32000,)
    assert dominant_hz(x, 16000) == pytest.approx(440.0, abs=16000 / x.size)
    assert 0.2 < np.abs(x).max() <= 1.0


@pytest.mark.parametrize("start,end", [(0.4, 1.04), (0.0, 0.01), (0.123, 0.777), (1.9, 2.0)])
def test_exact_length(clip, start, end):
    x, _ = load_audio(clip["path"], start, end)
    assert x.shape == (round((end - start) * 16000),)


def test_other_sample_rate(clip):
    x, _ = load_audio(clip["path"], 0.5, 1.5, sample_rate=8000)
    assert x.shape == (8000,)
    assert dominant_hz(x, 8000) == pytest.approx(440.0, abs=1.0)


def test_samples_are_aligned_in_time(clip):
    start = 0.5
    x, _ = load_audio(clip["path"], start, 0.6)
    t = start + np.arange(x.size) / 16000
    reference = np.sin(2 * np.pi * 440.0 * t)
    assert np.corrcoef(x, reference)[0, 1] > 0.99
    shifted = np.sin(2 * np.pi * 440.0 * (t + 0.0005))  # 8 samples late: clearly worse
    assert np.corrcoef(x, shifted)[0, 1] < 0.9


def test_span_past_the_end_is_zero_padded(clip):
    x, has_audio = load_audio(clip["path"], 1.5, 2.5)
    assert has_audio and x.shape == (16000,)
    assert np.abs(x[:7900]).min() < 0.05 and np.abs(x[:7900]).max() > 0.2  # tone
    assert np.all(x[8100:] == 0.0)  # after the 2.0 s end of the audio


def test_span_entirely_after_audio_warns(clip, caplog):
    with caplog.at_level(logging.WARNING, logger="src.preprocessing.audio"):
        x, has_audio = load_audio(clip["path"], 5.0, 6.0)
    assert has_audio and not x.any()
    assert "covers only" in caplog.text


def test_mono_and_other_rates_in_file(media_dir):
    gt = make_face_video(
        media_dir / "mono22k.mp4", num_frames=25, stereo=False, sample_rate=22050, audio_freq=1000.0
    )
    x, has_audio = load_audio(gt["path"], 0.0, 1.0)
    assert has_audio and x.shape == (16000,)
    assert dominant_hz(x, 16000) == pytest.approx(1000.0, abs=1.0)


def test_no_audio_stream_gives_silence(broken):
    x, has_audio = load_audio(broken["no_audio"], 0.0, 0.4)
    assert has_audio is False
    assert x.shape == (6400,) and x.dtype == np.float32 and not x.any()


@pytest.mark.parametrize("name", ["zero_byte", "truncated", "text"])
def test_broken_raises_with_path(broken, name):
    with pytest.raises(VideoDecodeError) as err:
        load_audio(broken[name], 0.0, 0.5)
    assert str(broken[name]) in str(err.value)


def test_truncated_faststart_keeps_what_decodes(broken):
    x, has_audio = load_audio(broken["truncated_faststart"], 0.0, 0.1)
    assert has_audio and x.shape == (1600,) and np.abs(x).max() > 0.2


def test_decode_error_raises(clip, monkeypatch):
    def failing(self, *args, **kwargs):
        raise av.error.InvalidDataError(1094995529, "Invalid data found")
        yield  # pragma: no cover

    monkeypatch.setattr(av.container.InputContainer, "decode", failing)
    with pytest.raises(VideoDecodeError, match="cannot decode audio"):
        load_audio(clip["path"], 0.0, 1.0)


@pytest.mark.parametrize(
    "start,end,rate",
    [(1.0, 1.0, 16000), (1.0, 0.5, 16000), (-0.1, 1.0, 16000), (0.0, 1.0, 0), (0.0, 1e-6, 16000)],
)
def test_rejects_bad_span(clip, start, end, rate):
    with pytest.raises(ValueError):
        load_audio(clip["path"], start, end, sample_rate=rate)
