"""Sharded LMDB stores (``src/data/lmdb_shards.py``): a shard set reads as one store.

Every shard set here is built the way a preprocessing run builds one: the
driver holds the set's metadata (a write-mode :class:`ShardedLMDBStorage`)
while :class:`ShardWriter` s write node-local shards and publish them. An
ordinary :class:`LMDBStorage` holding the same samples is the reference.
Real LMDB throughout; no Ray, no mocks. Covered:

* reading: keys, samples, byte-identical raw records, queries, index counts,
  metadata, ``len``, completeness; ``LMDBStorage(path)`` / ``open_storage``
  return the set; the per-process shard cache bounded by ``max_open_shards``;
* writing: sealing by size and by age; unpublished shards dropped on close;
* the commit point: an interrupted publish (a shard without a manifest, a
  staging leftover) is ignored by readers and removed by the next write-mode open;
* damage: a corrupt or wrong-version manifest, a resized shard file, a flipped
  record byte (the same error as the single store's);
* duplicate keys (a retried video) read once and counted once;
* a resumed run's write-mode reopen, ``refresh()`` of an open reader (shards
  published in any name order);
* writer work directories: a dead writer's removed, a live one's kept; a set
  that cannot be written is refused with the fix named;
* ``inspect_data.py info`` and ``verify --strict`` on a set;
* batch loaders: the same batches as the single store (threads and worker
  processes), resuming mid-epoch from a saved state, a list of stores.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from src.data import open_storage
from src.data.fsio import TMP_SUFFIX
from src.data.lmdb_shards import (
    MANIFEST_VERSION,
    SHARDS_DIR,
    SHARDSET_NAME,
    ShardedLMDBStorage,
    ShardTarget,
    ShardWriter,
    compact_shard_set,
    is_shard_set,
    read_manifests,
    remove_stale_workdirs,
)
from src.data.lmdb_storage import LMDBStorage
from src.data.storage import detect_format
from src.errors import CorruptSampleError, IncompleteStoreError, StorageError
from src.utils.lmdb_utils import create_data_loader
from tests.conftest import REPO, run_cli
from tests.storage_helpers import assert_sample_equal, flip_byte, make_samples, payload_location

N = 30
FIELDS = ("label", "category", "method")
#: The options the runner gives the driver's store and every shard (``_open_stores``, ``_shard_target``).
OPTIONS: dict[str, Any] = {
    "codec": "raw",
    "codec_options": {"jpeg_quality": 95, "zstd_level": 3},
    "create_indexes": True,
    "index_fields": FIELDS,
    "config": {"plan_fingerprint": "test-shards"},
    "map_size_gb": 0.05,
}

Items = list[tuple[str, dict[str, Any]]]


# ----------------------------------------------------------------------------- building sets


def sample_bytes(sample: dict[str, Any]) -> int:
    """The array bytes :class:`ShardWriter` counts towards ``seal_bytes``."""
    return sum(int(sample[name].nbytes) for name in ("data", "audio") if sample.get(name) is not None)


def new_writer(store: Path, local: Path, **target: Any) -> ShardWriter:
    """A worker's writer for the ``train`` set at ``store``, as an actor makes it."""
    return ShardWriter(ShardTarget(stores={"train": str(store)}, local_dir=str(local), options=OPTIONS, **target))


def publish(store: Path, local: Path, items: Items, **target: Any) -> list[dict[str, Any]]:
    """One writer writes ``items``, sealing whenever due and at the end; returns what it published."""
    writer = new_writer(store, local, **target)
    published: list[dict[str, Any]] = []
    try:
        for key, sample in items:
            writer.add("train", key, sample)
            if writer.due:
                published += writer.seal()
        published += writer.seal()
    finally:
        writer.close()
    return published


def write_single(path: Path, items: Items) -> Path:
    """An ordinary LMDB store of ``items`` (the reference)."""
    with LMDBStorage(path, readonly=False, **OPTIONS) as store:
        for key, sample in items:
            store.store_sample(key, sample)
    return path


def copy_set(source: Path, root: Path) -> Path:
    """A private copy of a set (to damage) at ``root/<dataset>/train/data.lmdb``."""
    dest = root / "Copy" / "train" / "data.lmdb"
    shutil.copytree(source, dest)
    return dest


def records(store: Any, keys: list[str]) -> list[bytes | None]:
    """The raw records of ``keys`` as bytes (``None`` for a missing key)."""
    with store.raw_records(keys) as bufs:
        return [None if buf is None else bytes(buf) for buf in bufs]


