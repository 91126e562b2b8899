# ruff: noqa: W293  (the spec examples below keep their whitespace verbatim)
"""Small synthetic stores for the loader tests, with their ground truth.

Every clip and audio track is a pure function of the sample's index
(:func:`clip_for`, :func:`audio_for`), so a test can recompute exactly what a
batch must contain. Metadata follows FakeAVCeleb: categories A-D, their
manipulation methods, identities, gender and race.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import lmdb
import numpy as np

from src.data.lmdb_storage import LMDBStorage
from src.data.record import decode_header

__all__ = [
    "CATALOG",
    "SPEC_EXAMPLES",
    "SPEC_TRAIN",
    "SPEC_VAL",
    "StoreInfo",
    "audio_for",
    "build_spec_layout",
    "build_store",
    "clip_for",
    "corrupt_record",
    "run_spec_example",
    "sample_key",
]

#: (category, type, method) of FakeAVCeleb; category A is the real one.
CATALOG: tuple[tuple[str, str, str], ...] = (
    ("A", "RealVideo-RealAudio", "real"),
    ("B", "RealVideo-FakeAudio", "rtvc"),
    ("C", "FakeVideo-RealAudio", "faceswap"),
    ("C", "FakeVideo-RealAudio", "fsgan"),
    ("D", "FakeVideo-FakeAudio", "faceswap-wav2lip"),
    ("D", "FakeVideo-FakeAudio", "fsgan-wav2lip"),
    ("D", "FakeVideo-FakeAudio", "wav2lip"),
)

#: Where the spec's examples look for their stores, relative to the working directory.
SPEC_TRAIN = "data/processed/FakeAVCeleb_v1.2/train/data.lmdb"
SPEC_VAL = "data/processed/FakeAVCeleb_v1.2/val/data.lmdb"

_GENDERS = ("men", "women")
_RACES = ("African", "Asian (East)", "Asian (South)", "Caucasian (American)", "Caucasian (European)")


@dataclass
class StoreInfo:
    """A built store and what is in it."""

    path: Path
    shape: tuple[int, ...]
    keys: list[str] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)
    categories: dict[str, str] = field(default_factory=dict)
    methods: dict[str, str] = field(default_factory=dict)
    indices: dict[str, int] = field(default_factory=dict)
    audio: bool = True

    def keys_where(self, **conditions: object) -> list[str]:
        """Keys whose label/category/method equal the given values, sorted."""
        tables = {"label": self.labels, "category": self.categories, "method": self.methods}
        return sorted(k for k in self.keys if all(tables[f][k] == v for f, v in conditions.items()))


def sample_key(index: int) -> str:
    """``sample_000001`` style key of a 1-based index."""
    return f"sample_{index:06d}"


def clip_for(index: int, shape: tuple[int, ...]) -> np.ndarray:
    """The uint8 clip stored for ``index``."""
    return np.random.default_rng(index).integers(0, 256, size=shape, dtype=np.uint8)


def audio_for(index: int) -> np.ndarray:
    """The float32 audio stored for ``index`` (its length varies with the index)."""
    n = 160 + 16 * (index % 5)
    return np.sin(np.linspace(0, 20 * np.pi, n, dtype=np.float32) * (1 + index % 3)).astype(np.float32)


def build_store(
    path: str | Path,
    n: int = 40,
    *,
    real_every: int = 10,
    shape: tuple[int, ...] = (3, 4, 32, 32),
    audio: bool = True,
    codec: str = "raw",
    start: int = 1,
    shards: int = 0,
) -> StoreInfo:
    """Write ``n`` samples with keys ``sample_{start:06d}``... into an LMDB store.

    Every ``real_every``-th sample (1-based index divisible by it) is real
    (category A, label 0); the others cycle through the fake methods. With
    ``shards``, the store is a shard set of that many shards, written as the
    Ray executor's actors write one (each shard's samples interleaved with the
    others', by index).

    Returns:
        The store's ground truth.
    """
    path = Path(path)
    info = StoreInfo(path=path, shape=tuple(shape), audio=audio)
    fakes = CATALOG[1:]
    if shards:
        from src.data.lmdb_shards import ShardedLMDBStorage, ShardTarget, ShardWriter

        target = ShardTarget({"split": str(path)}, local_dir=str(path.parent / ".shard-scratch"), options={"codec": codec, "map_size_gb": 0.25})
        the_set = ShardedLMDBStorage(path, readonly=False, codec=codec)
        writers = [ShardWriter(target) for _ in range(shards)]
    with contextlib.nullcontext() if shards else LMDBStorage(path, readonly=False, map_size_gb=0.25, codec=codec) as store:
        for index in range(start, start + n):
            real = index % real_every == 0
            category, kind, method = CATALOG[0] if real else fakes[index % len(fakes)]
            key = sample_key(index)
            sample = {
                "data": clip_for(index, shape),
                "label": 0 if real else 1,
                "metadata": {
                    "num_frames": int(shape[1]),
                    "video_path": f"FakeAVCeleb_v1.2/{kind}/{_RACES[index % 5]}/{_GENDERS[index % 2]}/id{index:05d}/{index:05d}.mp4",
                    "category": category,
                    "method": method,
                    "source": f"id{index:05d}",
                    "target1": "-" if real else f"id{index + 1:05d}",
                    "target2": "-",
                    "type": kind,
                    "gender": _GENDERS[index % 2],
                    "race": _RACES[index % 5],
                    "face_found": True,
                },
            }
            if audio:
                sample["audio"] = audio_for(index)
            if shards:
                writers[index % shards].add("split", key, sample)
            else:
                store.store_sample(key, sample)
            info.keys.append(key)
            info.labels[key] = sample["label"]
            info.categories[key] = category
            info.methods[key] = method
            info.indices[key] = index
    if shards:
        for writer in writers:
            writer.seal()
            writer.close()
        the_set.close()
    return info


def build_spec_layout(root: str | Path, n_train: int = 40, n_val: int = 12, **options: object) -> tuple[StoreInfo, StoreInfo]:
    """Build the spec's ``data/processed/FakeAVCeleb_v1.2/{train,val}/data.lmdb`` under ``root``."""
    root = Path(root)
    train = build_store(root / SPEC_TRAIN, n_train, **options)  # type: ignore[arg-type]
    val = build_store(root / SPEC_VAL, n_val, start=n_train + 1, **options)  # type: ignore[arg-type]
    return train, val


