"""A face detector, an executor and a catalog registered from outside src/ are used by name."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from src.config import config_from_dict
from src.data import open_storage
from src.preprocessing.runner import run_preprocessing
from tests.conftest import REPO
from tests.plugins import dummy_preprocessing as plugins


@pytest.fixture
def registered():
    plugins.register()
    yield
    plugins.unregister()


def test_registered_detector_executor_and_catalog_run_a_preprocessing(registered, demo_root, tmp_path):
    plugins.CountingDetector.frames = 0
    plugins.RecordingExecutor.tasks = 0
    cfg = config_from_dict(
        {
            "dataset": {"name": "mini", "input_dir": str(demo_root)},
            "output": {"dir": str(tmp_path)},
            "faces": {"detector": "counting_hog"},
            "processing": {"executor": "recording", "limit": 3},
        }
    )
    report = run_preprocessing(cfg)
    assert report.dataset == "MiniSet" and report.stored >= 1
    assert plugins.RecordingExecutor.tasks == 3
    assert plugins.CountingDetector.frames > 0
    stored = 0
    for split in ("train", "val", "test"):
        with open_storage(tmp_path / "MiniSet" / split / "data.lmdb") as store:
            stored += len(store)
    assert stored == report.stored


def test_preprocess_cli_loads_plugins_from_the_environment(demo_root, tmp_path):
    env = dict(os.environ, DEEPFAKE_DATA_PLUGINS="tests.plugins.autoregister_preprocessing", PYTHONPATH=str(REPO))
    args = [sys.executable, "preprocess.py", "--dataset", "mini", "--input-dir", str(demo_root), "--output-dir", str(tmp_path), "--limit", "2", "--no-progress"]
    cfg = tmp_path / "plugins.yaml"
    cfg.write_text("faces:\n  detector: counting_hog\nprocessing:\n  executor: recording\n")
    r = subprocess.run([*args, "--config", str(cfg)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "MiniSet" / "train" / "metadata.json").is_file()
    r = subprocess.run(args, cwd=REPO, env=dict(env, DEEPFAKE_DATA_PLUGINS="no_such_plugin_module"), capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "cannot import plugin module 'no_such_plugin_module'" in r.stderr


def test_a_catalogs_spec_drives_label_policies_and_metadata_json(demo_root, tmp_path):
    import json

    from src.datasets.catalog import CATALOGS, DatasetCatalog, DatasetSpec
    from src.errors import ConfigError

    spec = DatasetSpec(label_policies={"video": lambda v, a: v}, summary_fields=("video_path", "label", "method"), count_fields=("method",))
    CATALOGS.register("mini_spec", DatasetCatalog(spec, plugins.read_mini_catalog))
    try:
        base = {"dataset": {"name": "mini_spec", "input_dir": str(demo_root)}, "output": {"dir": str(tmp_path)}, "processing": {"executor": "serial", "limit": 2}}
        with pytest.raises(ConfigError, match="dataset.label_policy: invalid value 'multimodal'; must be one of video"):
            config_from_dict(base)
        run_preprocessing(config_from_dict({**base, "dataset": {**base["dataset"], "label_policy": "video"}}))
        doc = json.loads((tmp_path / "MiniSet" / "train" / "metadata.json").read_text())
        assert doc["samples"] and all(list(s) == ["video_path", "label", "method"] for s in doc["samples"].values())
        assert list(doc["counts"]) == ["method"]
    finally:
        CATALOGS.unregister("mini_spec")


def test_an_executor_taking_only_config_and_workers_still_builds():
    # Executors written before the shard writers took (config, workers): make_executor passes shards only when set.
    from src.config import config_from_dict
    from src.preprocessing.executors import make_executor
    from src.preprocessing.registries import EXECUTORS

    class TwoArgs:
        def __init__(self, config, workers):
            self.config, self.workers = config, workers

    EXECUTORS.register("two_args_test")(TwoArgs)
    try:
        made = make_executor(config_from_dict({"processing": {"executor": "two_args_test", "workers": 3}}))
        assert isinstance(made, TwoArgs) and made.workers == 3
    finally:
        EXECUTORS.unregister("two_args_test")