@dataclass
class Built:
    """The module's shard set and its reference store."""

    samples: dict[str, dict[str, Any]]
    single: Path
    sharded: Path
    local: Path
    by_size: list[dict[str, Any]]
    by_age: list[dict[str, Any]]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Built:
    """30 samples written by two interleaved writers (one seals by size, one by age), and a single store of them."""
    root = tmp_path_factory.mktemp("shards")
    samples = make_samples(N, seed=3)
    items = list(samples.items())
    single = write_single(root / "Single" / "train" / "data.lmdb", items)
    sharded = root / "Sharded" / "train" / "data.lmdb"
    local = root / "local"
    driver = ShardedLMDBStorage(sharded, readonly=False, **OPTIONS)
    seal_bytes = 3 * sample_bytes(items[0][1])  # three samples with audio
    by_size = new_writer(sharded, local, seal_bytes=seal_bytes, seal_seconds=3600)
    by_age = new_writer(sharded, local, seal_bytes=1 << 40, seal_seconds=0.05)
    size_published: list[dict[str, Any]] = []
    age_published: list[dict[str, Any]] = []
    try:
        for i, (key, sample) in enumerate(items):  # two actors, taking the videos in turn
            writer, published = (by_size, size_published) if i % 2 == 0 else (by_age, age_published)
            writer.add("train", key, sample)
            if writer is by_age and i % 10 == 9:
                time.sleep(0.06)  # the age threshold passes
            if writer.due:
                published += writer.seal()
        size_published += by_size.seal()
        age_published += by_age.seal()
    finally:
        by_size.close()
        by_age.close()
        driver.close()
    return Built(samples, single, sharded, local, size_published, age_published)


# ----------------------------------------------------------------------------- one store to read


def test_set_was_sealed_by_size_and_by_age(built):
    sizes = [sum(sample_bytes(built.samples[k]) for k in shard["keys"]) for shard in built.by_size]
    limit = 3 * sample_bytes(built.samples["sample_000000"])
    assert len(built.by_size) >= 4 and all(s >= limit for s in sizes[:-1])  # every seal but the last was due by size
    # Never due by size: every seal but the final one was due by age (at least after each pause).
    assert len(built.by_age) >= 3 and sorted(k for s in built.by_age for k in s["keys"]) == sorted(built.samples)[1::2]
    manifests = read_manifests(built.sharded)
    assert len(manifests) == len(built.by_size) + len(built.by_age)
    assert [m.name for m in manifests] == sorted(s["name"] for s in built.by_size + built.by_age)
    assert sorted(k for m in manifests for k in m.keys) == sorted(built.samples)
    for manifest in manifests:
        mdb = built.sharded / SHARDS_DIR / f"{manifest.name}.lmdb" / "data.mdb"
        assert manifest.bytes == mdb.stat().st_size and manifest.host == socket.gethostname()
        assert manifest.schema["data"] == {"dtype": "|u1", "shape": [3, 4, 32, 32]}
    assert list(built.local.iterdir()) == []  # closed writers leave no work directory


def test_set_reads_as_the_single_store(built):
    with LMDBStorage(built.sharded) as store, LMDBStorage(built.single) as ref:
        assert type(store) is ShardedLMDBStorage and type(ref) is LMDBStorage
        assert len(store.shards) >= 7 and store.duplicate_keys == 0
        keys = ref.get_all_keys()
        assert store.get_all_keys() == keys == sorted(built.samples)
        assert len(store) == len(ref) == N and list(store) == keys
        assert store.is_complete
        for key, want in built.samples.items():
            assert key in store
            assert_sample_equal(store.retrieve_sample(key), want)
            assert store.retrieve_metadata(key) == ref.retrieve_metadata(key)
        assert "sample_999999" not in store
        with pytest.raises(KeyError):
            store.retrieve_sample("sample_999999")
        mixed = keys[::-1] + ["sample_999999"]  # every shard, out of order, plus a missing key
        got = records(store, mixed)
        assert got == records(ref, mixed) and got[-1] is None
        assert store.retrieve_record(keys[7]) == ref.retrieve_record(keys[7])
        batch = store.retrieve_batch([keys[1], "sample_999999", keys[20]])
        assert batch[1] is None
        assert_sample_equal(batch[0], built.samples[keys[1]])
        assert_sample_equal(batch[2], built.samples[keys[20]])
        assert store.indexed_fields == ref.indexed_fields == FIELDS
        for field in FIELDS:
            counts = store.index_counts(field)
            assert counts == ref.index_counts(field) and sum(counts.values()) == N
            for value in counts:
                assert store.query(**{field: value}) == ref.query(**{field: value})
        assert store.query(label=1, category="B") == ref.query(label=1, category="B") != []
        assert store.query(method="nothing") == []
        meta, ref_meta = store.meta, ref.meta
        assert meta["num_samples"] == N and meta["num_shards"] == len(store.shards) and meta["sharded"] is True
        for name in ("format", "format_version", "codec", "codec_options", "index_fields", "schema", "config", "complete"):
            assert meta[name] == ref_meta[name], name
    assert json.loads((built.sharded / SHARDSET_NAME).read_text())["num_samples"] == N


