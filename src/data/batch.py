"""The batch as it travels inside the loader, before the user sees it.

Readers (:meth:`~src.data.dataset.ClipDataset.read_batch`, the per-sample
collation) produce a :class:`RawBatch`: the user-visible tensors plus the
loader's bookkeeping (skipped and corrupt samples, the staging slot, whether the
clips are already normalised). It pickles through DataLoader worker processes
(tensors in shared memory travel as handles) and supports DataLoader's
``pin_memory``. :meth:`ClipLoader._finish <src.data.loaders.ClipLoader>` is the
only place that turns it into the spec's dict (:meth:`RawBatch.as_dict`), so
the bookkeeping never reaches the user.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

__all__ = ["BATCH_FIELDS", "Normalizer", "RawBatch"]

#: The user-visible fields of a finished batch, in order (``audio*`` only when the store has audio).
BATCH_FIELDS = ("data", "label", "audio", "audio_lengths", "key", "metadata")


@runtime_checkable
class Normalizer(Protocol):
    """What a batch reader needs to write normalised float32 clips while it copies them."""

    def coefficients(self, channels: int, integer: bool) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel ``(scale, shift)`` arrays so that float32 ``out = clip * scale + shift``.

        The scale may be float64 (one rounding to float32, for exact results).

        Args:
            channels: Channels of the clips.
            integer: The stored clips are integers (0..255) rather than 0..1 floats.
        """
        ...


def _empty_labels() -> torch.Tensor:
    return torch.empty(0, dtype=torch.int64)


@dataclass
class RawBatch:
    """A batch between its reader and :meth:`ClipLoader._finish`.

    Attributes:
        data: Clips ``(B, C, T, H, W)`` (stored dtype, or float32 when ``normalized``);
            None for a batch with no good sample.
        label: int64 ``(B,)``.
        keys: Sample keys, in batch order.
        metadata: Metadata dicts, in batch order.
        audio: float32 ``(B, 1, samples)`` zero-padded, or None.
        audio_lengths: int64 ``(B,)``, or None.
        extra: Further fields a per-sample transform returned (stacked tensors or lists).
        skipped: ``(key, reason)`` of corrupt samples left out under ``on_error="skip"``.
        errors: ``(key, reason)`` of corrupt samples to raise in the main process
            (a worker cannot re-raise a :class:`~src.errors.CorruptSampleError` itself).
        slot: The :class:`~src.data.memory.PinnedRing` slot holding ``data``, if any.
        normalized: The clips are already normalised float32.
    """

    data: torch.Tensor | None = None
    label: torch.Tensor = field(default_factory=_empty_labels)
    keys: list[str] = field(default_factory=list)
    metadata: list[dict[str, Any]] = field(default_factory=list)
    audio: torch.Tensor | None = None
    audio_lengths: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    slot: int | None = None
    normalized: bool = False

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def failure(cls, errors: list[tuple[str, str]]) -> RawBatch:
        """A batch carrying only corrupt-sample errors, to be raised by the main process."""
        return cls(errors=list(errors))

    def tensors(self) -> dict[str, torch.Tensor]:
        """The user-visible tensor fields that are set (what moves to the device)."""
        named = {"data": self.data, "label": self.label, "audio": self.audio, "audio_lengths": self.audio_lengths}
        return {k: v for k, v in named.items() if isinstance(v, torch.Tensor)}

    def pin_memory(self) -> RawBatch:
        """Pin the tensors (called by DataLoader's pin-memory thread for worker batches)."""
        for name, value in self.tensors().items():
            setattr(self, name, value.pin_memory())
        self.extra = {k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in self.extra.items()}
        return self

    def as_dict(self) -> dict[str, Any]:
        """The spec's batch dict: ``data``, ``label``, ``audio``/``audio_lengths`` (when set), ``key``, ``metadata``, extras."""
        out: dict[str, Any] = {}
        if self.data is not None:
            out["data"] = self.data
        out["label"] = self.label
        if self.audio is not None:
            out["audio"] = self.audio
            out["audio_lengths"] = self.audio_lengths
        out["key"] = self.keys
        out["metadata"] = self.metadata
        for name, value in self.extra.items():
            out.setdefault(name, value)
        return out
