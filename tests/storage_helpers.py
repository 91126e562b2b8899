"""Helpers for the record and storage tests: small random samples, comparisons, damage.

Clips are smooth gradients plus mild noise, so the lossy ``jpeg`` codec can be
checked for closeness to its input, and still differ from sample to sample.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from src.data.record import decode_header
from src.data.storage import DEFAULT_STORE_NAMES, backend_names

__all__ = [
    "FORMATS",
    "CODECS",
    "CATEGORIES",
    "METHODS",
    "make_clip",
    "make_sample",
    "make_samples",
    "assert_sample_equal",
    "assert_close_clip",
    "store_path",
    "payload_location",
    "flip_byte",
    "set_format_version",
    "PickleBomb",
]

FORMATS: tuple[str, ...] = backend_names()
CODECS: tuple[str, ...] = ("raw", "zstd", "jpeg")
CATEGORIES = ("A", "B", "C", "D")
METHODS = ("real", "fsgan", "faceswap", "wav2lip")


def make_clip(rng: np.random.Generator, channels: int = 3, frames: int = 4, size: int = 32) -> np.ndarray:
    """A uint8 (C, T, H, W) clip: a random smooth gradient with mild noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    clip = np.empty((channels, frames, size, size), dtype=np.float32)
    for c in range(channels):
        a, b, base = rng.uniform(-80, 80, size=3)
        for t in range(frames):
            clip[c, t] = 128 + base * 0.5 + a * xx + b * yy + 4 * t
    clip += rng.normal(0, 2, size=clip.shape)
    return np.clip(clip, 0, 255).astype(np.uint8)


def make_sample(rng: np.random.Generator, index: int = 0, *, audio: bool = True, frames: int = 4, size: int = 32) -> dict[str, Any]:
    """One sample with a clip, optional float32 audio, label and FakeAVCeleb-like metadata.

    Metadata includes numpy scalars and a tuple, which must come back as plain values.
    """
    label = int(index % 2)
    sample: dict[str, Any] = {
        "data": make_clip(rng, frames=frames, size=size),
        "label": label,
        "metadata": {
            "num_frames": np.int64(frames),
            "video_path": f"FakeVideo-FakeAudio/African/men/id{index:05d}/{index:05d}.mp4",
            "category": CATEGORIES[index % len(CATEGORIES)],
            "method": METHODS[index % len(METHODS)] if label else "real",
            "fps": np.float32(25.0),
            "box": (1, 2, 3, 4),
            "gender": "men",
        },
    }
    if audio:
        sample["audio"] = rng.standard_normal(160 * frames).astype(np.float32)
    return sample


def make_samples(n: int, seed: int = 0, *, audio_every: int = 3, **kwargs: Any) -> dict[str, dict[str, Any]]:
    """``{"sample_000000": sample, ...}``; every ``audio_every``-th sample has no audio."""
    rng = np.random.default_rng(seed)
    return {f"sample_{i:06d}": make_sample(rng, i, audio=(i % audio_every != audio_every - 1), **kwargs) for i in range(n)}


def plain_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """What metadata looks like after a round trip (numpy scalars -> numbers, tuples -> lists)."""
    from src.data.record import to_plain

    return to_plain(metadata)


def assert_sample_equal(got: dict[str, Any], want: dict[str, Any], *, exact_data: bool = True) -> None:
    """Assert a decoded sample equals the stored one: arrays byte for byte, same label and metadata."""
    assert got["label"] == want["label"] and type(got["label"]) is int
    assert got["metadata"] == plain_metadata(want["metadata"])
    assert set(got) - {"label", "metadata"} == set(k for k in ("data", "audio") if want.get(k) is not None)
    for name in ("data", "audio"):
        if want.get(name) is None:
            continue
        a, b = np.asarray(got[name]), np.asarray(want[name])
        assert isinstance(got[name], np.ndarray)
        assert a.dtype == b.dtype and a.shape == b.shape, (name, a.dtype, a.shape, b.dtype, b.shape)
        if name == "data" and not exact_data:
            assert_close_clip(a, b)
        else:
            assert a.tobytes() == b.tobytes(), f"array {name!r} differs"


def assert_close_clip(got: np.ndarray, want: np.ndarray, mean_tol: float = 3.0, max_tol: int = 48) -> None:
    """A lossy (JPEG) clip is close to its input."""
    diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
    assert diff.mean() <= mean_tol and diff.max() <= max_tol, (diff.mean(), diff.max())


def store_path(root: Path, fmt: str) -> Path:
    """The conventional store path of ``fmt`` under ``root``."""
    return Path(root) / DEFAULT_STORE_NAMES[fmt]


def payload_location(path: Path, fmt: str, key: str) -> tuple[Path, int]:
    """Return ``(file, byte offset)`` of a byte in the middle of ``key``'s stored clip bytes."""
    if fmt == "lmdb":
        from src.data.lmdb_storage import LMDBStorage

        with LMDBStorage(path) as store:
            record = store.retrieve_record(key)
        mdb = path / "data.mdb"
        pos = mdb.read_bytes().find(record)
        assert pos >= 0, "record not found contiguously in data.mdb"
        header = decode_header(record, key)
        spec = header.arrays["data"]
        return mdb, pos + header.payload_offset + spec.offset + spec.length // 2
    if fmt == "hdf5":
        import h5py

        with h5py.File(path, "r") as f:
            ds = f["samples"][key]["data"]
            if ds.chunks is None:
                return path, int(ds.id.get_offset()) + ds.id.get_storage_size() // 2
            info = ds.id.get_chunk_info(0)
            return path, int(info.byte_offset) + int(info.size) // 2
    entry = json.loads((path / "index.json").read_text())["samples"][key]
    if fmt == "numpy":
        file = path / entry["arrays"]["data"]["file"]
        return file, file.stat().st_size - 1 - (os.path.getsize(file) // 4)
    if fmt == "torch":
        import torch

        file = path / entry["arrays"]["data"]["file"]
        stored = torch.load(file, weights_only=True)["data"].numpy().tobytes()
        pos = file.read_bytes().find(stored)
        assert pos >= 0, "tensor bytes not found in the .pt file"
        return file, pos + len(stored) // 2
    raise ValueError(fmt)


def flip_byte(file: Path, offset: int, mask: int = 0xFF) -> None:
    """XOR one byte of ``file`` in place."""
    with open(file, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        assert len(byte) == 1, f"offset {offset} beyond {file}"
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ mask]))


def set_format_version(path: Path, fmt: str, version: Any) -> None:
    """Rewrite the ``format_version`` in a closed store's ``__meta__``."""
    if fmt == "lmdb":
        import lmdb

        env = lmdb.open(str(path), max_dbs=64)
        db = env.open_db(b"meta")
        with env.begin(write=True, db=db) as txn:
            meta = json.loads(bytes(txn.get(b"__meta__")))
            meta["format_version"] = version
            txn.put(b"__meta__", json.dumps(meta).encode())
        env.close()
    elif fmt == "hdf5":
        import h5py

        with h5py.File(path, "a") as f:
            meta = json.loads(f.attrs["__meta__"])
            meta["format_version"] = version
            f.attrs["__meta__"] = json.dumps(meta)
    else:
        doc = json.loads((path / "index.json").read_text())
        doc["meta"]["format_version"] = version
        (path / "index.json").write_text(json.dumps(doc))


class PickleBomb:
    """Unpickling this calls ``open(marker, "w")``: proof that a pickle was executed."""

    def __init__(self, marker: str | os.PathLike) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))
