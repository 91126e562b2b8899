"""Every store format x codec: round trips, queries, self-description, damage, processes."""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from src.data.record import encode_sample
from src.data.storage import DEFAULT_STORE_NAMES, STORE_FORMAT_VERSION, Storage, detect_format, get_backend, open_storage
from src.errors import ConfigError, CorruptSampleError, StorageError, StoreVersionError
from tests.storage_helpers import (
    CODECS,
    FORMATS,
    PickleBomb,
    assert_close_clip,
    assert_sample_equal,
    flip_byte,
    make_sample,
    make_samples,
    payload_location,
    set_format_version,
    store_path,
)

N = 8
CONFIG = {"video": {"num_frames": 4, "fps": 25}, "faces": {"size": 32}}


def _write(path: Path, fmt: str, samples: dict, **options) -> None:
    with open_storage(path, "w", format=fmt, **options) as store:
        for key, sample in samples.items():
            store.store_sample(key, sample)


@pytest.fixture(scope="module")
def samples() -> dict:
    return make_samples(N, seed=1)


@pytest.fixture(scope="module")
def stores(tmp_path_factory, samples) -> dict[tuple[str, str], Path]:
    """One closed store per format and codec, written in shuffled key order, three commits."""
    root = tmp_path_factory.mktemp("stores")
    order = list(samples)
    np.random.default_rng(0).shuffle(order)
    out = {}
    for fmt in FORMATS:
        for codec in CODECS:
            path = store_path(root / codec, fmt)
            _write(path, fmt, {k: samples[k] for k in order}, codec=codec, commit_every=3, config=CONFIG)
            out[fmt, codec] = path
    return out


@pytest.fixture(params=FORMATS)
def fmt(request) -> str:
    return request.param


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("codec", CODECS)
def test_round_trip_every_format_and_codec(stores, samples, fmt: str, codec: str) -> None:
    path = stores[fmt, codec]
    assert detect_format(path) == fmt
    with open_storage(path) as store:
        assert type(store) is get_backend(fmt) and store.format == fmt
        for key, want in samples.items():
            assert_sample_equal(store.retrieve_sample(key), want, exact_data=(codec != "jpeg"))
        batch = store.retrieve_batch(list(samples))
        for got, want in zip(batch, samples.values()):
            assert_sample_equal(got, want, exact_data=(codec != "jpeg"))
        unverified = store.retrieve_sample("sample_000001", verify=False)
        assert_sample_equal(unverified, samples["sample_000001"], exact_data=(codec != "jpeg"))


def test_jpeg_decodes_identically_in_every_format(stores, samples) -> None:
    reference = {}
    with open_storage(stores["lmdb", "jpeg"]) as store:
        for key in samples:
            reference[key] = store.retrieve_sample(key)["data"]
            assert_close_clip(reference[key], samples[key]["data"])
    for fmt in FORMATS:
        with open_storage(stores[fmt, "jpeg"]) as store:
            for key in samples:
                assert store.retrieve_sample(key)["data"].tobytes() == reference[key].tobytes(), (fmt, key)


@pytest.mark.parametrize("dtype", ["<i2", ">i2", "<f2", ">f8", "|b1", "<u4"])
def test_unusual_dtypes_round_trip(tmp_path, fmt: str, dtype: str) -> None:
    rng = np.random.default_rng(5)
    data = (rng.standard_normal((2, 3, 5)) * 100).astype(dtype)
    samples = {"a": {"data": data, "label": 3, "metadata": {}, "audio": data[0, 0]}, "b": {"data": data[:0], "label": 0, "metadata": {}}}
    path = store_path(tmp_path, fmt)
    _write(path, fmt, samples, codec="zstd")
    with open_storage(path) as store:
        for key, want in samples.items():
            assert_sample_equal(store.retrieve_sample(key), want)


# ----------------------------------------------------------------------------- keys, queries