def test_open_storage_and_dispatch(built):
    assert is_shard_set(built.sharded) and not is_shard_set(built.single)
    assert detect_format(built.sharded) == "lmdb"
    with open_storage(built.sharded) as store:
        assert isinstance(store, ShardedLMDBStorage) and len(store) == N
        assert_sample_equal(store.retrieve_sample("sample_000013"), built.samples["sample_000013"])
    with pytest.raises(StorageError, match="ordinary LMDB store"):
        ShardedLMDBStorage(built.single)
    with LMDBStorage(built.sharded) as store:
        with pytest.raises(StorageError, match="no single LMDB environment"):
            _ = store.env
    store.close()
    with pytest.raises(StorageError, match="closed"):
        store.refresh()


def test_shard_cache_is_bounded(built):
    with ShardedLMDBStorage(built.sharded, max_open_shards=1) as store, LMDBStorage(built.single) as ref:
        keys = ref.get_all_keys()
        order = np.random.default_rng(0).permutation(keys).tolist()
        for key in order:  # hops between shards: opening one closes the one read before
            assert_sample_equal(store.retrieve_sample(key), built.samples[key])
            assert len(store._open) == 1
        assert records(store, order) == records(ref, order)  # one snapshot spanning every shard
        assert store.index_counts("method") == ref.index_counts("method")


def test_seal_by_size_and_by_age(tmp_path):
    items = list(make_samples(4, seed=5, audio_every=100).items())
    size = sample_bytes(items[0][1])
    store, local = tmp_path / "data.lmdb", tmp_path / "local"
    driver = ShardedLMDBStorage(store, readonly=False, **OPTIONS)
    writer = new_writer(store, local, seal_bytes=2 * size, seal_seconds=3600)
    assert not writer.due
    writer.add("train", *items[0])
    assert not writer.due
    writer.add("train", *items[1])
    assert writer.due
    assert [p["keys"] for p in writer.seal()] == [[items[0][0], items[1][0]]]
    assert not writer.due and writer.seal() == []
    writer.close()
    aged = new_writer(store, local, seal_bytes=1 << 40, seal_seconds=0.5)
    aged.add("train", *items[2])
    assert not aged.due
    time.sleep(0.55)
    assert aged.due
    aged.seal()
    aged.add("train", *items[3])  # never sealed: dropped on close (its video was never reported stored)
    aged.close()
    assert list(local.iterdir()) == []
    with LMDBStorage(store) as reader:
        assert not reader.is_complete  # the driver still holds the set
        assert reader.get_all_keys() == [items[0][0], items[1][0], items[2][0]]
        assert len(reader.shards) == 2
    driver.close()
    with LMDBStorage(store) as reader:
        assert reader.is_complete and reader.meta["num_shards"] == 2 and len(reader) == 3


# ----------------------------------------------------------------------------- the commit point


