"""The contenders of ``benchmarks/run.py``: every way a researcher might store and load the same clips.

Each contender is a :class:`Contender` subclass registered in :data:`CONTENDERS`
(name -> class). It writes the clips, reads clip ``i`` (random access), reads
every clip in storage order, and builds the epoch functions the DataLoader
measurements time. Three kinds:

* ``project``: this project's stores through :func:`~src.data.storage.open_storage`
  (LMDB with each codec; HDF5, numpy, torch with ``raw``) and
  :func:`~src.data.loaders.create_data_loader`.
* ``baseline``: what research code typically does: pickled dicts in LMDB,
  one PNG per frame in LMDB (DeepfakeBench's layout), and the plain h5py /
  ``.npy`` / ``.pt`` files one would write oneself, read by a plain torch
  Dataset with ``default_collate``; WebDataset tar shards through the real
  ``webdataset`` library.
* ``reference``: physical bounds: ``np.copyto`` of the bytes in RAM, and one
  flat file of the clips read with ``os.preadv``.

Every clip goes in as uint8 ``(3, T, H, W)`` RGB and must come back as such
(``pickle_lmdb_f32`` stores float32 / 255, as much research code does, and is
converted back only to check it).
"""

from __future__ import annotations

import abc
import json
import math
import os
import pickle
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import cv2
import lmdb
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from benchmarks.workload import tree_bytes, tree_files
from src.bench.loader_bench import PickleLMDBDataset, memcpy_epoch
from src.data.loaders import create_data_loader, default_num_workers
from src.data.storage import DEFAULT_STORE_NAMES, Storage, open_storage

__all__ = [
    "CONTENDERS",
    "KINDS",
    "LOADER_VARIANTS",
    "Contender",
    "NotApplicable",
    "SameAs",
    "drain",
    "register",
    "sample_key",
]

KINDS = ("project", "baseline", "reference")
#: DataLoader configurations: 0 and 2 workers, the project's defaults, delivery to CUDA.
LOADER_VARIANTS = ("w0", "w2", "default", "cuda")
CONTENDERS: dict[str, type[Contender]] = {}

_PLAIN_DEFAULT = "a plain DataLoader's default is num_workers=0: see dataloader_w0"
_CUDA_PROJECT_ONLY = "delivery to CUDA is measured for this project's LMDB loaders only"


class NotApplicable(Exception):
    """A measurement that does not apply to a contender; the message says why."""


class SameAs(NotApplicable):
    """A loader variant that is, on this machine, the same configuration as ``variant``.

    Args:
        variant: The variant whose measurement stands for this one.
        why: Why they are the same.
    """

    def __init__(self, variant: str, why: str) -> None:
        super().__init__(why)
        self.variant = variant


def register(cls: type[Contender]) -> type[Contender]:
    """Class decorator adding a contender to :data:`CONTENDERS` under its ``name``."""
    if cls.kind not in KINDS:
        raise ValueError(f"contender {cls.name!r}: kind {cls.kind!r} must be one of {', '.join(KINDS)}")
    CONTENDERS[cls.name] = cls
    return cls


def sample_key(i: int) -> str:
    """The key of clip ``i`` in this project's stores."""
    return f"sample_{i + 1:06d}"


def _metadata(label: int) -> dict[str, str]:
    return {"category": "A" if label == 0 else "C", "method": "real" if label == 0 else "faceswap"}


def drain(batches: Any, sync_cuda: bool = False, limit: int | None = None) -> int:
    """Consume one epoch of batches (or its first ``limit`` batches); return the number of clips delivered."""
    n = 0
    for k, batch in enumerate(batches):
        if limit is not None and k >= limit:
            break
        data = batch["data"] if isinstance(batch, dict) else batch[0]
        n += int(data.shape[0])
    if sync_cuda:
        torch.cuda.synchronize()
    return n


def _torch_loader(dataset: Dataset, num_workers: int, batch_size: int, seed: int) -> DataLoader:
    """A plain DataLoader: shuffled (seeded) map-style data, default collate."""
    if isinstance(dataset, IterableDataset):
        return DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers, generator=generator)


