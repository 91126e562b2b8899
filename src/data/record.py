"""The safe on-disk encoding of one sample: a checked header plus raw array bytes.

Layout of one record (all integers little-endian)::

    offset  size  field
    0       4     magic  b"DFR\\x01"
    4       2     format version (RECORD_VERSION)
    6       2     reserved (0)
    8       4     header length H
    12      4     CRC32 of the header bytes
    16      H     header: msgpack map (label, metadata, arrays, payload digest)
    ...           zero padding up to a multiple of ALIGN
    P       N     payload: the encoded arrays, each starting on an ALIGN boundary

The header lists, per array, its name, dtype, shape, codec and the offset and
length of its bytes inside the payload; ``digest`` is the xxh3-64 hash of the
whole payload. No pickle is involved anywhere: a record can only ever decode to
numpy arrays, numbers, strings, lists and dicts, and anything malformed raises
:class:`~src.errors.CorruptSampleError` naming the fault.

Codecs (``raw``, ``zstd``, ``jpeg`` and any registered one) live in
:mod:`src.data.codecs`, shared with every other backend; this module only frames
them. Verified ``raw`` reads go through :func:`~src.data.codecs.copy_hashing`.
"""

from __future__ import annotations

import functools
import struct
import zlib
from dataclasses import dataclass
from typing import Any, Mapping

import msgpack
import numpy as np
import xxhash

from src.data.codecs import (
    ARRAY_FIELDS,
    CODECS,
    ArraySpec,
    check_array,
    copy_hashing,
    decode_array,
    encode_array,
    field_codec,
    get_codec,
)
from src.errors import ConfigError, CorruptSampleError, StoreVersionError

__all__ = [
    "MAGIC",
    "RECORD_VERSION",
    "ALIGN",
    "CODECS",
    "ArraySpec",
    "RecordHeader",
    "encode_sample",
    "decode_sample",
    "decode_header",
    "copy_payload_into",
    "raw_array",
    "encode_array",
    "decode_array",
    "check_array",
    "check_label",
    "field_codec",
    "is_record",
    "to_plain",
]

MAGIC = b"DFR\x01"
RECORD_VERSION = 1
ALIGN = 64
#: Largest decoded array a record may declare (a 16-frame 1080p RGB clip is 0.1 GiB).
MAX_ARRAY_BYTES = 1 << 31
_PREFIX = struct.Struct("<4sHHII")  # magic, version, reserved, header length, header crc32
_HEADER_LIMIT = 64 * 1024 * 1024
_ARRAY_FIELDS = ARRAY_FIELDS


@dataclass(frozen=True)
class RecordHeader:
    """The decoded header of a record, without touching its payload.

    Attributes:
        label: Integer class label.
        metadata: Free-form metadata dict (plain JSON-like values only).
        arrays: Array specs keyed by field name.
        payload_offset: Where the payload starts inside the record.
        digest: xxh3-64 of the payload.
    """

    label: int
    metadata: dict
    arrays: dict[str, ArraySpec]
    payload_offset: int
    digest: int


@functools.lru_cache(maxsize=256)
def _numeric_dtype(dtype: str) -> bool:
    """Whether a dtype string names a plain numeric dtype (cached: dtype parsing is slow)."""
    try:
        return np.dtype(dtype).kind in "biuf"
    except TypeError:
        return False


