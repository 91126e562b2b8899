"""Tests of src.preprocessing.video on small real videos written by tests.media."""

from __future__ import annotations

import logging

import av.error
import cv2
import numpy as np
import pytest

from src.datasets import synth
from src.errors import ConfigError, VideoDecodeError
from src.preprocessing.video import (
    VideoInfo,
    decode_frames,
    decode_video,
    probe_video,
    select_frame_indices,
)
from tests.media import make_broken_files, make_face_video, read_frame_index


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("video")


@pytest.fixture(scope="module")
def clip(media_dir):
    return make_face_video(media_dir / "clip.mp4", num_frames=50, fps=25.0)


@pytest.fixture(scope="module")
def broken(media_dir):
    return make_broken_files(media_dir / "broken")


def frame_ids(frames: np.ndarray) -> list[int]:
    return [read_frame_index(f) for f in frames]


# --------------------------------------------------------------------------- probe


def test_probe_reads_header(clip):
    info = probe_video(clip["path"])
    assert info == VideoInfo(
        num_frames=50,
        fps=25.0,
        width=224,
        height=224,
        duration_s=pytest.approx(2.0, abs=0.05),
        has_audio=True,
    )


def test_probe_ntsc_rate_and_size(media_dir):
    gt = make_face_video(
        media_dir / "ntsc.mp4",
        num_frames=30,
        fps=29.97,
        size=(320, 256),
        face_center=(160, 128),
        audio=False,
    )
    info = probe_video(gt["path"])
    assert info.num_frames == 30
    assert info.fps == pytest.approx(29.97, abs=1e-3)
    assert (info.width, info.height) == (320, 256)
    assert info.has_audio is False


def test_probe_counts_packets_when_header_has_no_count(media_dir):
    # Matroska stores no frame count: probe_video must demux and count packets.
    gt = make_face_video(media_dir / "clip.mkv", num_frames=37)
    with av.open(gt["path"]) as container:
        assert container.streams.video[0].frames == 0
    assert probe_video(gt["path"]).num_frames == 37
    frames, info = decode_frames(gt["path"], [0, 36])
    assert frame_ids(frames) == [0, 36]
    assert info.num_frames == 37


@pytest.mark.parametrize("name", ["zero_byte", "truncated", "text"])
def test_probe_broken_raises_with_path(broken, name):
    with pytest.raises(VideoDecodeError) as err:
        probe_video(broken[name])
    assert str(broken[name]) in str(err.value)


def test_probe_missing_file(tmp_path):
    with pytest.raises(VideoDecodeError, match="not found"):
        probe_video(tmp_path / "nope.mp4")


def test_probe_directory(tmp_path):
    with pytest.raises(VideoDecodeError, match="not a regular file"):
        probe_video(tmp_path)


def test_zero_byte_message(broken):
    with pytest.raises(VideoDecodeError, match="empty file"):
        probe_video(broken["zero_byte"])


def test_audio_only_file_has_no_video_stream(tmp_path):
    path = tmp_path / "audio_only.m4a"
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray(
            synth.tone(440, 0.5, 16000, channels=1), format="fltp", layout="mono"
        )
        frame.sample_rate = 16000
        frame.pts = 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with pytest.raises(VideoDecodeError, match="no video stream"):
        probe_video(path)


# --------------------------------------------------------------------------- selection


def test_uniform_centres_of_segments():
    idx = select_frame_indices(100, 4)
    assert idx.tolist() == [12, 37, 62, 87]
    assert idx.dtype == np.int64


@pytest.mark.parametrize("n,t", [(50, 16), (17, 16), (16, 16), (1000, 8), (75, 1)])
def test_uniform_sorted_in_range_exact_count(n, t):
    idx = select_frame_indices(n, t)
    assert len(idx) == t
    assert np.all(np.diff(idx) >= 0)
    assert idx.min() >= 0 and idx.max() < n
    if n >= t:
        assert len(set(idx.tolist())) == t


def test_uniform_same_length_returns_every_frame():
    assert select_frame_indices(16, 16).tolist() == list(range(16))


def test_uniform_short_video_repeats_frames():
    idx = select_frame_indices(3, 8)
    assert idx.tolist() == [0, 0, 0, 1, 1, 2, 2, 2]


def test_uniform_is_deterministic():
    assert np.array_equal(select_frame_indices(123, 16), select_frame_indices(123, 16))


def test_window_single_centred():
    idx = select_frame_indices(100, 8, "window", 1)
    assert idx.tolist() == list(range(46, 54))


def test_window_runs_spread_evenly():
    idx = select_frame_indices(100, 16, "window", 2)
    first, second = idx[:8], idx[8:]
    assert np.all(np.diff(first) == 1) and np.all(np.diff(second) == 1)
    assert first[0] == 21 and second[0] == 71  # centred in [0, 50) and [50, 100)


def test_window_clips_at_the_end():
    idx = select_frame_indices(5, 8, "window", 1)
    assert idx.tolist() == [0, 1, 2, 3, 4, 4, 4, 4]


def test_window_overlapping_when_short():
    idx = select_frame_indices(20, 16, "window", 2)
    assert len(idx) == 16 and idx.max() < 20 and np.all(np.diff(idx) >= 0)


def test_window_needs_divisible_count():
    with pytest.raises(ConfigError, match="divisible"):
        select_frame_indices(100, 10, "window", 3)


