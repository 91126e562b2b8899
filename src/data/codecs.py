"""Array codecs shared by every storage backend, and the one copy-and-verify kernel.

A :class:`Codec` turns one numeric array into stored bytes and back. Every
backend uses the same objects, so ``output.codec: zstd`` means the same bytes
and the same decoded pixels in LMDB records, ``.npy``/``.pt`` files and HDF5
(where ``raw`` and ``zstd`` map to native HDF5 storage: contiguous, and the
registered Zstandard filter from ``hdf5plugin``; see :meth:`Codec.hdf5_filter`).

Built-in codecs (the :data:`CODECS` registry; a third party registers more with
``@CODECS.register("name")`` on a :class:`Codec` subclass):

* ``raw``: the array's bytes as they are; decoding is one copy (or none).
* ``zstd``: lossless Zstandard of the raw bytes.
* ``jpeg``: lossy, one JPEG per frame; uint8 ``(C, T, H, W)`` clips with C in {1, 3}
  only. Deepfake detectors learn compression traces, so lossless is the default.

Also here: :class:`EncodedArray` and :func:`decode_stored_array` (how backends
that keep one array per file store and check it), :func:`checksum`, and
:func:`copy_hashing`, the fused copy (or affine conversion) plus xxh3 kernel
that every verified raw read goes through.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

import numpy as np
import xxhash

from src.errors import CorruptSampleError
from src.registry import Registry

__all__ = [
    "ARRAY_FIELDS",
    "CODECS",
    "ArraySpec",
    "Codec",
    "EncodedArray",
    "array_bytes",
    "check_array",
    "checksum",
    "copy_hashing",
    "decode_array",
    "decode_stored_array",
    "encode_array",
    "encode_sample_arrays",
    "field_codec",
    "get_codec",
]

#: The array fields a sample may carry.
ARRAY_FIELDS = ("data", "audio")
#: Bytes copied per step of :func:`copy_hashing` (fits L2 with its hash pass).
CHUNK_BYTES = 512 * 1024


class ArraySpec(NamedTuple):
    """What one stored array decodes to, and where its encoded bytes lie (immutable).

    Attributes:
        name: Field name (``data`` or ``audio``).
        dtype: numpy dtype string, e.g. ``|u1`` or ``<f4``.
        shape: Array shape.
        codec: A :data:`CODECS` name.
        offset: Byte offset of the encoded bytes inside a record payload (0 elsewhere).
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


def check_array(name: str, value: Any) -> np.ndarray:
    """Return ``value`` as an array a store can hold.

    Raises:
        ValueError: Object, string, complex or other non-numeric dtypes.
    """
    array = np.asarray(value)
    if array.dtype.hasobject or array.dtype.kind not in "biuf":
        raise ValueError(f"array {name!r} has unsupported dtype {array.dtype}; numeric (bool, int, uint, float) arrays only")
    return array


def array_bytes(array: np.ndarray) -> memoryview:
    """A flat byte view of an array (copied first only if it is not C-contiguous)."""
    return memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8))


def checksum(buf: bytes | memoryview | np.ndarray) -> str:
    """The xxh3-64 of some bytes (or of an array's bytes), as 16 hex digits."""
    if isinstance(buf, np.ndarray):
        buf = array_bytes(buf)
    return xxhash.xxh3_64_hexdigest(buf)


# ----------------------------------------------------------------------------- codec objects


class Codec:
    """One way of storing an array. Subclass it and register it in :data:`CODECS`.

    Attributes:
        name: The registry name (set on registration).
        lossless: Whether decoding returns the exact array.
        images_only: Only for image clips: other fields (audio) are stored ``raw``
            when a store uses this codec.
        hdf5_native: HDF5 stores the array itself (with :meth:`hdf5_filter`'s
            filter) rather than the encoded bytes.
    """

    name: ClassVar[str] = ""
    lossless: ClassVar[bool] = True
    images_only: ClassVar[bool] = False
    hdf5_native: ClassVar[bool] = False

    def encode(self, array: np.ndarray, options: Mapping[str, Any]) -> tuple[list[bytes | memoryview], tuple[int, ...]]:
        """Encode ``array``.

        Returns:
            ``(chunks, frame lengths)``: the stored bytes as a list of pieces, and
            per-frame lengths for frame-wise codecs (empty otherwise).

        Raises:
            ValueError: An array this codec cannot store.
        """
        raise NotImplementedError

    def decode(self, buf: memoryview, spec: ArraySpec, key: str | None, copy: bool) -> np.ndarray:
        """Decode ``buf`` (exactly ``spec.length`` bytes) into the array ``spec`` describes.

        Raises:
            CorruptSampleError: The bytes do not decode to ``spec``.
        """
        raise NotImplementedError

    def hdf5_filter(self, array: np.ndarray, options: Mapping[str, Any]) -> dict[str, Any]:
        """``h5py.create_dataset`` keyword arguments storing ``array`` itself (for :attr:`hdf5_native` codecs).

        Codecs that are not HDF5-native have their encoded bytes stored as a 1-D
        uint8 dataset instead, decoded by :meth:`decode`.
        """
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def _set_name(name: str, cls: type[Codec]) -> None:
    cls.name = name