def to_plain(value: Any) -> Any:
    """Convert numpy scalars/arrays, tuples and paths into msgpack/JSON-safe values.

    Args:
        value: Any metadata value.

    Returns:
        The same value built from dict, list, str, int, float, bool and None.

    Raises:
        TypeError: For values that have no plain representation.
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return to_plain(value.tolist())
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if hasattr(value, "__fspath__"):
        return str(value)
    raise TypeError(f"metadata value of type {type(value).__name__} cannot be stored: {value!r}")


# ----------------------------------------------------------------------------- encode


def check_label(label: Any, key: str | None = None) -> int:
    """Return a sample's label as a plain int.

    Raises:
        ValueError: Not an integer (booleans included).
    """
    if isinstance(label, np.generic):
        label = label.item()
    if not isinstance(label, int) or isinstance(label, bool):
        raise ValueError(f"{'sample ' + repr(key) if key else 'a sample'}: 'label' must be an int; got {label!r}")
    return label


def _pad(n: int) -> int:
    return (-n) % ALIGN


def encode_sample(sample: Mapping[str, Any], codec: str = "raw", **options: Any) -> bytes:
    """Encode one sample into record bytes.

    Args:
        sample: ``{"data": ndarray, "label": int, "metadata": dict, "audio": ndarray?}``.
        codec: Codec for ``data``: ``raw``, ``zstd`` or ``jpeg``. Audio is stored
            ``raw`` unless the codec is ``zstd`` (JPEG is for images only).
        **options: Codec options: ``jpeg_quality`` (1-100), ``zstd_level``.

    Returns:
        The record as bytes.

    Raises:
        ValueError: For an unknown codec, a missing/invalid ``data`` or ``label``.
        TypeError: For metadata values that cannot be stored safely.
    """
    try:
        get_codec(codec)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    if "data" not in sample:
        raise ValueError("a sample needs a 'data' array")
    label = check_label(sample.get("label"))
    unknown = set(sample) - {"data", "label", "metadata", "audio", "key"}
    if unknown:
        raise ValueError(f"unknown sample fields {sorted(unknown)}; allowed: data, label, metadata, audio")

    parts: list[bytes | memoryview] = []
    arrays = []
    offset = 0
    for name in _ARRAY_FIELDS:
        if sample.get(name) is None:
            continue
        array = check_array(name, sample[name])
        array_codec = field_codec(name, codec)
        chunks, frames = get_codec(array_codec).encode(array, options)
        length = sum(len(c) for c in chunks)
        arrays.append(
            {
                "name": name,
                "dtype": array.dtype.str,
                "shape": list(array.shape),
                "codec": array_codec,
                "offset": offset,
                "length": length,
                "frames": list(frames),
            }
        )
        parts.extend(chunks)
        pad = _pad(length)
        if pad:
            parts.append(b"\0" * pad)
        offset += length + pad

    payload = b"".join(parts)
    header = msgpack.packb(
        {
            "label": label,
            "metadata": to_plain(sample.get("metadata") or {}),
            "arrays": arrays,
            "digest": xxhash.xxh3_64_intdigest(payload),
        },
        use_bin_type=True,
    )
    prefix = _PREFIX.pack(MAGIC, RECORD_VERSION, 0, len(header), zlib.crc32(header))
    head = prefix + header
    return b"".join((head, b"\0" * _pad(len(head)), payload))


# ----------------------------------------------------------------------------- decode


def is_record(buf: bytes | memoryview) -> bool:
    """Return True when ``buf`` starts with this project's record magic."""
    return bytes(buf[:4]) == MAGIC


