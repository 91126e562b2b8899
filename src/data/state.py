"""The resumable state of a :class:`~src.data.loaders.ClipLoader`: what it is, how it is checked.

A loader's state is a plain, JSON-serialisable dict (torchdata's
``StatefulDataLoader`` protocol: ``loader.state_dict()`` describes the last
iterator, ``loader.load_state_dict(state)`` sets up the next one)::

    {
      "version": 1,
      "epoch": 3,              # the epoch to continue
      "position": 4096,        # positions of that epoch's global order consumed, all ranks together
      "epoch_length": 10000,   # length of the global order (items, or draws with balanced=True)
      "order": {"kind": "epoch", "seed": 0, "shuffle": true},   # what fixes the global order
      "dataset": {"items": 10000, "fingerprint": "5f3a9c21"},   # what the order indexes
      "world_size": 4, "rank": 0, "batch_size": 32,             # who saved it (informational)
      "batches": 32,           # batches this rank yielded in the epoch (informational)
      "stats": {"batches": 1032, "samples": 33024, "skipped": 0}
    }

``position`` counts only batches actually yielded to the caller: batches read
ahead by reader threads or worker processes are read again after a restore.
Because it is a position in the global order (see :mod:`src.data.samplers`),
a state restores onto any ``num_workers``, reader-thread count, batch size or
world size; ``order`` and ``dataset`` must match, or the position would mean
other samples.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from src.errors import ConfigError

__all__ = ["STATE_VERSION", "LoaderState", "dataset_fingerprint"]

STATE_VERSION = 1


def dataset_fingerprint(dataset: Any) -> str:
    """A short digest of a loader dataset's items: its keys, store by store, in index order.

    Two datasets with the same fingerprint number the same samples the same
    way, so a saved position means the same samples in both. Paths are left
    out: a job may resume with its stores mounted elsewhere.
    """
    parts = getattr(dataset, "parts", None) or [dataset]
    crc = 0
    for part in parts:
        crc = zlib.crc32(("\n".join(part.keys) + "\n\x00").encode("utf-8", "surrogatepass"), crc)
    return f"{crc:08x}"


@dataclass
class LoaderState:
    """A loader's state; :meth:`to_dict` gives the JSON-serialisable dict of the module docstring."""

    epoch: int
    position: int
    epoch_length: int
    order: dict[str, Any]
    dataset: dict[str, Any]
    world_size: int = 1
    rank: int = 0
    batch_size: int = 0
    batches: int = 0
    stats: dict[str, int] = field(default_factory=dict)
    version: int = STATE_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The state as a plain dict (ints, strings, bools, lists and dicts only)."""
        out = asdict(self)
        return {"version": out.pop("version"), **out}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> LoaderState:
        """Parse a saved state.

        Raises:
            ConfigError: Not a loader state, another version, or bad values;
                the message names the entry.
        """
        if not isinstance(state, Mapping):
            raise ConfigError(f"a loader state must be a dict from ClipLoader.state_dict(); got {type(state).__name__}")
        version = state.get("version")
        if version != STATE_VERSION:
            raise ConfigError(f"loader state version {version!r} is not supported (this build reads version {STATE_VERSION})")
        missing = [k for k in ("epoch", "position", "epoch_length", "order", "dataset") if k not in state]
        if missing:
            raise ConfigError(f"loader state lacks {', '.join(missing)}")
        for name in ("epoch", "position", "epoch_length"):
            value = state[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"loader state {name} must be an int >= 0; got {value!r}")
        if state["position"] > state["epoch_length"]:
            raise ConfigError(f"loader state position {state['position']} is past the epoch's length {state['epoch_length']}")
        for name in ("order", "dataset"):
            if not isinstance(state[name], Mapping):
                raise ConfigError(f"loader state {name} must be a dict; got {state[name]!r}")
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in state.items() if k in known}
        values["order"] = dict(state["order"])
        values["dataset"] = dict(state["dataset"])
        values["stats"] = dict(state.get("stats") or {})
        return cls(**values)

    def check_matches(self, order: Mapping[str, Any], epoch_length: int, dataset: Mapping[str, Any]) -> None:
        """Check that this state indexes the same global order as a loader's.

        Raises:
            ConfigError: Another dataset, seed, shuffle or sampler; the message
                says which and both values.
        """
        if dict(self.dataset) != dict(dataset):
            raise ConfigError(
                f"the loader state is for another dataset ({self.dataset.get('items')} items, fingerprint {self.dataset.get('fingerprint')}); "
                f"this loader has {dataset.get('items')} items, fingerprint {dataset.get('fingerprint')}: same stores, keys and filters are needed"
            )
        if dict(self.order) != dict(order):
            diff = sorted(k for k in set(self.order) | set(order) if self.order.get(k) != order.get(k))
            detail = ", ".join(f"{k}: saved {self.order.get(k)!r}, here {order.get(k)!r}" for k in diff)
            raise ConfigError(f"the loader state was saved with another sample order ({detail})")
        if self.epoch_length != epoch_length:
            raise ConfigError(f"the loader state's epoch has {self.epoch_length} positions; this loader's has {epoch_length}")