class Contender(abc.ABC):
    """One way of storing and loading clips.

    Lifecycle: :meth:`prepare` and :meth:`write` once; then :meth:`open`,
    reads, :meth:`close`, as many times as needed (stores are closed while the
    page cache is dropped, because mapped pages cannot be dropped).

    Args:
        workdir: Scratch directory; the contender writes under ``workdir/name``.
        shape: Clip shape ``(C, T, H, W)``.
    """

    name: ClassVar[str]
    kind: ClassVar[str]
    #: Short tag for the CSV notes column (which implementation this is).
    tag: ClassVar[str]
    #: One paragraph for the report: layout, how it is read, caveats.
    description: ClassVar[str]
    lossy: ClassVar[bool] = False
    #: Why random access does not apply, or None when it does.
    no_random_access: ClassVar[str | None] = None
    #: Why a cold read does not apply, or None when it does.
    no_cold_read: ClassVar[str | None] = None

    def __init__(self, workdir: Path, shape: Sequence[int]) -> None:
        self.root = Path(workdir) / self.name
        self.shape = tuple(int(s) for s in shape)
        self.clip_bytes = math.prod(self.shape)
        self.n = 0
        self.labels: list[int] = []

    # ------------------------------------------------------------------ writing

    def prepare(self, n: int) -> None:  # noqa: B027 - optional hook
        """Untimed set-up before :meth:`write` (e.g. allocate and touch memory)."""

    def write(self, clips: Sequence[np.ndarray], labels: Sequence[int]) -> None:
        """Store the clips (timed, with an fsync of :meth:`files` after it)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.n = len(clips)
        self.labels = [int(v) for v in labels]
        self._write(clips, self.labels)

    @abc.abstractmethod
    def _write(self, clips: Sequence[np.ndarray], labels: list[int]) -> None: ...

    def files(self) -> list[Path]:
        """Files holding the store (fsynced after writing, dropped from the page cache for cold reads)."""
        return tree_files(self.root)

    def disk_bytes(self) -> int:
        """Bytes the store takes on disk."""
        return tree_bytes(self.root)

    # ------------------------------------------------------------------ reading

    def open(self) -> None:  # noqa: B027 - optional hook
        """Open the store for reading (idempotent; reads call it themselves)."""

    def release(self) -> None:  # noqa: B027 - optional hook
        """Close the read handles (the next read reopens them)."""

    def close(self) -> None:
        """Close the read handles and anything else held open."""
        self.release()

    def read(self, i: int) -> np.ndarray:
        """Random access: decode clip ``i``."""
        raise NotApplicable(self.no_random_access or "no random access")

    def read_all(self) -> Iterator[np.ndarray]:
        """Every clip, in storage order."""
        for i in range(self.n):
            yield self.read(i)

    def as_uint8(self, clip: np.ndarray) -> np.ndarray:
        """A clip as read, back in the uint8 it was written as (for checking)."""
        return clip

    def epoch(self, variant: str, batch_size: int, seed: int) -> Callable[[int | None], int]:
        """A function running one DataLoader epoch of ``variant`` and returning the clips delivered.

        The function takes ``limit``: stop after that many batches (for warm-ups), or None.
        Every call builds its DataLoader afresh and closes it after the epoch:
        non-persistent workers for plain DataLoaders, and for this project's
        loader a fresh set of reader threads and batch buffers (a loader kept
        across epochs reuses its buffers, so this is slightly conservative).

        Raises:
            NotApplicable: The variant does not apply to this contender.
            SameAs: The variant is the same configuration as another one here.
        """
        if variant not in LOADER_VARIANTS:
            raise ValueError(f"unknown loader variant {variant!r}; must be one of {', '.join(LOADER_VARIANTS)}")
        if variant == "default":
            raise NotApplicable(_PLAIN_DEFAULT)
        if variant == "cuda":
            raise NotApplicable(_CUDA_PROJECT_ONLY)
        workers = 0 if variant == "w0" else 2

        def run(limit: int | None = None) -> int:
            # As research code does: the main process holds no handle when the DataLoader starts, each
            # worker opens its own (py-lmdb refuses a second handle on one environment in a process,
            # forked children included), and the DataLoader is built per epoch (non-persistent workers).
            self.release()
            dataset = self.dataset()
            try:
                return drain(_torch_loader(dataset, workers, batch_size, seed), limit=limit)
            finally:
                _close_dataset(dataset)

        return run

    def dataset(self) -> Dataset:
        """A plain torch Dataset over the store (each item: the clip as a tensor, and its label)."""
        raise NotApplicable("no torch Dataset")


# ============================================================================ this project


class _ProjectStore(Contender):
    kind = "project"
    fmt: ClassVar[str]
    codec: ClassVar[str] = "raw"

    def __init__(self, workdir: Path, shape: Sequence[int]) -> None:
        super().__init__(workdir, shape)
        self.path = self.root / DEFAULT_STORE_NAMES[self.fmt]
        self._store: Storage | None = None
        self._keys: list[str] = []

    def _write(self, clips: Sequence[np.ndarray], labels: list[int]) -> None:
        with open_storage(self.path, "w", format=self.fmt, codec=self.codec) as store:
            for i, (clip, label) in enumerate(zip(clips, labels)):
                store.store_sample(sample_key(i), {"data": clip, "label": label, "metadata": _metadata(label)})

    def open(self) -> None:
        if self._store is None:
            self._store = open_storage(self.path, "r")
            self._keys = self._store.get_all_keys()

    def release(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def read(self, i: int) -> np.ndarray:
        self.open()
        assert self._store is not None
        return self._store.retrieve_sample(self._keys[i])["data"]

    def epoch(self, variant: str, batch_size: int, seed: int) -> Callable[[int | None], int]:
        if variant not in LOADER_VARIANTS:
            raise ValueError(f"unknown loader variant {variant!r}; must be one of {', '.join(LOADER_VARIANTS)}")
        options: dict[str, Any] = {"batch_size": batch_size, "seed": seed}
        if variant == "w0":
            options["num_workers"] = 0
        elif variant == "w2":
            options["num_workers"] = 2
        elif variant == "default" and default_num_workers() == 2:
            raise SameAs("w2", "create_data_loader's default here is num_workers=min(4, usable CPUs)=2: the same loader as dataloader_w2")
        elif variant == "cuda":
            if self.fmt != "lmdb":
                raise NotApplicable(_CUDA_PROJECT_ONLY)
            if not torch.cuda.is_available():
                raise NotApplicable("no CUDA device on this machine")
            options["target_device"] = "cuda"
        sync = variant == "cuda"

        def run(limit: int | None = None) -> int:
            with create_data_loader(self.path, **options) as loader:
                return drain(loader, sync_cuda=sync, limit=limit)

        return run


_PROJECT_LOADER = (
    "loaders: create_data_loader (whole-batch reads by reader threads, float32 ImageNet-normalised batches; "
    "num_workers defaults to min(4, usable CPUs))"
)


@register
class LMDBRaw(_ProjectStore):
    name = "lmdb_raw"
    fmt, codec = "lmdb", "raw"
    tag = "this project: LMDBStorage, codec raw, checksum verified"
    description = f"This project's LMDBStorage, codec `raw` (one record per clip: checked header + the array bytes); reads verify the xxh3 checksum; {_PROJECT_LOADER}."


@register
class LMDBZstd(_ProjectStore):
    name = "lmdb_zstd"
    fmt, codec = "lmdb", "zstd"
    tag = "this project: LMDBStorage, codec zstd (level 3), checksum verified"
    description = f"This project's LMDBStorage, codec `zstd` (lossless, level 3); {_PROJECT_LOADER}."


@register
class LMDBJpeg(_ProjectStore):
    name = "lmdb_jpeg"
    fmt, codec = "lmdb", "jpeg"
    lossy = True
    tag = "this project: LMDBStorage, codec jpeg (quality 95, lossy), checksum verified"
    description = f"This project's LMDBStorage, codec `jpeg` (one JPEG per frame, quality 95, lossy: see PSNR); {_PROJECT_LOADER}."


@register
class HDF5Project(_ProjectStore):
    name = "hdf5_project"
    fmt = "hdf5"
    tag = "this project: HDF5Storage (h5py), codec raw, checksum verified"
    description = f"This project's HDF5Storage: one group per sample in one `.h5` file, codec `raw`, checksums verified; {_PROJECT_LOADER}."


@register
class NumpyProject(_ProjectStore):
    name = "npy_project"
    fmt = "numpy"
    tag = "this project: NumpyStorage (.npy per clip + index.json), checksum verified"
    description = f"This project's NumpyStorage: one `.npy` per clip plus `index.json`, `np.load(allow_pickle=False)`, checksums verified; {_PROJECT_LOADER}."


@register
class TorchProject(_ProjectStore):
    name = "pt_project"
    fmt = "torch"
    tag = "this project: TorchStorage (.pt per clip + index.json), checksum verified"
    description = f"This project's TorchStorage: one `.pt` per clip plus `index.json`, `torch.load(weights_only=True)`, checksums verified; {_PROJECT_LOADER}."


# ============================================================================ typical research code


class _LazyFile:
    """Mixin for plain Datasets: open the file/env on first use in each process (never share across fork)."""

    _handle: Any = None
    _pid: int | None = None

    def handle(self) -> Any:
        if self._handle is None or self._pid != os.getpid():
            self._handle = self.open_handle()
            self._pid = os.getpid()
        return self._handle

    def open_handle(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def close_handle(self) -> None:
        """Close this process's handle (call in the process that opened it)."""
        handle, self._handle = self._handle, None
        if handle is None or self._pid != os.getpid():
            return
        if isinstance(handle, int):
            os.close(handle)
        elif hasattr(handle, "file"):  # an h5py dataset
            handle.file.close()
        else:
            handle.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handle"], state["_pid"] = None, None
        return state