def decode_header(buf: bytes | memoryview, key: str | None = None) -> RecordHeader:
    """Decode and check a record's header without reading its payload.

    Args:
        buf: The whole record (bytes or a memoryview into an LMDB map).
        key: The record's key, used in error messages.

    Returns:
        The parsed header.

    Raises:
        CorruptSampleError: Bad magic, bad header checksum, malformed header,
            or arrays that do not fit inside the record.
        StoreVersionError: The record was written by a newer format version.
    """
    view = memoryview(buf)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    if len(view) < _PREFIX.size:
        raise CorruptSampleError(key, f"record is {len(view)} bytes, shorter than its {_PREFIX.size}-byte prefix")
    magic, version, reserved, header_len, header_crc = _PREFIX.unpack_from(view, 0)
    if magic != MAGIC:
        raise CorruptSampleError(key, f"bad magic {bytes(magic)!r} (expected {MAGIC!r}): not a record of this project")
    if version != RECORD_VERSION:
        raise StoreVersionError(f"sample {key!r}: record format version {version} is not supported (this build reads {RECORD_VERSION})")
    if reserved != 0:
        raise CorruptSampleError(key, f"reserved prefix field is {reserved}, must be 0")
    end = _PREFIX.size + header_len
    if header_len > _HEADER_LIMIT or end > len(view):
        raise CorruptSampleError(key, f"header length {header_len} exceeds the record size {len(view)}")
    header_bytes = view[_PREFIX.size : end]
    if zlib.crc32(header_bytes) != header_crc:
        raise CorruptSampleError(key, "header checksum mismatch")
    try:
        header = msgpack.unpackb(header_bytes, raw=False, strict_map_key=True)
        label = header["label"]
        metadata = header["metadata"]
        digest = header["digest"]
        specs = {
            a["name"]: ArraySpec(
                str(a["name"]),
                str(a["dtype"]),
                tuple(map(int, a["shape"])),
                str(a["codec"]),
                int(a["offset"]),
                int(a["length"]),
                tuple(map(int, a.get("frames", ()))),
            )
            for a in header["arrays"]
        }
        dtypes_ok = all(_numeric_dtype(s.dtype) for s in specs.values())
    except Exception as exc:  # any malformed header is corruption, whatever msgpack raised
        raise CorruptSampleError(key, f"malformed header: {type(exc).__name__}: {exc}") from None
    if not isinstance(label, int) or isinstance(label, bool) or not isinstance(metadata, dict) or not isinstance(digest, int):
        raise CorruptSampleError(key, "malformed header: wrong field types")
    if not dtypes_ok:
        raise CorruptSampleError(key, "malformed header: non-numeric dtype")
    if "data" not in specs or not set(specs) <= set(_ARRAY_FIELDS) or len(specs) != len(header["arrays"]):
        raise CorruptSampleError(key, f"malformed header: arrays {sorted(specs)}; expected 'data' and optionally 'audio', once each")
    payload_offset = end + _pad(end)
    if payload_offset > len(view) or any(view[end:payload_offset]):
        # The padding is covered by neither checksum: insist on zeros so no byte of a record goes unchecked.
        raise CorruptSampleError(key, "padding between header and payload is damaged or truncated")
    payload_len = len(view) - payload_offset
    for spec in specs.values():
        if spec.codec not in CODECS:
            raise CorruptSampleError(key, f"array {spec.name!r}: unknown codec {spec.codec!r}")
        if spec.offset < 0 or spec.length < 0 or spec.offset + spec.length > payload_len:
            raise CorruptSampleError(
                key, f"array {spec.name!r} spans bytes {spec.offset}..{spec.offset + spec.length} but the payload has {max(payload_len, 0)} (truncated?)"
            )
        if any(s < 0 for s in spec.shape):
            raise CorruptSampleError(key, f"array {spec.name!r}: negative shape {spec.shape}")
        if spec.nbytes > MAX_ARRAY_BYTES:
            # A hostile record could declare a huge zstd/jpeg output and exhaust memory on decode.
            raise CorruptSampleError(key, f"array {spec.name!r} declares {spec.nbytes} bytes, over the {MAX_ARRAY_BYTES}-byte limit")
    return RecordHeader(label=label, metadata=metadata, arrays=specs, payload_offset=payload_offset, digest=digest)