#: Codecs by name; ``get_codec(name)`` gives an instance.
CODECS: Registry[type[Codec]] = Registry("codec", on_register=_set_name)
_INSTANCES: dict[type[Codec], Codec] = {}


def get_codec(name: str) -> Codec:
    """The (shared, stateless) codec object registered as ``name``.

    Raises:
        ConfigError: Unknown codec name.
    """
    cls = CODECS.get(name)
    codec = _INSTANCES.get(cls)
    if codec is None:
        codec = _INSTANCES[cls] = cls()
    return codec


def field_codec(name: str, codec: str) -> str:
    """The codec an array field is stored with when a store's codec is ``codec``.

    ``data`` uses the store's codec; other fields (audio) use it too unless it
    is an image-only codec (``jpeg``), in which case they are ``raw``.
    """
    if name == "data":
        return codec
    return "raw" if get_codec(codec).images_only else codec


def _check_raw_length(spec: ArraySpec, key: str | None) -> None:
    if spec.length != spec.nbytes:
        raise CorruptSampleError(key, f"array {spec.name!r}: {spec.length} bytes stored, shape {spec.shape} needs {spec.nbytes}")


@CODECS.register("raw")
class RawCodec(Codec):
    """The array's bytes as they are."""

    hdf5_native = True

    def encode(self, array: np.ndarray, options: Mapping[str, Any]) -> tuple[list[bytes | memoryview], tuple[int, ...]]:
        return [array_bytes(array)], ()

    def decode(self, buf: memoryview, spec: ArraySpec, key: str | None, copy: bool) -> np.ndarray:
        _check_raw_length(spec, key)
        array = np.frombuffer(buf, dtype=np.dtype(spec.dtype)).reshape(spec.shape)
        return array.copy() if copy else array



@CODECS.register("zstd")
class ZstdCodec(Codec):
    """Lossless Zstandard (``zstd_level``, default 3)."""

    hdf5_native = True

    def encode(self, array: np.ndarray, options: Mapping[str, Any]) -> tuple[list[bytes | memoryview], tuple[int, ...]]:
        import zstandard

        level = int(options.get("zstd_level", 3))
        return [zstandard.ZstdCompressor(level=level, write_content_size=True).compress(np.ascontiguousarray(array).tobytes())], ()

    def decode(self, buf: memoryview, spec: ArraySpec, key: str | None, copy: bool) -> np.ndarray:
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

    def hdf5_filter(self, array: np.ndarray, options: Mapping[str, Any]) -> dict[str, Any]:
        """HDF5's registered Zstandard filter (id 32015, from ``hdf5plugin``), one chunk per frame."""
        import hdf5plugin

        if not array.ndim or not array.size:
            return {}
        chunks = (array.shape[0], 1, *array.shape[2:]) if array.ndim == 4 else True
        return {"chunks": chunks, **hdf5plugin.Zstd(clevel=int(options.get("zstd_level", 3)))}


