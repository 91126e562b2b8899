"""Reliability under hostile conditions: full disk, concurrent readers and writers, dead readers."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from src.config import config_from_dict
from src.data import open_storage
from src.data.lmdb_storage import LMDBStorage
from src.errors import StorageError
from src.preprocessing.runner import run_preprocessing
from tests.conftest import REPO

SPLITS = ("train", "val", "test")


def _sample(i: int, size: int = 32) -> dict:
    rng = np.random.default_rng(i)
    return {"data": rng.integers(0, 255, (3, 4, size, size), dtype=np.uint8), "label": i % 2,
            "metadata": {"category": "AC"[i % 2], "method": ["real", "faceswap"][i % 2], "i": i}}


@pytest.fixture
def small_tmpfs(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_mid_run_then_resume_after_freeing_space(demo_root, small_tmpfs):
    cfg = config_from_dict({"dataset": {"input_dir": str(demo_root)}, "output": {"dir": str(small_tmpfs), "lmdb": {"commit_every": 2}},
                            "processing": {"executor": "serial"}})
    with pytest.raises(StorageError) as info:
        run_preprocessing(cfg)
    assert "No space left on device" in str(info.value) or "write failed" in str(info.value)
    # what was committed before the disk filled up is readable and intact
    stored_before = 0
    for split in SPLITS:
        path = small_tmpfs / "FakeAVCeleb_v1.2" / split / "data.lmdb"
        if path.exists():
            with open_storage(path) as store:
                for key in store.get_all_keys():
                    store.retrieve_sample(key)
                    stored_before += 1
    assert stored_before > 0
    # free space (grow the tmpfs), run the same thing again: it completes, nothing doubled
    subprocess.run(["mount", "-o", "remount,size=400m", str(small_tmpfs)], check=True)
    report = run_preprocessing(cfg)
    assert report.already_stored == stored_before
    paths = []
    for split in SPLITS:
        meta = json.loads((small_tmpfs / "FakeAVCeleb_v1.2" / split / "metadata.json").read_text())
        paths += [s["video_path"] for s in meta["samples"].values()]
    assert len(paths) == len(set(paths)) == stored_before + report.stored


def _reader(path: str, rounds: int, queue) -> None:
    """Read snapshots while a writer appends: counts grow, every record decodes, indexes agree."""
    from src.data.lmdb_storage import LMDBStorage as Store

    seen = 0
    try:
        with Store(path) as store:
            for _ in range(rounds):
                samples_db = store._db(b"samples")
                label_db = store._db(b"idx:label", dupsort=True)
                if samples_db is None or label_db is None:
                    time.sleep(0.01)
                    continue
                with store._begin() as txn:  # one snapshot
                    n = txn.stat(samples_db)["entries"]
                    n_idx = txn.stat(label_db)["entries"]
                    assert n == n_idx, f"index out of step: {n} samples, {n_idx} label entries"
                    assert n >= seen
                    seen = n
                    for key, value in txn.cursor(db=samples_db):
                        from src.data.record import decode_sample

                        decode_sample(value, bytes(key).decode())
                time.sleep(0.005)
        queue.put(("ok", seen))
    except BaseException as exc:  # report to the parent
        queue.put(("error", repr(exc)))


def test_readers_see_consistent_snapshots_while_a_writer_appends(tmp_path):
    path = tmp_path / "data.lmdb"
    with LMDBStorage(path, readonly=False, commit_every=3) as w:
        w.store_sample("sample_000000", _sample(0))
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    readers = [ctx.Process(target=_reader, args=(str(path), 60, queue)) for _ in range(3)]
    for r in readers:
        r.start()
    with LMDBStorage(path, readonly=False, commit_every=3) as w:
        for i in range(1, 120):
            w.store_sample(f"sample_{i:06d}", _sample(i))
            if i % 10 == 0:
                time.sleep(0.01)
    results = [queue.get(timeout=120) for _ in readers]
    for r in readers:
        r.join(30)
    assert all(status == "ok" for status, _ in results), results


def _read_all(path: str) -> int:
    from src.data import open_storage as op

    with op(path) as store:
        keys = store.get_all_keys()
        for key in keys:
            store.retrieve_sample(key)
        return len(keys)


def test_64_concurrent_reader_processes(tmp_path):
    path = tmp_path / "data.lmdb"
    with LMDBStorage(path, readonly=False) as w:
        w.store_batch({f"sample_{i:06d}": _sample(i) for i in range(1, 41)})
    with mp.get_context("fork").Pool(64) as pool:
        counts = pool.map(_read_all, [str(path)] * 64, chunksize=1)
    assert counts == [40] * 64


def test_reader_slots_of_killed_processes_are_reclaimed(tmp_path):
    path = tmp_path / "data.lmdb"
    with LMDBStorage(path, readonly=False) as w:
        w.store_batch({f"sample_{i:06d}": _sample(i) for i in range(1, 5)})
    code = (
        "import sys, time\n"
        "from src.data.lmdb_storage import LMDBStorage\n"
        "s = LMDBStorage(sys.argv[1])\n"
        "txn = s.env.begin()\n"
        "txn.get(b'x')\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path)], cwd=REPO, stdout=subprocess.PIPE, text=True) for _ in range(5)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    # One reader stays alive: LMDB resets the whole table when the last user has gone,
    # so stale slots only matter (and need reader_check) while others still use the store.
    survivor, killed = procs[0], procs[1:]
    for p in killed:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    try:
        with LMDBStorage(path) as store:
            assert store.reader_check() == 4
            assert store.reader_check() == 0
            assert len(store.get_all_keys()) == 4
    finally:
        survivor.kill()
        survivor.wait()


def test_interrupted_api_writer_leaves_a_readable_incomplete_store(tmp_path):
    path = tmp_path / "data.lmdb"
    code = (
        "import sys, os, numpy as np\n"
        "from src.data.lmdb_storage import LMDBStorage\n"
        "s = LMDBStorage(sys.argv[1], readonly=False, commit_every=5)\n"
        "for i in range(1, 1000):\n"
        "    s.store_sample(f'sample_{i:06d}', {'data': np.full((3, 2, 8, 8), i % 256, np.uint8), 'label': i % 2, 'metadata': {'category': 'A', 'method': 'real'}})\n"
        "    if i == 23: os.kill(os.getpid(), 9)\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(path)], cwd=REPO)
    assert r.returncode == -9
    with LMDBStorage(path) as store:
        assert not store.is_complete
        keys = store.get_all_keys()
        assert keys == [f"sample_{i:06d}" for i in range(1, 21)]  # four committed chunks of five
        assert sum(store.index_counts("label").values()) == 20
        for key in keys:
            assert store.retrieve_sample(key)["data"][0, 0, 0, 0] == int(key[-6:]) % 256
    # reopening for writing resumes and closing marks it complete
    with LMDBStorage(path, readonly=False) as store:
        store.store_sample("sample_000021", _sample(21))
    with LMDBStorage(path) as store:
        assert store.is_complete and len(store) == 21


def test_store_without_meta_is_a_named_error(tmp_path):
    import lmdb

    from src.errors import IncompleteStoreError

    path = tmp_path / "data.lmdb"
    env = lmdb.open(str(path), max_dbs=8)
    samples = env.open_db(b"samples")
    with env.begin(write=True) as txn:
        txn.put(b"sample_000001", b"whatever", db=samples)
    env.close()
    with pytest.raises(IncompleteStoreError, match="no __meta__"):
        LMDBStorage(path)


def test_foreign_non_utf8_key_is_a_named_error(tmp_path):
    import lmdb

    from src.errors import CorruptSampleError

    path = tmp_path / "data.lmdb"
    with LMDBStorage(path, readonly=False) as w:
        w.store_sample("sample_000001", _sample(1))
    env = lmdb.open(str(path), max_dbs=64)
    with env.begin(write=True) as txn:
        txn.put(b"sample_\xff", b"junk", db=env.open_db(b"samples", txn=txn))
    env.close()
    with LMDBStorage(path) as store, pytest.raises(CorruptSampleError, match="not UTF-8"):
        store.get_all_keys()


@pytest.mark.parametrize("fmt", ["lmdb", "hdf5", "numpy", "torch"])
def test_appending_without_naming_a_codec_keeps_the_stores_codec(tmp_path, fmt):
    from src.data.storage import DEFAULT_STORE_NAMES

    path = tmp_path / DEFAULT_STORE_NAMES[fmt]
    with open_storage(path, "w", fmt, codec="zstd") as w:
        w.store_sample("sample_000001", _sample(1))
    with open_storage(path, "w", fmt) as w:
        assert w.codec == "zstd"
        w.store_sample("sample_000002", _sample(2))
    with open_storage(path) as r:
        assert r.meta["codec"] == "zstd"
        assert np.array_equal(r.retrieve_sample("sample_000002")["data"], _sample(2)["data"])


def test_corrupt_sample_error_survives_torch_style_reraise():
    from src.errors import CorruptSampleError

    err = CorruptSampleError("sample_000007", "payload checksum mismatch")
    again = type(err)(str(err))  # what torch does with a worker's exception
    assert str(again) == str(err) and "sample_000007" in str(again)
    import pickle

    assert pickle.loads(pickle.dumps(err)).key == "sample_000007"


def test_a_bad_sample_fails_alone_and_queued_buffers_are_copies(tmp_path):
    path = tmp_path / "data.lmdb"
    buf = np.zeros((3, 2, 8, 8), np.uint8)
    with LMDBStorage(path, readonly=False, commit_every=10) as w:
        for i in range(1, 4):
            buf[:] = i  # the caller reuses one buffer
            w.store_sample(f"sample_{i:06d}", {"data": buf, "label": 0, "metadata": {}})
        with pytest.raises(ValueError, match="unsupported dtype"):
            w.store_sample("sample_000004", {"data": np.array(["a"]), "label": 0})
        with pytest.raises(TypeError, match="cannot be stored"):
            w.store_sample("sample_000005", {"data": buf, "label": 0, "metadata": {"x": object()}})
    with LMDBStorage(path) as r:
        assert r.get_all_keys() == ["sample_000001", "sample_000002", "sample_000003"]
        assert [int(r.retrieve_sample(k)["data"][0, 0, 0, 0]) for k in r.get_all_keys()] == [1, 2, 3]


def test_a_failed_commit_keeps_the_samples_queued(tmp_path, monkeypatch):
    path = tmp_path / "data.lmdb"
    store = LMDBStorage(path, readonly=False, commit_every=100)
    store.store_sample("sample_000001", _sample(1))
    real_write = LMDBStorage._write

    def full_disk(self, items, meta):
        raise StorageError("write failed (No space left on device)")

    monkeypatch.setattr(LMDBStorage, "_write", full_disk)
    with pytest.raises(StorageError):
        store.flush()
    monkeypatch.setattr(LMDBStorage, "_write", real_write)
    store.close()  # space is back: the queued sample is committed now
    with LMDBStorage(path) as r:
        assert r.get_all_keys() == ["sample_000001"] and r.is_complete


def test_a_record_declaring_a_huge_array_is_refused_before_allocation():
    import struct
    import zlib

    import msgpack

    from src.data.record import MAGIC, RECORD_VERSION, decode_sample
    from src.errors import CorruptSampleError

    header = msgpack.packb({"label": 0, "metadata": {}, "digest": 0, "arrays": [
        {"name": "data", "dtype": "|u1", "shape": [3, 100000, 4000, 4000], "codec": "zstd", "offset": 0, "length": 0, "frames": []}]})
    record = struct.pack("<4sHHII", MAGIC, RECORD_VERSION, 0, len(header), zlib.crc32(header)) + header
    record += b"\0" * ((-len(record)) % 64)
    with pytest.raises(CorruptSampleError, match="over the"):
        decode_sample(record, "sample_000001")
