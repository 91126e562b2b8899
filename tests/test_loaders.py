"""Loaders, transforms and samplers on small synthetic LMDB stores."""

from __future__ import annotations

import logging
import os
from collections import Counter

import numpy as np
import pytest
import torch
import torchvision.transforms as transforms
from torch.utils.data import DistributedSampler

from src.data.lmdb_storage import LMDBStorage
from src.data.loaders import create_data_loader, create_train_val_loaders
from src.data.samplers import BalancedSampler, EpochSampler
from src.data.transforms import IMAGENET_MEAN, IMAGENET_STD, FrameTransform, LMDBDataTransform, RecyclingAllocator, normalize_clips
from src.errors import ConfigError, CorruptSampleError
from tests.loader_helpers import audio_for, build_store, clip_for, corrupt_record

CUDA = torch.cuda.is_available()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """40 samples of (3, 4, 32, 32), every 10th real, with audio."""
    return build_store(tmp_path_factory.mktemp("loaders") / "data.lmdb", 40)


def expected_clip(store, key, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    clip = clip_for(store.indices[key], store.shape).astype(np.float64) / 255.0
    mean = np.asarray(mean, dtype=np.float64).reshape(-1, 1, 1, 1)
    std = np.asarray(std, dtype=np.float64).reshape(-1, 1, 1, 1)
    return (clip - mean) / std


def all_batches(loader) -> list[dict]:
    return list(loader)


def keys_of(batches) -> list[str]:
    return [k for b in batches for k in b["key"]]


class CustomTransform(LMDBDataTransform):
    """The spec's example, importable so that spawn workers can unpickle it."""

    def __init__(self, target_device="cpu", dtype=torch.uint8):
        super().__init__(target_device, dtype=dtype)
        self.augmentation = transforms.Compose([transforms.RandomHorizontalFlip(p=0.5), transforms.RandomRotation(degrees=10)])

    def __call__(self, sample):
        sample = super().__call__(sample)
        sample["data"] = self.augmentation(sample["data"])
        return sample


class PidTransform(LMDBDataTransform):
    """Records which process transformed each sample."""

    def __call__(self, sample):
        out = super().__call__(sample)
        out["pid"] = torch.tensor(os.getpid())
        return out


# ----------------------------------------------------------------------------- batches


@pytest.mark.parametrize(("num_workers", "worker_type"), [(0, "thread"), (2, "thread"), (2, "process")])
def test_batches_exact_values(store, num_workers, worker_type):
    loader = create_data_loader(store.path, batch_size=8, num_workers=num_workers, shuffle=False, worker_type=worker_type)
    batches = all_batches(loader)
    assert len(batches) == len(loader) == 5
    assert keys_of(batches) == store.keys
    for batch in batches:
        data = batch["data"]
        assert data.dtype == torch.float32 and data.device.type == "cpu"
        assert tuple(data.shape) == (8,) + store.shape
        assert batch["label"].dtype == torch.int64 and tuple(batch["label"].shape) == (8,)
        assert batch["label"].tolist() == [store.labels[k] for k in batch["key"]]
        assert [m["method"] for m in batch["metadata"]] == [store.methods[k] for k in batch["key"]]
        for i, key in enumerate(batch["key"]):
            np.testing.assert_allclose(data[i].numpy(), expected_clip(store, key), rtol=0, atol=1e-5)
    loader.close()


def test_custom_mean_std_and_raw_uint8(store):
    mean, std = (0.5, 0.25, 0.1), (0.5, 0.5, 0.2)
    loader = create_data_loader(store.path, batch_size=5, num_workers=0, shuffle=False, mean=mean, std=std)
    batch = next(iter(loader))
    for i, key in enumerate(batch["key"]):
        np.testing.assert_allclose(batch["data"][i].numpy(), expected_clip(store, key, mean, std), rtol=0, atol=1e-5)
    raw = next(iter(create_data_loader(store.path, batch_size=5, num_workers=1, shuffle=False, normalize=False)))
    assert raw["data"].dtype == torch.uint8
    for i, key in enumerate(raw["key"]):
        np.testing.assert_array_equal(raw["data"][i].numpy(), clip_for(store.indices[key], store.shape))


def test_audio_padding(store):
    loader = create_data_loader(store.path, batch_size=6, num_workers=2, shuffle=False)
    for batch in loader:
        audio, lengths = batch["audio"], batch["audio_lengths"]
        assert audio.dtype == torch.float32 and lengths.dtype == torch.int64
        assert audio.shape[:2] == (len(batch["key"]), 1) and audio.shape[2] == int(lengths.max())
        for i, key in enumerate(batch["key"]):
            expected = audio_for(store.indices[key])
            assert int(lengths[i]) == expected.size
            np.testing.assert_array_equal(audio[i, 0, : expected.size].numpy(), expected)
            assert not audio[i, 0, expected.size :].any()


def test_generic_storage_path_matches_lmdb_fast_path(store, monkeypatch):
    fast = all_batches(create_data_loader(store.path, batch_size=7, num_workers=2, shuffle=False))
    from src.data.lmdb_storage import LMDBStorage

    monkeypatch.setattr(LMDBStorage, "has_raw_records", False)  # a store without the capability takes this path
    generic = all_batches(create_data_loader(store.path, batch_size=7, num_workers=2, shuffle=False))
    for a, b in zip(fast, generic, strict=True):
        assert a["key"] == b["key"]
        for name in ("data", "label", "audio", "audio_lengths"):
            torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)


