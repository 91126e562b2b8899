"""Several stores read as one dataset: cross-dataset training and evaluation, sharded stores.

:class:`MultiStoreDataset` concatenates the items of several stores, of any
format, in the order given: item ``i`` lives in the store whose offset range
holds it. It has the interface the loaders use on a single
:class:`~src.data.dataset.ClipDataset` (``len``, ``dataset[i]``,
``read_batch``, ``labels``, ``keys``, ``close``), so every loader path (reader
threads, worker processes, the per-sample path) and every sampler works on it
unchanged. A batch may mix stores: :meth:`MultiStoreDataset.read_batch` holds
one read snapshot per store it touches and copies each clip once into the
shared batch buffer, as the single-store fast path does.

Every sample's metadata carries ``dataset``: its own ``dataset`` field when the
catalog wrote one (``"faceforensics"``), else its store's name
(:func:`store_dataset_name`: the ``dataset.name`` of the preprocessing config
recorded in the store, else the dataset folder of the store's path).

One batch is one tensor, so the stores' clips must agree in shape and dtype.
That is checked when the dataset is built: without a transform, on the
layouts the stores record; with one, on the transform's output for one sample
of each store. Stores that disagree are rejected with an error naming both and
their shapes; :class:`FitClip` is a transform that makes them agree (a
temporal centre crop or pad, then a spatial resize).
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from src.data.batch import Normalizer, RawBatch
from src.data.dataset import ClipDataset, SkippedSample, _clip_layout, assemble_rows
from src.data.memory import Allocator
from src.data.storage import Storage
from src.data.store_names import SPLIT_DIRS, store_dataset_name
from src.data.transforms import LMDBDataTransform, alloc_cpu
from src.errors import ConfigError, CorruptSampleError

__all__ = [
    "SPLIT_DIRS",
    "FitClip",
    "MultiStoreDataset",
    "fit_clip",
    "item_datasets",
    "part_dataset_name",
    "store_dataset_name",
]

logger = logging.getLogger(__name__)

#: Items whose layout a transform is tried on, per store, before giving up on a corrupt head.
_PROBE_ITEMS = 3


def item_datasets(dataset: Any) -> np.ndarray:
    """The dataset name of every item of a loader's dataset, in index order (nothing is decoded).

    A store that indexes ``dataset`` answers per sample from its index; any
    other store gives all its items its :func:`store_dataset_name`.

    Args:
        dataset: A :class:`~src.data.dataset.ClipDataset` or :class:`MultiStoreDataset`.

    Returns:
        A numpy array of ``str``.
    """
    pairs = list(zip(dataset.parts, dataset.part_names)) if isinstance(dataset, MultiStoreDataset) else [(dataset, None)]
    out: list[np.ndarray] = []
    for part, name in pairs:
        storage = part.storage
        fallback = name if name is not None else part_dataset_name(part)
        values = np.full(len(part.keys), fallback, dtype=object)
        if "dataset" in storage.indexed_fields:
            position = {k: i for i, k in enumerate(part.keys)}
            for value in storage.index_counts("dataset"):
                if not value:
                    continue  # samples without the field keep the store's name
                for key in storage.query(dataset=value):
                    i = position.get(key)
                    if i is not None:
                        values[i] = value
        out.append(values)
    return np.concatenate(out).astype(str) if out else np.empty(0, dtype=str)


def part_dataset_name(part: ClipDataset) -> str:
    """The dataset of a store's samples: its first sample's ``dataset`` field, else :func:`store_dataset_name`.

    A catalog writes the same ``dataset`` into every sample of its stores, so
    the first sample speaks for a store that does not index the field.
    """
    with ExitStack() as stack:
        for key in part.keys[:_PROBE_ITEMS]:
            (row,) = part.read_rows([key], stack)
            value = row.metadata.get("dataset") if row.error is None else None
            if isinstance(value, str) and value:
                return value
            if row.error is None:
                break
    return store_dataset_name(part.storage, part.db_path)


@contextmanager
def _isolated_rng() -> Any:
    """Run a user transform without moving the caller's torch, numpy or ``random`` streams."""
    py_state = random.getstate()
    np_state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def _describe(layout: tuple[tuple[Any, ...], Any] | None) -> str:
    if layout is None:
        return "no readable sample"
    shape, dtype = layout
    dims = ", ".join("?" if d is None else str(d) for d in shape)
    return f"{np.dtype(dtype) if not isinstance(dtype, torch.dtype) else str(dtype).replace('torch.', '')} ({dims})"


