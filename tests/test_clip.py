"""Single-pass clip decoding agrees with the stage decoders, and adaptive face detection."""

from __future__ import annotations

import numpy as np
import pytest

from src.errors import VideoDecodeError
from src.preprocessing.audio import load_audio
from src.preprocessing.clip import decode_clip, to_mono_resampled
from src.preprocessing.faces import create_detector, detect_and_crop
from src.preprocessing.video import decode_video
from tests.media import make_broken_files, make_face_video, read_frame_index


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    return make_broken_files(tmp_path_factory.mktemp("broken"))


@pytest.mark.parametrize("fps", [25.0, 29.97])
def test_decode_clip_matches_stage_decoders(tmp_path, fps):
    path = tmp_path / "v.mp4"
    make_face_video(path, num_frames=60, fps=fps, audio_freq=500.0)
    clip = decode_clip(path, 12)
    frames, indices, info = decode_video(path, 12)
    assert np.array_equal(clip.frames, frames) and np.array_equal(clip.indices, indices) and clip.info == info
    assert [read_frame_index(f) for f in clip.frames] == list(clip.indices)
    ref, has_audio = load_audio(path, *clip.audio_span)
    assert clip.has_audio and has_audio and clip.audio.shape == ref.shape and clip.audio.dtype == np.float32
    # both paths resample the same tone; they differ only in filter and downmix gain
    assert np.corrcoef(clip.audio, ref)[0, 1] > 0.99


def test_decode_clip_without_audio_request(tmp_path):
    make_face_video(tmp_path / "v.mp4", num_frames=30)
    clip = decode_clip(tmp_path / "v.mp4", 4, audio_rate=None)
    assert clip.audio is None and clip.frames.shape[0] == 4


def test_decode_clip_on_awkward_files(broken):
    for name in ("zero_byte", "truncated", "text"):
        with pytest.raises(VideoDecodeError):
            decode_clip(broken[name], 8)
    no_audio = decode_clip(broken["no_audio"], 8)
    assert no_audio.has_audio is False and not no_audio.audio.any()
    one = decode_clip(broken["one_frame"], 8)
    assert one.frames.shape[0] == 8 and set(one.indices.tolist()) == {0}
    assert decode_clip(broken["avi_as_mp4"], 4).frames.shape[0] == 4
    cut = decode_clip(broken["truncated_faststart"], 8)  # falls back to the stage decoder's reselection
    assert cut.frames.shape[0] == 8 and cut.indices.max() < cut.info.num_frames


def test_to_mono_resampled_keeps_a_tone():
    t = np.arange(44100) / 44100
    tone = np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    out = to_mono_resampled(np.stack([tone, tone]), 44100, 16000)
    assert out.shape == (16000,) and out.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(out))
    assert np.fft.rfftfreq(16000, 1 / 16000)[spectrum.argmax()] == pytest.approx(1000, abs=2)


class CountingDetector:
    def __init__(self):
        self.inner = create_detector("dlib_hog")
        self.calls = []

    def detect(self, frame):
        self.calls.append(frame)
        return self.inner.detect(frame)


def test_adaptive_detection_is_cheap_on_still_faces_and_follows_motion(tmp_path):
    make_face_video(tmp_path / "still.mp4", num_frames=32, face_center=(112, 112), face_size=120)
    make_face_video(tmp_path / "moving.mp4", num_frames=32, size=(320, 224), face_size=110, motion=lambda i: (60 + 6.5 * i, 112))
    still = decode_video(tmp_path / "still.mp4", 16)[0]
    det = CountingDetector()
    res = detect_and_crop(still, det, detect_every=8, refine_iou=0.5)
    assert res.face_found and len(det.calls) == 3  # frames 0, 8, 15
    moving, indices, _ = decode_video(tmp_path / "moving.mp4", 16)
    det = CountingDetector()
    res = detect_and_crop(moving, det, detect_every=8, refine_iou=0.5)
    assert len(det.calls) > 3
    truth_x = [60 + 6.5 * i for i in indices]
    centres = [(b[0] + b[2]) / 2 for b in res.boxes]
    assert max(abs(c - t) for c, t in zip(centres, truth_x)) < 15