def test_batches_kept_by_the_caller_are_never_overwritten(store):
    loader = create_data_loader(store.path, batch_size=4, num_workers=2, shuffle=False, prefetch=1)
    kept = [(b["key"], b["data"][1:3]) for b in loader]  # views only: the batch tensors themselves are dropped
    for keys, view in kept:
        for i, key in enumerate(keys[1:3]):
            np.testing.assert_allclose(view[i].numpy(), expected_clip(store, key), rtol=0, atol=1e-5)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_staging_ring_path(store, num_workers):
    """The CUDA staging path (reused uint8 buffers, finished in the main thread), exercised on the CPU."""
    from src.data.memory import PinnedRing

    loader = create_data_loader(store.path, batch_size=4, num_workers=num_workers, shuffle=False, prefetch=1)
    loader._ring = PinnedRing(loader.prefetch + 3, torch.device("cpu"), pin=False)
    for _ in range(2):
        for batch in loader:
            for i, key in enumerate(batch["key"]):
                np.testing.assert_allclose(batch["data"][i].numpy(), expected_clip(store, key), rtol=0, atol=1e-5)
    for _batch in loader:  # leaving early hands every slot back
        break
    assert loader._ring._free.qsize() == loader.prefetch + 3
    assert keys_of(loader) == store.keys


def test_recycling_allocator_reuses_only_free_regions():
    alloc = RecyclingAllocator(2)
    first = alloc((4, 1024, 1024), torch.float32)
    address = first.data_ptr()
    view = first[1]
    del first
    second = alloc((4, 1024, 1024), torch.float32)
    assert second.data_ptr() != address  # the view still holds the first region
    del view, second
    third = alloc((4, 1024, 1024), torch.float32)
    assert third.data_ptr() == address


# ----------------------------------------------------------------------------- workers


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_worker_processes_fork_and_spawn(store, context):
    loader = create_data_loader(
        store.path, CustomTransform(), batch_size=10, num_workers=2, shuffle=False, multiprocessing_context=context, seed=3
    )
    batches = all_batches(loader)
    assert keys_of(batches) == store.keys
    assert all(tuple(b["data"].shape) == (10,) + store.shape and b["data"].dtype == torch.float32 for b in batches)
    if context == "fork":  # spawn start-up is slow; the whole-batch path is the same code in the workers
        fast = create_data_loader(store.path, batch_size=10, num_workers=2, shuffle=False, worker_type="process", multiprocessing_context=context)
        assert keys_of(all_batches(fast)) == store.keys


