"""The field's standard settings as presets: ``--preset deepfakebench`` and ``--preset av-sync``."""

from __future__ import annotations

import numpy as np
import pytest

from src.config import load_config
from src.data import open_storage
from src.datasets.demo_layouts import write_face_video
from src.preprocessing.clip import resampled_indices
from src.preprocessing.runner import run_preprocessing
from tests.conftest import REPO, run_cli

PRESETS = REPO / "configs" / "presets"


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A folder-layout dataset of two 1.5 s clips at 30 fps (audio tracks included)."""
    root = tmp_path_factory.mktemp("presets") / "clips"
    write_face_video(root / "real" / "a.mp4", seed=3, num_frames=45, fps=30.0, size=192)
    write_face_video(root / "fake" / "swap" / "b.mp4", seed=4, fake=True, num_frames=45, fps=30.0, size=192)
    return root


def _samples(out_root):
    found = []
    for split in ("train", "val", "test"):
        with open_storage(out_root / split / "data.lmdb", "r") as store:
            found += [store.retrieve_sample(k) for k in store.get_all_keys()]
    return found


@pytest.mark.slow
def test_deepfakebench_preset(tree, tmp_path):
    cfg = load_config(PRESETS / "deepfakebench.yaml", {"dataset": {"name": "folder", "input_dir": str(tree)}, "output": {"dir": str(tmp_path)}, "processing": {"executor": "serial"}})
    assert (cfg.frames.num_frames, cfg.faces.image_size, cfg.faces.margin, cfg.faces.landmarks, cfg.faces.align) == (32, 256, 1.3, "dlib68", True)
    run_preprocessing(cfg)
    samples = _samples(tmp_path / "clips")
    assert len(samples) == 2
    for s in samples:
        assert s["data"].shape == (3, 32, 256, 256)
        meta = s["metadata"]
        assert meta["aligned"] and meta["face_coverage"] == 1.0
        assert np.asarray(meta["landmarks"], np.float32).shape == (32, 68, 2)


@pytest.mark.slow
def test_av_sync_preset_takes_a_one_second_25fps_window_with_its_audio(tree, tmp_path):
    r = run_cli("preprocess.py", "--dataset", "folder", "--preset", "av-sync", "--input-dir", str(tree), "--output-dir", str(tmp_path), "--workers", "1", "--no-progress")
    assert r.returncode == 0, r.stderr
    for s in _samples(tmp_path / "clips"):
        meta = s["metadata"]
        assert s["data"].shape == (3, 25, 224, 224)
        assert s["audio"].shape == (16000,)  # exactly the 1 s window at 16 kHz
        start, end = meta["audio_span_s"]
        assert end - start == pytest.approx(1.0, abs=1e-3)
        # 25 fps times mapped onto the 30 fps source: frame k of the window shows source frame floor(k * 30 / 25)
        idx = np.asarray(meta["frame_indices"])
        k0 = round(start * 25)
        assert idx.tolist() == [int(np.floor((k0 + k) * 30 / 25 + 1e-6)) for k in range(25)]


def test_resampled_indices_and_preset_cli_errors(tmp_path):
    idx, span = resampled_indices(60, 30.0, 25.0, 25, "window", 1)
    assert len(idx) == 25 and span[1] - span[0] == pytest.approx(1.0)
    assert np.all(np.diff(idx) >= 1) and idx.max() < 60
    r = run_cli("preprocess.py", "--dataset", "folder", "--preset", "av-sync", "--config", "configs/preprocessing.yaml", "--input-dir", str(tmp_path))
    assert r.returncode == 2 and "give --preset or --config, not both" in r.stderr
