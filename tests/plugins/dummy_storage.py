"""A third-party storage backend and codec, registered from outside src/ (plugin tests)."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from src.data.codecs import CODECS, ArraySpec, Codec
from src.data.postings import PostingsIndex
from src.data.storage import Storage, register_backend, sample_index_values
from src.errors import CorruptSampleError

__all__ = ["JsonDirStorage", "ZlibCodec"]


class ZlibCodec(Codec):
    """Lossless zlib of the raw bytes (registered as ``zlib`` by the tests)."""

    calls = 0

    def encode(self, array: np.ndarray, options: Mapping[str, Any]):
        type(self).calls += 1
        return [zlib.compress(np.ascontiguousarray(array).tobytes(), 6)], ()

    def decode(self, buf: memoryview, spec: ArraySpec, key: str | None, copy: bool) -> np.ndarray:
        try:
            raw = zlib.decompress(buf)
        except zlib.error as exc:
            raise CorruptSampleError(key, f"zlib: {exc}") from None
        if len(raw) != spec.nbytes:
            raise CorruptSampleError(key, "zlib: wrong size")
        return np.frombuffer(bytearray(raw), dtype=np.dtype(spec.dtype)).reshape(spec.shape)


class JsonDirStorage(Storage):
    """A toy store: one ``.npy`` per clip plus a JSON index in a ``*.jsondir`` directory."""

    suffixes = (".jsondir",)

    @classmethod
    def sniff(cls, path: Path) -> bool:
        return (path / "toy.json").is_file()

    def __init__(self, path, readonly: bool = True, **options: Any) -> None:
        super().__init__(path, readonly, **options)
        self.path.mkdir(parents=True, exist_ok=True) if not readonly else None
        doc = json.loads((self.path / "toy.json").read_text()) if (self.path / "toy.json").exists() else {"meta": None, "samples": {}}
        self._doc = doc
        self._postings = PostingsIndex()
        for key, entry in doc["samples"].items():
            self._postings.add(key, entry["index"])
        self._init_meta()

    def _save(self) -> None:
        (self.path / "toy.json").write_text(json.dumps(self._doc))

    def _keys(self):
        return sorted(self._doc["samples"])

    def _get(self, key, verify):
        entry = self._doc["samples"].get(key)
        if entry is None:
            return None
        sample = {"label": entry["label"], "metadata": entry["metadata"], "data": np.load(self.path / f"{key}.npy", allow_pickle=False)}
        return sample

    def _write(self, items, meta):
        for key, sample in items:
            np.save(self.path / f"{key}.npy", sample["data"], allow_pickle=False)
            index = sample_index_values(sample["label"], sample["metadata"], self.index_fields)
            self._doc["samples"][key] = {"label": sample["label"], "metadata": sample["metadata"], "index": index}
            self._postings.add(key, index)
        self._doc["meta"] = meta
        self._save()

    def _read_meta(self):
        return self._doc["meta"]

    def _write_meta(self, meta):
        self._doc["meta"] = meta
        self._save()

    def _query_field(self, field, value):
        return self._postings.query(field, value)

    def _index_counts(self, field):
        return self._postings.counts(field)

    def _count(self):
        return len(self._doc["samples"])

    def _contains(self, key):
        return key in self._doc["samples"]

    def _close(self):
        pass


def register() -> None:
    """Register the toy backend as ``jsondir`` and the codec as ``zlib``."""
    register_backend("jsondir")(JsonDirStorage)
    CODECS.register("zlib", ZlibCodec)