def test_interrupted_publish_is_ignored_then_removed(built, tmp_path):
    store = copy_set(built.sharded, tmp_path)
    names = [m.name for m in read_manifests(store)]
    extra = make_samples(1, seed=9)["sample_000000"]
    (orphan_shard,) = publish(store, tmp_path / "local", [("sample_900000", extra)])
    shards = store / SHARDS_DIR
    (shards / f"{orphan_shard['name']}.json").unlink()  # the publish died before its commit point
    orphan = shards / f"{orphan_shard['name']}.lmdb"
    staging = shards / f"{names[0]}.lmdb.0badf00d{TMP_SUFFIX}"  # died while copying into the set
    staging.mkdir()
    shutil.copyfile(shards / f"{names[0]}.lmdb" / "data.mdb", staging / "data.mdb")
    manifest_tmp = shards / f"{names[0]}.json.4242{TMP_SUFFIX}"  # died while writing a manifest
    manifest_tmp.write_text((shards / f"{names[0]}.json").read_text().replace("sample_", "ghost_"))
    leftovers = (orphan, staging, manifest_tmp)
    ShardedLMDBStorage(store, readonly=False, **OPTIONS).close()  # fresh leftovers may be live publishes: kept
    assert all(path.exists() for path in leftovers)
    for path in leftovers:  # untouched for 11 minutes: interrupted for good
        os.utime(path, (time.time() - 660, time.time() - 660))
    with LMDBStorage(store) as reader, LMDBStorage(built.single) as ref:
        assert [m.name for m in reader.shards] == names
        assert reader.get_all_keys() == sorted(built.samples) and len(reader) == N
        assert "sample_900000" not in reader and reader.duplicate_keys == 0
        assert reader.index_counts("label") == ref.index_counts("label")
    assert all(path.exists() for path in leftovers)  # readers never remove anything
    ShardedLMDBStorage(store, readonly=False, **OPTIONS).close()  # the next run's driver
    assert not any(path.exists() for path in leftovers)
    assert sorted(p.name for p in shards.iterdir()) == sorted([f"{n}.json" for n in names] + [f"{n}.lmdb" for n in names])
    with LMDBStorage(store) as reader:
        assert reader.is_complete and len(reader) == N and [m.name for m in reader.shards] == names


# ----------------------------------------------------------------------------- damage


@pytest.mark.parametrize("damage", ["garbage", "version", "count", "name"])
def test_damaged_manifest_is_named_at_open(built, tmp_path, damage):
    store = copy_set(built.sharded, tmp_path)
    manifest = sorted((store / SHARDS_DIR).glob("*.json"))[1]
    body = json.loads(manifest.read_text())
    if damage == "garbage":
        manifest.write_bytes(manifest.read_bytes()[:40])
    elif damage == "version":
        body["manifest_version"] = MANIFEST_VERSION + 1
        manifest.write_text(json.dumps(body))
    elif damage == "count":
        body["keys"] = body["keys"][1:]
        manifest.write_text(json.dumps(body))
    else:
        body["name"] = "another-shard"
        manifest.write_text(json.dumps(body))
    with pytest.raises(CorruptSampleError, match=manifest.name):
        LMDBStorage(store)
    with pytest.raises(CorruptSampleError, match=manifest.name):
        open_storage(store)


@pytest.mark.parametrize("change", ["truncate", "grow"])
def test_resized_shard_file_fails_on_first_read(built, tmp_path, change):
    store = copy_set(built.sharded, tmp_path)
    victim, other = read_manifests(store)[2], read_manifests(store)[3]
    mdb = store / SHARDS_DIR / f"{victim.name}.lmdb" / "data.mdb"
    with open(mdb, "r+b") as fh:
        if change == "truncate":
            fh.truncate(victim.bytes - 4096)  # an interrupted copy
        else:
            fh.seek(0, os.SEEK_END)
            fh.write(b"\0" * 4096)
    with LMDBStorage(store) as reader:
        assert len(reader) == N  # discovery reads the manifests only
        assert_sample_equal(reader.retrieve_sample(other.keys[0]), built.samples[other.keys[0]])
        with pytest.raises(CorruptSampleError, match=f"{victim.name}.*its manifest says {victim.bytes}"):
            reader.retrieve_sample(victim.keys[0])
        with pytest.raises(CorruptSampleError, match=victim.name):
            records(reader, [other.keys[0], victim.keys[-1]])
        assert_sample_equal(reader.retrieve_sample(other.keys[-1]), built.samples[other.keys[-1]])  # the rest stays readable


def test_flipped_record_byte_raises_as_the_single_store_does(built, tmp_path):
    store = copy_set(built.sharded, tmp_path)
    single = tmp_path / "single.lmdb"
    shutil.copytree(built.single, single)
    shard = read_manifests(store)[1]
    key, neighbour = shard.keys[0], shard.keys[-1]
    flip_byte(*payload_location(single, "lmdb", key))
    flip_byte(*payload_location(store / SHARDS_DIR / f"{shard.name}.lmdb", "lmdb", key))
    with LMDBStorage(store) as reader, LMDBStorage(single) as ref:
        with pytest.raises(CorruptSampleError) as want:
            ref.retrieve_sample(key)
        with pytest.raises(CorruptSampleError) as got:
            reader.retrieve_sample(key)
        assert type(got.value) is type(want.value) and str(got.value) == str(want.value)
        assert got.value.key == key
        assert records(reader, [key]) == records(ref, [key])  # the same damaged bytes
        assert_sample_equal(reader.retrieve_sample(neighbour), built.samples[neighbour])


