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

Codecs (chosen per array at encode time):

* ``raw``: the array's bytes as they are. Decoding is a single copy (or no copy
  at all with ``copy=False``).
* ``zstd``: lossless Zstandard compression of the raw bytes.
* ``jpeg``: lossy, one JPEG per frame; only for uint8 clips shaped (C, T, H, W)
  with C in {1, 3}. Deepfake detectors learn compression traces, so the lossless
  codecs are the default.
"""

from __future__ import annotations

import functools
import math
import struct
import zlib
from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple

import msgpack
import numpy as np
import xxhash

from src.errors import CorruptSampleError, StoreVersionError

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
    "encode_array",
    "decode_array",
    "check_array",
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
_ARRAY_FIELDS = ("data", "audio")


class ArraySpec(NamedTuple):
    """Where one array lives inside a record's payload (immutable; cheap to build per read).

    Attributes:
        name: Field name (``data`` or ``audio``).
        dtype: numpy dtype string, e.g. ``|u1`` or ``<f4``.
        shape: Array shape.
        codec: One of :data:`CODECS`.
        offset: Byte offset of the encoded bytes inside the payload.
        length: Number of encoded bytes.
        frames: For ``jpeg``: the byte length of each encoded frame.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    codec: str
    offset: int
    length: int
    frames: tuple[int, ...] = ()

    @property
    def nbytes(self) -> int:
        """Size of the decoded array in bytes (exact: no fixed-width overflow)."""
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize


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


# ----------------------------------------------------------------------------- codecs


def _encode_raw(array: np.ndarray, _options: Mapping[str, Any]) -> tuple[list[bytes | memoryview], tuple[int, ...]]:
    return [memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8))], ()


def _encode_zstd(array: np.ndarray, options: Mapping[str, Any]) -> tuple[list[bytes | memoryview], tuple[int, ...]]:
    import zstandard

    level = int(options.get("zstd_level", 3))
    data = zstandard.ZstdCompressor(level=level, write_content_size=True).compress(np.ascontiguousarray(array).tobytes())
    return [data], ()


def _encode_jpeg(array: np.ndarray, options: Mapping[str, Any]) -> tuple[list[bytes | memoryview], tuple[int, ...]]:
    import cv2

    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[0] not in (1, 3):
        raise ValueError(f"jpeg codec needs a uint8 (C, T, H, W) clip with C in (1, 3); got {array.dtype} {array.shape}")
    quality = int(options.get("jpeg_quality", 95))
    parts: list[bytes | memoryview] = []
    lengths = []
    for t in range(array.shape[1]):
        frame = np.ascontiguousarray(np.moveaxis(array[:, t], 0, -1))
        if frame.shape[-1] == 3:
            frame = frame[..., ::-1]  # OpenCV encodes BGR
        ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise ValueError("OpenCV failed to encode a frame as JPEG")
        parts.append(buf.tobytes())
        lengths.append(len(parts[-1]))
    return parts, tuple(lengths)


def _check_raw_length(spec: ArraySpec, key: str | None) -> None:
    if spec.length != spec.nbytes:
        raise CorruptSampleError(key, f"array {spec.name!r}: {spec.length} bytes stored, shape {spec.shape} needs {spec.nbytes}")


def _decode_raw(buf: memoryview, spec: ArraySpec, key: str | None, copy: bool) -> np.ndarray:
    _check_raw_length(spec, key)
    array = np.frombuffer(buf, dtype=np.dtype(spec.dtype)).reshape(spec.shape)
    return array.copy() if copy else array


def _decode_zstd(buf: memoryview, spec: ArraySpec, key: str | None, copy: bool) -> np.ndarray:
    import zstandard

    nbytes = spec.nbytes
    try:
        # The frame states its content size; check it before zstd allocates that much.
        size = zstandard.frame_content_size(buf)
        if size != nbytes:
            raise CorruptSampleError(key, f"array {spec.name!r}: zstd frame holds {size} bytes, shape {spec.shape} needs {nbytes}")
        raw = zstandard.ZstdDecompressor().decompress(buf, max_output_size=nbytes) if nbytes else b""
    except zstandard.ZstdError as exc:
        raise CorruptSampleError(key, f"array {spec.name!r}: zstd: {exc}") from None
    if len(raw) != nbytes:
        raise CorruptSampleError(key, f"array {spec.name!r}: decompressed to {len(raw)} bytes, expected {nbytes}")
    return np.frombuffer(bytearray(raw), dtype=np.dtype(spec.dtype)).reshape(spec.shape)