def corrupt_record(path: str | Path, key: str) -> None:
    """Flip bytes in the middle of ``key``'s clip with the raw lmdb module (header left intact).

    No store of ``path`` may be open in this process.
    """
    env = lmdb.open(str(path), subdir=True, max_dbs=64, readonly=False, lock=True)
    try:
        db = env.open_db(b"samples", create=False)
        with env.begin(write=True, db=db) as txn:
            value = bytearray(txn.get(key.encode()))
            header = decode_header(bytes(value), key)
            spec = header.arrays["data"]
            middle = header.payload_offset + spec.offset + spec.length // 2
            for i in range(middle, middle + 8):
                value[i] ^= 0xFF
            txn.put(key.encode(), bytes(value))
    finally:
        env.close()


# ----------------------------------------------------------------------------- the spec's examples

#: The spec's (shared/spec/lmdb-storage.md) Python examples, verbatim: sections 2, 3, 4, 5 and
#: "Advanced Features". They read stores at :data:`SPEC_TRAIN` / :data:`SPEC_VAL` relative to the
#: working directory; two names are left to the reader's context: ``num_epochs`` and
#: ``create_data_loader`` (used, not imported, by the custom-transform example).
SPEC_EXAMPLES: dict[str, str] = {
    "loading": """from src.utils.lmdb_utils import create_train_val_loaders

# Create data loaders
train_loader, val_loader = create_train_val_loaders(
    train_db_path="data/processed/FakeAVCeleb_v1.2/train/data.lmdb",
    val_db_path="data/processed/FakeAVCeleb_v1.2/val/data.lmdb",
    batch_size=32,
    num_workers=4,
    target_device="cuda"  # or "cpu"
)

# Use in training loop
for epoch in range(num_epochs):
    for batch in train_loader:
        data = batch['data']      # Shape: (batch, channels, frames, height, width)
        labels = batch['label']   # Shape: (batch,)
        # ... training code ...
""",
    "direct_access": """from src.data.lmdb_storage import LMDBStorage

# Open database
with LMDBStorage("data/processed/FakeAVCeleb_v1.2/train/data.lmdb") as storage:
    # Get all sample keys
    keys = storage.get_all_keys()
    print(f"Total samples: {len(keys)}")
    
    # Load a specific sample
    sample = storage.retrieve_sample("sample_000001")
    print(f"Sample data shape: {sample['data'].shape}")
    print(f"Sample label: {sample['label']}")
    
    # Load multiple samples
    batch_keys = keys[:10]
    samples = storage.retrieve_batch(batch_keys)
""",
    "queries": """from src.utils.lmdb_utils import query_samples_by_label, query_samples_by_category

# Query samples by label
real_samples = query_samples_by_label("data/processed/FakeAVCeleb_v1.2/train/data.lmdb", 0)
fake_samples = query_samples_by_label("data/processed/FakeAVCeleb_v1.2/train/data.lmdb", 1)

print(f"Real samples: {len(real_samples)}")
print(f"Fake samples: {len(fake_samples)}")

# Query by category
category_a_samples = query_samples_by_category("data/processed/FakeAVCeleb_v1.2/train/data.lmdb", "A")
print(f"Category A samples: {len(category_a_samples)}")
""",
    "benchmark": """from src.utils.lmdb_utils import benchmark_lmdb_performance

# Benchmark performance
perf = benchmark_lmdb_performance("data/processed/FakeAVCeleb_v1.2/train/data.lmdb", num_samples=1000)
print(f"Random access: {perf['avg_random_access_time_ms']:.2f} ms per sample")
print(f"Sequential access: {perf['avg_sequential_access_time_ms']:.2f} ms per sample")
print(f"Throughput: {perf['samples_per_second_random']:.0f} samples/second")
""",
    "custom_transform": """from src.utils.lmdb_utils import LMDBDataTransform
import torchvision.transforms as transforms

class CustomTransform(LMDBDataTransform):
    def __init__(self, target_device="cpu"):
        super().__init__(target_device)
        self.augmentation = transforms.Compose([
            transforms.RandomHorizontalFlip(p=0.5),
            transforms.RandomRotation(degrees=10),
            # Add more augmentations as needed
        ])
    
    def __call__(self, sample):
        sample = super().__call__(sample)
        # Apply custom augmentations
        sample['data'] = self.augmentation(sample['data'])
        return sample

# Use in data loader
transform = CustomTransform(target_device="cuda")
train_loader = create_data_loader(
    db_path="data/processed/FakeAVCeleb_v1.2/train/data.lmdb",
    transform=transform,
    batch_size=32
)
""",
    "batch_processing": """from src.data.lmdb_storage import LMDBStorage

with LMDBStorage("data/processed/FakeAVCeleb_v1.2/train/data.lmdb") as storage:
    # Get all keys
    keys = storage.get_all_keys()
    
    # Process in batches
    batch_size = 100
    for i in range(0, len(keys), batch_size):
        batch_keys = keys[i:i + batch_size]
        samples = storage.retrieve_batch(batch_keys)
        
        # Process batch
        for sample in samples:
            if sample is not None:
                # ... processing code ...
                pass
""",
}


def run_spec_example(name: str, device: str = "cpu", num_epochs: int = 1) -> dict:
    """Run one of :data:`SPEC_EXAMPLES` in the current working directory and return its namespace.

    Args:
        name: A key of :data:`SPEC_EXAMPLES`.
        device: Replaces ``"cuda"`` in the example (pass ``"cuda"`` to run it unchanged).
        num_epochs: Value of the example's free ``num_epochs``.
    """
    from src.utils.lmdb_utils import create_data_loader

    code = SPEC_EXAMPLES[name]
    if device != "cuda":
        code = code.replace('target_device="cuda"', f'target_device="{device}"')
    namespace = {"__name__": f"spec_example_{name}", "num_epochs": num_epochs, "create_data_loader": create_data_loader}
    exec(compile(code, f"<spec example {name}>", "exec"), namespace)  # noqa: S102 - the spec's own code
    return namespace
