"""Several stores as one dataset: tagging, layout checks, balancing, filters, normalisation, inspect info."""

from __future__ import annotations

import json
import logging
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from src.data.loaders import create_data_loader, create_train_val_loaders
from src.data.multi_store import FitClip, MultiStoreDataset, fit_clip, item_datasets, store_dataset_name
from src.data.storage import open_storage
from src.data.transforms import IMAGENET_MEAN, IMAGENET_STD, LMDBDataTransform
from src.errors import ConfigError

SHAPE = (3, 4, 16, 16)


def clip_of(dataset: str, index: int, shape=SHAPE, dtype=np.uint8) -> np.ndarray:
    """The clip stored for ``index`` of ``dataset``: a pure function of both."""
    seed = index * 1000 + sum(map(ord, dataset))
    clip = np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)
    return clip if dtype == np.uint8 else (clip.astype(dtype) / 255)


def write_store(
    path: Path,
    dataset: str,
    n: int,
    *,
    fmt: str = "lmdb",
    shape=SHAPE,
    dtype=np.uint8,
    field: bool = True,
    config_name: str | None = None,
    loader_stats: dict | None = None,
    real_every: int = 4,
    index_fields=("label", "category", "method"),
    field_values: list[str] | None = None,
) -> Path:
    """A store of ``n`` samples keyed ``sample_000001``...; metadata has ``dataset`` when ``field``."""
    config = None
    if config_name is not None or loader_stats is not None:
        config = {"preprocessing": {"dataset": {"name": config_name}, "loader": loader_stats or {}}}
    options = {"map_size_gb": 0.05} if fmt == "lmdb" else {}
    path.parent.mkdir(parents=True, exist_ok=True)
    with open_storage(path, "w", format=fmt, config=config, index_fields=index_fields, **options) as store:
        for i in range(1, n + 1):
            real = i % real_every == 0
            metadata = {"method": "real" if real else f"{dataset}-fake", "category": "A" if real else "C", "index": i}
            if field_values is not None:
                metadata["dataset"] = field_values[(i - 1) % len(field_values)]
            elif field:
                metadata["dataset"] = dataset
            store.store_sample(
                f"sample_{i:06d}", {"data": clip_of(dataset, i, shape, dtype), "label": 0 if real else 1, "metadata": metadata}
            )
    return path


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    """FaceForensics++ (LMDB, catalog writes ``dataset``) and Celeb-DF (HDF5, only the config names it)."""
    root = tmp_path_factory.mktemp("multi")
    ff = write_store(root / "FaceForensics++" / "train" / "data.lmdb", "faceforensics", 24)
    celeb = write_store(root / "Celeb-DF-v2" / "train" / "data.h5", "celebdf", 12, fmt="hdf5", field=False, config_name="celebdf")
    return ff, celeb


def tagged(batches) -> list[tuple[str, str]]:
    return [(m["dataset"], k) for b in batches for m, k in zip(b["metadata"], b["key"])]


def expected(dataset: str, key: str) -> np.ndarray:
    clip = clip_of(dataset, int(key.split("_")[1])).astype(np.float64) / 255
    return (clip - np.reshape(IMAGENET_MEAN, (3, 1, 1, 1))) / np.reshape(IMAGENET_STD, (3, 1, 1, 1))


# ----------------------------------------------------------------------------- one dataset of two stores


@pytest.mark.parametrize(("num_workers", "worker_type"), [(0, "thread"), (2, "thread"), (2, "process")])
def test_two_datasets_one_loader_tagged_exact(two, num_workers, worker_type):
    loader = create_data_loader(list(two), batch_size=8, num_workers=num_workers, worker_type=worker_type, seed=3)
    assert len(loader.dataset) == 36 and len(loader) == 5
    batches = list(loader)
    seen = tagged(batches)
    assert len(seen) == len(set(seen)) == 36
    assert Counter(d for d, _ in seen) == {"faceforensics": 24, "celebdf": 12}
    assert any(len({m["dataset"] for m in b["metadata"]}) == 2 for b in batches)  # batches mix the stores
    for batch in batches:
        assert tuple(batch["data"].shape[1:]) == SHAPE and batch["data"].dtype == torch.float32
        for i, (meta, key) in enumerate(zip(batch["metadata"], batch["key"])):
            np.testing.assert_allclose(batch["data"][i].numpy(), expected(meta["dataset"], key), rtol=0, atol=1e-5)
            assert int(batch["label"][i]) == (0 if meta["index"] % 4 == 0 else 1)
    loader.close()