def _decode_jpeg(buf: memoryview, spec: ArraySpec, key: str | None, copy: bool) -> np.ndarray:
    import cv2

    if (
        len(spec.shape) != 4
        or spec.shape[0] not in (1, 3)
        or np.dtype(spec.dtype) != np.uint8
        or sum(spec.frames) != spec.length
        or len(spec.frames) != spec.shape[1]
        or any(f <= 0 for f in spec.frames)
    ):
        raise CorruptSampleError(key, f"array {spec.name!r}: jpeg frame table does not match shape {spec.shape}")
    channels, _, height, width = spec.shape
    out: np.ndarray | None = None  # allocated once a real frame has confirmed the stated size
    flag = cv2.IMREAD_COLOR if channels == 3 else cv2.IMREAD_GRAYSCALE
    pos = 0
    for t, length in enumerate(spec.frames):
        try:
            frame = cv2.imdecode(np.frombuffer(buf[pos : pos + length], dtype=np.uint8), flag)
        except cv2.error as exc:
            raise CorruptSampleError(key, f"array {spec.name!r}: frame {t}: {exc}") from None
        pos += length
        if frame is None or frame.shape[:2] != (height, width):
            raise CorruptSampleError(key, f"array {spec.name!r}: frame {t} is not a {width}x{height} JPEG")
        if out is None:
            out = np.empty(spec.shape, dtype=np.uint8)
        if channels == 3:
            out[:, t] = np.moveaxis(frame[..., ::-1], -1, 0)
        else:
            out[0, t] = frame
    return out if out is not None else np.empty(spec.shape, dtype=np.uint8)


_ENCODERS = {"raw": _encode_raw, "zstd": _encode_zstd, "jpeg": _encode_jpeg}
_DECODERS = {"raw": _decode_raw, "zstd": _decode_zstd, "jpeg": _decode_jpeg}
CODECS = tuple(_ENCODERS)


def field_codec(name: str, codec: str) -> str:
    """The codec an array field is stored with when a store's codec is ``codec``.

    ``data`` uses the store's codec; ``audio`` is ``zstd`` under ``zstd`` and
    ``raw`` otherwise (JPEG is for images only).
    """
    return codec if name == "data" else ("zstd" if codec == "zstd" else "raw")


def check_array(name: str, value: Any) -> np.ndarray:
    """Return ``value`` as an array a record can hold.

    Raises:
        ValueError: Object, string, complex or other non-numeric dtypes.
    """
    array = np.asarray(value)
    if array.dtype.hasobject or array.dtype.kind not in "biuf":
        raise ValueError(f"array {name!r} has unsupported dtype {array.dtype}; numeric (bool, int, uint, float) arrays only")
    return array


def encode_array(array: np.ndarray, codec: str, **options: Any) -> tuple[bytes | memoryview, tuple[int, ...]]:
    """Encode one array with a codec, as stored in a record's payload.

    Other backends (HDF5, numpy, torch) use this to store ``zstd``/``jpeg``
    arrays exactly as records do, so every format decodes them identically.

    Args:
        array: The array (see :func:`check_array`).
        codec: ``raw``, ``zstd`` or ``jpeg``.
        **options: ``zstd_level``, ``jpeg_quality``.

    Returns:
        ``(encoded bytes, frame lengths)``; frame lengths are empty except for ``jpeg``.

    Raises:
        ValueError: Unknown codec, or an array the codec cannot encode.
    """
    if codec not in _ENCODERS:
        raise ValueError(f"unknown codec {codec!r}; must be one of {', '.join(CODECS)}")
    chunks, frames = _ENCODERS[codec](array, options)
    return (chunks[0] if len(chunks) == 1 else b"".join(chunks)), frames


