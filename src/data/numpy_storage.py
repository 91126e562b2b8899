"""numpy store: a directory of ``.npy`` files, one per array per sample, plus ``index.json``.

Layout (``data.numpy/``)::

    index.json                      meta + per-sample label, metadata, index values,
                                    checksums and array specs (see src/data/file_index.py)
    sample_000001.data.npy          the clip, for the ``raw`` codec
    sample_000001.audio.npy         the waveform
    sample_000002.data.zstd.npy     ``zstd``/``jpeg``: the encoded bytes as a 1-D uint8
                                    array, decoded exactly as a record would be
    rewritten/                      files of overwritten keys, while their previous
                                    version is still the one in the index (see file_index)

A researcher can ``np.load`` any raw file directly. The store itself only ever
calls ``np.load(..., allow_pickle=False)``, so a planted pickle is refused, and
checks every array's xxh3-64 checksum before use.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from src.data.codecs import decode_stored_array, encode_sample_arrays
from src.data.file_index import DirectoryStorage
from src.data.storage import register_backend
from src.errors import CorruptSampleError

__all__ = ["NumpyStorage"]


@register_backend("numpy")
class NumpyStorage(DirectoryStorage):
    """Samples as ``.npy`` files in a directory (``data.numpy``).

    Args:
        path: The store directory.
        readonly: Open for reading (default) or for writing/appending.
        create_indexes: Maintain the per-field indexes.
        index_fields: Fields to index.
        **options: See :class:`~src.data.storage.Storage` (codec, commit_every, verify, config).

    Example:
        >>> with NumpyStorage("data/processed/FakeAVCeleb_v1.2/train/data.numpy") as storage:
        ...     sample = storage.retrieve_sample("sample_000001")
    """

    suffixes = (".numpy",)

    @staticmethod
    def file_name(key: str, field: str, codec: str) -> str:
        """The file holding ``field`` of ``key`` stored with ``codec``."""
        return f"{key}.{field}.npy" if codec == "raw" else f"{key}.{field}.{codec}.npy"

    def _save_sample(self, key: str, sample: dict[str, Any]) -> dict[str, Any]:
        arrays: dict[str, Any] = {}
        checksums: dict[str, str] = {}
        for enc in encode_sample_arrays(sample, self.codec, self.codec_options):
            name = self._stage_file(
                self.file_name(key, enc.name, enc.spec["codec"]),
                lambda fh, a=enc.stored: np.lib.format.write_array(fh, a, allow_pickle=False),
            )
            arrays[enc.name] = {"file": name, **enc.spec}
            checksums[enc.name] = enc.checksum
        return {"checksums": checksums, "arrays": arrays}

    def _load_sample(self, key: str, entry: Mapping[str, Any], verify: bool) -> dict[str, Any]:
        arrays = entry.get("arrays")
        checksums = entry.get("checksums") or {}
        if not isinstance(arrays, dict) or "data" not in arrays:
            raise CorruptSampleError(key, "index entry lists no 'data' array")
        sample: dict[str, Any] = {"label": entry.get("label"), "metadata": entry.get("metadata")}
        if not isinstance(sample["label"], int) or not isinstance(sample["metadata"], dict):
            raise CorruptSampleError(key, "index entry has a malformed label or metadata")
        for name, spec in arrays.items():
            if not isinstance(spec, dict):
                raise CorruptSampleError(key, f"array {name!r}: malformed index entry")
            path = self.resolve_file(key, spec.get("file"))
            try:
                stored = np.load(path, allow_pickle=False)
            except FileNotFoundError:
                raise CorruptSampleError(key, f"array {name!r}: file {spec['file']} is missing") from None
            except (OSError, ValueError, TypeError, EOFError) as exc:  # truncated, not .npy, or a pickle
                raise CorruptSampleError(key, f"array {name!r}: {spec['file']} is not a readable .npy file: {exc}") from None
            if not isinstance(stored, np.ndarray):
                stored.close()
                raise CorruptSampleError(key, f"array {name!r}: {spec['file']} holds an archive, not an array")
            sample[name] = decode_stored_array(stored, spec, checksums.get(name), key, name, verify)
        return sample
