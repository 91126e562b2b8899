"""Verify a store end to end: every record decodes, and the indexes agree with the samples.

:func:`verify_store` never raises on a damaged store: every fault becomes a
line of its :class:`VerifyReport`, either against a key (``bad_keys``) or
against the store as a whole (``problems``). What is checked:

* every record decodes with its checksums verified (header CRC32 and payload
  xxh3), so a flipped byte, a truncated value, a damaged header or a value that
  is not a record at all (a planted pickle is never unpickled) is a bad key;
* for each indexed field, every sample is found under the value its own
  label/metadata gives, and under no other value;
* every key an index lists is a sample of the store;
* each index's counts agree with the keys it lists and sum to the sample count;
* the store carries its completion marker (a warning, or a problem when strict).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from src.data.storage import Storage, sample_index_values
from src.errors import DeepfakeDataError
from src.inspect.stores import one_line

__all__ = ["VerifyReport", "verify_store", "INCOMPLETE_MESSAGE"]

INCOMPLETE_MESSAGE = "no completion marker: the writer was interrupted or is still running"


@dataclass
class VerifyReport:
    """The outcome of verifying one store.

    Attributes:
        name: Display name of the store.
        path: The store's path.
        format: Storage format.
        num_samples: Samples in the store (``None`` when its keys cannot be listed).
        decoded: Samples that decoded with valid checksums.
        bad_keys: ``{key: [reason, ...]}`` for every damaged or mis-indexed key.
        problems: Faults of the store as a whole (index totals, unreadable indexes).
        warnings: Conditions worth knowing that do not fail verification.
        checked_fields: The index fields that were checked.
    """

    name: str
    path: str
    format: str
    num_samples: int | None = None
    decoded: int = 0
    bad_keys: dict[str, list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    checked_fields: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no key is bad and the store has no problem."""
        return not self.bad_keys and not self.problems

    def add_bad(self, key: str, reason: str) -> None:
        """Record one reason why ``key`` is bad."""
        self.bad_keys.setdefault(key, []).append(reason)

    def to_dict(self) -> dict[str, Any]:
        """Everything as JSON-serialisable values, plus ``ok``."""
        out = asdict(self)
        out["bad_keys"] = {k: self.bad_keys[k] for k in sorted(self.bad_keys)}
        out["ok"] = self.ok
        return out


def _describe(exc: BaseException) -> str:
    if isinstance(exc, DeepfakeDataError):
        return one_line(exc)  # CorruptSampleError's message names the key and the fault
    return f"{type(exc).__name__}: {one_line(exc)}"


def _decode_all(
    store: Storage, keys: Sequence[str], report: VerifyReport, iterate: Callable[[Sequence[str]], Iterable[str]]
) -> dict[str, dict[str, str]]:
    """Decode every sample; return each good sample's expected index values."""
    fields = list(store.indexed_fields)
    expected: dict[str, dict[str, str]] = {}
    for key in iterate(keys):
        try:
            sample = store.retrieve_sample(key, verify=True)
            expected[key] = sample_index_values(sample["label"], sample["metadata"], fields)
        except KeyError:
            report.add_bad(key, "listed among the store's keys but cannot be read")
        except Exception as exc:  # whatever a damaged record makes a backend raise, it is this key's fault
            report.add_bad(key, _describe(exc))
    return expected


def _check_index(store: Storage, field_name: str, keys: Sequence[str], expected: dict[str, dict[str, str]], report: VerifyReport) -> None:
    try:
        counts = store.index_counts(field_name)
        members = {value: store.query(**{field_name: value}) for value in counts}
    except Exception as exc:  # a damaged index must not stop the other checks
        report.problems.append(f"index {field_name!r} cannot be read: {_describe(exc)}")
        return
    where: dict[str, list[str]] = {}
    for value, listed in members.items():
        if len(listed) != counts[value]:
            report.problems.append(f"index {field_name!r}: value {value!r} counts {counts[value]} samples but lists {len(listed)} keys")
        for key in listed:
            where.setdefault(key, []).append(value)
    present = set(keys)
    for key in sorted(set(where) - present):
        values = ", ".join(repr(v) for v in where[key])
        report.add_bad(key, f"index {field_name!r} lists it under {values}, but the store has no such sample")
    for key in keys:
        values = where.get(key, [])
        want = expected.get(key, {}).get(field_name)  # None: the sample did not decode
        listed = ", ".join(repr(v) for v in values)
        if not values:
            detail = f" (its metadata says {want!r})" if want is not None else ""
            report.add_bad(key, f"missing from index {field_name!r}{detail}")
        elif want is not None and values != [want]:
            report.add_bad(key, f"index {field_name!r} lists it under {listed}, but its metadata says {want!r}")
        elif len(values) > 1:
            report.add_bad(key, f"index {field_name!r} lists it under several values: {listed}")
    total = sum(counts.values())
    if total != len(keys):
        report.problems.append(f"index {field_name!r} counts sum to {total}, but the store holds {len(keys)} samples")


def _identity(keys: Sequence[str]) -> Iterable[str]:
    return keys


def verify_store(
    store: Storage,
    *,
    name: str = "",
    strict: bool = False,
    iterate: Callable[[Sequence[str]], Iterable[str]] | None = None,
) -> VerifyReport:
    """Decode every record with checksum verification and check the indexes.

    Args:
        store: An open store (see :func:`~src.inspect.stores.open_checked`).
        name: Display name for the report (default: the store's path).
        strict: Count a missing completion marker as a problem, not a warning.
        iterate: Wraps the key list while decoding, e.g. a progress bar
            (``lambda keys: tqdm(keys)``).

    Returns:
        The report; ``report.ok`` tells whether the store is clean.
    """
    report = VerifyReport(name=name or str(store.path), path=str(store.path), format=store.format)
    try:
        keys = store.get_all_keys()
    except Exception as exc:  # an unreadable key table: nothing else can be checked
        report.problems.append(f"cannot list the store's keys: {_describe(exc)}")
        return report
    report.num_samples = len(keys)
    expected = _decode_all(store, keys, report, iterate or _identity)
    report.decoded = len(expected)
    report.checked_fields = list(store.indexed_fields)
    for field_name in report.checked_fields:
        _check_index(store, field_name, keys, expected, report)
    try:
        complete = store.is_complete
    except Exception as exc:  # __meta__ damaged after the store was opened
        report.problems.append(f"cannot read the store's metadata: {_describe(exc)}")
    else:
        if not complete:
            (report.problems if strict else report.warnings).append(INCOMPLETE_MESSAGE)
    if not report.checked_fields:
        report.warnings.append("the store has no indexes; only the records were checked")
    return report