def test_keys_len_contains_and_missing(stores, samples, fmt: str) -> None:
    with open_storage(stores[fmt, "raw"]) as store:
        assert store.get_all_keys() == sorted(samples) == list(store) == store.keys()
        assert len(store) == N
        assert "sample_000003" in store and "sample_999999" not in store and 3 not in store
        with pytest.raises(KeyError):
            store.retrieve_sample("sample_999999")
        batch = store.retrieve_batch(["sample_000002", "sample_999999", "sample_000005"])
        assert batch[1] is None
        assert_sample_equal(batch[0], samples["sample_000002"])
        assert_sample_equal(batch[2], samples["sample_000005"])


def _expected(samples: dict, **want) -> list[str]:
    def value(sample, field):
        return sample["label"] if field == "label" else sample["metadata"].get(field)

    return sorted(k for k, s in samples.items() if all(value(s, f) == v for f, v in want.items()))


def test_queries(stores, samples, fmt: str) -> None:
    with open_storage(stores[fmt, "zstd"]) as store:
        assert store.indexed_fields == ("label", "category", "method")
        assert store.query(label=1) == _expected(samples, label=1) != []
        assert store.query(label=np.int64(0)) == store.query(label="0") == _expected(samples, label=0)
        assert store.query(category="B") == _expected(samples, category="B") != []
        assert store.query(method="fsgan") == _expected(samples, method="fsgan") != []
        assert store.query(label=1, category="D") == _expected(samples, label=1, category="D") != []
        assert store.query(label=0, method="fsgan") == []
        assert store.query(category="Z") == []
        assert store.query() == sorted(samples)
        with pytest.raises(ConfigError, match="gender"):
            store.query(gender="men")


def test_index_counts(stores, samples, fmt: str) -> None:
    with open_storage(stores[fmt, "raw"]) as store:
        labels = [s["label"] for s in samples.values()]
        assert store.index_counts("label") == {"0": labels.count(0), "1": labels.count(1)}
        methods = [s["metadata"]["method"] for s in samples.values()]
        assert store.index_counts("method") == {m: methods.count(m) for m in sorted(set(methods))}
        with pytest.raises(ConfigError):
            store.index_counts("race")


def test_missing_field_indexes_as_empty(tmp_path, fmt: str) -> None:
    rng = np.random.default_rng(2)
    a, b = make_sample(rng, 0), make_sample(rng, 1)
    del b["metadata"]["method"]
    path = store_path(tmp_path, fmt)
    _write(path, fmt, {"a": a, "b": b})
    with open_storage(path) as store:
        assert store.query(method=None) == ["b"]
        assert store.index_counts("method") == {"": 1, "real": 1}


def test_no_indexes(tmp_path, samples, fmt: str) -> None:
    path = store_path(tmp_path, fmt)
    _write(path, fmt, dict(list(samples.items())[:3]), create_indexes=False)
    with open_storage(path) as store:
        assert store.indexed_fields == ()
        assert len(store) == 3
        with pytest.raises(ConfigError):
            store.query(label=1)


# ----------------------------------------------------------------------------- self-description


@pytest.mark.parametrize("codec", CODECS)
def test_meta_describes_the_store(stores, fmt: str, codec: str) -> None:
    with open_storage(stores[fmt, codec]) as store:
        meta = store.meta
        assert meta["format"] == fmt and meta["format_version"] == STORE_FORMAT_VERSION
        assert meta["codec"] == codec and meta["complete"] is True and store.is_complete
        assert meta["num_samples"] == N
        assert meta["config"] == CONFIG
        assert meta["index_fields"] == ["label", "category", "method"]
        assert meta["schema"]["data"] == {"dtype": "|u1", "shape": [3, 4, 32, 32]}
        assert meta["schema"]["audio"] == {"dtype": "<f4", "shape": [640]}


def test_store_is_incomplete_until_closed(tmp_path, samples, fmt: str) -> None:
    path = store_path(tmp_path, fmt)
    store = open_storage(path, "w", format=fmt, commit_every=2)
    store.store_batch(dict(list(samples.items())[:3]))
    assert store.meta["complete"] is False
    store.close(complete=False)
    with open_storage(path) as reader:
        assert not reader.is_complete and len(reader) == 3
    with pytest.raises(RuntimeError):
        with open_storage(path, "w") as writer:
            writer.store_sample("sample_000009", samples["sample_000001"])
            raise RuntimeError("stop")
    with open_storage(path) as reader:
        assert not reader.is_complete and len(reader) == 4


