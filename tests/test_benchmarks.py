"""Smoke tests of ``benchmarks/run.py`` so the benchmarks do not rot.

* every contender of ``benchmarks/contenders.py`` round-trips a few tiny clips
  (fast);
* ``benchmarks/run.py --quick`` runs end to end as a subprocess and writes a CSV
  with every contender and metric, valid PNG plots and the markdown report
  (slow: about a minute);
* ``benchmarks/bench_ray.py --quick`` (slow: a minute or two, Ray started eight
  times) and ``benchmarks/bench_shards.py --quick`` (a few seconds) run as
  subprocesses and print the CSV rows they promise, with sane values (no
  timing is asserted: timings are benchmark facts, not tests).
"""

from __future__ import annotations

import csv
import io
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.contenders import CONTENDERS, NotApplicable, NumpyPlain
from benchmarks.measure import CSV_COLUMNS, PREPROCESS_CONTENDERS, PREPROCESS_METRICS, RATIO_METRICS, STORAGE_METRICS, Settings, run_storage
from benchmarks.plots import PLOTS
from benchmarks.workload import clip_labels, drop_page_cache, make_clips, page_cache_fraction, psnr

ROOT = Path(__file__).resolve().parents[1]
TINY = (3, 2, 32, 32)


@pytest.mark.parametrize("name", list(CONTENDERS))
def test_contender_round_trip(name: str, tmp_path: Path) -> None:
    clips = make_clips(3, TINY, seed=1)
    contender = CONTENDERS[name](tmp_path, TINY)
    contender.prepare(len(clips))
    contender.write(clips, clip_labels(len(clips)))
    try:
        read_all = [contender.as_uint8(x) for x in contender.read_all()]
        assert len(read_all) == len(clips)
        quality = psnr(clips, read_all)
        assert quality > 30 if contender.lossy else math.isinf(quality)
        if contender.no_random_access is None:
            clip = contender.as_uint8(contender.read(2))
            assert psnr([clips[2]], [clip]) > 30 if contender.lossy else np.array_equal(clip, clips[2])
        else:
            with pytest.raises(NotApplicable):
                contender.read(0)
        assert contender.epoch("w0", batch_size=2, seed=0)() == len(clips)
        assert contender.disk_bytes() > 0
    finally:
        contender.close()


def test_drop_page_cache_empties_the_cache(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * (1 << 20))
    path.read_bytes()
    assert page_cache_fraction([path]) == pytest.approx(1.0)
    assert drop_page_cache([path], system_wide=False) == "fadvise"
    assert page_cache_fraction([path]) < 0.1


class _Broken(NumpyPlain):
    name = "broken"

    def read(self, i: int) -> np.ndarray:
        raise OSError("disk on fire")


def test_a_failing_contender_is_reported_not_fatal(tmp_path: Path) -> None:
    clips = make_clips(2, TINY)
    contenders = [_Broken(tmp_path, TINY), CONTENDERS["memcpy"](tmp_path, TINY)]
    rows, _ = run_storage(contenders, clips, clip_labels(2), Settings(repeats=1, batch_size=1, random_reads=2, cold_reads=1), cold=False)
    broken = [r for r in rows if r.contender == "broken"]
    assert {r.metric for r in broken} == set(STORAGE_METRICS)
    assert any(r.value is not None for r in broken)  # written before it failed
    assert all("error: write: OSError: disk on fire" in r.notes for r in broken)
    assert all(r.value is not None for r in rows if r.contender == "memcpy" and r.metric == "sequential_clips_per_s")