# ----------------------------------------------------------------------------- duplicates


@pytest.mark.parametrize("identical", [True, False], ids=["same-bytes", "changed-copy"])
def test_duplicate_key_reads_once(tmp_path, identical):
    items = list(make_samples(8, seed=4).items())
    key, first = items[2]
    again = first if identical else {**first, "metadata": {**first["metadata"], "category": "Z", "method": "retry"}}
    store, local = tmp_path / "data.lmdb", tmp_path / "local"
    driver = ShardedLMDBStorage(store, readonly=False, **OPTIONS)
    publish(store, local, items[:4])
    publish(store, local, [(key, again)] + items[4:])  # the video was retried by another worker
    driver.close()
    single = write_single(tmp_path / "single.lmdb", items)
    with LMDBStorage(store) as reader, LMDBStorage(single) as ref:
        assert len(reader.shards) == 2 and reader.duplicate_keys == 1
        assert reader.get_all_keys() == ref.get_all_keys() and len(reader) == 8 == reader.meta["num_samples"]
        assert_sample_equal(reader.retrieve_sample(key), first)  # the lower-named shard's copy
        assert records(reader, [key]) == records(ref, [key])
        for field in FIELDS:
            counts = reader.index_counts(field)
            assert counts == ref.index_counts(field) and sum(counts.values()) == 8
            for value in counts:
                assert reader.query(**{field: value}) == ref.query(**{field: value})
        assert reader.query(category="Z") == reader.query(method="retry") == []
    assert json.loads((store / SHARDSET_NAME).read_text())["num_samples"] == 8  # the driver's recorded total
    loader = create_data_loader(store, batch_size=3, num_workers=0, shuffle=False)
    assert [k for b in loader for k in b["key"]] == [k for k, _ in items]  # each sample once
    loader.close()


# ----------------------------------------------------------------------------- resume and refresh


def test_reopen_for_writing_keeps_shards_and_refresh_sees_new_ones(tmp_path):
    items = list(make_samples(9, seed=6).items())
    store, local = tmp_path / "Set" / "train" / "data.lmdb", tmp_path / "local"
    driver = ShardedLMDBStorage(store, readonly=False, **OPTIONS)
    publish(store, local, items[:3])
    driver.close()
    first = [m.name for m in read_manifests(store)]

    driver = ShardedLMDBStorage(store, readonly=False, **OPTIONS)  # a resumed run
    assert len(driver) == 3 and [m.name for m in driver.shards] == first
    reader = LMDBStorage(store)
    assert not reader.is_complete and len(reader) == 3
    assert_sample_equal(reader.retrieve_sample(items[0][0]), items[0][1])
    early, late = new_writer(store, local), new_writer(store, local)
    early.add("train", *items[3])  # opens its shard first...
    late.add("train", *items[4])
    late.add("train", *items[5])
    (late_shard,) = late.seal()  # ...but the other worker publishes first
    assert items[4][0] not in reader  # until refreshed
    reader.refresh()
    assert len(reader) == 5 and reader.duplicate_keys == 0
    assert_sample_equal(reader.retrieve_sample(items[4][0]), items[4][1])
    early.add("train", *items[6])
    (early_shard,) = early.seal()
    assert early_shard["name"] < late_shard["name"]  # it sorts before a shard the reader has open
    reader.refresh()
    assert [m.name for m in reader.shards] == [*first, early_shard["name"], late_shard["name"]]
    assert len(reader) == 7
    for key, sample in items[:7]:
        assert_sample_equal(reader.retrieve_sample(key), sample)
    single = write_single(tmp_path / "single.lmdb", items[:7])
    with LMDBStorage(single) as ref:
        assert records(reader, ref.get_all_keys()) == records(ref, ref.get_all_keys())
        assert reader.index_counts("category") == ref.index_counts("category")
        assert reader.query(label=1) == ref.query(label=1)
    early.close()
    late.close()
    driver.close()
    assert reader.is_complete and reader.meta["num_samples"] == 7
    reader.close()
    body = json.loads((store / SHARDSET_NAME).read_text())
    assert body["num_samples"] == 7 and body["num_shards"] == 3 and body["complete"] is True
    assert body["config"] == OPTIONS["config"] and body["schema"]["data"]["shape"] == [3, 4, 32, 32]


# ----------------------------------------------------------------------------- writers' work directories