@CODECS.register("jpeg")
class JpegCodec(Codec):
    """Lossy JPEG per frame (``jpeg_quality``, default 95) of uint8 ``(C, T, H, W)`` clips."""

    lossless = False
    images_only = True

    def encode(self, array: np.ndarray, options: Mapping[str, Any]) -> tuple[list[bytes | memoryview], tuple[int, ...]]:
        import cv2

        if array.dtype != np.uint8 or array.ndim != 4 or array.shape[0] not in (1, 3):
            raise ValueError(f"jpeg codec needs a uint8 (C, T, H, W) clip with C in (1, 3); got {array.dtype} {array.shape}")
        quality = int(options.get("jpeg_quality", 95))
        parts: list[bytes | memoryview] = []
        for t in range(array.shape[1]):
            frame = np.ascontiguousarray(np.moveaxis(array[:, t], 0, -1))
            if frame.shape[-1] == 3:
                frame = frame[..., ::-1]  # OpenCV encodes BGR
            ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
            if not ok:
                raise ValueError("OpenCV failed to encode a frame as JPEG")
            parts.append(buf.tobytes())
        return parts, tuple(len(p) for p in parts)

    def decode(self, buf: memoryview, spec: ArraySpec, key: str | None, copy: bool) -> np.ndarray:
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


# ----------------------------------------------------------------------------- encode / decode one array