def _close_dataset(dataset: Any) -> None:
    """Close what a plain Dataset opened in this process (a w0 DataLoader reads in the main process)."""
    if isinstance(dataset, _LazyFile):
        dataset.close_handle()
    env = getattr(dataset, "env", None)  # src.bench.loader_bench.PickleLMDBDataset
    if env is not None:
        env.close()
        dataset.env = None


def _open_lmdb_readonly(path: Path) -> lmdb.Environment:
    return lmdb.open(str(path), readonly=True, lock=False, readahead=False, subdir=True, max_readers=256)


class _PickleLMDB(Contender):
    kind = "baseline"
    dtype: ClassVar[str]

    def __init__(self, workdir: Path, shape: Sequence[int]) -> None:
        super().__init__(workdir, shape)
        self._env: lmdb.Environment | None = None

    def _value(self, clip: np.ndarray) -> np.ndarray:
        return clip.astype(np.float32) / np.float32(255) if self.dtype == "float32" else clip

    def _write(self, clips: Sequence[np.ndarray], labels: list[int]) -> None:
        itemsize = np.dtype(self.dtype).itemsize
        env = lmdb.open(str(self.root), map_size=int(len(clips) * self.clip_bytes * itemsize * 1.25) + (64 << 20), subdir=True)
        try:
            # The key format PickleLMDBDataset (src/bench/loader_bench.py) reads.
            for start in range(0, len(clips), 64):
                with env.begin(write=True) as txn:
                    for i in range(start, min(len(clips), start + 64)):
                        sample = {"data": self._value(clips[i]), "label": labels[i], "metadata": _metadata(labels[i])}
                        txn.put(f"{i:08d}".encode(), pickle.dumps(sample, protocol=pickle.HIGHEST_PROTOCOL))
        finally:
            env.close()

    def open(self) -> None:
        if self._env is None:
            self._env = _open_lmdb_readonly(self.root)

    def release(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None

    def read(self, i: int) -> np.ndarray:
        self.open()
        with self._env.begin() as txn:
            return pickle.loads(txn.get(f"{i:08d}".encode()))["data"]  # noqa: S301 - the baseline being measured

    def read_all(self) -> Iterator[np.ndarray]:
        self.open()
        with self._env.begin() as txn:
            for _, value in txn.cursor():
                yield pickle.loads(value)["data"]  # noqa: S301

    def as_uint8(self, clip: np.ndarray) -> np.ndarray:
        return np.rint(clip * 255).astype(np.uint8) if self.dtype == "float32" else clip

    def dataset(self) -> Dataset:
        return PickleLMDBDataset(self.root, self.n)


@register
class PickleLMDBUint8(_PickleLMDB):
    name = "pickle_lmdb_u8"
    dtype = "uint8"
    tag = "plain: pickle.dumps({data: uint8 clip, label, metadata}) in raw lmdb"
    description = (
        "Typical research code: `pickle.dumps({'data': uint8 clip, 'label', 'metadata'})` as the value of a plain `lmdb` "
        "environment, 64 clips per transaction; read with `pickle.loads`; the DataLoader uses "
        "`src.bench.loader_bench.PickleLMDBDataset`. The reference of every 'vs pickle' ratio."
    )


@register
class PickleLMDBFloat32(_PickleLMDB):
    name = "pickle_lmdb_f32"
    dtype = "float32"
    tag = "plain: pickle.dumps({data: float32 clip / 255, label, metadata}) in raw lmdb"
    description = "As `pickle_lmdb_u8`, but the clip is stored as float32 / 255, as much research code does (4x the bytes)."


def _frames_to_clip(frames: list[np.ndarray]) -> np.ndarray:
    """cv2 BGR frames (H, W, 3) -> RGB clip (3, T, H, W)."""
    return np.ascontiguousarray(np.stack(frames)[..., ::-1].transpose(3, 0, 1, 2))


def _decode_png_clip(txn: lmdb.Transaction, i: int, frames: int) -> np.ndarray:
    return _frames_to_clip([cv2.imdecode(np.frombuffer(txn.get(f"{i:06d}/{t:03d}".encode()), np.uint8), cv2.IMREAD_COLOR) for t in range(frames)])


class PngLMDBDataset(_LazyFile, Dataset):
    """DeepfakeBench-style Dataset: one LMDB value per frame PNG, decoded with cv2."""

    def __init__(self, path: Path, labels: list[int], frames: int) -> None:
        self.path, self.labels, self.frames = path, labels, frames

    def open_handle(self) -> lmdb.Environment:
        return _open_lmdb_readonly(self.path)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        with self.handle().begin() as txn:
            return torch.from_numpy(_decode_png_clip(txn, i, self.frames)), self.labels[i]


@register
class PngLMDB(Contender):
    name = "png_lmdb"
    kind = "baseline"
    tag = "plain: DeepfakeBench layout, one PNG per frame in lmdb (keys <clip>/<frame>), cv2"
    description = (
        "DeepfakeBench's LMDB layout: one value per frame, the frame as PNG (`cv2.imencode`, OpenCV's default compression), "
        "keys `<clip>/<frame>`, labels in a JSON file; a clip is 16 gets + `cv2.imdecode` + BGR->RGB + stack."
    )

    def __init__(self, workdir: Path, shape: Sequence[int]) -> None:
        super().__init__(workdir, shape)
        self._env: lmdb.Environment | None = None

    def _write(self, clips: Sequence[np.ndarray], labels: list[int]) -> None:
        env = lmdb.open(str(self.root / "frames.lmdb"), map_size=int(len(clips) * self.clip_bytes * 1.5) + (64 << 20), subdir=True)
        try:
            for start in range(0, len(clips), 16):
                with env.begin(write=True) as txn:
                    for i in range(start, min(len(clips), start + 16)):
                        for t in range(self.shape[1]):
                            frame = np.ascontiguousarray(clips[i][::-1, t].transpose(1, 2, 0))  # RGB CHW -> BGR HWC
                            ok, buf = cv2.imencode(".png", frame)
                            if not ok:
                                raise RuntimeError("cv2.imencode failed")
                            txn.put(f"{i:06d}/{t:03d}".encode(), buf.tobytes())
        finally:
            env.close()
        (self.root / "labels.json").write_text(json.dumps(labels))

    def open(self) -> None:
        if self._env is None:
            self._env = _open_lmdb_readonly(self.root / "frames.lmdb")

    def release(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None

    def read(self, i: int) -> np.ndarray:
        self.open()
        with self._env.begin() as txn:
            return _decode_png_clip(txn, i, self.shape[1])

    def read_all(self) -> Iterator[np.ndarray]:
        self.open()
        with self._env.begin() as txn:
            for i in range(self.n):
                yield _decode_png_clip(txn, i, self.shape[1])

    def dataset(self) -> Dataset:
        return PngLMDBDataset(self.root / "frames.lmdb", self.labels, self.shape[1])


class H5Dataset(_LazyFile, Dataset):
    """Plain h5py Dataset: ``clips[i]`` of one chunked dataset."""

    def __init__(self, path: Path, labels: list[int]) -> None:
        self.path, self.labels = path, labels

    def open_handle(self) -> Any:
        import h5py

        return h5py.File(self.path, "r")["clips"]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(self.handle()[i]), self.labels[i]


@register
class HDF5Plain(Contender):
    name = "hdf5_plain"
    kind = "baseline"
    tag = "plain h5py: one (N,3,T,H,W) uint8 dataset, one chunk per clip, no compression"
    description = "What you would write yourself with h5py: one uint8 dataset `clips` of shape (N, 3, T, H, W), one chunk per clip, no filter; read `clips[i]`."

    def __init__(self, workdir: Path, shape: Sequence[int]) -> None:
        super().__init__(workdir, shape)
        self.path = self.root / "clips.h5"
        self._file: Any = None

    def _write(self, clips: Sequence[np.ndarray], labels: list[int]) -> None:
        import h5py

        with h5py.File(self.path, "w") as f:
            ds = f.create_dataset("clips", shape=(len(clips), *self.shape), dtype=np.uint8, chunks=(1, *self.shape))
            for i, clip in enumerate(clips):
                ds[i] = clip
            f.create_dataset("labels", data=np.asarray(labels, dtype=np.int64))

    def open(self) -> None:
        import h5py

        if self._file is None:
            self._file = h5py.File(self.path, "r")

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def read(self, i: int) -> np.ndarray:
        self.open()
        return self._file["clips"][i]

    def dataset(self) -> Dataset:
        return H5Dataset(self.path, self.labels)


class FileDataset(Dataset):
    """Plain per-file Dataset: ``load(directory / name(i))`` as a tensor."""

    def __init__(self, root: Path, labels: list[int], kind: str) -> None:
        self.root, self.labels, self.kind = root, labels, kind

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if self.kind == "npy":
            return torch.from_numpy(np.load(self.root / f"{i:06d}.npy")), self.labels[i]
        return torch.load(self.root / f"{i:06d}.pt", weights_only=True)["data"], self.labels[i]


@register
class NumpyPlain(Contender):
    name = "npy_plain"
    kind = "baseline"
    tag = "plain: np.save per clip, np.load"
    description = "What you would write yourself: `np.save(f'{i:06d}.npy', clip)` per clip, `np.load` to read (no checksum, no index)."

    def _write(self, clips: Sequence[np.ndarray], labels: list[int]) -> None:
        for i, clip in enumerate(clips):
            np.save(self.root / f"{i:06d}.npy", clip)
        (self.root / "labels.json").write_text(json.dumps(labels))

    def read(self, i: int) -> np.ndarray:
        return np.load(self.root / f"{i:06d}.npy")

    def dataset(self) -> Dataset:
        return FileDataset(self.root, self.labels, "npy")


@register
class TorchPlain(Contender):
    name = "pt_plain"
    kind = "baseline"
    tag = "plain: torch.save({data: tensor, label}) per clip, torch.load(weights_only=True)"
    description = "What you would write yourself: `torch.save({'data': tensor, 'label': int}, f'{i:06d}.pt')` per clip, `torch.load(weights_only=True)` to read."

    def _write(self, clips: Sequence[np.ndarray], labels: list[int]) -> None:
        for i, (clip, label) in enumerate(zip(clips, labels)):
            torch.save({"data": torch.from_numpy(clip), "label": label}, self.root / f"{i:06d}.pt")

    def read(self, i: int) -> np.ndarray:
        return torch.load(self.root / f"{i:06d}.pt", weights_only=True)["data"].numpy()

    def dataset(self) -> Dataset:
        return FileDataset(self.root, self.labels, "pt")


def _identity(x: Any) -> Any:
    return x


@register
class WebDatasetShards(Contender):
    name = "webdataset"
    kind = "baseline"
    tag = "webdataset library: tar shards of .npy + .cls, sequential"
    description = (
        "WebDataset tar shards written with `webdataset.ShardWriter` (`.npy` clip + `.cls` label per sample, 8 shards) and "
        "read with `webdataset.WebDataset(shards, shardshuffle=False).decode()`; the DataLoader splits shards between workers. "
        "Sequential by design: no random access, no per-epoch shuffle here."
    )
    no_random_access = "webdataset reads tar shards sequentially by design (no random access)"
    no_cold_read = no_random_access
    shards = 8

    def _write(self, clips: Sequence[np.ndarray], labels: list[int]) -> None:
        import webdataset as wds

        per_shard = max(1, math.ceil(len(clips) / self.shards))
        with wds.ShardWriter(str(self.root / "shard-%06d.tar"), maxcount=per_shard, verbose=0) as sink:
            for i, (clip, label) in enumerate(zip(clips, labels)):
                sink.write({"__key__": f"{i:06d}", "npy": clip, "cls": label})

    def _urls(self) -> list[str]:
        return sorted(str(p) for p in self.root.glob("shard-*.tar"))

    def _pipeline(self) -> Any:
        import webdataset as wds

        return wds.WebDataset(self._urls(), shardshuffle=False).decode()

    def read_all(self) -> Iterator[np.ndarray]:
        for sample in self._pipeline():
            yield sample["npy"]

    def dataset(self) -> Dataset:
        return self._pipeline().to_tuple("npy", "cls").map_tuple(torch.from_numpy, _identity)


# ============================================================================ physical references


@register
class Memcpy(Contender):
    name = "memcpy"
    kind = "reference"
    tag = "reference: np.copyto of the same bytes in RAM (memory bandwidth)"
    description = (
        "`np.copyto` of each clip's bytes, RAM to RAM, one thread: the memory-bandwidth bound. 'write' copies the clips "
        "into a preallocated array, a read copies one out into a fresh array; the DataLoader bound is "
        "`src.bench.loader_bench.memcpy_epoch` (copy every clip into a batch buffer)."
    )
    no_cold_read = "in RAM: no page cache to drop"

    def prepare(self, n: int) -> None:
        self._buf = np.ones((n, *self.shape), dtype=np.uint8)  # touched, so the timing excludes page faults

    def _write(self, clips: Sequence[np.ndarray], labels: list[int]) -> None:
        for i, clip in enumerate(clips):
            np.copyto(self._buf[i], clip)

    def files(self) -> list[Path]:
        return []

    def disk_bytes(self) -> int:
        return self.n * self.clip_bytes

    def read(self, i: int) -> np.ndarray:
        out = np.empty(self.shape, dtype=np.uint8)
        np.copyto(out, self._buf[i])
        return out

    def epoch(self, variant: str, batch_size: int, seed: int) -> Callable[[int | None], int]:
        if variant == "w0":
            epoch = memcpy_epoch(self.n, self.shape, batch_size)
            return lambda limit=None: epoch()
        raise NotApplicable("one thread copying every clip into a batch buffer is the bound (dataloader_w0), drawn as a line")


class RawFileDataset(_LazyFile, Dataset):
    """Clip ``i`` read with ``os.preadv`` at offset ``i * clip_bytes`` of one flat file."""

    def __init__(self, path: Path, shape: tuple[int, ...], labels: list[int]) -> None:
        self.path, self.shape, self.labels = path, shape, labels

    def open_handle(self) -> int:
        return os.open(self.path, os.O_RDONLY)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(_pread_clip(self.handle(), i, self.shape)), self.labels[i]


def _pread_clip(fd: int, i: int, shape: tuple[int, ...]) -> np.ndarray:
    out = np.empty(shape, dtype=np.uint8)
    n = os.preadv(fd, [out], i * out.nbytes)
    if n != out.nbytes:
        raise OSError(f"short read of clip {i}: {n} of {out.nbytes} bytes")
    return out


@register
class RawFile(Contender):
    name = "rawfile"
    kind = "reference"
    tag = "reference: one flat file, os.write + fsync, os.preadv at clip offsets (disk / page cache)"
    description = (
        "The clips back to back in one file: written with `os.write` (+ fsync, as every contender), read with "
        "`os.preadv` into a fresh array at offset `i * clip_bytes`: the disk (cold) and page-cache (warm) bound, no format at all."
    )

    def __init__(self, workdir: Path, shape: Sequence[int]) -> None:
        super().__init__(workdir, shape)
        self.path = self.root / "clips.bin"
        self._fd: int | None = None

    def _write(self, clips: Sequence[np.ndarray], labels: list[int]) -> None:
        with open(self.path, "wb", buffering=0) as fh:
            for clip in clips:
                view = memoryview(np.ascontiguousarray(clip).reshape(-1))
                while view:
                    view = view[fh.write(view) :]
        (self.root / "labels.json").write_text(json.dumps(labels))

    def open(self) -> None:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def read(self, i: int) -> np.ndarray:
        self.open()
        assert self._fd is not None
        return _pread_clip(self._fd, i, self.shape)

    def dataset(self) -> Dataset:
        return RawFileDataset(self.path, self.shape, self.labels)