def test_per_sample_path_tags_and_transforms(two):
    class Flip(LMDBDataTransform):
        def __call__(self, sample):
            assert sample["metadata"]["dataset"] in ("faceforensics", "celebdf")  # the transform sees the tag
            out = super().__call__(sample)
            out["data"] = out["data"].flip(-1)
            return out

    loader = create_data_loader(list(two), Flip(), batch_size=6, num_workers=2, shuffle=False, normalize=False)
    batches = list(loader)
    seen = tagged(batches)
    assert seen == [("faceforensics", f"sample_{i:06d}") for i in range(1, 25)] + [("celebdf", f"sample_{i:06d}") for i in range(1, 13)]
    b = batches[-1]
    np.testing.assert_array_equal(b["data"][0].numpy(), clip_of("celebdf", 7)[..., ::-1])


def test_single_path_is_unchanged(two):
    """A single store is read as before: no tag is added to its metadata."""
    ff, celeb = two
    batch = next(iter(create_data_loader(celeb, batch_size=4, num_workers=0, shuffle=False)))
    assert all("dataset" not in m for m in batch["metadata"])
    assert type(create_data_loader(ff, num_workers=0).dataset).__name__ == "ClipDataset"


def test_dataset_names_field_config_and_folder(tmp_path, two):
    ff, celeb = two
    bare = write_store(tmp_path / "LAV-DF" / "val" / "data.numpy", "lavdf", 4, fmt="numpy", field=False)
    flat = write_store(tmp_path / "loose" / "data.torch", "x", 4, fmt="torch", field=False)
    with open_storage(celeb) as s:
        assert store_dataset_name(s) == "celebdf"  # the recorded config
    with open_storage(bare) as s:
        assert store_dataset_name(s) == "LAV-DF"  # the dataset folder above the split
    with open_storage(flat) as s:
        assert store_dataset_name(s) == "loose"
    with open_storage(ff) as s:
        assert store_dataset_name(s) == "FaceForensics++"  # the samples' field wins at read time, not here
    loader = create_data_loader([ff, bare, flat], batch_size=32, num_workers=0, shuffle=False)
    (batch,) = list(loader)
    assert Counter(m["dataset"] for m in batch["metadata"]) == {"faceforensics": 24, "LAV-DF": 4, "loose": 4}


def test_train_val_lists(two, tmp_path):
    ff, celeb = two
    val = write_store(tmp_path / "FaceForensics++" / "val" / "data.lmdb", "faceforensics", 5)
    train_loader, val_loader = create_train_val_loaders(
        list(two), [val, celeb], batch_size=8, num_workers=0, target_device="cpu", balanced=True
    )
    assert len(train_loader.dataset) == 36 and len(val_loader.dataset) == 17
    assert Counter(d for d, _ in tagged(val_loader)) == {"faceforensics": 5, "celebdf": 12}


# ----------------------------------------------------------------------------- layouts


def test_different_shapes_are_rejected_naming_both(tmp_path, two):
    ff, _ = two
    small = write_store(tmp_path / "DFDC" / "train" / "data.lmdb", "dfdc", 6, shape=(3, 8, 12, 12))
    with pytest.raises(ConfigError) as info:
        create_data_loader([ff, small], num_workers=0)
    message = str(info.value)
    assert str(ff) in message and str(small) in message
    assert "(3, 4, 16, 16)" in message and "(3, 8, 12, 12)" in message and "FitClip" in message
    with pytest.raises(ConfigError, match="transform's clips differ"):
        create_data_loader([ff, small], LMDBDataTransform(), num_workers=0)


def test_different_dtypes_are_rejected(tmp_path, two):
    ff, _ = two
    floats = write_store(tmp_path / "F" / "train" / "data.lmdb", "f", 4, dtype=np.float32)
    with pytest.raises(ConfigError, match=r"uint8 \(3, 4, 16, 16\).*float32 \(3, 4, 16, 16\)"):
        create_data_loader([ff, floats], num_workers=0)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_fit_clip_makes_stores_agree(tmp_path, two, num_workers):
    ff, _ = two
    small = write_store(tmp_path / "DFDC" / "train" / "data.lmdb", "dfdc", 6, shape=(3, 8, 12, 12))
    rng_before = torch.random.get_rng_state()
    loader = create_data_loader([ff, small], FitClip(frames=4, size=16), batch_size=10, num_workers=num_workers, seed=1)
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # probing the transform left the caller's RNG alone
    batches = list(loader)
    assert all(tuple(b["data"].shape[1:]) == SHAPE for b in batches)
    assert Counter(d for d, _ in tagged(batches)) == {"faceforensics": 24, "dfdc": 6}


