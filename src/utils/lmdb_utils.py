"""The spec's loading API in one place: a thin facade over :mod:`src.data` and :mod:`src.bench`.

Example (``docs``: the LMDB storage spec, sections 2, 4, 5 and "Advanced Features")::

    from src.utils.lmdb_utils import create_train_val_loaders, query_samples_by_label

    train_loader, val_loader = create_train_val_loaders(
        train_db_path="data/processed/FakeAVCeleb_v1.2/train/data.lmdb",
        val_db_path="data/processed/FakeAVCeleb_v1.2/val/data.lmdb",
        batch_size=32, num_workers=4, target_device="cuda",
    )
    real = query_samples_by_label("data/processed/FakeAVCeleb_v1.2/train/data.lmdb", 0)

Everything here works on a store of any format (LMDB, HDF5, numpy, torch).
"""

from src.bench.storage_bench import benchmark_lmdb_performance, benchmark_storage
from src.data.dataset import (
    ClipDataset,
    query_samples,
    query_samples_by_category,
    query_samples_by_label,
    query_samples_by_method,
    select_keys,
)
from src.data.loaders import (
    LOADER_OPTIONS,
    ClipLoader,
    LoaderStats,
    collate_samples,
    create_data_loader,
    create_train_val_loaders,
    default_num_workers,
)
from src.data.samplers import BalancedSampler, EpochSampler
from src.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BatchFinisher,
    FrameTransform,
    LMDBDataTransform,
    normalize_clips,
    resolve_device,
)

#: The spec calls the dataset of a store this.
LMDBDataset = ClipDataset

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LOADER_OPTIONS",
    "BalancedSampler",
    "BatchFinisher",
    "ClipDataset",
    "ClipLoader",
    "EpochSampler",
    "FrameTransform",
    "LMDBDataTransform",
    "LMDBDataset",
    "LoaderStats",
    "benchmark_lmdb_performance",
    "benchmark_storage",
    "collate_samples",
    "create_data_loader",
    "create_train_val_loaders",
    "default_num_workers",
    "normalize_clips",
    "query_samples",
    "query_samples_by_category",
    "query_samples_by_label",
    "query_samples_by_method",
    "resolve_device",
    "select_keys",
]
