"""The safe record encoding: round trips, and every kind of damage raising a named error."""

from __future__ import annotations

import pickle
import struct
import zlib

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from src.data.record import (
    ALIGN,
    MAGIC,
    RECORD_VERSION,
    ArraySpec,
    decode_array,
    decode_header,
    decode_sample,
    encode_array,
    encode_sample,
    is_record,
    to_plain,
)
from src.errors import CorruptSampleError, StoreVersionError
from tests.storage_helpers import PickleBomb, assert_close_clip, assert_sample_equal, make_clip, make_sample

KEY = "sample_000042"
DTYPES = ["|u1", "|i1", "<i2", ">i2", "<u2", "<i4", "<u4", "<i8", "<f2", "<f4", ">f4", "<f8", "|b1"]
_PREFIX = struct.Struct("<4sHHII")


def _array(dtype: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt.kind == "b":
        return rng.integers(0, 2, size=shape).astype(dt)
    if dt.kind == "f":
        return rng.standard_normal(shape).astype(dt)
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=np.int64 if info.min < 0 else np.uint64).astype(dt)


@pytest.fixture(scope="module")
def sample() -> dict:
    return make_sample(np.random.default_rng(7), 3)


@pytest.fixture(scope="module")
def records(sample) -> dict[str, bytes]:
    return {codec: encode_sample(sample, codec) for codec in ("raw", "zstd", "jpeg")}


def _forge(header: dict, payload: bytes = b"", *, version: int = RECORD_VERSION) -> bytes:
    """A record with a valid header CRC around an arbitrary (possibly hostile) header."""
    head_bytes = msgpack.packb(header, use_bin_type=True)
    head = _PREFIX.pack(MAGIC, version, 0, len(head_bytes), zlib.crc32(head_bytes)) + head_bytes
    return head + b"\0" * ((-len(head)) % ALIGN) + payload


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("codec", ["raw", "zstd"])
@pytest.mark.parametrize("shape", [(3, 4, 8, 8), (17,), (), (0, 5)])
def test_round_trip_lossless_every_dtype(codec: str, dtype: str, shape: tuple[int, ...]) -> None:
    want = {"data": _array(dtype, shape), "label": 1, "metadata": {"k": "v"}, "audio": _array("<f4", (33,), seed=1)}
    got = decode_sample(encode_sample(want, codec), KEY)
    assert_sample_equal(got, want)
    assert got["data"].flags.writeable and got["data"].flags.c_contiguous


@pytest.mark.parametrize("channels", [1, 3])
def test_round_trip_jpeg_is_close(channels: int) -> None:
    rng = np.random.default_rng(3)
    clip = make_clip(rng, channels=channels, frames=3, size=24)
    want = {"data": clip, "label": 0, "metadata": {}, "audio": _array("<i2", (50,))}
    record = encode_sample(want, "jpeg", jpeg_quality=95)
    got = decode_sample(record, KEY)
    assert got["data"].dtype == np.uint8 and got["data"].shape == clip.shape
    assert_close_clip(got["data"], clip)
    assert got["audio"].tobytes() == want["audio"].tobytes()  # audio stays lossless
    assert decode_header(record).arrays["audio"].codec == "raw"
    # Decoding is deterministic: the same record always yields the same pixels.
    assert decode_sample(record, KEY)["data"].tobytes() == got["data"].tobytes()


def test_round_trip_codecs_and_options(sample, records) -> None:
    for codec, record in records.items():
        assert is_record(record)
        got = decode_sample(record, KEY)
        assert_sample_equal(got, sample, exact_data=(codec != "jpeg"))
    assert decode_header(records["zstd"]).arrays["audio"].codec == "zstd"
    smaller = encode_sample(sample, "jpeg", jpeg_quality=30)
    assert len(smaller) < len(records["jpeg"])
    assert len(encode_sample(sample, "zstd", zstd_level=19)) <= len(records["zstd"])