def test_invalid_mode_names_allowed_values():
    with pytest.raises(ConfigError, match="unknown frame selection mode 'random'; must be one of uniform, window"):
        select_frame_indices(100, 8, "random")


@pytest.mark.parametrize("args", [(0, 8), (10, 0), (10, -1), (10, 8, "window", 0), (10.5, 8)])
def test_invalid_counts(args):
    with pytest.raises(ConfigError):
        select_frame_indices(*args)


# --------------------------------------------------------------------------- decoding


def test_decode_returns_requested_frames(clip):
    idx = select_frame_indices(50, 16)
    frames, info = decode_frames(clip["path"], idx)
    assert frames.shape == (16, 224, 224, 3) and frames.dtype == np.uint8
    assert frame_ids(frames) == idx.tolist()
    assert info.num_frames == 50


def test_decode_keeps_order_and_repeats(clip):
    frames, _ = decode_frames(clip["path"], [7, 3, 3, 49, 0])
    assert frame_ids(frames) == [7, 3, 3, 49, 0]


def test_decode_frame_content_matches_source(clip):
    frames, _ = decode_frames(clip["path"], [10])
    x0, y0, x1, y1 = (int(v) for v in clip["face_boxes"][10])
    face = frames[0, y0:y1, x0:x1].astype(np.float32)
    expected = cv2.resize(
        synth.astronaut_face(), (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA
    ).astype(np.float32)
    assert np.abs(face - expected).mean() < 12  # lossy H.264, still the same picture


def test_decode_max_side_downscales_keeping_aspect(media_dir):
    gt = make_face_video(
        media_dir / "wide.mp4", num_frames=10, size=(320, 256), face_center=(160, 128), audio=False
    )
    frames, info = decode_frames(gt["path"], [0, 9], max_side=160)
    assert frames.shape == (2, 128, 160, 3)
    assert (info.width, info.height) == (320, 256)
    frames, _ = decode_frames(gt["path"], [0], max_side=1000)
    assert frames.shape == (1, 256, 320, 3)


def test_decode_past_the_end_uses_last_frame(clip, caplog):
    with caplog.at_level(logging.WARNING, logger="src.preprocessing.video"):
        frames, info = decode_frames(clip["path"], [48, 60, 49])
    assert frame_ids(frames) == [48, 49, 49]
    assert info.num_frames == 50
    assert "only 50 frames decoded" in caplog.text


def test_decode_truncated_faststart_keeps_decoded_frames(broken, caplog):
    with caplog.at_level(logging.WARNING, logger="src.preprocessing.video"):
        frames, info = decode_frames(broken["truncated_faststart"], [0, 2, 24])
    decoded = info.num_frames
    assert 0 < decoded < 25
    assert frame_ids(frames) == [0, 2, decoded - 1]
    assert caplog.records


def test_decode_video_reselects_over_decodable_frames(broken):
    frames, indices, info = decode_video(broken["truncated_faststart"], 8)
    assert len(frames) == 8
    assert indices.tolist() == select_frame_indices(info.num_frames, 8).tolist()
    assert frame_ids(frames) == indices.tolist()


def test_decode_video_convenience(clip):
    frames, indices, info = decode_video(clip["path"], 8, "window", 2)
    assert frames.shape == (8, 224, 224, 3)
    assert frame_ids(frames) == indices.tolist()
    assert info.num_frames == 50


@pytest.mark.parametrize("name", ["zero_byte", "truncated", "text"])
def test_decode_broken_raises(broken, name):
    with pytest.raises(VideoDecodeError) as err:
        decode_video(broken[name], 4)
    assert str(broken[name]) in str(err.value)


def test_decode_avi_named_mp4(broken):
    frames, indices, info = decode_video(broken["avi_as_mp4"], 4)
    assert frames.shape == (4, 224, 224, 3)
    assert frame_ids(frames) == indices.tolist()
    assert info.has_audio is False


def test_decode_one_frame_video(broken):
    frames, indices, info = decode_video(broken["one_frame"], 16)
    assert frames.shape[0] == 16 and indices.tolist() == [0] * 16
    assert info.num_frames == 1


def test_decode_mid_file_error_keeps_frames(clip, monkeypatch, caplog):
    real_decode = av.container.InputContainer.decode

    def failing(self, *args, **kwargs):
        for i, frame in enumerate(real_decode(self, *args, **kwargs)):
            if i == 5:
                raise av.error.InvalidDataError(1094995529, "Invalid data found")
            yield frame

    monkeypatch.setattr(av.container.InputContainer, "decode", failing)
    with caplog.at_level(logging.WARNING, logger="src.preprocessing.video"):
        frames, info = decode_frames(clip["path"], [1, 10])
    assert frame_ids(frames) == [1, 4]
    assert info.num_frames == 5
    assert "decoding stopped after 5 frames" in caplog.text


def test_decode_error_before_any_frame_raises(clip, monkeypatch):
    def failing(self, *args, **kwargs):
        raise av.error.InvalidDataError(1094995529, "Invalid data found")
        yield  # pragma: no cover

    monkeypatch.setattr(av.container.InputContainer, "decode", failing)
    with pytest.raises(VideoDecodeError, match="cannot decode video"):
        decode_frames(clip["path"], [0])


@pytest.mark.parametrize("indices", [[], [[1, 2]], [-1], [0.5]])
def test_decode_rejects_bad_indices(clip, indices):
    with pytest.raises(ValueError):
        decode_frames(clip["path"], indices)
