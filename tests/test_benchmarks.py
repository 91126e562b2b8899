"""Smoke tests of ``benchmarks/run.py`` so the benchmarks do not rot.

* every contender of ``benchmarks/contenders.py`` round-trips a few tiny clips
  (fast);
* ``benchmarks/run.py --quick`` runs end to end as a subprocess and writes a CSV
  with every contender and metric, valid PNG plots and the markdown report
  (slow: about a minute).
"""

from __future__ import annotations

import csv
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