def test_fit_clip_function():
    clip = torch.arange(3 * 6 * 4 * 4, dtype=torch.float32).reshape(3, 6, 4, 4)
    assert torch.equal(fit_clip(clip, frames=4), clip[:, 1:5])  # the middle frames
    longer = fit_clip(clip, frames=8)
    assert torch.equal(longer[:, :6], clip) and torch.equal(longer[:, 6], clip[:, 5]) and torch.equal(longer[:, 7], clip[:, 5])
    u8 = torch.full((3, 2, 8, 8), 200, dtype=torch.uint8)
    small = fit_clip(u8, size=(4, 6))
    assert small.dtype == torch.uint8 and tuple(small.shape) == (3, 2, 4, 6) and int(small.min()) == int(small.max()) == 200
    assert fit_clip(u8) is not None and tuple(fit_clip(u8, frames=2, size=8).shape) == (3, 2, 8, 8)
    with pytest.raises(ConfigError, match="frames"):
        FitClip(frames=0)
    with pytest.raises(ConfigError, match="size"):
        FitClip(size=(1, 2, 3))


# ----------------------------------------------------------------------------- balancing


def test_balance_by_dataset_label_and_weights(two):
    def draws(**options):
        """(dataset, label) of each draw, from the sampler and the indexes (the batches' tags are checked elsewhere)."""
        loader = create_data_loader(list(two), batch_size=100, num_workers=0, balanced=True, num_samples=4000, seed=5, **options)
        indices = list(loader.sampler)
        names, labels = item_datasets(loader.dataset)[indices], loader.dataset.labels[indices]
        return list(zip(names.tolist(), labels.tolist()))

    by_dataset = Counter(d for d, _ in draws(balance_by="dataset"))
    assert 0.45 < by_dataset["celebdf"] / 4000 < 0.55  # 12 of 36 items, drawn half the time
    joint = Counter(draws(balance_by="dataset_label"))
    for (dataset, label), count in joint.items():
        assert 0.2 < count / 4000 < 0.3, (dataset, label, count)  # four cells, a quarter each
    assert len(joint) == 4
    weighted = Counter(d for d, _ in draws(balance_by="dataset", dataset_weights={"faceforensics": 3, "celebdf": 1}))
    assert 0.7 < weighted["faceforensics"] / 4000 < 0.8
    by_label = Counter(label for _, label in draws())
    assert 0.45 < by_label[0] / 4000 < 0.55
    assert draws(balance_by="dataset") == draws(balance_by="dataset")  # deterministic for a seed
    loader = create_data_loader(list(two), batch_size=50, num_workers=2, balanced=True, balance_by="dataset", num_samples=100, seed=5)
    indices = list(loader.sampler)
    want = list(zip(item_datasets(loader.dataset)[indices].tolist(), loader.dataset.labels[indices].tolist()))
    assert [(m["dataset"], int(x)) for b in loader for m, x in zip(b["metadata"], b["label"])] == want  # the batches carry what was drawn


def test_balance_options_are_checked(two):
    with pytest.raises(ConfigError, match="balance_by applies to balanced=True"):
        create_data_loader(list(two), balance_by="dataset")
    with pytest.raises(ConfigError, match="invalid balance_by 'store'"):
        create_data_loader(list(two), balanced=True, balance_by="store")
    with pytest.raises(ConfigError, match="dataset_weights apply to"):
        create_data_loader(list(two), balanced=True, dataset_weights={"celebdf": 1})
    with pytest.raises(ConfigError, match="exactly: celebdf, faceforensics; unknown: ff; missing: faceforensics"):
        create_data_loader(list(two), num_workers=0, balanced=True, balance_by="dataset", dataset_weights={"celebdf": 1, "ff": 2})


def test_dataset_index_answers_per_sample(tmp_path):
    """A merged store that indexes ``dataset`` balances by it without decoding a sample."""
    merged = write_store(
        tmp_path / "merged" / "data.lmdb", "m", 20, index_fields=("label", "method", "dataset"), field_values=["a", "a", "a", "b"]
    )
    loader = create_data_loader(merged, num_workers=0, balanced=True, balance_by="dataset", num_samples=2000, batch_size=500)
    names = item_datasets(loader.dataset)
    assert Counter(names.tolist()) == {"a": 15, "b": 5}
    counts = Counter(m["dataset"] for b in loader for m in b["metadata"])
    assert 0.44 < counts["b"] / 2000 < 0.56