def _killed_writer(path: str, fmt: str, samples: dict) -> None:
    store = open_storage(path, "w", format=fmt, commit_every=2)
    for key, sample in samples.items():
        store.store_sample(key, sample)
    os._exit(0)  # die without flushing the last sample or writing the completion flag


def test_writer_killed_between_commits_leaves_committed_samples(tmp_path, samples, fmt: str) -> None:
    path = store_path(tmp_path, fmt)
    five = dict(list(samples.items())[:5])
    proc = multiprocessing.get_context("fork").Process(target=_killed_writer, args=(str(path), fmt, five))
    proc.start()
    proc.join(30)
    assert proc.exitcode == 0
    with open_storage(path) as store:
        assert not store.is_complete
        assert store.get_all_keys() == sorted(five)[:4]
        for key in store.get_all_keys():
            assert_sample_equal(store.retrieve_sample(key), samples[key])
    with open_storage(path, "w") as store:  # and the writer can resume
        store.store_sample("sample_000004", samples["sample_000004"])
    with open_storage(path) as store:
        assert store.is_complete and len(store) == 5


def test_reopen_and_append(tmp_path, samples, fmt: str) -> None:
    path = store_path(tmp_path, fmt)
    items = list(samples.items())
    _write(path, fmt, dict(items[:4]), codec="zstd", config=CONFIG)
    with open_storage(path, "w", codec="zstd") as store:
        assert len(store) == 4
        for key, sample in items[4:]:
            store.store_sample(key, sample)
    with open_storage(path) as store:
        assert store.get_all_keys() == sorted(samples)
        assert store.query(label=1) == _expected(samples, label=1)
        assert store.meta["num_samples"] == N and store.meta["config"] == CONFIG and store.is_complete
        for key, want in samples.items():
            assert_sample_equal(store.retrieve_sample(key), want)


def test_overwrite_replaces_sample_and_fixes_indexes(tmp_path, samples, fmt: str) -> None:
    path = store_path(tmp_path, fmt)
    _write(path, fmt, samples)
    key = "sample_000001"  # label 1, category B
    new = make_sample(np.random.default_rng(99), 2)  # label 0, category C, no "fsgan"
    new["metadata"]["category"] = "Q"
    with open_storage(path, "w") as store:
        store.store_sample(key, new)
        assert len(store) == N
    with open_storage(path) as store:
        assert_sample_equal(store.retrieve_sample(key), new)
        assert len(store) == N and store.get_all_keys() == sorted(samples)
        assert key not in store.query(label=1) and key in store.query(label=0)
        assert store.query(category="Q") == [key] and key not in store.query(category="B")
        assert sum(store.index_counts("label").values()) == N
    with open_storage(path, "w", commit_every=100) as store:  # twice within one commit: the last wins
        store.store_sample(key, samples[key])
        store.store_sample(key, new)
        store.store_sample(key, samples[key])
    with open_storage(path) as store:
        assert_sample_equal(store.retrieve_sample(key), samples[key])
        assert store.query(category="Q") == [] and key in store.query(label=1)
        assert sum(store.index_counts("category").values()) == N


@pytest.mark.parametrize("fmt", ["numpy", "torch"])
def test_file_store_overwrite_never_touches_the_indexed_file(tmp_path, samples, fmt: str) -> None:
    path = store_path(tmp_path, fmt)
    key = "sample_000001"
    _write(path, fmt, {key: samples[key]})
    names = []
    for round_ in range(3):
        before = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}
        indexed = json.loads((path / "index.json").read_text())["samples"][key]["arrays"]["data"]["file"]
        with open_storage(path, "w") as store:
            store.store_sample(key, samples[f"sample_00000{round_ + 2}"])
        entry = json.loads((path / "index.json").read_text())["samples"][key]
        names.append(entry["arrays"]["data"]["file"])
        assert names[-1] != indexed and indexed in before  # written beside the indexed file ...
        assert not (path / indexed).exists()  # ... which is removed once the new index is in place
        with open_storage(path) as store:
            assert_sample_equal(store.retrieve_sample(key), samples[f"sample_00000{round_ + 2}"])
    assert names[0].startswith("rewritten/") and not names[1].startswith("rewritten/") and names[2] == names[0]
    files = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
    assert files == sorted([".writer.lock", "index.json", *{a["file"] for a in entry["arrays"].values()}])