class MultiStoreDataset(Dataset):
    """Several stores (any formats) as one map-style dataset.

    Args:
        db_paths: The stores, in order; items are numbered store after store.
        transform: Per-sample transform (None: the whole-batch fast path).
        keys: Restrict to these keys; each store keeps the ones it holds.
        labels: Keep these labels (through each store's index).
        categories: Keep these categories (through each store's index).
        methods: Keep these methods (through each store's index).
        exclude_methods: Drop these methods (through each store's index).
        on_error: ``"raise"`` or ``"skip"`` for corrupt samples.
        verify: Check record checksums (default: each store's setting).
        storage_options: Extra arguments for ``open_storage``, for every store.

    Attributes:
        parts: One :class:`~src.data.dataset.ClipDataset` per store that
            contributes samples (a store left empty by the filters is dropped,
            with a warning).
        part_names: Each part's :func:`store_dataset_name`.
        db_paths: The parts' paths.
        offsets: ``offsets[p]`` is the index of part ``p``'s first item; the
            last entry is the length.

    Raises:
        ConfigError: No store given, the same store twice, keys that no store
            holds, nothing left after the filters, or stores whose clips do
            not agree in shape and dtype (see the module docstring).
        StorageError: A path holds no readable store.
    """

    def __init__(
        self,
        db_paths: Sequence[str | os.PathLike],
        transform: Callable[[Mapping[str, Any]], Any] | None = None,
        *,
        keys: Iterable[str] | None = None,
        labels: Any = None,
        categories: Any = None,
        methods: Any = None,
        exclude_methods: Any = None,
        on_error: str = "raise",
        verify: bool | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        paths = [Path(p) for p in db_paths]
        if not paths:
            raise ConfigError("db_path is an empty list; give at least one store")
        seen: set[str] = set()
        for p in paths:
            resolved = os.path.realpath(p)
            if resolved in seen:
                raise ConfigError(f"store {str(p)!r} is listed twice in db_path")
            seen.add(resolved)
        self.transform = transform
        self.on_error = on_error
        wanted = None if keys is None else list(dict.fromkeys(keys))
        found: set[str] = set()
        parts: list[ClipDataset] = []
        names: list[str] = []
        subset = {"labels": labels, "categories": categories, "methods": methods, "exclude_methods": exclude_methods}
        for path in paths:
            part = ClipDataset(
                path, transform, on_error=on_error, verify=verify, storage_options=storage_options, allow_empty=True, **subset
            )
            if wanted is not None:
                storage = part.storage
                present = {k for k in wanted if k in storage}
                found |= present
                part.keys = [k for k in part.keys if k in present]
            if not part.keys:
                logger.warning("%s: no sample selected from this store; it is left out", path)
                part.close()
                continue
            name = part_dataset_name(part)
            part.tag = name
            parts.append(part)
            names.append(name)
        if wanted is not None and len(found) < len(wanted):
            missing = [k for k in wanted if k not in found]
            raise ConfigError(f"{len(missing)} key(s) in none of the stores: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        if not parts:
            raise ConfigError(
                f"no sample of the {len(paths)} stores is left after selecting labels={labels!r}, categories={categories!r}, "
                f"methods={methods!r}, exclude_methods={exclude_methods!r}"
            )
        self.parts = parts
        self.part_names = names
        self.db_paths = [p.db_path for p in parts]
        self.offsets = np.cumsum([0] + [len(p) for p in parts]).astype(np.int64)
        self.has_audio = any(p.has_audio for p in parts)
        self._keys: list[str] | None = None
        self._labels: np.ndarray | None = None
        self._check_layouts()

    # ------------------------------------------------------------------ description

    @property
    def db_path(self) -> str:
        """The stores' paths joined with ``+`` (for messages and ``repr``)."""
        return " + ".join(str(p) for p in self.db_paths)

    @property
    def storages(self) -> list[Storage]:
        """This process's open stores, one per part."""
        return [p.storage for p in self.parts]

    @property
    def keys(self) -> list[str]:
        """Every item's key, in index order (keys of different stores may repeat)."""
        if self._keys is None:
            self._keys = [k for p in self.parts for k in p.keys]
        return self._keys

    @property
    def labels(self) -> np.ndarray:
        """Label of each item, from the stores' label indexes (nothing decoded)."""
        if self._labels is None:
            self._labels = np.concatenate([p.labels for p in self.parts])
        return self._labels

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}: {len(p)} from {str(p.db_path)!r}" for n, p in zip(self.part_names, self.parts))
        return f"{type(self).__name__}({inner})"

    def locate(self, index: int) -> tuple[int, int]:
        """``(part, index within the part)`` of item ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"item {index} out of range for {len(self)} items")
        part = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return part, int(index - self.offsets[part])

    # ------------------------------------------------------------------ process-local stores

    def close(self) -> None:
        """Close this process's handles on every store."""
        for part in self.parts:
            part.close()

    # ------------------------------------------------------------------ reading

    def __getitem__(self, index: int) -> Any:
        """The transformed sample ``index`` (its metadata tagged with ``dataset``)."""
        part, local = self.locate(int(index))
        return self.parts[part][local]

    def read_batch(
        self,
        indices: Sequence[int],
        allocate: Allocator | None = None,
        *,
        pool: Executor | None = None,
        convert: Normalizer | None = None,
    ) -> RawBatch:
        """Read items from any of the stores into one batch; see :meth:`ClipDataset.read_batch`."""
        where = np.searchsorted(self.offsets, np.asarray(indices, dtype=np.int64), side="right") - 1
        groups: dict[int, list[int]] = {}
        for slot, part in enumerate(where.tolist()):
            groups.setdefault(part, []).append(slot)
        rows: list[Any] = [None] * len(where)
        with ExitStack() as stack:
            for part, slots in groups.items():
                dataset, offset = self.parts[part], int(self.offsets[part])
                keys = [dataset.keys[int(indices[s]) - offset] for s in slots]
                for slot, row in zip(slots, dataset.read_rows(keys, stack)):
                    rows[slot] = row
            return assemble_rows(
                rows, allocate or alloc_cpu, pool, convert, has_audio=self.has_audio, on_error=self.on_error, where=self.db_path
            )

    # ------------------------------------------------------------------ layout check

    def _stored_layout(self, part: ClipDataset) -> tuple[tuple[Any, ...], np.dtype] | None:
        spec = (part.storage.meta.get("schema") or {}).get("data")
        if isinstance(spec, Mapping) and spec.get("shape") is not None and spec.get("dtype"):
            return tuple(spec["shape"]), np.dtype(spec["dtype"])
        with ExitStack() as stack:
            for key in part.keys[:_PROBE_ITEMS]:
                (row,) = part.read_rows([key], stack)
                if row.error is None:
                    return _clip_layout(row)
        return None

    def _output_layout(self, part: ClipDataset) -> tuple[tuple[int, ...], torch.dtype] | None:
        for index in range(min(_PROBE_ITEMS, len(part))):
            try:
                with _isolated_rng():
                    out = part[index]
            except CorruptSampleError:
                continue
            if isinstance(out, SkippedSample) or not isinstance(out, Mapping) or "data" not in out:
                continue
            data = out["data"] if isinstance(out["data"], torch.Tensor) else torch.as_tensor(np.asarray(out["data"]))
            return tuple(data.shape), data.dtype
        return None

    def _check_layouts(self) -> None:
        stored = [self._stored_layout(p) for p in self.parts]
        if self.transform is None:
            first = next((i for i, layout in enumerate(stored) if layout is not None), None)
            for i, layout in enumerate(stored):
                if first is None or layout is None or layout == stored[first]:
                    continue
                a, b = self.parts[first].db_path, self.parts[i].db_path
                raise ConfigError(
                    f"stores differ in clip layout: {a} holds {_describe(stored[first])} clips, {b} holds {_describe(layout)}; "
                    "one batch is one tensor, so pass a transform that makes them agree, e.g. "
                    f"transform=FitClip(frames={_dim(stored[first], 1)}, size={_size(stored[first])}) from src.data.multi_store"
                )
            return
        outputs = [self._output_layout(p) for p in self.parts]
        first = next((i for i, layout in enumerate(outputs) if layout is not None), None)
        for i, layout in enumerate(outputs):
            if first is None or layout is None or layout == outputs[first]:
                continue
            a, b = self.parts[first].db_path, self.parts[i].db_path
            raise ConfigError(
                f"the transform's clips differ between stores: {a} ({_describe(stored[first])} stored) gives {_describe(outputs[first])}, "
                f"{b} ({_describe(stored[i])} stored) gives {_describe(layout)}; make the transform return one shape "
                f"(e.g. FitClip(frames={_dim(outputs[first], 1)}, size={_size(outputs[first])}) from src.data.multi_store)"
            )


def _dim(layout: tuple[tuple[Any, ...], Any] | None, axis: int) -> Any:
    return layout[0][axis] if layout is not None and len(layout[0]) > axis else None


def _size(layout: tuple[tuple[Any, ...], Any] | None) -> Any:
    if layout is None or len(layout[0]) < 4:
        return None
    h, w = layout[0][2], layout[0][3]
    return h if h == w else (h, w)


# ----------------------------------------------------------------------------- making clips agree


def fit_clip(clip: torch.Tensor, frames: int | None = None, size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """Make a ``(C, T, H, W)`` clip ``frames`` long and ``size`` large.

    Longer clips keep their middle ``frames`` frames; shorter ones repeat their
    last frame. Frames are resized with bilinear interpolation (antialiased
    when shrinking); ``uint8`` stays ``uint8`` (rounded).

    Args:
        clip: The clip.
        frames: Frames wanted (None: keep).
        size: ``H`` and ``W`` wanted, one int for a square (None: keep).

    Returns:
        The fitted clip (``clip`` itself when nothing changes).
    """
    if clip.ndim != 4:
        raise ValueError(f"fit_clip expects a (C, T, H, W) clip; got shape {tuple(clip.shape)}")
    c, t, h, w = clip.shape
    if frames is not None and frames != t:
        if t > frames:
            first = (t - frames) // 2
            clip = clip[:, first : first + frames]
        else:
            index = torch.arange(frames).clamp_(max=t - 1)
            clip = clip.index_select(1, index)
        t = frames
    if size is not None:
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        if (height, width) != (h, w):
            dtype = clip.dtype
            flat = clip.reshape(1, c * t, h, w).to(torch.float32)
            shrink = height < h or width < w
            flat = torch.nn.functional.interpolate(flat, size=(height, width), mode="bilinear", align_corners=False, antialias=shrink)
            if not torch.is_floating_point(torch.empty(0, dtype=dtype)):
                info = torch.iinfo(dtype)
                flat = flat.round_().clamp_(info.min, info.max)
            clip = flat.to(dtype).reshape(c, t, height, width)
    return clip.contiguous()


class FitClip(LMDBDataTransform):
    """The base conversion, then :func:`fit_clip`: one clip shape for stores that differ.

    Example:
        >>> loader = create_data_loader([ff_train, celebdf_train], transform=FitClip(frames=16, size=224))

    Args:
        frames: Frames per clip (None: keep).
        size: Frame size, an int (square) or ``(H, W)`` (None: keep).
        target_device: See :class:`~src.data.transforms.LMDBDataTransform`.
        **options: ``mean``, ``std``, ``normalize``, ``dtype``.

    Raises:
        ConfigError: A frame count or size that is not a positive int.
    """

    def __init__(
        self,
        frames: int | None = None,
        size: int | tuple[int, int] | None = None,
        target_device: str | torch.device = "cpu",
        **options: Any,
    ) -> None:
        super().__init__(target_device, **options)
        if frames is not None and (isinstance(frames, bool) or not isinstance(frames, int) or frames < 1):
            raise ConfigError(f"frames must be an int >= 1 or None; got {frames!r}")
        sizes = (size,) if isinstance(size, int) or size is None else tuple(size)
        if size is not None and (len(sizes) not in (1, 2) or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes)):
            raise ConfigError(f"size must be an int >= 1, a pair of them, or None; got {size!r}")
        self.frames = frames
        self.size = size if size is None or isinstance(size, int) else (int(sizes[0]), int(sizes[1]))

    def __call__(self, sample: Mapping[str, Any]) -> dict[str, Any]:
        """Convert, then fit ``data``."""
        out = super().__call__(sample)
        out["data"] = fit_clip(out["data"], self.frames, self.size)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(frames={self.frames!r}, size={self.size!r})"