@pytest.mark.parametrize("persistent", [True, False])
def test_persistent_workers(store, persistent):
    loader = create_data_loader(store.path, PidTransform(), batch_size=10, num_workers=2, persistent_workers=persistent)
    pids = [set() for _ in range(2)]
    for epoch in range(2):
        for batch in loader:
            pids[epoch].update(batch["pid"].tolist())
    assert os.getpid() not in pids[0]
    assert (pids[0] == pids[1]) is persistent


def test_spec_custom_transform_uint8_and_float(store):
    for dtype in (torch.uint8, torch.float32):
        for num_workers in (0, 2):
            loader = create_data_loader(store.path, CustomTransform(dtype=dtype), batch_size=8, num_workers=num_workers)
            batch = next(iter(loader))
            assert tuple(batch["data"].shape) == (8,) + store.shape
            assert batch["data"].dtype == torch.float32
            assert float(batch["data"].min()) >= -2.2 and float(batch["data"].max()) <= 2.7  # normalised 0..1 values


def test_plain_callable_and_frame_transforms(store):
    jitter = FrameTransform(transforms.ColorJitter(brightness=0.3, saturation=0.3))
    loader = create_data_loader(store.path, transforms.Compose([transforms.RandomHorizontalFlip(), jitter]), batch_size=8, num_workers=0)
    batch = next(iter(loader))
    assert tuple(batch["data"].shape) == (8,) + store.shape and batch["data"].dtype == torch.float32


def test_transform_target_device_is_the_default_device(store):
    loader = create_data_loader(store.path, LMDBDataTransform(target_device="cpu", mean=0.5, std=0.5), batch_size=4, num_workers=0, shuffle=False)
    batch = next(iter(loader))
    key = batch["key"][0]
    np.testing.assert_allclose(batch["data"][0].numpy(), expected_clip(store, key, 0.5, 0.5), atol=1e-5)


@pytest.mark.skipif(CUDA, reason="checks the error raised without CUDA")
def test_cuda_without_gpu_is_a_clear_error(store):
    with pytest.raises(ConfigError, match="CUDA is not available"):
        create_data_loader(store.path, target_device="cuda")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        LMDBDataTransform(target_device="cuda")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        create_train_val_loaders(store.path, store.path)


@pytest.mark.skipif(not CUDA, reason="needs a GPU")
@pytest.mark.parametrize("transform", [None, "custom"])
def test_cuda_batches(store, transform):
    t = CustomTransform(target_device="cuda") if transform else None
    loader = create_data_loader(store.path, t, batch_size=8, num_workers=2, shuffle=False, target_device="cuda")
    for batch in loader:
        assert batch["data"].is_cuda and batch["label"].is_cuda and batch["audio"].is_cuda
        assert batch["data"].dtype == torch.float32
        if transform is None:
            for i, key in enumerate(batch["key"]):
                np.testing.assert_allclose(batch["data"][i].cpu().numpy(), expected_clip(store, key), rtol=0, atol=1e-5)