def test_write_validation(tmp_path, samples, fmt: str) -> None:
    path = store_path(tmp_path, fmt)
    with open_storage(path, "w", format=fmt) as store:
        for bad_key in ("", "__meta__", "a\\b"):
            with pytest.raises(ValueError):
                store.store_sample(bad_key, samples["sample_000001"])
        with pytest.raises(ValueError):
            store.store_sample("x", {"data": np.zeros(2), "label": "fake"})
        with pytest.raises(ValueError):
            store.store_sample("x", {"label": 1})
        store.store_sample("ok", samples["sample_000001"])
    with open_storage(path) as store:
        with pytest.raises(StorageError, match="read-only"):
            store.store_sample("y", samples["sample_000001"])
        assert store.get_all_keys() == ["ok"]
    with pytest.raises(ConfigError):
        open_storage(path, "w", codec="png")


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "lmdb"])
def test_file_stores_reject_path_like_keys(tmp_path, samples, fmt: str) -> None:
    with open_storage(store_path(tmp_path, fmt), "w", format=fmt) as store:
        for bad in ("../evil", "a/b", ".hidden"):
            with pytest.raises(ValueError):
                store.store_sample(bad, samples["sample_000001"])


def test_open_missing_or_unknown(tmp_path, fmt: str) -> None:
    with pytest.raises(StorageError):
        open_storage(store_path(tmp_path, fmt))
    with pytest.raises(StorageError):
        get_backend(fmt)(store_path(tmp_path, fmt))
    with pytest.raises(ConfigError):
        open_storage(tmp_path / "x", format="parquet")
    with pytest.raises(ConfigError):
        open_storage(tmp_path / "x", mode="a")
    assert detect_format(tmp_path / DEFAULT_STORE_NAMES[fmt]) == fmt


# ----------------------------------------------------------------------------- damage


@pytest.mark.parametrize("codec", CODECS)
def test_damaged_payload_raises_corrupt_sample_error(tmp_path, samples, fmt: str, codec: str) -> None:
    path = store_path(tmp_path, fmt)
    subset = dict(list(samples.items())[:3])
    _write(path, fmt, subset, codec=codec)
    victim = "sample_000001"
    file, offset = payload_location(path, fmt, victim)
    flip_byte(file, offset)
    with open_storage(path) as store:
        with pytest.raises(CorruptSampleError, match=victim) as info:
            store.retrieve_sample(victim)
        assert info.value.key == victim
        with pytest.raises(CorruptSampleError):
            store.retrieve_batch(list(subset))
        for key in subset.keys() - {victim}:  # the damage stays local
            assert_sample_equal(store.retrieve_sample(key), subset[key], exact_data=(codec != "jpeg"))


def test_damaged_metadata_raises_corrupt_sample_error(tmp_path, samples, fmt: str) -> None:
    if fmt in ("numpy", "torch"):
        pytest.skip("label and metadata live in index.json (and, for torch, are cross-checked against the .pt)")
    path = store_path(tmp_path, fmt)
    sample = dict(samples["sample_000001"], metadata={"category": "UNIQUE-MARKER"})
    _write(path, fmt, {"sample_000001": sample})
    file = path / "data.mdb" if fmt == "lmdb" else path
    blob = file.read_bytes()
    flip_byte(file, blob.find(b"UNIQUE-MARKER") + 3, 0x01)
    with open_storage(path) as store:
        with pytest.raises(CorruptSampleError, match="sample_000001"):
            store.retrieve_sample("sample_000001")


