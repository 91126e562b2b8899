"""torch store: a directory with one ``.pt`` file per sample plus ``index.json``.

Layout (``data.torch/``)::

    index.json              meta + per-sample label, metadata, index values,
                            checksums and array specs (see src/data/file_index.py)
    sample_000001.pt        torch.save({"data": tensor, "label": int, "metadata": dict,
                                        "audio": tensor, "arrays": {name: spec}})
    rewritten/              files of overwritten keys (see src/data/file_index.py)

For the ``raw`` codec ``data``/``audio`` are the arrays as tensors, so a
researcher can ``torch.load(path, weights_only=True)`` a file and use it
directly; for ``zstd``/``jpeg`` they hold the encoded bytes (1-D uint8),
decoded exactly as a record would be. Arrays whose byte order torch cannot
represent are stored as their raw bytes (uint8) and viewed back on load.

The store only ever calls ``torch.load(..., weights_only=True,
map_location="cpu")``: a planted pickle is refused (and reported as a
:class:`~src.errors.CorruptSampleError`), never executed. Every array's
xxh3-64 checksum is verified before use.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from src.data.codecs import decode_stored_array, encode_sample_arrays
from src.data.file_index import DirectoryStorage
from src.data.record import to_plain
from src.data.storage import register_backend
from src.errors import CorruptSampleError

__all__ = ["TorchStorage"]


def _to_tensor(array: np.ndarray) -> torch.Tensor:
    if not array.flags.writeable:  # torch wants writable memory (encoded bytes come from a bytes object)
        array = array.copy()
    try:
        return torch.from_numpy(array)
    except (TypeError, ValueError):  # e.g. big-endian dtypes: keep the exact bytes
        return torch.from_numpy(np.ascontiguousarray(array).reshape(-1).view(np.uint8))


@register_backend("torch")
class TorchStorage(DirectoryStorage):
    """Samples as ``.pt`` files in a directory (``data.torch``).

    Args:
        path: The store directory.
        readonly: Open for reading (default) or for writing/appending.
        create_indexes: Maintain the per-field indexes.
        index_fields: Fields to index.
        **options: See :class:`~src.data.storage.Storage` (codec, commit_every, verify, config).

    Example:
        >>> with TorchStorage("data/processed/FakeAVCeleb_v1.2/train/data.torch") as storage:
        ...     sample = storage.retrieve_sample("sample_000001")
    """

    suffixes = (".torch",)

    @staticmethod
    def file_name(key: str) -> str:
        """The ``.pt`` file holding ``key``."""
        return f"{key}.pt"

    def _save_sample(self, key: str, sample: dict[str, Any]) -> dict[str, Any]:
        encoded = encode_sample_arrays(sample, self.codec, self.codec_options)
        payload: dict[str, Any] = {
            "label": int(sample["label"]),
            "metadata": to_plain(sample["metadata"]),
            "arrays": {enc.name: dict(enc.spec) for enc in encoded},
        }
        for enc in encoded:
            payload[enc.name] = _to_tensor(enc.stored)
        name = self._stage_file(self.file_name(key), lambda fh: torch.save(payload, fh))
        arrays = {enc.name: {"file": name, **enc.spec} for enc in encoded}
        return {"checksums": {enc.name: enc.checksum for enc in encoded}, "arrays": arrays}

    def _load_sample(self, key: str, entry: Mapping[str, Any], verify: bool) -> dict[str, Any]:
        arrays = entry.get("arrays")
        checksums = entry.get("checksums") or {}
        if not isinstance(arrays, dict) or "data" not in arrays:
            raise CorruptSampleError(key, "index entry lists no 'data' array")
        path = self.resolve_file(key, arrays["data"].get("file") if isinstance(arrays["data"], dict) else None)
        try:
            obj = torch.load(path, weights_only=True, map_location="cpu")
        except FileNotFoundError:
            raise CorruptSampleError(key, f"file {path.name} is missing") from None
        except Exception as exc:  # torch reports damage and refused pickles with many exception types
            raise CorruptSampleError(key, f"{path.name} is not a readable weights-only torch file: {type(exc).__name__}: {exc}") from None
        if not isinstance(obj, dict):
            raise CorruptSampleError(key, f"{path.name} holds a {type(obj).__name__}, not a sample dict")
        label, metadata = obj.get("label"), obj.get("metadata")
        if not isinstance(label, int) or not isinstance(metadata, dict):
            raise CorruptSampleError(key, f"{path.name} has a malformed label or metadata")
        if label != entry.get("label") or metadata != entry.get("metadata"):
            raise CorruptSampleError(key, f"{path.name} and {self.path.name}/index.json disagree on the label or metadata")
        sample: dict[str, Any] = {"label": label, "metadata": metadata}
        for name, spec in arrays.items():
            tensor = obj.get(name)
            if not isinstance(tensor, torch.Tensor) or tensor.layout != torch.strided or not isinstance(spec, dict):
                raise CorruptSampleError(key, f"array {name!r}: missing from {path.name} or not a dense tensor")
            try:
                stored = tensor.contiguous().numpy()
            except (TypeError, RuntimeError) as exc:
                raise CorruptSampleError(key, f"array {name!r}: {exc}") from None
            sample[name] = decode_stored_array(stored, spec, checksums.get(name), key, name, verify)
        return sample