def test_normalize_clips_function():
    clip = torch.full((3, 2, 4, 4), 255, dtype=torch.uint8)
    out = normalize_clips(clip)
    expected = (1 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(out[:, 0, 0, 0].numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(normalize_clips(clip.float() / 255).numpy(), out.numpy(), rtol=1e-6)


# ----------------------------------------------------------------------------- order


def test_set_epoch_and_seeds(store):
    loader = create_data_loader(store.path, batch_size=8, num_workers=0, seed=7)
    epoch0, epoch1 = keys_of(loader), keys_of(loader)  # iterating advances the epoch
    assert sorted(epoch0) == sorted(epoch1) == store.keys
    assert epoch0 != epoch1
    loader.set_epoch(1)
    assert keys_of(loader) == epoch1
    loader.set_epoch(0)
    assert keys_of(loader) == epoch0
    same_seed = create_data_loader(store.path, batch_size=8, num_workers=2, seed=7)
    assert keys_of(same_seed) == epoch0
    other_seed = create_data_loader(store.path, batch_size=8, num_workers=0, seed=8)
    assert keys_of(other_seed) != epoch0
    reference = EpochSampler(len(store.keys), seed=7)
    reference.set_epoch(1)
    loader.set_epoch(1)
    assert [store.keys[i] for i in reference.indices()] == keys_of(loader)


def test_epoch_sampler_matches_torch_distributed_sampler():
    data = list(range(23))
    for world_size in (1, 3):
        for drop_last in (False, True):
            for rank in range(world_size):
                ours = EpochSampler(23, shuffle=True, seed=5, rank=rank, world_size=world_size, drop_last=drop_last)
                theirs = DistributedSampler(data, num_replicas=world_size, rank=rank, shuffle=True, seed=5, drop_last=drop_last)
                ours.set_epoch(2)
                theirs.set_epoch(2)
                assert list(ours) == list(theirs) and len(ours) == len(theirs)


@pytest.mark.parametrize("n", [10, 11, 13])
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("drop_last", [False, True])
def test_distributed_shares(n, world_size, drop_last):
    shares = [EpochSampler(n, seed=1, rank=r, world_size=world_size, drop_last=drop_last) for r in range(world_size)]
    for s in shares:
        s.set_epoch(3)
    lists = [list(s) for s in shares]
    assert len({len(x) for x in lists}) == 1  # equal steps on every rank
    flat = [i for x in lists for i in x]
    if drop_last:
        assert len(flat) == len(set(flat)) == (n // world_size) * world_size  # disjoint, only the uneven tail dropped
    else:
        assert set(flat) == set(range(n))  # complete
        assert len(flat) - n == (-n) % world_size  # padding only to even the shares
        assert sum(len(set(x) & set(y)) for i, x in enumerate(lists) for y in lists[i + 1 :]) <= (-n) % world_size


def test_distributed_loader_shares(store):
    seen = []
    for rank in range(3):
        loader = create_data_loader(store.path, batch_size=4, num_workers=0, rank=rank, world_size=3, seed=2, drop_last=True)
        seen.append(keys_of(loader))
    flat = [k for keys in seen for k in keys]
    assert len(flat) == len(set(flat)) and len({len(s) for s in seen}) == 1


def test_rank_needs_world_size():
    with pytest.raises(ConfigError, match="pass both or neither"):
        EpochSampler(10, rank=1)
    with pytest.raises(ConfigError, match="rank must be in"):
        EpochSampler(10, rank=3, world_size=3)


def test_balanced_sampler_proportions_and_seeding():
    labels = [0] * 10 + [1] * 90
    sampler = BalancedSampler(labels, num_samples=20000, seed=4)
    draws = list(sampler)
    real = sum(1 for i in draws if labels[i] == 0) / len(draws)
    assert 0.48 < real < 0.52
    assert set(draws) == set(range(100))  # every sample reachable
    assert list(BalancedSampler(labels, num_samples=20000, seed=4)) == draws
    sampler.set_epoch(1)
    assert list(sampler) != draws
    parts = [list(BalancedSampler(labels, num_samples=1000, seed=4, rank=r, world_size=4)) for r in range(4)]
    assert [len(p) for p in parts] == [250] * 4


def test_balanced_loader(store):
    loader = create_data_loader(store.path, batch_size=20, num_workers=0, balanced=True, num_samples=2000, seed=1)
    labels = torch.cat([b["label"] for b in loader]).tolist()
    counts = Counter(labels)
    assert len(labels) == 2000 and 0.44 < counts[0] / 2000 < 0.56  # store is 10% real


# ----------------------------------------------------------------------------- subsets


def test_subset_filters(store):
    def loaded(**options):
        return sorted(keys_of(create_data_loader(store.path, batch_size=16, num_workers=0, **options)))

    assert loaded(labels=[0]) == store.keys_where(label=0)
    assert loaded(categories=["C", "D"]) == sorted(store.keys_where(category="C") + store.keys_where(category="D"))
    assert loaded(methods="fsgan") == store.keys_where(method="fsgan")
    assert loaded(labels=1, exclude_methods=["wav2lip"]) == sorted(k for k in store.keys_where(label=1) if store.methods[k] != "wav2lip")
    assert loaded(keys=store.keys[:5], labels=[1]) == [k for k in store.keys[:5] if store.labels[k] == 1]


def test_subset_filters_never_decode(store, monkeypatch):
    def no_decoding(*args, **kwargs):
        raise AssertionError("a filter decoded a sample")

    from src.data.lmdb_storage import LMDBStorage

    monkeypatch.setattr(LMDBStorage, "_get", no_decoding)
    dataset = create_data_loader(store.path, num_workers=0, labels=[1], exclude_methods=["rtvc"], balanced=True).dataset
    assert len(dataset) == len([k for k in store.keys_where(label=1) if store.methods[k] != "rtvc"])
    assert set(dataset.labels.tolist()) == {1}


def test_bad_options(store):
    with pytest.raises(ConfigError, match="unknown loader option"):
        create_data_loader(store.path, shufle=True)
    with pytest.raises(ConfigError, match="on_error"):
        create_data_loader(store.path, on_error="ignore")
    with pytest.raises(ConfigError, match="no sample"):
        create_data_loader(store.path, methods=["no-such-method"])
    with pytest.raises(ConfigError, match="not indexed"):
        create_data_loader(store.path, num_workers=0).dataset.storage.query(gender="men")
    with pytest.raises(ConfigError, match="batch_size"):
        create_data_loader(store.path, batch_size=0)
    with pytest.raises(ConfigError, match="worker_type"):
        create_data_loader(store.path, worker_type="fiber")


# ----------------------------------------------------------------------------- corrupt samples


@pytest.fixture()
def damaged(tmp_path):
    info = build_store(tmp_path / "data.lmdb", 12)
    corrupt_record(info.path, "sample_000005")
    return info


@pytest.mark.parametrize(("transform", "num_workers", "worker_type"), [(None, 0, "thread"), (None, 2, "thread"), (None, 2, "process"), ("custom", 2, "process")])
def test_corrupt_sample_raises_with_its_key(damaged, transform, num_workers, worker_type):
    t = CustomTransform() if transform else None
    loader = create_data_loader(damaged.path, t, batch_size=4, num_workers=num_workers, worker_type=worker_type, shuffle=False)
    with pytest.raises(CorruptSampleError, match="sample_000005") as info:
        list(loader)
    assert info.value.key == "sample_000005"


@pytest.mark.parametrize(("transform", "num_workers", "worker_type"), [(None, 0, "thread"), (None, 2, "thread"), (None, 2, "process"), ("custom", 2, "process")])
def test_corrupt_sample_skipped_and_counted(damaged, transform, num_workers, worker_type, caplog):
    t = CustomTransform() if transform else None
    loader = create_data_loader(damaged.path, t, batch_size=4, num_workers=num_workers, worker_type=worker_type, shuffle=False, on_error="skip")
    with caplog.at_level(logging.WARNING, logger="src.data.loaders"):
        keys = keys_of(loader)
    assert keys == [k for k in damaged.keys if k != "sample_000005"]  # left out, not replaced
    assert loader.skipped == loader.stats.skipped == 1 and loader.stats.skipped_keys == ["sample_000005"]
    assert "sample_000005" in caplog.text
    assert loader.stats.samples == 11


# ----------------------------------------------------------------------------- other formats


@pytest.mark.parametrize("fmt", ["hdf5", "numpy", "torch"])
def test_other_formats(tmp_path, fmt):
    from src.data.storage import DEFAULT_STORE_NAMES, get_backend, open_storage

    try:
        get_backend(fmt)
    except ImportError as exc:  # backend not in this tree (yet)
        pytest.skip(f"{fmt} backend unavailable: {exc}")
    path = tmp_path / DEFAULT_STORE_NAMES[fmt]
    shape = (3, 4, 32, 32)
    with open_storage(path, "w", format=fmt) as store:
        for i in range(1, 13):
            real = i % 4 == 0
            sample = {"data": clip_for(i, shape), "label": 0 if real else 1, "audio": audio_for(i)}
            sample["metadata"] = {"category": "A" if real else "C", "method": "real" if real else "fsgan"}
            store.store_sample(f"sample_{i:06d}", sample)
    for num_workers, worker_type in ((0, "thread"), (2, "thread"), (2, "process")):
        loader = create_data_loader(path, batch_size=5, num_workers=num_workers, worker_type=worker_type, shuffle=False, labels=[1])
        batches = list(loader)
        assert keys_of(batches) == [f"sample_{i:06d}" for i in range(1, 13) if i % 4]
        batch = batches[0]
        clip = clip_for(1, shape).astype(np.float64) / 255
        expected = (clip - np.reshape(IMAGENET_MEAN, (3, 1, 1, 1))) / np.reshape(IMAGENET_STD, (3, 1, 1, 1))
        np.testing.assert_allclose(batch["data"][0].numpy(), expected, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(batch["audio"][0, 0, : audio_for(1).size].numpy(), audio_for(1))


def _reader_slots(store: LMDBStorage, pid: int) -> int:
    """Reader-table slots held under ``pid`` (LMDB's ``readers()`` listing)."""
    rows = store._connect().env.readers().splitlines()[1:]
    return sum(1 for row in rows if row.split() and row.split()[0] == str(pid))


def test_forked_workers_leave_no_reader_slots_under_the_parents_pid(store):
    # A store held open in the main process is inherited by forked workers. Reading through the
    # inherited handle registers reader slots under the *parent's* pid, which no reader_check can
    # reclaim while the parent lives: a long job hit ReadersFullError after ~1,000 reads that way.
    held = LMDBStorage(store.path)
    held.retrieve_sample(store.keys[0])
    before = _reader_slots(held, os.getpid())
    for _ in range(3):
        loader = create_data_loader(store.path, CustomTransform(), batch_size=10, num_workers=2, shuffle=False, multiprocessing_context="fork")
        assert keys_of(all_batches(loader)) == store.keys
    held.reader_check()
    assert _reader_slots(held, os.getpid()) == before
    np.testing.assert_array_equal(held.retrieve_sample(store.keys[1])["data"], clip_for(2, store.shape))  # the parent's handle still reads
    held.close()


def _fork_and_read(path, key) -> int:
    """Fork; the child opens the store at ``path`` and reads ``key`` (killed if it hangs 10 s). Returns its exit code."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        import signal

        signal.alarm(10)
        try:
            with LMDBStorage(path) as child:
                child.retrieve_sample(key)
            os._exit(0)
        except BaseException:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_fork_during_a_read_leaves_the_parents_reader_slot(store):
    # The parent forks in the middle of a read transaction (a raw_records block): closing the child's inherited
    # copy would abort that transaction there and clear the parent's slot in the shared lock table, so the child
    # borrows the inherited handle instead; the parent's snapshot stays registered.
    held = LMDBStorage(store.path)
    with held.raw_records([store.keys[0]]) as (buf,):
        before = _reader_slots(held, os.getpid())
        assert before >= 1
        assert _fork_and_read(store.path, store.keys[1]) == 0
        assert _reader_slots(held, os.getpid()) >= before
        assert bytes(buf[:4]) == b"DFR\x01"
    held.close()


def test_a_fork_during_a_write_does_not_hang_the_child(tmp_path):
    # Another thread of the parent is inside a write transaction when it forks: the child must not wait on the
    # write lock of a thread it does not have (closing the inherited copy would), and still reads.
    import threading

    info = build_store(tmp_path / "data.lmdb", 4)
    writer = LMDBStorage(info.path, readonly=False)
    entered, leave = threading.Event(), threading.Event()

    def hold_a_write() -> None:
        with writer._begin(write=True):
            entered.set()
            leave.wait(30)

    thread = threading.Thread(target=hold_a_write)
    thread.start()
    try:
        assert entered.wait(10)
        assert _fork_and_read(info.path, info.keys[0]) == 0  # 0, not killed by its alarm
    finally:
        leave.set()
        thread.join()
    writer.close(complete=True)