def test_torch_label_mismatch_with_index_is_corrupt(tmp_path, samples) -> None:
    import torch

    path = store_path(tmp_path, "torch")
    _write(path, "torch", {"k": samples["sample_000001"]})
    obj = torch.load(path / "k.pt", weights_only=True)
    obj["label"] = 0
    torch.save(obj, path / "k.pt")
    with open_storage(path) as store:
        with pytest.raises(CorruptSampleError, match="disagree"):
            store.retrieve_sample("k")


def test_missing_payload_file_is_corrupt(tmp_path, samples) -> None:
    for fmt, name in (("numpy", "k.data.npy"), ("torch", "k.pt")):
        path = store_path(tmp_path, fmt)
        _write(path, fmt, {"k": samples["sample_000001"]})
        (path / name).unlink()
        with open_storage(path) as store:
            with pytest.raises(CorruptSampleError, match="missing"):
                store.retrieve_sample("k")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_planted_pickles_are_refused_and_never_run(tmp_path, samples) -> None:
    import lmdb
    import torch

    marker = tmp_path / "pwned"
    bomb = pickle.dumps({"data": PickleBomb(marker), "label": 1, "metadata": {}})
    # LMDB: a pickle written straight into the samples sub-database.
    path = store_path(tmp_path, "lmdb")
    _write(path, "lmdb", {"sample_000001": samples["sample_000001"]})
    env = lmdb.open(str(path), max_dbs=64)
    with env.begin(write=True, db=env.open_db(b"samples")) as txn:
        txn.put(b"sample_000001", bomb)
        txn.put(b"sample_000002", bomb)
    env.close()
    with open_storage(path) as store:
        with pytest.raises(CorruptSampleError, match="sample_000001"):
            store.retrieve_sample("sample_000001")
        with pytest.raises(CorruptSampleError, match="sample_000002"):
            store.retrieve_batch(["sample_000002"])
    # numpy: a pickled object array (and a bare pickle) in place of a .npy file.
    path = store_path(tmp_path, "numpy")
    _write(path, "numpy", {"a": samples["sample_000001"], "b": samples["sample_000002"]})
    np.save(path / "a.data.npy", np.array([PickleBomb(marker)], dtype=object), allow_pickle=True)
    (path / "b.data.npy").write_bytes(bomb)
    with open_storage(path) as store:
        for key in ("a", "b"):
            with pytest.raises(CorruptSampleError, match=repr(key)):
                store.retrieve_sample(key)
    # torch: a .pt holding an arbitrary object.
    path = store_path(tmp_path, "torch")
    _write(path, "torch", {"a": samples["sample_000001"], "b": samples["sample_000002"]})
    torch.save({"data": PickleBomb(marker), "label": 1, "metadata": {}}, path / "a.pt")
    (path / "b.pt").write_bytes(bomb)
    with open_storage(path) as store:
        for key in ("a", "b"):
            with pytest.raises(CorruptSampleError, match=repr(key)):
                store.retrieve_sample(key)
    assert not marker.exists()


def test_wrong_format_version_raises_store_version_error(tmp_path, samples, fmt: str) -> None:
    path = store_path(tmp_path, fmt)
    _write(path, fmt, {"k": samples["sample_000001"]})
    set_format_version(path, fmt, STORE_FORMAT_VERSION + 1)
    with pytest.raises(StoreVersionError, match=str(STORE_FORMAT_VERSION + 1)):
        open_storage(path)
    with pytest.raises(StoreVersionError):
        open_storage(path, "w")


def test_lmdb_record_of_newer_version_raises_store_version_error(tmp_path, samples) -> None:
    import lmdb

    path = store_path(tmp_path, "lmdb")
    _write(path, "lmdb", {"k": samples["sample_000001"]})
    record = bytearray(encode_sample(samples["sample_000001"]))
    record[4] = 9
    env = lmdb.open(str(path), max_dbs=64)
    with env.begin(write=True, db=env.open_db(b"samples")) as txn:
        txn.put(b"k", bytes(record))
    env.close()
    with open_storage(path) as store, pytest.raises(StoreVersionError):
        store.retrieve_sample("k")


