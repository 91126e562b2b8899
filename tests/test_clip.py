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


def _write_vfr(path, frame_times, size=(224, 224), tone_hz=440.0, sample_rate=44100):
    """An H.264 + AAC mp4 whose frames sit at the given (irregular) times in seconds."""
    import av

    from src.datasets import synth

    patch = synth.astronaut_face()
    background = synth.noise_background(size[0], size[1], seed=1)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=30)
        video.width, video.height, video.pix_fmt = size[0], size[1], "yuv420p"
        video.codec_context.time_base = __import__("fractions").Fraction(1, 1000)
        audio = out.add_stream("aac", rate=sample_rate)
        for i, t in enumerate(frame_times):
            img = background.copy()
            synth.paste_patch(img, patch, (size[0] / 2, size[1] / 2), 120)
            synth.encode_frame_index(img, i)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = int(round(t * 1000))
            frame.time_base = video.codec_context.time_base
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        total = frame_times[-1] + 0.1
        samples = (0.3 * np.sin(2 * np.pi * tone_hz * np.arange(int(total * sample_rate)) / sample_rate)).astype(np.float32)
        for start in range(0, len(samples), 1024):
            chunk = samples[start : start + 1024]
            frame = av.AudioFrame.from_ndarray(chunk[None, :], format="flt", layout="mono")
            frame.sample_rate = sample_rate
            frame.pts = start
            for packet in audio.encode(frame):
                out.mux(packet)
        for packet in audio.encode():
            out.mux(packet)


def test_variable_frame_rate_takes_the_audio_span_from_frame_timestamps(tmp_path):
    # 20 frames at 25 fps, a 1 s gap, then 20 more: the index/fps estimate would be far off
    times = [i / 25 for i in range(20)] + [1.8 + i / 25 for i in range(20)]
    path = tmp_path / "vfr.mp4"
    _write_vfr(path, times)
    clip = decode_clip(path, 8)
    assert [read_frame_index(f) for f in clip.frames] == list(clip.indices)
    first, last = int(clip.indices[0]), int(clip.indices[-1])
    assert clip.audio_span[0] == pytest.approx(times[first], abs=0.002)
    assert clip.audio_span[1] == pytest.approx(times[last] + 1 / clip.info.fps, abs=0.002)
    assert len(clip.audio) == round((clip.audio_span[1] - clip.audio_span[0]) * 16000)
    assert np.abs(clip.audio).max() > 0.1  # the tone is there all along the span


def test_very_large_frames_are_cropped_around_the_face(tmp_path):
    from src.config import config_from_dict
    from src.preprocessing.pipeline import VideoTask, process_video

    path = tmp_path / "big.mp4"
    make_face_video(path, num_frames=8, size=(1920, 1080), face_center=(1300, 500), face_size=480, audio=False)
    task = VideoTask("sample_000001", "train", "big.mp4", str(path), 0, 0, 0, {})
    sample = process_video(task, config_from_dict({"frames": {"num_frames": 4}}), create_detector("dlib_hog"))
    assert sample["data"].shape == (3, 4, 224, 224) and sample["metadata"]["face_found"]
    box = sample["metadata"]["face_boxes"][0]
    assert abs((box[0] + box[2]) / 2 - 1300) < 40 and abs((box[1] + box[3]) / 2 - 500) < 40
    assert sample["metadata"]["source_size"] == [1920, 1080] and sample["metadata"]["has_audio"] is False
