"""Everything about stored samples: the record encoding, the stores, the torch side.

Use :func:`open_storage` to open a store of any format::

    from src.data import open_storage
    with open_storage("data/processed/FakeAVCeleb_v1.2/train/data.lmdb") as store:
        sample = store.retrieve_sample("sample_000001")
"""

from src.data.codecs import CODECS, Codec, get_codec
from src.data.record import decode_sample, encode_sample
from src.data.storage import (
    BACKENDS,
    DEFAULT_STORE_NAMES,
    Storage,
    backend_names,
    detect_format,
    get_backend,
    open_storage,
    register_backend,
)

__all__ = [
    "BACKENDS",
    "CODECS",
    "Codec",
    "get_codec",
    "DEFAULT_STORE_NAMES",
    "Storage",
    "backend_names",
    "decode_sample",
    "detect_format",
    "encode_sample",
    "get_backend",
    "open_storage",
    "register_backend",
]
