"""The loader's parts: options, the internal batch, the prefetch pipeline, and the store's normalisation."""

from __future__ import annotations

import pickle
import threading
from pathlib import Path

import pytest
import torch

from src.config import config_from_dict
from src.data.batch import BATCH_FIELDS, RawBatch
from src.data.lmdb_storage import LMDBStorage
from src.data.loader_options import LOADER_OPTIONS, LoaderOptions, store_normalization
from src.data.loaders import create_data_loader
from src.data.prefetch import prefetch
from src.data.transforms import IMAGENET_MEAN, IMAGENET_STD, LMDBDataTransform
from src.errors import ConfigError
from tests.loader_helpers import build_store, clip_for

CONTROL = {"_skipped", "_errors", "_slot", "_normalized", "skipped", "errors", "slot", "normalized"}
SHAPE = (3, 4, 16, 16)


# ----------------------------------------------------------------------------- options


def test_loader_options_are_the_dataclass_fields():
    assert len(LOADER_OPTIONS) == 25  # 23 + balance_by, dataset_weights (multi-store balancing)
    assert LOADER_OPTIONS["prefetch"] == 2 and LOADER_OPTIONS["worker_type"] == "auto" and LOADER_OPTIONS["mean"] is None
    with pytest.raises(ConfigError, match="unknown loader option.*'shufle'.*allowed: seed, drop_last"):
        LoaderOptions.from_kwargs({"shufle": True})
    with pytest.raises(AttributeError):
        LoaderOptions().seed = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"prefetch": 0}, r"prefetch must be an int >= 1; got 0"),
        ({"worker_type": "fiber"}, r"invalid worker_type 'fiber'; must be one of auto, thread, process"),
        ({"on_error": "ignore"}, r"invalid on_error 'ignore'; must be one of raise, skip"),
        ({"timeout": -1}, r"timeout must be .*>= 0; got -1"),
        ({"multiprocessing_context": "threads"}, r"invalid multiprocessing_context 'threads'; must be one of"),
        ({"drop_last": "yes"}, r"drop_last must be True or False; got 'yes'"),
        ({"std": [0.0, 1.0, 1.0]}, r"std values must be positive"),
        ({"num_samples": 5}, r"num_samples applies to balanced=True"),
        ({"world_size": 0}, r"world_size must be an int >= 1 or None; got 0"),
    ],
)
def test_loader_options_name_the_bad_value(options, message):
    with pytest.raises(ConfigError, match=message):
        LoaderOptions.from_kwargs(options)


# ----------------------------------------------------------------------------- batch object


def test_raw_batch_pickles_and_unwraps_without_control_fields():
    raw = RawBatch(
        data=torch.zeros(2, *SHAPE, dtype=torch.uint8),
        label=torch.tensor([0, 1]),
        keys=["a", "b"],
        metadata=[{}, {}],
        skipped=[("c", "bad crc")],
        slot=3,
        normalized=True,
    )
    again = pickle.loads(pickle.dumps(raw))
    assert again.keys == ["a", "b"] and again.skipped == [("c", "bad crc")] and again.slot == 3 and again.normalized
    assert torch.equal(again.data, raw.data)
    assert list(raw.as_dict()) == ["data", "label", "key", "metadata"]
    assert RawBatch.failure([("k", "why")]).errors == [("k", "why")]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_store(tmp_path_factory.mktemp("parts") / "data.lmdb", 12, shape=SHAPE)


@pytest.mark.parametrize(("transform", "worker_type"), [(None, "thread"), (None, "process"), ("base", "process"), ("base", "thread")])
def test_users_see_only_the_spec_fields(store, transform, worker_type):
    loader = create_data_loader(
        store.path, LMDBDataTransform() if transform else None, batch_size=5, num_workers=2, worker_type=worker_type, on_error="skip"
    )
    for batch in loader:
        assert isinstance(batch, dict)
        assert set(batch) == set(BATCH_FIELDS) and not CONTROL & set(batch)
        assert batch["data"].dtype == torch.float32 and len(batch["key"]) == len(batch["label"])


# ----------------------------------------------------------------------------- prefetch


def test_prefetch_order_errors_and_drops():
    assert list(prefetch(range(10), lambda w, stop: w * 2, depth=2)) == [w * 2 for w in range(10)]

    def boom(w, stop):
        if w == 3:
            raise ValueError("piece 3")
        return w

    got = []
    with pytest.raises(ValueError, match="piece 3"):
        for item in prefetch(range(10), boom, depth=2):
            got.append(item)
    assert got == [0, 1, 2]

    made, dropped = [], []
    lock = threading.Lock()

    def make(w, stop):
        with lock:
            made.append(w)
        return w

    items = prefetch(range(100), make, depth=3, drop=dropped.append)
    assert next(items) == 0
    items.close()  # early stop: everything made and not delivered is handed to drop
    assert sorted(dropped) == [w for w in made if w != 0] and len(made) < 100


# ----------------------------------------------------------------------------- normalisation


class _Meta:
    def __init__(self, meta):
        self.meta = meta
        self.path = "fake"