def test_file_store_interrupted_before_index_keeps_previous_index(tmp_path, samples, monkeypatch) -> None:
    import src.data.file_index as file_index

    items = list(samples.items())
    for fmt in ("numpy", "torch"):
        path = store_path(tmp_path, fmt)
        _write(path, fmt, dict(items[:2]))
        store = open_storage(path, "w")

        def boom(*args, **kwargs):
            raise OSError("disk full")

        monkeypatch.setattr(file_index, "atomic_write", boom)
        store.store_sample(items[0][0], items[5][1])  # an overwrite ...
        store.store_sample(items[2][0], items[2][1])  # ... and a new sample
        with pytest.raises(OSError):
            store.flush()
        monkeypatch.undo()
        # The writer "dies" here: its process would release the writer lock with it.
        store._writer_lock.close()
        store._writer_lock, store._closed = None, True
        (path / f"leftover.data.npy.{os.getpid()}.tmp").write_bytes(b"partial")
        with open_storage(path) as reader:  # the overwritten sample's previous version is intact
            assert reader.get_all_keys() == [items[0][0], items[1][0]]
            assert_sample_equal(reader.retrieve_sample(items[0][0]), items[0][1])
            assert_sample_equal(reader.retrieve_sample(items[1][0]), items[1][1])
        with open_storage(path, "w"):
            pass
        assert not list(path.glob("*.tmp"))


def test_file_store_refuses_a_second_writer(tmp_path, samples) -> None:
    for fmt in ("numpy", "torch"):
        path = store_path(tmp_path, fmt)
        with open_storage(path, "w", fmt) as first:
            first.store_sample("sample_000001", samples["sample_000001"])
            first.flush()
            with pytest.raises(StorageError, match="another writer"):
                open_storage(path, "w", fmt)
            with open_storage(path) as reader:  # readers are welcome
                assert reader.get_all_keys() == ["sample_000001"]
        with open_storage(path, "w", fmt):  # released on close
            pass


# ----------------------------------------------------------------------------- LMDB specifics