def test_metadata_numpy_scalars_become_plain(sample) -> None:
    meta = {
        "i": np.int16(-3),
        "f": np.float64(0.5),
        "b": np.bool_(True),
        "u": np.uint64(2**63),
        "arr": np.arange(3),
        "t": (1, (2, 3)),
        "nested": {"x": [np.float32(1.5)]},
    }
    got = decode_sample(encode_sample({**sample, "metadata": meta}), KEY)["metadata"]
    assert got == {"i": -3, "f": 0.5, "b": True, "u": 2**63, "arr": [0, 1, 2], "t": [1, [2, 3]], "nested": {"x": [1.5]}}
    assert type(got["i"]) is int and type(got["b"]) is bool
    assert to_plain(np.arange(2, dtype=np.float32)) == [0.0, 1.0]


def test_fields_and_no_copy(sample, records) -> None:
    only = decode_sample(records["raw"], KEY, fields=("audio",))
    assert set(only) == {"label", "metadata", "audio"}
    view = decode_sample(records["raw"], KEY, copy=False)
    assert not view["data"].flags.writeable  # aliases the (immutable) record bytes
    assert view["data"].tobytes() == sample["data"].tobytes()


def test_encode_array_matches_record_payload(sample, records) -> None:
    for codec in ("raw", "zstd", "jpeg"):
        encoded, frames = encode_array(sample["data"], codec)
        spec = ArraySpec("data", "|u1", sample["data"].shape, codec, 0, len(encoded), frames)
        from_array = decode_array(encoded, spec, KEY)
        from_record = decode_sample(records[codec], KEY)["data"]
        assert from_array.tobytes() == from_record.tobytes()


@pytest.mark.parametrize(
    "bad, error",
    [
        ({"label": 1}, ValueError),
        ({"data": np.zeros(3), "label": "1"}, ValueError),
        ({"data": np.zeros(3), "label": True}, ValueError),
        ({"data": np.array(["a"]), "label": 1}, ValueError),
        ({"data": np.zeros(3, complex), "label": 1}, ValueError),
        ({"data": np.array([object()]), "label": 1}, ValueError),
        ({"data": np.zeros(3), "label": 1, "extra": 1}, ValueError),
        ({"data": np.zeros(3), "label": 1, "metadata": {"x": object()}}, TypeError),
    ],
)
def test_encode_rejects_bad_samples(bad: dict, error: type[Exception]) -> None:
    with pytest.raises(error):
        encode_sample(bad)


def test_encode_rejects_unknown_codec_and_bad_jpeg_input() -> None:
    with pytest.raises(ValueError, match="unknown codec"):
        encode_sample({"data": np.zeros(3, np.uint8), "label": 0}, "pickle")
    with pytest.raises(ValueError, match="jpeg"):
        encode_sample({"data": np.zeros((3, 2, 8, 8), np.float32), "label": 0}, "jpeg")
    with pytest.raises(ValueError, match="jpeg"):
        encode_sample({"data": np.zeros((2, 2, 8, 8), np.uint8), "label": 0}, "jpeg")


# ----------------------------------------------------------------------------- damage


def _flip(record: bytes, pos: int, mask: int = 0x01) -> bytes:
    b = bytearray(record)
    b[pos] ^= mask
    return bytes(b)