def decode_sample(buf: bytes | memoryview, key: str | None = None, *, verify: bool = True, copy: bool = True, fields: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Decode record bytes into a sample dict.

    Args:
        buf: The record. With ``copy=False`` the returned arrays of ``raw``
            codec alias ``buf``, which must then outlive them (and an LMDB
            buffer is only valid inside its transaction).
        key: The record's key, used in error messages.
        verify: Check the payload's xxh3-64 digest (on by default).
        copy: Copy raw arrays out of ``buf``.
        fields: Array fields to decode (default: all stored). Verification
            always covers the whole payload.

    Returns:
        ``{"data": ndarray, "label": int, "metadata": dict}`` plus ``"audio"``
        when the record has audio.

    Raises:
        CorruptSampleError: Any fault in the record.
        StoreVersionError: Unsupported record version.
    """
    view = memoryview(buf)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    header = decode_header(view, key)
    payload = view[header.payload_offset :]
    wanted = header.arrays if fields is None else {n: s for n, s in header.arrays.items() if n in fields}
    sample: dict[str, Any] = {"label": header.label, "metadata": header.metadata}

    copied: dict[str, np.ndarray] = {}
    if verify and copy:
        copied = _copy_verified(payload, header, wanted, key)
    elif verify and xxhash.xxh3_64_intdigest(payload) != header.digest:
        raise CorruptSampleError(key, "payload checksum mismatch")
    for name, spec in wanted.items():
        if name in copied:
            sample[name] = copied[name]
        else:
            sample[name] = decode_array(payload[spec.offset : spec.offset + spec.length], spec, key, copy=copy)
    return sample


def raw_array(payload: memoryview, spec: ArraySpec, key: str | None) -> np.ndarray:
    """A zero-copy view of a ``raw`` array inside a record payload.

    Raises:
        CorruptSampleError: The stored length does not fit the shape.
    """
    return get_codec("raw").decode(payload[spec.offset : spec.offset + spec.length], spec, key, False)


def copy_payload_into(
    payload: memoryview,
    header: RecordHeader,
    key: str | None,
    fills: Mapping[str, np.ndarray] | None = None,
    *,
    affine: Any = None,
    verify: bool = True,
) -> None:
    """Copy the ``raw`` arrays named in ``fills`` out of a payload, checking its digest on the way.

    The one copy-and-verify path of every record read: each array in ``fills``
    (name -> C-contiguous destination) is copied (or, with ``affine``
    ``(scale, shift)`` for ``data``, converted to float32) in cache-sized
    pieces that are hashed while still in cache; the bytes between them are
    hashed from the source. So the check covers exactly the bytes returned and
    costs little more than the copy itself. With ``verify=False`` it only copies.

    Args:
        payload: The record's payload (after the header).
        header: The record's decoded header.
        key: Sample key for error messages.
        fills: ``{array name: destination}`` for ``raw`` arrays.
        affine: Per-channel ``(scale, shift)`` applied to ``data``.
        verify: Check the digest over the whole payload.

    Raises:
        CorruptSampleError: Bad stored lengths, or a digest mismatch (the
            destinations then hold unverified bytes and must be discarded).
    """
    targets = []
    for name, dst in (fills or {}).items():
        spec = header.arrays[name]
        if spec.length != spec.nbytes:
            raise CorruptSampleError(key, f"array {name!r}: {spec.length} bytes stored, shape {spec.shape} needs {spec.nbytes}")
        targets.append((spec.offset, spec, dst))
    targets.sort(key=lambda t: t[0])
    if not verify:
        for lo, spec, dst in targets:
            copy_hashing(payload[lo : lo + spec.length], spec, dst, None, affine if spec.name == "data" else None)
        return
    if any(b[0] < a[0] + a[1].length for a, b in zip(targets, targets[1:])):
        # Overlapping arrays (a hostile header): copy, then hash the source as a whole.
        for _, spec, dst in targets:
            copy_hashing(payload[spec.offset : spec.offset + spec.length], spec, dst, None, affine if spec.name == "data" else None)
        digest = xxhash.xxh3_64_intdigest(payload)
    else:
        hasher = xxhash.xxh3_64()
        pos = 0
        for lo, spec, dst in targets:
            if lo > pos:
                hasher.update(payload[pos:lo])
            copy_hashing(payload[lo : lo + spec.length], spec, dst, hasher, affine if spec.name == "data" else None)
            pos = lo + spec.length
        hasher.update(payload[pos:])
        digest = hasher.intdigest()
    if digest != header.digest:
        raise CorruptSampleError(key, "payload checksum mismatch")


def _copy_verified(payload: memoryview, header: RecordHeader, wanted: Mapping[str, ArraySpec], key: str | None) -> dict[str, np.ndarray]:
    """Copy the wanted ``raw`` arrays out of ``payload`` and verify the digest (see :func:`copy_payload_into`)."""
    out = {name: np.empty(spec.shape, dtype=np.dtype(spec.dtype)) for name, spec in wanted.items() if spec.codec == "raw"}
    copy_payload_into(payload, header, key, out)
    return out