def encode_array(array: np.ndarray, codec: str, **options: Any) -> tuple[bytes | memoryview, tuple[int, ...]]:
    """Encode one array with a codec, exactly as stored in a record's payload.

    Args:
        array: The array (see :func:`check_array`).
        codec: A :data:`CODECS` name.
        **options: ``zstd_level``, ``jpeg_quality``.

    Returns:
        ``(encoded bytes, frame lengths)``; frame lengths are empty except for ``jpeg``.

    Raises:
        ConfigError: Unknown codec.
        ValueError: An array the codec cannot encode.
    """
    chunks, frames = get_codec(codec).encode(array, options)
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
        CorruptSampleError: The bytes do not decode to ``spec``, or an unknown codec.
    """
    view = memoryview(buf)
    if view.ndim != 1 or view.format != "B":
        view = view.cast("B")
    if spec.codec not in CODECS:
        raise CorruptSampleError(key, f"array {spec.name!r}: unknown codec {spec.codec!r}")
    if len(view) != spec.length:
        raise CorruptSampleError(key, f"array {spec.name!r}: {len(view)} bytes stored, {spec.length} expected")
    try:
        return get_codec(spec.codec).decode(view, spec, key, copy)
    except CorruptSampleError:
        raise
    except (TypeError, ValueError) as exc:
        raise CorruptSampleError(key, f"array {spec.name!r}: {exc}") from None


# ----------------------------------------------------------------------------- per-file arrays


class EncodedArray:
    """One array as a file-per-array backend stores it: the array itself (``raw``) or its encoded bytes.

    Attributes:
        name: ``data`` or ``audio``.
        stored: What goes into the file: the original array for ``raw``, a
            1-D uint8 array of encoded bytes otherwise.
        spec: ``{"codec", "dtype", "shape", "frames"}`` describing the decoded array.
        checksum: xxh3-64 hex of ``stored``'s bytes.
    """

    __slots__ = ("name", "stored", "spec", "checksum")

    def __init__(self, name: str, stored: np.ndarray, spec: dict[str, Any]) -> None:
        self.name = name
        self.stored = stored
        self.spec = spec
        self.checksum = checksum(stored)


def encode_sample_arrays(sample: Mapping[str, Any], codec: str, options: Mapping[str, Any]) -> list[EncodedArray]:
    """Encode a sample's ``data`` and ``audio`` the way records do (see :func:`field_codec`).

    Raises:
        ValueError: Non-numeric arrays, or arrays the codec cannot encode.
    """
    out = []
    for name in ARRAY_FIELDS:
        if sample.get(name) is None:
            continue
        array = np.ascontiguousarray(check_array(name, sample[name]))
        array_codec = field_codec(name, codec)
        if array_codec == "raw":
            stored, frames = array, ()
        else:
            encoded, frames = encode_array(array, array_codec, **options)
            stored = np.frombuffer(encoded, dtype=np.uint8)
        spec = {"codec": array_codec, "dtype": array.dtype.str, "shape": list(array.shape), "frames": list(frames)}
        out.append(EncodedArray(name, stored, spec))
    return out


def decode_stored_array(stored: np.ndarray, spec: Mapping[str, Any], expected: str | None, key: str, name: str, verify: bool) -> np.ndarray:
    """Check and decode an array read back from a backend's file.

    Args:
        stored: The array as loaded (raw array, or 1-D uint8 encoded bytes).
        spec: The ``arrays`` entry from the index (codec, dtype, shape, frames).
        expected: The checksum recorded at write time.
        key: Sample key, for error messages.
        name: Array field name.
        verify: Compare the checksum before decoding.

    Returns:
        The decoded array, exactly as it was stored.

    Raises:
        CorruptSampleError: Checksum mismatch, or stored bytes that do not fit the spec.
    """
    try:
        dtype = np.dtype(spec["dtype"])
        shape = tuple(int(s) for s in spec["shape"])
        codec = str(spec["codec"])
        frames = tuple(int(f) for f in spec.get("frames", ()))
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptSampleError(key, f"array {name!r}: malformed index entry: {exc}") from None
    if dtype.kind not in "biuf":
        raise CorruptSampleError(key, f"array {name!r}: non-numeric dtype {dtype} in the index")
    if verify:
        if not isinstance(expected, str):
            raise CorruptSampleError(key, f"array {name!r}: no checksum recorded")
        if checksum(stored) != expected:
            raise CorruptSampleError(key, f"array {name!r}: checksum mismatch (stored file damaged or replaced)")
    if codec == "raw":
        if stored.dtype != dtype:
            # Backends without a matching native dtype (torch and big-endian data) store raw bytes.
            if stored.dtype != np.uint8 or stored.nbytes != math.prod(shape) * dtype.itemsize:
                raise CorruptSampleError(key, f"array {name!r}: stored dtype {stored.dtype}, index says {dtype}")
            stored = np.ascontiguousarray(stored).reshape(-1).view(dtype)
        if stored.shape != shape:
            if stored.size != math.prod(shape):
                raise CorruptSampleError(key, f"array {name!r}: stored shape {stored.shape}, index says {shape}")
            stored = stored.reshape(shape)
        return stored
    if stored.dtype != np.uint8 or stored.ndim != 1:
        raise CorruptSampleError(key, f"array {name!r}: {codec} bytes must be stored as 1-D uint8, found {stored.dtype} {stored.shape}")
    return decode_array(stored, ArraySpec(name, dtype.str, shape, codec, 0, stored.nbytes, frames), key)


# ----------------------------------------------------------------------------- the copy kernel


def copy_hashing(
    region: memoryview,
    spec: ArraySpec,
    dst: np.ndarray,
    hasher: Any = None,
    affine: tuple[Sequence[float], Sequence[float]] | None = None,
) -> None:
    """Copy (or convert) a ``raw`` array's bytes into ``dst``, feeding them to ``hasher`` in order.

    Works in cache-sized pieces: each piece is copied, then hashed while it is
    still in cache, so verification costs little more than the copy. With
    ``affine = (scale, shift)`` (per channel, first axis) the destination is
    float32 ``src * scale[c] + shift[c]``, one (channel, frame) plane at a time.

    Args:
        region: Exactly the array's stored bytes (``spec.length`` of them).
        spec: The array's spec (``raw`` codec; its length already checked).
        dst: C-contiguous destination of ``spec.shape``.
        hasher: An ``xxhash.xxh3_64`` (or None: no hashing).
        affine: Per-channel ``(scale, shift)``.
    """
    src = np.frombuffer(region, dtype=np.dtype(spec.dtype)).reshape(spec.shape)
    if affine is not None:
        scale, shift = affine
        if src.ndim >= 3:
            frames = src.shape[1]
            plane_bytes = spec.length // (src.shape[0] * frames) if src.size else 0
            for c in range(src.shape[0]):
                for t in range(frames):
                    plane = dst[c, t]
                    np.multiply(src[c, t], scale[c], out=plane, casting="unsafe")
                    np.add(plane, shift[c], out=plane)
                    if hasher is not None:
                        p = c * frames + t
                        hasher.update(region[p * plane_bytes : (p + 1) * plane_bytes])
        else:
            for c in range(src.shape[0]):
                np.multiply(src[c], scale[c], out=dst[c], casting="unsafe")
                np.add(dst[c], shift[c], out=dst[c])
            if hasher is not None:
                hasher.update(region)
        return
    flat_src, flat_dst = src.reshape(-1), dst.reshape(-1)
    step = max(1, CHUNK_BYTES // max(1, src.itemsize))
    for a in range(0, flat_src.size, step):
        np.copyto(flat_dst[a : a + step], flat_src[a : a + step], casting="unsafe")
        if hasher is not None:
            hasher.update(region[a * src.itemsize : (a + step) * src.itemsize])