def decode_array(buf: bytes | memoryview | np.ndarray, spec: ArraySpec, key: str | None = None, *, copy: bool = True) -> np.ndarray:
    """Decode bytes produced by :func:`encode_array` (``spec.offset`` is ignored).

    Args:
        buf: The encoded bytes.
        spec: dtype, shape, codec and (``jpeg``) frame lengths; ``spec.length``
            must equal ``len(buf)``.
        key: Sample key for error messages.
        copy: For ``raw``, copy out of ``buf`` (otherwise the result aliases it).

    Raises:
        CorruptSampleError: The bytes do not decode to ``spec``.
    """
    view = memoryview(buf)
    if view.ndim != 1 or view.format != "B":
        view = view.cast("B")
    if spec.codec not in _DECODERS:
        raise CorruptSampleError(key, f"array {spec.name!r}: unknown codec {spec.codec!r}")
    if len(view) != spec.length:
        raise CorruptSampleError(key, f"array {spec.name!r}: {len(view)} bytes stored, {spec.length} expected")
    try:
        return _DECODERS[spec.codec](view, spec, key, copy)
    except CorruptSampleError:
        raise
    except (TypeError, ValueError) as exc:
        raise CorruptSampleError(key, f"array {spec.name!r}: {exc}") from None


# ----------------------------------------------------------------------------- encode


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
    if codec not in _ENCODERS:
        raise ValueError(f"unknown codec {codec!r}; must be one of {', '.join(CODECS)}")
    if "data" not in sample:
        raise ValueError("a sample needs a 'data' array")
    label = sample.get("label")
    if isinstance(label, np.generic):
        label = label.item()
    if not isinstance(label, int) or isinstance(label, bool):
        raise ValueError(f"a sample's 'label' must be an int; got {label!r}")
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
        chunks, frames = _ENCODERS[array_codec](array, options)
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
        if spec.codec not in _DECODERS:
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
            try:
                sample[name] = _DECODERS[spec.codec](payload[spec.offset : spec.offset + spec.length], spec, key, copy)
            except (TypeError, ValueError) as exc:  # CorruptSampleError passes through: it is a StorageError
                raise CorruptSampleError(key, f"array {name!r}: {exc}") from None
    return sample


def _copy_verified(payload: memoryview, header: RecordHeader, wanted: Mapping[str, ArraySpec], key: str | None) -> dict[str, np.ndarray]:
    """Copy the wanted ``raw`` arrays out of ``payload``, then verify the digest over the copies.

    The digest covers the whole payload; the bytes of the copied arrays are
    hashed from the fresh copies (still in cache) rather than from the source
    (often cold pages of a memory map), and the gaps between them from the
    source. This checks exactly the bytes that are returned and costs little
    more than the copy itself.

    Raises:
        CorruptSampleError: The payload digest does not match (nothing is returned).
    """
    out: dict[str, np.ndarray] = {}
    targets = []
    for name, spec in wanted.items():
        if spec.codec != "raw":
            continue
        _check_raw_length(spec, key)
        array = np.empty(spec.shape, dtype=np.dtype(spec.dtype))
        out[name] = array
        if spec.length:
            flat = array.reshape(-1).view(np.uint8)
            np.copyto(flat, np.frombuffer(payload, dtype=np.uint8, count=spec.length, offset=spec.offset))
            targets.append((spec.offset, spec.offset + spec.length, flat))
    targets.sort(key=lambda t: t[0])
    if any(b[0] < a[1] for a, b in zip(targets, targets[1:])):
        digest = xxhash.xxh3_64_intdigest(payload)  # overlapping arrays (a hostile header): hash the source
    else:
        hasher = xxhash.xxh3_64()
        pos = 0
        for lo, hi, flat in targets:
            if lo > pos:
                hasher.update(payload[pos:lo])
            hasher.update(flat)
            pos = hi
        hasher.update(payload[pos:])
        digest = hasher.intdigest()
    if digest != header.digest:
        raise CorruptSampleError(key, "payload checksum mismatch")
    return out