_DEAD_WRITER = """
import os, sys
import numpy as np
from src.data.lmdb_shards import ShardTarget, ShardWriter
writer = ShardWriter(ShardTarget(stores={"train": sys.argv[1]}, local_dir=sys.argv[2]))
writer.add("train", "sample_000001", {"data": np.zeros((3, 2, 8, 8), np.uint8), "label": 0, "metadata": {}})
print(writer.workdir, flush=True)
os._exit(0)  # dies without closing: its open shard and work directory stay behind
"""


def test_dead_writers_work_directories_are_removed(tmp_path):
    store, local = tmp_path / "data.lmdb", tmp_path / "local"
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_DEAD_WRITER), str(store), str(local)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr
    dead = Path(done.stdout.strip())
    assert dead.parent == local and (dead / "lock").exists() and any(dead.glob("train-*.lmdb"))
    unlocked = local / "dfshard-nolock"  # died before taking its lock
    unlocked.mkdir()
    unrelated = local / "something-else"
    unrelated.mkdir()
    live = new_writer(store, local)
    assert not dead.exists() and not unlocked.exists()  # a new writer cleans the node up
    crashed = local / "dfshard-crashed"
    crashed.mkdir()
    (crashed / "lock").write_bytes(b"")
    live.add("train", "sample_000002", make_samples(1)["sample_000000"])
    assert remove_stale_workdirs(local) == 1
    assert not crashed.exists() and live.workdir.is_dir() and unrelated.is_dir()
    assert remove_stale_workdirs(local) == 0 and live.workdir.is_dir()
    live.seal()
    live.close()
    assert not live.workdir.exists()
    assert remove_stale_workdirs(tmp_path / "missing") == 0


def test_unwritable_set_is_refused_naming_the_fix(tmp_path):
    blocker = tmp_path / "output"
    blocker.write_text("a file where the output directory should be")  # fails for root too, unlike chmod
    local = tmp_path / "local"
    with pytest.raises(StorageError, match=r"train shard set .* is not writable from .*processing\.ray_write: driver") as info:
        new_writer(blocker / "train" / "data.lmdb", local)
    assert str(blocker) in str(info.value)
    assert not list(local.glob("dfshard-*"))  # no work directory (and no held lock) is left behind


# ----------------------------------------------------------------------------- inspect_data.py


def test_inspect_info_and_strict_verify(built, tmp_path):
    info = run_cli("inspect_data.py", "info", str(built.sharded), "--json")
    assert info.returncode == 0, info.stderr
    (described,) = json.loads(info.stdout)["stores"]
    assert described["num_samples"] == N and described["complete"] is True and described["format"] == "lmdb"
    plain = run_cli("inspect_data.py", "info", str(built.sharded))
    assert plain.returncode == 0, plain.stderr
    assert f"samples      {N}" in plain.stdout and "complete" in plain.stdout and "by method" in plain.stdout
    assert f"layout       shard set of {len(read_manifests(built.sharded))} shards" in plain.stdout
    clean = run_cli("inspect_data.py", "verify", "--strict", str(built.sharded))
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "OK" in clean.stdout
    store = copy_set(built.sharded, tmp_path)
    shard = read_manifests(store)[4]
    key = shard.keys[1]
    flip_byte(*payload_location(store / SHARDS_DIR / f"{shard.name}.lmdb", "lmdb", key))
    damaged = run_cli("inspect_data.py", "verify", "--strict", str(store))
    assert damaged.returncode == 1, damaged.stdout + damaged.stderr
    bad = [line for line in damaged.stdout.splitlines() if line.strip().startswith("bad key")]
    assert len(bad) == 1 and key in bad[0] and "checksum" in bad[0] and "FAILED, 1 bad key" in damaged.stdout


# ----------------------------------------------------------------------------- loaders


def batches_of(loader) -> list[tuple[torch.Tensor, torch.Tensor, list[str], torch.Tensor | None]]:
    """(data, label, keys, audio) of every batch of one iteration."""
    return [(b["data"], b["label"], list(b["key"]), b.get("audio")) for b in loader]


def assert_same_batches(got, want) -> None:
    assert len(got) == len(want)
    for (data, label, keys, audio), (ref_data, ref_label, ref_keys, ref_audio) in zip(got, want):
        assert keys == ref_keys
        assert torch.equal(label, ref_label)
        assert data.dtype == ref_data.dtype and torch.equal(data, ref_data)
        assert (audio is None) == (ref_audio is None)
        if audio is not None:
            assert torch.equal(audio, ref_audio)


