"""Look inside stores: describe them, verify them end to end, and preview their clips.

The command line is ``inspect_data.py``; this package holds its logic and
returns plain data structures that the CLI formats:

* :mod:`src.inspect.stores`: find the stores under a path (a store, a split
  directory or a dataset output root) and open them with their metadata checked;
* :mod:`src.inspect.info`: what a store is, from its metadata and indexes only;
* :mod:`src.inspect.verify`: decode every record with checksums and check the
  indexes against the samples;
* :mod:`src.inspect.preview`: a contact sheet of random clips.

Everything goes through the :class:`~src.data.storage.Storage` API, so every
store format is handled the same way.
"""

from src.inspect.info import StoreInfo, collect_info
from src.inspect.preview import PreviewSheet, contact_sheet, write_png
from src.inspect.stores import StoreTarget, find_stores, open_checked
from src.inspect.verify import VerifyReport, verify_store

__all__ = [
    "PreviewSheet",
    "StoreInfo",
    "StoreTarget",
    "VerifyReport",
    "collect_info",
    "contact_sheet",
    "find_stores",
    "open_checked",
    "verify_store",
    "write_png",
]