def test_store_normalization_tolerates_missing_and_bad_metadata():
    assert store_normalization(_Meta({})) is None
    assert store_normalization(_Meta({"config": None})) is None
    assert store_normalization(_Meta({"config": {"preprocessing": {"frames": {}}}})) is None
    assert store_normalization(_Meta({"config": {"preprocessing": {"loader": {"mean": "x", "std": [1]}}}})) is None
    assert store_normalization(object()) is None
    assert store_normalization(_Meta({"config": {"preprocessing": {"loader": {"mean": [0, 0, 0], "std": [1, 1, 1]}}}})) == ((0.0,) * 3, (1.0,) * 3)


def _store_with_stats(path: Path, mean, std) -> Path:
    with LMDBStorage(path, readonly=False, map_size_gb=0.05, config={"preprocessing": {"loader": {"mean": mean, "std": std}}}) as out:
        for i in range(1, 7):
            out.store_sample(f"sample_{i:06d}", {"data": clip_for(i, SHAPE), "label": i % 2, "metadata": {"category": "A", "method": "real"}})
    return path


def _raw_clips(path, **kw):
    loader = create_data_loader(path, batch_size=6, num_workers=0, shuffle=False, normalize=False, **kw)
    return next(iter(loader))["data"]


def _normalised(raw: torch.Tensor, mean, std) -> torch.Tensor:
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1, 1)
    return (raw.float() / 255 - m) / s


def test_store_statistics_are_the_default_and_explicit_ones_win(tmp_path):
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    path = _store_with_stats(tmp_path / "data.lmdb", list(mean), list(std))
    raw = _raw_clips(path)
    assert raw.dtype == torch.uint8
    checks = [
        ({}, None, (mean, std)),  # the store's
        ({"mean": IMAGENET_MEAN, "std": IMAGENET_STD}, None, (IMAGENET_MEAN, IMAGENET_STD)),  # options win
        ({"mean": (0.1, 0.1, 0.1)}, None, ((0.1, 0.1, 0.1), std)),  # per statistic
        ({}, LMDBDataTransform(), (mean, std)),  # a transform left at its defaults takes the store's
        ({}, LMDBDataTransform(mean=IMAGENET_MEAN, std=IMAGENET_STD), (IMAGENET_MEAN, IMAGENET_STD)),  # an explicit transform wins
        ({"std": (1.0, 1.0, 1.0)}, LMDBDataTransform(mean=(0.0, 0.0, 0.0)), ((0.0,) * 3, (1.0,) * 3)),
    ]
    for options, transform, (m, s) in checks:
        loader = create_data_loader(path, transform, batch_size=6, num_workers=0, shuffle=False, **options)
        data = next(iter(loader))["data"]
        assert loader.finisher.affine.mean == tuple(m) and loader.finisher.affine.std == tuple(s)
        torch.testing.assert_close(data, _normalised(raw, m, s), rtol=0, atol=1e-5)


def test_store_without_recorded_statistics_keeps_imagenet(store):
    loader = create_data_loader(store.path, batch_size=4, num_workers=0)
    assert loader.finisher.affine.mean == IMAGENET_MEAN and loader.finisher.affine.std == IMAGENET_STD


def test_yaml_loader_section_reaches_the_batches(demo_root, tmp_path):
    """A store preprocessed with ``loader: {mean: [0,0,0], std: [1,1,1]}`` yields exactly uint8 / 255."""
    from src.preprocessing.runner import run_preprocessing

    config = config_from_dict(
        {
            "dataset": {"input_dir": str(demo_root)},
            "output": {"dir": str(tmp_path)},
            "processing": {"executor": "serial", "limit": 6},
            "frames": {"num_frames": 4},
            "faces": {"image_size": 48},
            "loader": {"mean": [0, 0, 0], "std": [1, 1, 1]},
        }
    )
    report = run_preprocessing(config)
    assert report.stored > 0
    checked = 0
    for path in sorted((tmp_path / "FakeAVCeleb_v1.2").glob("*/data.lmdb")):
        with LMDBStorage(path) as storage:
            assert store_normalization(storage) == ((0.0,) * 3, (1.0,) * 3)
            truth = {k: storage.retrieve_sample(k)["data"] for k in storage.get_all_keys()}
        if not truth:
            continue
        checked += len(truth)
        for transform, workers in ((None, 0), (None, 2), (LMDBDataTransform(), 0)):
            loader = create_data_loader(path, transform, batch_size=4, num_workers=workers, shuffle=False)
            for batch in loader:
                assert batch["data"].dtype == torch.float32
                expected = torch.stack([torch.from_numpy(truth[k]) for k in batch["key"]]).float() / 255
                assert torch.equal(batch["data"], expected)
        # The caller's statistics still override the recorded ones.
        loader = create_data_loader(path, batch_size=4, num_workers=0, shuffle=False, mean=IMAGENET_MEAN, std=IMAGENET_STD)
        batch = next(iter(loader))
        expected = torch.stack([torch.from_numpy(truth[k]) for k in batch["key"]])
        torch.testing.assert_close(batch["data"], _normalised(expected, IMAGENET_MEAN, IMAGENET_STD), rtol=0, atol=1e-5)
    assert checked == report.stored
