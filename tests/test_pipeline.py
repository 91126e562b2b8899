"""Preprocessing end to end on generated real videos: stages, splits, reports, resume, formats."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from src.config import config_from_dict, load_config
from src.data import open_storage
from src.errors import ConfigError, IncompleteStoreError
from src.preprocessing.faces import create_detector
from src.preprocessing.pipeline import VideoProcessor, VideoTask, process_video
from src.preprocessing.runner import run_preprocessing
from tests.conftest import REPO, run_cli
from tests.media import make_face_video

SPLITS = ("train", "val", "test")


def _task(path: Path, **meta) -> VideoTask:
    return VideoTask("sample_000001", "train", path.name, str(path), 1, 1, 0, {"category": "C", "method": "faceswap", **meta})


def test_process_video_centres_the_known_face_and_aligns_audio(tmp_path):
    centre = (90.0, 120.0)
    truth = make_face_video(tmp_path / "v.mp4", num_frames=40, fps=25.0, face_center=centre, face_size=110, audio_freq=660.0)
    cfg = config_from_dict({"frames": {"num_frames": 8}, "faces": {"image_size": 96}})
    timings: dict = {}
    sample = process_video(_task(tmp_path / "v.mp4"), cfg, create_detector("dlib_hog"), timings)
    data, meta = sample["data"], sample["metadata"]
    assert data.shape == (3, 8, 96, 96) and data.dtype == np.uint8 and data.flags.c_contiguous
    assert meta["num_frames"] == 8 and meta["face_found"] is True and len(meta["face_boxes"]) == 8
    assert meta["frame_indices"] == sorted(meta["frame_indices"]) and meta["frame_indices"][-1] <= 39
    assert meta["source_num_frames"] == truth["num_frames"] and meta["fps"] == pytest.approx(25.0)
    for box in meta["face_boxes"]:
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        assert abs(cx - centre[0]) < 10 and abs(cy - centre[1]) < 10
    # audio covers exactly the span of the sampled frames, at 16 kHz mono
    idx = meta["frame_indices"]
    start, end = idx[0] / 25.0, (idx[-1] + 1) / 25.0
    assert meta["audio_span_s"] == pytest.approx([start, end], abs=1e-3)
    audio = sample["audio"]
    assert audio.dtype == np.float32 and audio.ndim == 1 and len(audio) == round((end - start) * 16000)
    spectrum = np.abs(np.fft.rfft(audio))
    assert np.fft.rfftfreq(len(audio), 1 / 16000)[spectrum.argmax()] == pytest.approx(660.0, abs=5)
    assert set(timings) == {"decode", "faces"}


@pytest.mark.parametrize("error", [ValueError("frame must be uint8"), ConfigError("a stage's argument check")])
def test_a_stage_error_costs_one_video_not_the_run(tmp_path, monkeypatch, error):
    import src.preprocessing.pipeline as pipeline

    def failing(*args, **kwargs):
        raise error

    processor = VideoProcessor(config_from_dict({}))
    monkeypatch.setattr(pipeline, "process_video", failing)
    result = processor(_task(tmp_path / "any.mp4"))
    assert result.status == "failed" and result.sample is None and str(error) in result.error


def test_processor_turns_bad_videos_into_failures(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("not a video")
    processor = VideoProcessor(config_from_dict({}))
    for name in ("empty.mp4", "text.mp4", "missing.mp4"):
        result = processor(_task(tmp_path / name))
        assert result.status == "failed" and result.sample is None and name in result.error


def test_no_face_policy(tmp_path):
    make_face_video(tmp_path / "noface.mp4", num_frames=20, face=False)
    keep = process_video(_task(tmp_path / "noface.mp4"), config_from_dict({"frames": {"num_frames": 4}}), create_detector("dlib_hog"))
    assert keep["metadata"]["face_found"] is False and keep["data"].shape == (3, 4, 224, 224)
    result = VideoProcessor(config_from_dict({"frames": {"num_frames": 4}, "faces": {"on_no_face": "skip"}}))(_task(tmp_path / "noface.mp4"))
    assert result.status == "skipped"


def test_end_to_end_tree_splits_and_report(processed_root, demo_root):
    for split in SPLITS:
        assert (processed_root / split / "data.lmdb" / "data.mdb").exists()
        assert (processed_root / split / "metadata.json").exists()
    report = json.loads((processed_root / "preprocess_report.json").read_text())
    failed = {f["video_path"] for f in report["failed"]}
    assert len(failed) == 3  # zero-byte, truncated, missing (from the demo plan)
    assert all(f["reason"] for f in report["failed"])
    assert any("duplicate row" in r["reason"] for r in report["skipped_rows"])

    sources = {}
    stored_paths = []
    for split in SPLITS:
        meta = json.loads((processed_root / split / "metadata.json").read_text())
        samples = meta["samples"]
        assert meta["num_samples"] == len(samples) == report["split_counts"][split]
        assert set(meta["counts"]["label"]) == {"0", "1"}, f"{split} lacks a label"
        sources[split] = {s["source"] for s in samples.values()}
        stored_paths += [s["video_path"] for s in samples.values()]
        with open_storage(processed_root / split / "data.lmdb") as store:
            assert store.is_complete
            assert store.get_all_keys() == sorted(samples)
            assert {k: str(v) for k, v in store.index_counts("label").items()} == {k: str(v) for k, v in meta["counts"]["label"].items()}
            key = store.get_all_keys()[0]
            sample = store.retrieve_sample(key)
            assert sample["data"].shape == (3, 16, 224, 224)
            assert sample["metadata"]["video_path"] == samples[key]["video_path"]
            assert sample["audio"].dtype == np.float32
    assert not (sources["train"] & sources["val"]) and not (sources["train"] & sources["test"]) and not (sources["val"] & sources["test"])
    assert len(stored_paths) == len(set(stored_paths))
    assert not failed & set(stored_paths)


def _config(demo_root, out, **sections):
    data = {"dataset": {"input_dir": str(demo_root)}, "output": {"dir": str(out)}, "processing": {"executor": "serial"}}
    for k, v in sections.items():
        data.setdefault(k, {}).update(v)
    return config_from_dict(data)


def test_rerun_resumes_and_limit_is_proportional(demo_root, tmp_path):
    cfg = _config(demo_root, tmp_path, processing={"limit": 6})
    first = run_preprocessing(cfg)
    assert first.stored + len(first.failed) == 6
    second = run_preprocessing(cfg)
    assert second.stored == 0 and second.already_stored == first.stored
    full = run_preprocessing(_config(demo_root, tmp_path))
    assert full.already_stored == first.stored and full.stored > 0
    again = run_preprocessing(_config(demo_root, tmp_path), overwrite=True)
    assert again.already_stored == 0 and again.stored == full.stored + first.stored


def test_resume_with_other_settings_is_refused(demo_root, tmp_path):
    from src.errors import StorageError

    run_preprocessing(_config(demo_root, tmp_path, processing={"limit": 2}))
    with pytest.raises(StorageError, match="other settings"):
        run_preprocessing(_config(demo_root, tmp_path, processing={"limit": 2}, frames={"num_frames": 8}))


@pytest.mark.parametrize("fmt", ["hdf5", "numpy", "torch"])
def test_every_format_stores_the_same_samples(demo_root, processed_root, tmp_path, fmt):
    cfg = _config(demo_root, tmp_path, output={"format": fmt}, processing={"limit": 5})
    run_preprocessing(cfg)
    name = {"hdf5": "data.h5", "numpy": "data.numpy", "torch": "data.torch"}[fmt]
    compared = 0
    for split in SPLITS:
        with open_storage(tmp_path / "FakeAVCeleb_v1.2" / split / name) as other, open_storage(processed_root / split / "data.lmdb") as ref:
            assert other.format == fmt
            for key in other.get_all_keys():
                a, b = other.retrieve_sample(key), ref.retrieve_sample(key)
                assert a["data"].tobytes() == b["data"].tobytes()
                assert a["audio"].tobytes() == b["audio"].tobytes()
                assert a["label"] == b["label"] and a["metadata"] == b["metadata"]
                compared += 1
    assert compared >= 3


def test_cli_errors_are_one_line(tmp_path):
    r = run_cli("preprocess.py", "--dataset", "nosuch")
    assert r.returncode == 2 and r.stderr.strip().startswith("error: unknown dataset 'nosuch'; must be one of ")
    assert "faceforensics" in r.stderr and "celebdf" in r.stderr
    r = run_cli("preprocess.py", "--dataset", "fakeavceleb", "--input-dir", str(tmp_path / "missing"))
    assert r.returncode == 2 and r.stderr.strip().startswith("error: input root not found")
    bad = tmp_path / "bad.yaml"
    bad.write_text("output:\n  fromat: lmdb\n")
    r = run_cli("preprocess.py", "--dataset", "fakeavceleb", "--config", str(bad))
    assert r.returncode == 2 and "unknown config key output.fromat" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_cli_unwritable_output_fails_before_work(demo_root, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = run_cli("preprocess.py", "--dataset", "fakeavceleb", "--input-dir", str(demo_root), "--output-dir", str(blocker / "out"), "--no-progress")
    assert r.returncode == 1 and "not writable" in r.stderr


def _count_valid(out: Path) -> list[str]:
    paths = []
    for split in SPLITS:
        store_path = out / "FakeAVCeleb_v1.2" / split / "data.lmdb"
        if not store_path.exists():
            continue
        try:
            store = open_storage(store_path)
        except IncompleteStoreError:
            continue  # killed between creating the file and its first commit: holds nothing
        with store:
            for key in store.get_all_keys():
                sample = store.retrieve_sample(key)  # checksum verified
                paths.append(sample["metadata"]["video_path"])
    return paths


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume(demo_root, tmp_path):
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text("output:\n  lmdb:\n    commit_every: 2\nframes:\n  num_frames: 8\nfaces:\n  image_size: 112\n")
    args = [sys.executable, "preprocess.py", "--dataset", "fakeavceleb", "--config", str(cfg_file), "--input-dir", str(demo_root),
            "--output-dir", str(tmp_path), "--workers", "2", "--no-progress"]
    rng = random.Random(7)
    for _ in range(3):
        proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(rng.uniform(2.0, 6.0))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        stored = _count_valid(tmp_path)
        assert len(stored) == len(set(stored))
    r = run_cli(*args[1:])
    assert r.returncode == 0, r.stderr
    stored = _count_valid(tmp_path)
    assert len(stored) == len(set(stored))
    report = json.loads((tmp_path / "FakeAVCeleb_v1.2" / "preprocess_report.json").read_text())
    expected = load_config(cfg_file, {"dataset": {"input_dir": str(demo_root)}})
    from src.datasets.fakeavceleb import read_catalog

    valid = len(read_catalog(expected.dataset.input_dir).records) - 3  # minus the three broken files
    assert len(stored) == valid
    assert len(report["failed"]) == 3
    # every record's checksum and the indexes' agreement with the samples hold
    v = run_cli("inspect_data.py", "verify", str(tmp_path / "FakeAVCeleb_v1.2"), "--strict", "--no-progress")
    assert v.returncode == 0, v.stdout + v.stderr


@pytest.mark.parametrize("name", ["loading", "direct_access", "queries", "benchmark", "custom_transform", "batch_processing"])
def test_spec_examples_run_verbatim_on_a_pipeline_store(processed_root, tmp_path, monkeypatch, name):
    from tests.loader_helpers import run_spec_example

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "processed").symlink_to(processed_root.parent)
    monkeypatch.chdir(tmp_path)
    ns = run_spec_example(name, device="cpu")
    if name == "loading":
        assert tuple(ns["data"].shape[1:]) == (3, 16, 224, 224) and ns["labels"].dtype.is_floating_point is False
    if name == "direct_access":
        assert ns["sample"]["data"].shape == (3, 16, 224, 224) and len(ns["samples"]) == min(10, len(ns["keys"]))
    if name == "queries":
        assert len(ns["real_samples"]) > 0 and len(ns["fake_samples"]) > 0
    if name == "benchmark":
        assert ns["perf"]["samples_per_second_random"] > 0
    if name == "custom_transform":
        batch = next(iter(ns["train_loader"]))
        assert batch["data"].shape[1:] == (3, 16, 224, 224)