@pytest.mark.slow
def test_run_quick(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        # --fadvise-only: drop only the benchmark's own files, not the page cache of tests running beside it.
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--out", str(out), "--workdir", str(tmp_path), "--fadvise-only"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,  # the script must work from anywhere
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    # Its duration is a benchmark fact, not a test: --quick prints it and the README reports it.

    with open(out / "results.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
        rows = list(reader)
    table = {(r["contender"], r["metric"]): r for r in rows}
    assert len(table) == len(rows), "duplicate (contender, metric) rows"
    expected = [(c, m) for c in CONTENDERS for m in STORAGE_METRICS]
    expected += [(c, f"{m}_vs_{ref}") for c in CONTENDERS for m in RATIO_METRICS for ref in ("memcpy", "pickle")]
    expected += [(c, m) for c in PREPROCESS_CONTENDERS for m in PREPROCESS_METRICS]
    missing = [key for key in expected if key not in table]
    assert not missing, missing
    for row in rows:
        assert "error:" not in row["notes"], row
        if row["value"] == "":
            assert "n/a: " in row["notes"], row
        else:
            value = float(row["value"])
            assert value > 0 and not math.isnan(value), row

    def value(contender: str, metric: str) -> float | None:
        v = table[(contender, metric)]["value"]
        return None if v == "" else float(v)

    # What must have been measured on any machine, and what must be n/a with a reason.
    for c, cls in CONTENDERS.items():
        for metric in ("write_mb_per_s", "bytes_per_clip", "compression_ratio", "sequential_clips_per_s", "dataloader_w0_clips_per_s"):
            assert value(c, metric) is not None, (c, metric)
        if cls.no_random_access is None:
            assert value(c, "random_read_p50_ms") is not None, c
            assert value(c, "random_read_p95_ms") >= value(c, "random_read_p50_ms")
        if cls.no_random_access is None and cls.no_cold_read is None:
            assert value(c, "cold_read_p50_ms") is not None, c
            assert "page cache dropped with fadvise" in table[(c, "cold_read_p50_ms")]["notes"]
        assert math.isinf(value(c, "psnr_db")) != cls.lossy, c
        if cls.kind != "reference":
            assert value(c, "dataloader_w2_clips_per_s") is not None, c
    assert value("webdataset", "random_read_p50_ms") is None
    assert "sequential" in table[("webdataset", "random_read_p50_ms")]["notes"]
    assert value("lmdb_raw", "dataloader_default_clips_per_s") is not None
    assert value("lmdb_jpeg", "compression_ratio") > 3
    assert 25 < value("lmdb_jpeg", "psnr_db") < 80
    assert value("lmdb_zstd", "compression_ratio") > 1.05
    assert value("pickle_lmdb_u8", "dataloader_w0_clips_per_s_vs_pickle") == pytest.approx(1.0)
    assert value("memcpy", "sequential_clips_per_s_vs_memcpy") == pytest.approx(1.0)
    for c in PREPROCESS_CONTENDERS:
        assert value(c, "videos_per_s") > 0

    for name in PLOTS:
        path = out / name
        assert path.stat().st_size > 1000, name
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) >= 200, (name, image.size)
            assert np.asarray(image.convert("L")).std() > 1, f"{name} is blank"

    report = (out / "results.md").read_text()
    assert "benchmarks/run.py --quick" in report
    assert "| contender | kind |" in report and "| lmdb_raw | project |" in report
    assert "## Preprocessing" in report and "| cpu |" in report
    for name in PLOTS:
        assert f"({name})" in report
    assert proc.stdout.startswith(",".join(CSV_COLUMNS))


def _bench_csv(script: str, tmp_path: Path, timeout: int) -> tuple[dict[tuple[str, str], float], str]:
    """Run ``benchmarks/<script> --quick`` from ``tmp_path``; its CSV rows as ``{(name, metric): value}``, and its stderr."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick"], capture_output=True, text=True, timeout=timeout, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    reader = csv.DictReader(io.StringIO(proc.stdout))
    assert reader.fieldnames == ["name", "metric", "value", "unit"]
    rows = list(reader)
    table = {(r["name"], r["metric"]): float(r["value"]) for r in rows}
    assert len(table) == len(rows), "duplicate (name, metric) rows"
    assert all(r["unit"] for r in rows), [r for r in rows if not r["unit"]]
    return table, proc.stderr


def _check_present_and_sane(table: dict[tuple[str, str], float], expected: list[tuple[str, str]], zero: set[tuple[str, str]] = frozenset()) -> None:
    missing = [key for key in expected if key not in table]
    assert not missing, missing
    for key, value in table.items():
        assert math.isfinite(value), (key, value)
        if key in zero:
            assert value == 0, (key, value)
        elif not key[1].startswith("shards_"):  # a split's shard count may be 0 (a split that got no video)
            assert value > 0, (key, value)
        else:
            assert value >= 0, (key, value)


@pytest.mark.slow
def test_bench_ray_quick(tmp_path: Path) -> None:
    table, stderr = _bench_csv("bench_ray.py", tmp_path, timeout=600)
    run_metrics = ("videos_per_s", "steady_videos_per_s", "first_result_s", "first_stored_s", "tail_s", "wall_s",
                   "driver_cpu_ms_per_video", "driver_cpu_whole_run_ms_per_video", "worker_ms_per_video")
    ray_metrics = (*run_metrics, "get_ms_per_video", "payload_bytes_per_video")
    shard_metrics = ("shard_write_ms_per_video", "shards_published", "shards_per_split", "mean_shard_mb", "samples_per_shard", "shards_train", "shards_val", "shards_test")
    expected = [(name, m) for name in ("pool_w2", "pool_w1") for m in run_metrics]
    expected += [("clip", "array_bytes"), ("clip", "pickled_result_bytes"), ("writer", "ms_per_video"), ("import_ray", "seconds"), ("pool_executor_only", "videos_per_s")]
    zero = set()
    for mode in ("shards", "driver"):
        runs = (f"ray_local_w2_{mode}", f"ray_cluster_1node_{mode}", f"ray_cluster_2nodes_{mode}")
        expected += [(name, m) for name in runs for m in ray_metrics]
        expected += [(name, m) for name in runs for m in shard_metrics] if mode == "shards" else []
        expected += [(f"ray_executor_only_{mode}", m) for m in ("videos_per_s", "get_ms_per_video", "payload_bytes_per_video")]
        expected += [(f"ray_start_{mode}", m) for m in ("init_seconds", "first_actor_ready_seconds")]
        expected += [(f"ray_local_w2_{mode}_vs_pool_w2", m) for m in ("steady_speed_ratio", "whole_run_speed_ratio", "driver_cpu_ratio")]
        expected += [(f"ray_cluster_{mode}_2_vs_1_nodes", m) for m in ("steady_speedup", "whole_run_speedup")]
        expected += [(f"ray_executor_only_{mode}_vs_pool", "speed_ratio"), (f"to_driver_{mode}", "bytes_per_video")]
        if mode == "shards":  # the actors keep the clips: none reach the driver
            zero |= {(name, "payload_bytes_per_video") for name in (*runs, "ray_executor_only_shards")}
    expected += [("ray_local_w2_shards_vs_driver", m) for m in ("steady_speed_ratio", "whole_run_speed_ratio", "driver_cpu_ratio")]
    expected += [("to_driver_shards", "result_bytes"), ("to_driver_shards", "publish_bytes_per_video"), ("pool_w2_vs_w1", "steady_speedup")]
    _check_present_and_sane(table, expected, zero)
    # Structure, not speed: driver mode ships every clip, shards a small result; every video is in a published shard.
    assert table["ray_local_w2_driver", "payload_bytes_per_video"] == pytest.approx(table["clip", "array_bytes"], rel=0.01)
    assert table["to_driver_driver", "bytes_per_video"] > table["clip", "array_bytes"]
    assert table["to_driver_shards", "bytes_per_video"] < 10_000
    for name in ("ray_local_w2_shards", "ray_cluster_1node_shards", "ray_cluster_2nodes_shards"):
        assert table[name, "shards_per_split"] >= 1
        assert table[name, "shards_published"] == sum(table[name, f"shards_{split}"] for split in ("train", "val", "test"))
    assert "# reproduce: " in stderr and "bench_ray.py --quick" in stderr and "# machine: " in stderr


def test_bench_shards_quick(tmp_path: Path) -> None:
    table, stderr = _bench_csv("bench_shards.py", tmp_path, timeout=300)
    stores = ["single", "shards_1", "shards_8", "shards_64"]
    read_metrics = ("retrieve_p50_ms", "retrieve_p95_ms", "lookup_p50_us", "lookup_p95_us", "batch_lookup_ms", "batch_ms", "batch_clips_per_s",
                    "open_ms", "touch_all_shards_ms", "build_s", "store_mb")
    expected = [(name, m) for name in stores for m in read_metrics]
    expected += [(f"{name}_vs_single", m) for name in stores[1:]
                 for m in ("retrieve_p50_ratio", "retrieve_p95_ratio", "lookup_p50_ratio", "lookup_p95_ratio", "batch_lookup_ratio", "batch_ratio")]
    for count in (10, 100):
        expected += [(f"discovery_{count}", m) for m in ("open_ms", "open_cold_ms", "first_read_ms", "keys_ms", "open_us_per_shard", "manifests_mb", "build_s")]
        expected += [(f"discovery_single_{count}", m) for m in ("open_ms", "open_cold_ms", "first_read_ms", "keys_ms", "build_s")]
    _check_present_and_sane(table, expected)
    for name in stores:  # the same samples: the same bytes, give or take each shard's own metadata pages
        assert table[name, "store_mb"] == pytest.approx(table["single", "store_mb"], rel=0.1)
        assert table[name, "retrieve_p95_ms"] >= table[name, "retrieve_p50_ms"]
    assert table["discovery_100", "manifests_mb"] > table["discovery_10", "manifests_mb"]
    assert "# reproduce: " in stderr and "bench_shards.py --quick" in stderr and "# machine: " in stderr


@pytest.mark.slow
def test_bench_ray_long_quick(tmp_path: Path) -> None:
    table, stderr = _bench_csv("bench_ray_long.py", tmp_path, timeout=300)
    metrics = ("videos_per_s", "steady_videos_per_s", "wall_s", "first_result_s", "driver_cpu_ms_per_video")
    expected = [(name, m) for name in ("pool", "ray_shards") for m in metrics]
    expected += [("ray_vs_pool", "whole_run_time_ratio"), ("ray_vs_pool", "steady_time_ratio")]
    _check_present_and_sane(table, expected)
    assert table["ray_vs_pool", "whole_run_time_ratio"] == pytest.approx(table["pool", "videos_per_s"] / table["ray_shards", "videos_per_s"], rel=0.01)
    assert "# reproduce: " in stderr and "bench_ray_long.py --quick" in stderr and "# machine: " in stderr


@pytest.mark.slow
def test_bench_ray_batch_quick(tmp_path: Path) -> None:
    table, stderr = _bench_csv("bench_ray_batch.py", tmp_path, timeout=300)
    expected = [(name, m) for name in ("ray_batch1", "ray_batch4", "pool") for m in ("driver_cpu_ms_per_video", "steady_videos_per_s")]
    _check_present_and_sane(table, expected)
    assert "# reproduce: " in stderr and "bench_ray_batch.py --quick" in stderr and "# machine: " in stderr