@pytest.mark.parametrize(("num_workers", "worker_type"), [(0, "thread"), (2, "thread"), (2, "process")])
def test_loader_batches_equal_the_single_stores(built, num_workers, worker_type):
    def run(path):
        loader = create_data_loader(path, batch_size=4, num_workers=num_workers, worker_type=worker_type, seed=5)
        try:
            return batches_of(loader) + batches_of(loader)  # two epochs, two orders
        finally:
            loader.close()

    want, got = run(built.single), run(built.sharded)
    assert_same_batches(got, want)
    assert sorted(k for _, _, keys, _ in got[:8] for k in keys) == sorted(built.samples)


def test_loader_resumes_mid_epoch_over_a_set(built):
    reference = create_data_loader(built.single, batch_size=4, num_workers=0, seed=7)
    want = batches_of(reference)
    reference.close()
    loader = create_data_loader(built.sharded, batch_size=4, num_workers=2, seed=7)
    state = None
    for i, _ in enumerate(loader):
        if i == 2:
            state = json.loads(json.dumps(loader.state_dict()))
            break
    loader.close()
    assert state is not None and state["position"] == 12
    resumed = create_data_loader(built.sharded, batch_size=4, num_workers=0, seed=7)
    resumed.load_state_dict(state)
    assert_same_batches(batches_of(resumed), want[3:])
    resumed.close()


def test_list_of_a_set_and_a_single_store_loads_as_one(built, tmp_path):
    other_samples = make_samples(6, seed=8)
    other = write_single(tmp_path / "Other" / "train" / "data.lmdb", list(other_samples.items()))
    loader = create_data_loader([built.sharded, other], batch_size=8, num_workers=2, shuffle=False, normalize=False)
    assert len(loader.dataset) == N + 6
    seen, clips = [], {}
    for batch in loader:
        for i, (meta, key) in enumerate(zip(batch["metadata"], batch["key"])):
            seen.append((meta["dataset"], key))
            clips[(meta["dataset"], key)] = batch["data"][i]
    assert seen == [("Sharded", k) for k in sorted(built.samples)] + [("Other", k) for k in sorted(other_samples)]
    for (dataset, key), clip in list(clips.items())[::7]:
        want = (built.samples if dataset == "Sharded" else other_samples)[key]["data"]
        assert clip.dtype == torch.uint8 and np.array_equal(clip.numpy(), want)  # as stored (normalize=False)
    shuffled = create_data_loader([built.sharded, other], batch_size=8, num_workers=0, seed=2)
    assert sorted((m["dataset"], k) for b in shuffled for m, k in zip(b["metadata"], b["key"])) == sorted(seen)