@pytest.mark.parametrize("codec", ["raw", "zstd", "jpeg"])
def test_flipped_payload_byte_anywhere_is_corrupt(records, codec: str) -> None:
    record = records[codec]
    start = decode_header(record).payload_offset
    positions = sorted(set(range(start, len(record), max(1, (len(record) - start) // 97))) | {start, len(record) - 1})
    for pos in positions:
        for mask in (0x01, 0x80):
            with pytest.raises(CorruptSampleError, match=KEY) as info:
                decode_sample(_flip(record, pos, mask), KEY)
            assert info.value.key == KEY and "checksum" in info.value.reason


def test_flipped_header_byte_is_corrupt(records) -> None:
    record = records["raw"]
    start = decode_header(record).payload_offset
    version_bytes = {4, 5}
    for pos in range(start):
        damaged = _flip(record, pos)
        expected = StoreVersionError if pos in version_bytes else CorruptSampleError
        with pytest.raises(expected, match=KEY):
            decode_sample(damaged, KEY)
        with pytest.raises(expected):
            decode_header(damaged, KEY)


@pytest.mark.parametrize("codec", ["raw", "zstd", "jpeg"])
def test_truncated_record_is_corrupt(records, codec: str) -> None:
    record = records[codec]
    start = decode_header(record).payload_offset
    cuts = [0, 1, 3, 15, 16, 17, 40, start - 1, start, start + 1, (start + len(record)) // 2, len(record) - ALIGN - 1, len(record) - 1]
    for cut in cuts:
        with pytest.raises(CorruptSampleError, match=KEY):
            decode_sample(record[:cut], KEY)


def test_bad_magic_is_corrupt(records) -> None:
    record = b"NOPE" + records["raw"][4:]
    with pytest.raises(CorruptSampleError, match="bad magic") as info:
        decode_sample(record, KEY)
    assert info.value.key == KEY


def test_planted_pickle_is_refused_and_never_run(tmp_path) -> None:
    marker = tmp_path / "pwned"
    planted = pickle.dumps({"data": PickleBomb(marker), "label": 1})
    pickle.loads(pickle.dumps(PickleBomb(tmp_path / "control")))  # the bomb works when unpickled...
    assert (tmp_path / "control").exists()
    disguised = _PREFIX.pack(MAGIC, RECORD_VERSION, 0, len(planted), 0) + planted  # record prefix, pickle as header
    for payload in (planted, pickle.dumps(PickleBomb(marker), protocol=0), disguised):
        with pytest.raises(CorruptSampleError, match=KEY):
            decode_sample(payload, KEY)
    assert not marker.exists()  # ...but decoding never unpickles


def test_wrong_version_raises_store_version_error(records) -> None:
    record = bytearray(records["raw"])
    struct.pack_into("<H", record, 4, RECORD_VERSION + 1)
    with pytest.raises(StoreVersionError, match="version 2"):
        decode_sample(bytes(record), KEY)
    with pytest.raises(StoreVersionError):
        decode_sample(_forge({"label": 0}, version=0), KEY)


@pytest.mark.parametrize(
    "arrays",
    [
        [{"name": "data", "dtype": "|O", "shape": [1], "codec": "raw", "offset": 0, "length": 8}],
        [{"name": "data", "dtype": "<U4", "shape": [1], "codec": "raw", "offset": 0, "length": 16}],
        [{"name": "data", "dtype": "|u1", "shape": [4], "codec": "pickle", "offset": 0, "length": 4}],
        [{"name": "data", "dtype": "|u1", "shape": [2**62, 2**62], "codec": "raw", "offset": 0, "length": 64}],
        [{"name": "data", "dtype": "|u1", "shape": [-1], "codec": "raw", "offset": 0, "length": 0}],
        [{"name": "data", "dtype": "|u1", "shape": [64], "codec": "raw", "offset": 60, "length": 64}],
        [{"name": "data", "dtype": "|u1", "shape": [3, 1, 9999, 9999], "codec": "jpeg", "offset": 0, "length": 64, "frames": [64]}],
        [{"name": "data", "dtype": "|u1", "shape": [2**40], "codec": "zstd", "offset": 0, "length": 64}],
        [{"name": "evil", "dtype": "|u1", "shape": [64], "codec": "raw", "offset": 0, "length": 64}],
        [{"name": "audio", "dtype": "|u1", "shape": [64], "codec": "raw", "offset": 0, "length": 64}],
        "not a list",
    ],
)
def test_hostile_header_with_valid_crc_is_corrupt(arrays) -> None:
    import xxhash

    payload = bytes(range(64))
    record = _forge({"label": 1, "metadata": {}, "arrays": arrays, "digest": xxhash.xxh3_64_intdigest(payload)}, payload)
    with pytest.raises(CorruptSampleError, match=KEY):
        decode_sample(record, KEY)


def test_unverified_damage_still_raises_only_named_errors(records) -> None:
    """With verification off, a damaged zstd/jpeg payload still fails cleanly (or decodes to something)."""
    for codec in ("zstd", "jpeg"):
        record = records[codec]
        start = decode_header(record).payload_offset
        for pos in range(start, len(record), 997):
            try:
                decode_sample(_flip(record, pos, 0xFF), KEY, verify=False)
            except CorruptSampleError:
                pass


# ----------------------------------------------------------------------------- fuzz


def _fuzz_records() -> list[tuple[bytes, dict]]:
    rng = np.random.default_rng(11)
    out = []
    for codec, audio in (("raw", True), ("zstd", True), ("jpeg", False), ("raw", False)):
        s = {"data": make_clip(rng, frames=2, size=16), "label": int(rng.integers(0, 2)), "metadata": {"category": "C", "n": 3}}
        if audio:
            s["audio"] = rng.standard_normal(40).astype(np.float32)
        out.append((encode_sample(s, codec), s))
    return out


_FUZZ = _fuzz_records()
_DECODED = [decode_sample(r) for r, _ in _FUZZ]

_mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 20), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 20), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 20), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, 1 << 20), st.just(0)),
)