# ----------------------------------------------------------------------------- subsets and errors


def test_filters_across_stores(two, caplog):
    ff, celeb = two

    def keys(**options):
        return sorted(tagged(create_data_loader([ff, celeb], batch_size=64, num_workers=0, **options)))

    reals = keys(labels=[0])
    assert Counter(d for d, _ in reals) == {"faceforensics": 6, "celebdf": 3}
    with caplog.at_level(logging.WARNING, logger="src.data.multi_store"):
        only_ff = keys(methods=["faceforensics-fake"])
    assert {d for d, _ in only_ff} == {"faceforensics"} and len(only_ff) == 18
    assert "left out" in caplog.text
    picked = keys(keys=["sample_000001", "sample_000020"])
    assert picked == [("celebdf", "sample_000001"), ("faceforensics", "sample_000001"), ("faceforensics", "sample_000020")]
    with pytest.raises(ConfigError, match="in none of the stores: sample_999999"):
        keys(keys=["sample_000001", "sample_999999"])
    with pytest.raises(ConfigError, match="no sample of the 2 stores"):
        keys(methods=["nothing"])
    with pytest.raises(ConfigError, match="listed twice"):
        create_data_loader([ff, ff])
    with pytest.raises(ConfigError, match="empty list"):
        create_data_loader([])


def test_stores_recording_different_normalisation(tmp_path):
    a = write_store(tmp_path / "A" / "train" / "data.lmdb", "a", 4, loader_stats={"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]})
    b = write_store(tmp_path / "B" / "train" / "data.lmdb", "b", 4, loader_stats={"mean": [0.4, 0.4, 0.4], "std": [0.25, 0.25, 0.25]})
    with pytest.raises(ConfigError, match=r"record different loader mean values.*pass mean="):
        create_data_loader([a, b], num_workers=0)
    loader = create_data_loader([a, b], num_workers=0, mean=(0.5, 0.5, 0.5), shuffle=False, batch_size=8)
    batch = next(iter(loader))
    clip = clip_of("a", 1).astype(np.float64) / 255
    np.testing.assert_allclose(batch["data"][0].numpy(), (clip - 0.5) / 0.25, rtol=0, atol=1e-5)  # the stores' agreed std


def test_dataset_pickles_for_spawn_workers(two):
    """What a spawn worker receives: the dataset without open handles, reopening its stores lazily."""
    dataset = MultiStoreDataset(list(two))
    assert len(dataset) == 36 and dataset.locate(24) == (1, 0) and dataset.locate(23) == (0, 23)
    dataset.read_batch([0, 30])  # handles open in this process
    copy = pickle.loads(pickle.dumps(dataset))
    assert all(part._storage is None for part in copy.parts)
    batch = copy.read_batch([30, 0, 35])
    assert [m["dataset"] for m in batch.metadata] == ["celebdf", "faceforensics", "celebdf"]
    assert batch.keys == ["sample_000007", "sample_000001", "sample_000012"]
    with pytest.raises(IndexError):
        dataset.locate(36)


# ----------------------------------------------------------------------------- inspect info


def test_info_lists_each_dataset_of_an_output_root(two):
    from src.inspect.info import collect_info, find_dataset_stores, summarize_datasets
    from src.inspect.stores import open_checked

    root = Path(two[0]).parents[2]
    targets = find_dataset_stores(root)
    assert [t.name for t in targets] == ["Celeb-DF-v2/train/data.h5", "FaceForensics++/train/data.lmdb"]
    infos = []
    for target in targets:
        with open_checked(target.path) as store:
            infos.append(collect_info(store, target))
    assert [i.dataset for i in infos] == ["celebdf", "FaceForensics++"]
    summary = summarize_datasets(infos)
    assert [(s.name, s.num_samples, s.stores) for s in summary] == [("Celeb-DF-v2", 12, 1), ("FaceForensics++", 24, 1)]
    assert summary[1].counts["label"] == {"0": 6, "1": 18}
    json.dumps([s.to_dict() for s in summary])
    assert find_dataset_stores(two[0])[0].name == "train/data.lmdb"  # a store, a split or one dataset root: as before