@pytest.mark.slow
def test_lmdb_map_grows_past_a_tiny_initial_size(tmp_path) -> None:
    from src.data.lmdb_storage import LMDBStorage

    path = store_path(tmp_path, "lmdb")
    rng = np.random.default_rng(0)
    clips = [rng.integers(0, 256, (3, 16, 112, 112), dtype=np.uint8) for _ in range(3)]  # 602 KB each
    n = 180  # ~108 MB of records through a 10 MB initial map
    with LMDBStorage(path, readonly=False, map_size_gb=0.01, commit_every=64) as store:
        for i in range(n):
            store.store_sample(f"sample_{i:06d}", {"data": clips[i % 3], "label": i % 2, "metadata": {}})
    assert (path / "data.mdb").stat().st_size > 100 * 1024**2
    with LMDBStorage(path) as store:
        assert len(store) == n
        for i in (0, n // 2, n - 1):
            assert store.retrieve_sample(f"sample_{i:06d}")["data"].tobytes() == clips[i % 3].tobytes()


def test_lmdb_same_path_opened_many_times_in_one_process(tmp_path, samples) -> None:
    from src.data.lmdb_storage import LMDBStorage

    path = store_path(tmp_path, "lmdb")
    items = list(samples.items())
    with LMDBStorage(path, readonly=False) as writer:
        writer.store_batch(dict(items[:2]))
        with open_storage(path) as reader, LMDBStorage(path, readonly=True) as reader2:  # readers beside the open writer
            assert reader.get_all_keys() == reader2.get_all_keys() == sorted(k for k, _ in items[:2])
            writer.store_batch(dict(items[2:4]))
            assert len(reader) == 4
            assert_sample_equal(reader2.retrieve_sample(items[3][0]), items[3][1])
    with LMDBStorage(path) as a:
        with LMDBStorage(path) as b, open_storage(path) as c:
            assert len(a) == len(b) == len(c) == 4
        assert_sample_equal(a.retrieve_sample(items[0][0]), items[0][1])  # closing b and c left a working
    reader = LMDBStorage(path)
    with pytest.raises(StorageError, match="read-only"):
        LMDBStorage(path, readonly=False)
    reader.close()
    with LMDBStorage(path, readonly=False) as writer:  # once the readers are closed, a writer may open
        writer.store_sample(items[4][0], items[4][1])


# ----------------------------------------------------------------------------- DataLoader workers


class _StoreDataset:
    """A map-style dataset over several stores, each held as a path or as an open store object."""

    def __init__(self, sources: list[tuple[str, str | Storage]], keys: list[str]) -> None:
        self.sources = sources
        self.items = [(i, key) for i in range(len(sources)) for key in keys]
        self._opened: dict[int, Storage] = {}

    def __len__(self) -> int:
        return len(self.items)

    def _store(self, i: int) -> Storage:
        source = self.sources[i][1]
        if isinstance(source, Storage):
            return source
        if i not in self._opened:  # opened lazily, once per worker
            self._opened[i] = open_storage(source)
        return self._opened[i]

    def __getitem__(self, index: int) -> dict:
        i, key = self.items[index]
        sample = self._store(i).retrieve_sample(key)
        return {"source": i, "key": key, "data": sample["data"], "label": sample["label"], "pid": os.getpid()}


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_stores_in_dataloader_workers(stores, samples, context: str) -> None:
    from torch.utils.data import DataLoader

    opened = [open_storage(stores[fmt, "raw"]) for fmt in FORMATS]
    sources: list[tuple[str, str | Storage]] = []
    for fmt, store in zip(FORMATS, opened):
        sources.append((fmt, str(stores[fmt, "raw"])))
        sources.append((fmt, store))
    keys = sorted(samples)
    dataset = _StoreDataset(sources, keys)
    loader = DataLoader(dataset, batch_size=4, shuffle=False, num_workers=2, multiprocessing_context=context)
    seen = set()
    pids = set()
    for batch in loader:
        for j, key in enumerate(batch["key"]):
            source = int(batch["source"][j])
            want = samples[key]
            assert batch["data"][j].numpy().tobytes() == want["data"].tobytes(), (sources[source][0], key)
            assert int(batch["label"][j]) == want["label"]
            seen.add((source, key))
            pids.add(int(batch["pid"][j]))
    assert seen == {(i, k) for i in range(len(sources)) for k in keys}
    assert os.getpid() not in pids and len(pids) == 2
    for store in opened:  # the parent's handles still work after the workers used theirs
        assert_sample_equal(store.retrieve_sample(keys[0]), samples[keys[0]])
        store.close()


def test_writer_cannot_be_sent_to_another_process(tmp_path, fmt: str) -> None:
    with open_storage(store_path(tmp_path, fmt), "w", format=fmt) as store:
        with pytest.raises(StorageError):
            pickle.dumps(store)


def test_index_json_is_plain_json(stores) -> None:
    for fmt in ("numpy", "torch"):
        doc = json.loads((stores[fmt, "raw"] / "index.json").read_text())
        assert doc["format"] == fmt and doc["meta"]["complete"] is True
        entry = doc["samples"]["sample_000001"]
        assert set(entry) >= {"label", "metadata", "index", "checksums", "arrays"}
        assert entry["index"] == {"label": "1", "category": "B", "method": "fsgan"}


# ----------------------------------------------------------------------------- benchmark smoke test


def test_bench_storage_quick_run_prints_csv(tmp_path, capsys) -> None:
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_storage.py"
    spec = importlib.util.spec_from_file_location("bench_storage", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--quick", "--shape", "3,4,32,32", "--workdir", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert lines[0] == "name,metric,value,unit"
    rows = {(name, metric): float(value) for name, metric, value, _ in (line.split(",") for line in lines[1:])}
    for label in ("small", "large"):
        assert rows[f"read/{label}/retrieve_vs_copyto", "ratio"] > 0
    for fmt in FORMATS:
        for codec in CODECS:
            assert rows[f"write/{fmt}/{codec}", "throughput"] > 0 and rows[f"size/{fmt}/{codec}", "bytes_per_clip"] > 0
    assert "retrieve_sample / copyto" in err