def _mutate(record: bytes, mutations: list[tuple[str, int, int]]) -> bytes:
    b = bytearray(record)
    for op, pos, value in mutations:
        if not b:
            break
        pos %= len(b)
        if op == "flip":
            b[pos] ^= value
        elif op == "truncate":
            del b[pos:]
        elif op == "insert":
            b.insert(pos, value)
        else:
            del b[pos]
    return bytes(b)


def _equal_decoded(got: dict, want: dict) -> bool:
    return (
        got["label"] == want["label"]
        and got["metadata"] == want["metadata"]
        and set(got) == set(want)
        and all(
            got[k].dtype == want[k].dtype and got[k].shape == want[k].shape and got[k].tobytes() == want[k].tobytes()
            for k in ("data", "audio")
            if k in want
        )
    )


@settings(max_examples=1000, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations=st.lists(_mutation, min_size=1, max_size=4))
def test_fuzz_mutated_records_decode_identically_or_raise_named_errors(mutations) -> None:
    for (record, _), want in zip(_FUZZ, _DECODED):  # each example damages every codec's record
        damaged = _mutate(record, mutations)
        try:
            got = decode_sample(damaged, KEY)
        except (CorruptSampleError, StoreVersionError):
            continue
        assert _equal_decoded(got, want), "a damaged record decoded to a different sample"


def test_seeded_bulk_mutations_decode_identically_or_raise_named_errors() -> None:
    """Many more cheap random mutations than hypothesis runs, from a fixed seed."""
    rng = np.random.default_rng(1234)
    ops = ("flip", "truncate", "insert", "delete")
    outcomes = {"same": 0, "error": 0}
    for i in range(6000):
        record, _ = _FUZZ[i % len(_FUZZ)]
        mutations = [
            (ops[rng.integers(0, 4)], int(rng.integers(0, len(record))), int(rng.integers(1, 256))) for _ in range(rng.integers(1, 4))
        ]
        try:
            got = decode_sample(_mutate(record, mutations), KEY)
        except (CorruptSampleError, StoreVersionError):
            outcomes["error"] += 1
            continue
        assert _equal_decoded(got, _DECODED[i % len(_FUZZ)]), mutations
        outcomes["same"] += 1
    assert outcomes["error"] > 5000


@settings(max_examples=600, deadline=None, database=None)
@given(blob=st.one_of(st.binary(max_size=512), st.binary(max_size=200).map(lambda b: MAGIC + struct.pack("<HH", RECORD_VERSION, 0) + b)))
def test_fuzz_random_bytes_raise_named_errors(blob: bytes) -> None:
    with pytest.raises((CorruptSampleError, StoreVersionError)):
        decode_sample(blob, KEY)


@settings(max_examples=300, deadline=None, database=None)
@given(which=st.integers(0, len(_FUZZ) - 1), mutations=st.lists(_mutation, min_size=1, max_size=3))
def test_fuzz_unverified_decoding_never_crashes(which: int, mutations) -> None:
    damaged = _mutate(_FUZZ[which][0], mutations)
    try:
        decode_sample(damaged, KEY, verify=False)
    except (CorruptSampleError, StoreVersionError):
        pass
