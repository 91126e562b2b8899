"""The spec's facade (src/utils/lmdb_utils.py): its examples verbatim, queries, benchmark."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import src.utils.lmdb_utils as lmdb_utils
from src.data.lmdb_shards import is_shard_set
from src.data.lmdb_storage import LMDBStorage
from src.errors import ConfigError
from src.utils.lmdb_utils import (
    benchmark_lmdb_performance,
    query_samples,
    query_samples_by_category,
    query_samples_by_label,
    query_samples_by_method,
)
from tests.loader_helpers import SPEC_EXAMPLES, SPEC_TRAIN, build_spec_layout, build_store, run_spec_example

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT.parent / "shared" / "spec" / "lmdb-storage.md"
CUDA = torch.cuda.is_available()


@pytest.fixture(scope="module", params=["one_store", "shard_sets"])
def spec_dir(tmp_path_factory, request):
    """A working directory holding the spec's train/val stores at their documented paths.

    Every example runs twice: on ordinary LMDB stores, and on shard sets as the
    Ray executor writes them (``LMDBStorage(path)`` must read both).
    """
    root = tmp_path_factory.mktemp("spec")
    train, val = build_spec_layout(root, n_train=40, n_val=12, shards=3 if request.param == "shard_sets" else 0)
    assert is_shard_set(root / SPEC_TRAIN) == (request.param == "shard_sets")
    return root, train, val


@pytest.fixture()
def in_spec_dir(spec_dir, monkeypatch):
    monkeypatch.chdir(spec_dir[0])
    return spec_dir


def test_facade_exports():
    for name in lmdb_utils.__all__:
        assert getattr(lmdb_utils, name) is not None


@pytest.mark.skipif(not SPEC.exists(), reason="the spec lives in ../shared, absent here")
def test_examples_are_the_spec_verbatim():
    text = SPEC.read_text()
    for name, code in SPEC_EXAMPLES.items():
        assert code in text, name


# ----------------------------------------------------------------------------- the spec's examples, verbatim


def test_section2_loading(in_spec_dir):
    _, train, val = in_spec_dir
    ns = run_spec_example("loading", device="cpu", num_epochs=2)
    train_loader, val_loader = ns["train_loader"], ns["val_loader"]
    assert tuple(ns["data"].shape[1:]) == train.shape and ns["data"].dtype == torch.float32
    assert ns["labels"].dtype == torch.int64
    assert sorted(k for b in train_loader for k in b["key"]) == train.keys
    assert [k for b in val_loader for k in b["key"]] == val.keys  # validation in order
    assert train_loader.epoch == 2  # three passes: two in the example, one here


@pytest.mark.skipif(CUDA, reason="checks the error raised without CUDA")
def test_section2_loading_on_cuda_without_gpu(in_spec_dir):
    with pytest.raises(ConfigError, match="CUDA is not available"):
        run_spec_example("loading", device="cuda")


def test_section3_direct_access(in_spec_dir, capsys):
    ns = run_spec_example("direct_access")
    assert "Total samples: 40" in capsys.readouterr().out
    assert ns["sample"]["data"].shape == in_spec_dir[1].shape
    assert len(ns["samples"]) == 10


def test_section4_queries(in_spec_dir, capsys):
    _, train, _ = in_spec_dir
    ns = run_spec_example("queries")
    assert ns["real_samples"] == train.keys_where(label=0)
    assert ns["fake_samples"] == train.keys_where(label=1)
    assert ns["category_a_samples"] == train.keys_where(category="A")
    assert f"Real samples: {len(train.keys_where(label=0))}" in capsys.readouterr().out


def test_section5_benchmark(in_spec_dir, capsys):
    ns = run_spec_example("benchmark")
    perf = ns["perf"]
    assert perf["num_samples"] == 40  # 1000 requested, clamped to the store
    assert "ms per sample" in capsys.readouterr().out


def test_advanced_custom_transform(in_spec_dir):
    _, train, _ = in_spec_dir
    ns = run_spec_example("custom_transform", device="cpu")
    loader = ns["train_loader"]
    assert loader.num_workers > 0 and loader.worker_type == "process"
    batches = list(loader)
    assert sorted(k for b in batches for k in b["key"]) == train.keys
    assert all(b["data"].shape[1:] == train.shape and b["data"].dtype == torch.float32 for b in batches)
    in_process = lmdb_utils.create_data_loader(SPEC_TRAIN, transform=ns["transform"], batch_size=32, num_workers=0)
    assert next(iter(in_process))["data"].shape == (32,) + train.shape


@pytest.mark.skipif(CUDA, reason="checks the error raised without CUDA")
def test_advanced_custom_transform_on_cuda_without_gpu(in_spec_dir):
    with pytest.raises(ConfigError, match="CUDA is not available"):
        run_spec_example("custom_transform", device="cuda")


@pytest.mark.skipif(not CUDA, reason="needs a GPU")
@pytest.mark.parametrize("name", ["loading", "custom_transform"])
def test_examples_on_cuda(in_spec_dir, name):
    ns = run_spec_example(name, device="cuda")
    loader = ns["train_loader"]
    batch = next(iter(loader))
    assert batch["data"].is_cuda and batch["label"].is_cuda


def test_advanced_batch_processing(in_spec_dir):
    ns = run_spec_example("batch_processing")
    assert len(ns["keys"]) == 40 and ns["samples"][-1] is not None


# ----------------------------------------------------------------------------- queries


def test_queries_while_the_store_is_open(spec_dir):
    root, train, _ = spec_dir
    path = root / SPEC_TRAIN
    with LMDBStorage(path) as storage:
        assert query_samples_by_label(path, 0) == train.keys_where(label=0)
        assert query_samples_by_label(path, 1) == train.keys_where(label=1)
        assert query_samples_by_category(path, "D") == train.keys_where(category="D")
        assert query_samples_by_method(path, "fsgan") == train.keys_where(method="fsgan")
        assert query_samples(path, label=1, method="rtvc") == train.keys_where(label=1, method="rtvc")
        assert query_samples(path) == train.keys
        assert storage.retrieve_sample(train.keys[0])["label"] == train.labels[train.keys[0]]  # still usable
    with pytest.raises(ConfigError, match="not indexed"):
        query_samples(path, race="Asian (East)")


def test_queries_never_decode(spec_dir, monkeypatch):
    def no_decoding(*args, **kwargs):
        raise AssertionError("a query decoded a sample")

    monkeypatch.setattr(LMDBStorage, "_get", no_decoding)
    root, train, _ = spec_dir
    assert query_samples_by_method(root / SPEC_TRAIN, "wav2lip") == train.keys_where(method="wav2lip")


# ----------------------------------------------------------------------------- benchmark


def test_benchmark_keys_and_clamp(tmp_path, caplog):
    build_store(tmp_path / "data.lmdb", 6)
    with caplog.at_level(logging.INFO, logger="src.bench.storage_bench"):
        perf = benchmark_lmdb_performance(tmp_path / "data.lmdb", num_samples=1000)
    for key in (
        "avg_random_access_time_ms",
        "avg_sequential_access_time_ms",
        "samples_per_second_random",
        "p50_random_access_time_ms",
        "p95_random_access_time_ms",
        "p50_sequential_access_time_ms",
        "p95_sequential_access_time_ms",
        "mb_per_second_random",
        "mb_per_second_sequential",
    ):
        assert perf[key] > 0, key
    assert perf["num_samples"] == 6 and perf["requested_num_samples"] == 1000 and perf["total_samples"] == 6
    assert "benchmarking 6" in caplog.text
    assert benchmark_lmdb_performance(tmp_path / "data.lmdb", num_samples=3)["num_samples"] == 3
    with pytest.raises(ConfigError):
        benchmark_lmdb_performance(tmp_path / "data.lmdb", num_samples=0)


def test_bench_loader_script_quick(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_loader.py"), "--quick", "--no-cuda", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "name,metric,value,unit"
    rows = [line.split(",") for line in lines[1:] if line.count(",") == 3]
    names = {r[0] for r in rows}
    assert {"pickle_lmdb_w2", "loader_default", "loader_workers0", "loader_threads2", "memcpy", "ratio"} <= names
    assert all(float(r[2]) > 0 for r in rows)
    assert "summary:" in result.stdout
