"""A storage backend and a codec registered from outside src/ work through the public entry points."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from src.config import config_from_dict
from src.data import open_storage
from src.data.codecs import CODECS
from src.data.storage import BACKENDS, DEFAULT_STORE_NAMES, backend_names, detect_format
from src.errors import ConfigError
from tests.plugins import dummy_storage
from tests.storage_helpers import make_sample


@pytest.fixture
def plugins():
    dummy_storage.register()
    yield
    BACKENDS.unregister("jsondir")
    CODECS.unregister("zlib")
    DEFAULT_STORE_NAMES.pop("jsondir", None)


def test_registered_backend_is_usable_by_name(plugins, tmp_path):
    assert "jsondir" in backend_names()
    path = tmp_path / "data.jsondir"
    sample = make_sample(np.random.default_rng(3), 3)
    with open_storage(path, "w", format="jsondir") as store:
        store.store_sample("sample_000001", sample)
    assert detect_format(path) == "jsondir"
    with open_storage(path) as store:  # format detected through the backend's sniff
        got = store.retrieve_sample("sample_000001")
        assert store.query(label=sample["label"]) == ["sample_000001"]
    np.testing.assert_array_equal(got["data"], sample["data"])
    assert config_from_dict({"output": {"format": "jsondir"}}).output.format == "jsondir"
    assert DEFAULT_STORE_NAMES["jsondir"] == "data.jsondir"


def test_registered_codec_is_usable_by_every_backend(plugins, tmp_path):
    assert config_from_dict({"output": {"codec": "zlib"}}).output.codec == "zlib"
    sample = make_sample(np.random.default_rng(5), 5)
    for fmt in ("lmdb", "hdf5", "numpy", "torch"):
        before = dummy_storage.ZlibCodec.calls
        path = tmp_path / fmt / DEFAULT_STORE_NAMES[fmt]
        with open_storage(path, "w", format=fmt, codec="zlib") as store:
            store.store_sample("sample_000001", sample)
        with open_storage(path) as store:
            got = store.retrieve_sample("sample_000001")
            assert store.meta["codec"] == "zlib"
        assert dummy_storage.ZlibCodec.calls > before, fmt
        np.testing.assert_array_equal(got["data"], sample["data"])
        np.testing.assert_array_equal(got["audio"], sample["audio"])


def test_unknown_names_list_the_choices():
    with pytest.raises(ConfigError, match="unknown storage format 'zarr'; must be one of lmdb, hdf5, numpy, torch"):
        open_storage("x.zarr", "w", format="zarr")
    with pytest.raises(ConfigError, match="output.codec: invalid value 'lz4'; must be one of raw, zstd, jpeg"):
        config_from_dict({"output": {"codec": "lz4"}})


def test_hdf5_zstd_uses_the_zstd_filter_and_reads_back_identical(tmp_path):
    path = tmp_path / "data.h5"
    samples = {f"sample_{i:06d}": make_sample(np.random.default_rng(i), i) for i in range(1, 4)}
    with open_storage(path, "w", format="hdf5", codec="zstd") as store:
        store.store_batch(samples)
    with h5py.File(path, "r") as f:
        for key in samples:
            for name in ("data", "audio"):
                ds = f[f"samples/{key}/{name}"]
                assert "32015" in ds._filters, f"{key}/{name} filters: {ds._filters}"  # HDF5's registered Zstandard id
                assert "gzip" not in ds._filters
                assert ds.attrs["codec"] == "zstd"
    with open_storage(path) as store:
        assert store.meta["codec"] == "zstd"
        for key, sample in samples.items():
            got = store.retrieve_sample(key)
            assert got["data"].tobytes() == np.ascontiguousarray(sample["data"]).tobytes()
            assert got["audio"].tobytes() == np.ascontiguousarray(sample["audio"]).tobytes()
