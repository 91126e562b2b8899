"""User-facing helpers; :mod:`src.utils.lmdb_utils` holds the spec's loading API.

Library code never imports this package (data flows catalog -> stages -> record
-> storage -> dataset -> loader; ``src.utils`` is for user code only).
"""