def test_open_shard_budget_raises_a_low_descriptor_limit():
    # In a child: a soft limit of 64 would allow 16 open shards; a set of 1000 raises it to 4000 (within the hard
    # limit) and keeps 1000 open, so random reads never reopen shards. A small set leaves the limit alone.
    code = (
        "import resource\n"
        "from src.data.lmdb_shards import open_shard_budget\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))\n"
        "print(open_shard_budget(10), resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
        "print(open_shard_budget(1000), resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    small, large = [tuple(map(int, line.split())) for line in r.stdout.split("\n") if line]
    assert small == (16, 64)  # 40 descriptors wanted, 64 allowed: untouched, a quarter of it
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    raised = 4000 if hard == resource.RLIM_INFINITY else min(4000, hard)
    assert large == (min(1000, raised // 4), raised)


def test_one_run_at_a_time_and_a_replaced_runs_shards_never_commit(tmp_path):
    # A second driver on the same set is refused while the first holds it. Once the first is gone and a new run
    # holds the set, a shard sealed by one of the old run's actors (a killed driver's actors may still be copying)
    # is refused at its commit point and stays out of the set.
    store = tmp_path / "train" / "data.lmdb"
    extra = make_samples(2, seed=4)
    first = ShardedLMDBStorage(store, readonly=False, **OPTIONS)
    with pytest.raises(StorageError, match="another writer has this store open"):
        ShardedLMDBStorage(store, readonly=False, **OPTIONS)
    old_run = first.run_id
    assert publish(store, tmp_path / "local", [("sample_000001", extra["sample_000000"])], run_ids={"train": old_run})
    first.close()
    second = ShardedLMDBStorage(store, readonly=False, **OPTIONS)
    assert second.run_id != old_run
    with pytest.raises(StorageError, match="now written by another run; shard .* is left unpublished"):
        publish(store, tmp_path / "local", [("sample_000002", extra["sample_000001"])], run_ids={"train": old_run})
    assert publish(store, tmp_path / "local", [("sample_000003", extra["sample_000001"])], run_ids={"train": second.run_id})
    second.close()
    with LMDBStorage(store) as reader:
        assert reader.get_all_keys() == ["sample_000001", "sample_000003"]


def test_writers_starting_together_never_remove_each_other(tmp_path):
    # Each writer sweeps the node's dead work directories as it starts. A directory is created and locked under a
    # name the sweep skips, then renamed, so no writer ever sees another's unlocked (it used to remove a directory
    # created a moment earlier, failing that actor's start).
    import threading

    store = tmp_path / "train" / "data.lmdb"
    local = tmp_path / "local"
    setting_up = local / ".dfshard-new-inprogress"  # a writer between creating and renaming its directory
    setting_up.mkdir(parents=True)
    abandoned = local / ".dfshard-new-abandoned"  # one that died there, long ago
    abandoned.mkdir()
    os.utime(abandoned, (time.time() - 660, time.time() - 660))
    writers: list[ShardWriter] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            writers.append(new_writer(store, local))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(writers) == 12
    assert all(w.workdir.is_dir() and (w.workdir / "lock").exists() for w in writers)
    assert setting_up.is_dir() and not abandoned.exists()
    for writer in writers:
        writer.close()
    assert sorted(p.name for p in local.iterdir()) == [setting_up.name]


# ----------------------------------------------------------------------------- compaction


def test_compact_rewrites_a_set_as_one_store_byte_for_byte(built, tmp_path):
    store = copy_set(built.sharded, tmp_path)
    with LMDBStorage(store) as before:
        schema, config, created = before.meta["schema"], before.meta.get("config"), before.meta["created"]
    out = run_cli("inspect_data.py", "compact", str(store.parent.parent))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"train/data.lmdb: {N} records now in one LMDB store" in out.stdout
    assert not is_shard_set(store) and (store / "data.mdb").exists()
    assert sorted(p.name for p in store.parent.iterdir()) == ["data.lmdb"]  # no temporary or old copy left
    with LMDBStorage(store) as compacted, LMDBStorage(built.single) as ref:
        assert not isinstance(compacted, ShardedLMDBStorage) and compacted.is_complete
        keys = ref.get_all_keys()
        assert compacted.get_all_keys() == keys
        assert records(compacted, keys) == records(ref, keys)  # the same bytes as a store written directly
        for name in ("label", "category", "method"):
            assert compacted.index_counts(name) == ref.index_counts(name)
        assert compacted.query(category="B") == ref.query(category="B") != []
        assert compacted.meta["schema"] == schema and compacted.meta.get("config") == config and compacted.meta["created"] == created
    again = run_cli("inspect_data.py", "compact", str(store))
    assert again.returncode == 0 and "not a shard set, left as it is" in again.stdout


def test_compact_refuses_a_set_in_use_incomplete_or_damaged(built, tmp_path):
    store = copy_set(built.sharded, tmp_path)
    writer = ShardedLMDBStorage(store, readonly=False, **OPTIONS)  # a run publishing into it
    with pytest.raises(StorageError, match="another writer has this store open"):
        compact_shard_set(store)
    writer.close(complete=False)
    with pytest.raises(IncompleteStoreError, match="finish or resume its run"):
        compact_shard_set(store)
    ShardedLMDBStorage(store, readonly=False, **OPTIONS).close()  # the run resumed and completed
    shard = read_manifests(store)[2]
    flip_byte(*payload_location(store / SHARDS_DIR / f"{shard.name}.lmdb", "lmdb", shard.keys[0]))
    with pytest.raises(CorruptSampleError):
        compact_shard_set(store)
    assert is_shard_set(store) and len(LMDBStorage(store)) == N  # nothing replaced
    assert not store.with_name("data.lmdb.compact.tmp").exists()


def test_a_compaction_that_died_between_its_renames_is_finished(built, tmp_path):
    store = copy_set(built.sharded, tmp_path)
    done = copy_set(built.sharded, tmp_path / "other")
    assert compact_shard_set(done) == N
    # The state a crash leaves after the set moved aside and before the new store moved in:
    os.rename(store, store.with_name("data.lmdb.shards.old"))
    shutil.copytree(done, store.with_name("data.lmdb.compact" + TMP_SUFFIX))
    assert compact_shard_set(store) == N
    assert sorted(p.name for p in store.parent.iterdir()) == ["data.lmdb"]
    with LMDBStorage(store) as compacted, LMDBStorage(built.single) as ref:
        keys = ref.get_all_keys()
        assert records(compacted, keys) == records(ref, keys)
