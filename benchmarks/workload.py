"""What every contender of ``benchmarks/run.py`` is measured on, and the machine it ran on.

* :func:`make_clips`: the clips: real face crops (the scikit-image astronaut
  portrait, :func:`src.datasets.synth.astronaut_face`) framed differently per
  clip, moving slowly from frame to frame, with a little sensor noise, so that
  zstd and JPEG compress them about as they compress real face crops
  (pure noise would not compress at all; flat images would compress absurdly).
* :func:`psnr`: the quality of a lossy codec against the originals.
* :func:`drop_page_cache`: make the next read of some files come from the disk.
* :func:`machine_info`: CPU, cores, RAM, disk and library versions for the report.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import shutil
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np

from src.datasets.synth import astronaut_face

__all__ = [
    "CLIP_SHAPE",
    "clip_labels",
    "drop_page_cache",
    "fsync_files",
    "machine_info",
    "make_clips",
    "page_cache_fraction",
    "room_for",
    "psnr",
    "tree_bytes",
    "tree_files",
]

logger = logging.getLogger(__name__)

#: (channels, frames, height, width): the project's default clip.
CLIP_SHAPE: tuple[int, int, int, int] = (3, 16, 224, 224)
_DROP_CACHES = Path("/proc/sys/vm/drop_caches")


def make_clips(n: int, shape: Sequence[int] = CLIP_SHAPE, seed: int = 0, noise: float = 0.3) -> list[np.ndarray]:
    """Return ``n`` distinct uint8 face clips shaped ``(C, T, H, W)`` (RGB).

    Each clip zooms, shifts and tints the same real face photo differently and
    drifts it by a fraction of a pixel per frame; Gaussian noise of ``noise``
    grey levels stands in for what a decoded video leaves. With the defaults,
    zstd (level 3) compresses a clip about 1.3x and JPEG (quality 95) about 9x.

    Args:
        n: Number of clips.
        shape: ``(3, T, H, W)``.
        seed: Seed; clip ``i`` depends only on ``seed`` and ``i``.
        noise: Standard deviation of the per-pixel noise.
    """
    channels, frames, height, width = (int(s) for s in shape)
    if channels != 3:
        raise ValueError(f"clips are RGB: shape must be (3, T, H, W); got {tuple(shape)}")
    face = astronaut_face()
    side = face.shape[0]
    # One pool of noise rows, sliced at a random offset per frame: drawing fresh noise per pixel costs 20x more.
    pool = np.rint(np.random.default_rng([seed, 2**31]).normal(0.0, noise, size=(2 * height, width, 3))).astype(np.int16) if noise > 0 else None
    clips = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        zoom = rng.uniform(1.0, 1.35) * width / side
        cx, cy = side / 2 + rng.uniform(-12, 12), side / 2 + rng.uniform(-12, 12)
        vx, vy = rng.uniform(-0.6, 0.6, size=2)
        tinted = np.clip(face * rng.uniform(0.85, 1.15, size=3) + 0.5, 0, 255).astype(np.uint8)
        clip = np.empty((channels, frames, height, width), np.uint8)
        for t in range(frames):
            # Affine map from the face patch to the frame: scale about the (drifting) centre.
            m = np.array([[zoom, 0, width / 2 - zoom * (cx + vx * t)], [0, zoom, height / 2 - zoom * (cy + vy * t)]], np.float32)
            frame = cv2.warpAffine(tinted, m, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            if pool is not None:
                offset = int(rng.integers(0, height))
                frame = np.clip(frame + pool[offset : offset + height], 0, 255).astype(np.uint8)
            clip[:, t] = np.moveaxis(frame, -1, 0)
        clips.append(clip)
    return clips


def clip_labels(n: int) -> list[int]:
    """Labels of the clips: 1 (fake) for three clips in four, as in FakeAVCeleb."""
    return [0 if i % 4 == 0 else 1 for i in range(n)]


def psnr(reference: Iterable[np.ndarray], decoded: Iterable[np.ndarray]) -> float:
    """Peak signal-to-noise ratio in dB of ``decoded`` against ``reference`` (uint8, pooled MSE).

    Returns ``inf`` when they are identical.
    """
    se, count = 0.0, 0
    for ref, dec in zip(reference, decoded, strict=True):
        diff = ref.astype(np.float32) - np.asarray(dec, dtype=np.float32)
        se += float(np.square(diff, dtype=np.float64).sum())
        count += diff.size
    if se == 0.0:
        return float("inf")
    return float(10.0 * np.log10(255.0**2 / (se / count)))


def tree_files(root: Path) -> list[Path]:
    """Every regular file under ``root`` (or ``root`` itself when it is a file)."""
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def tree_bytes(root: Path) -> int:
    """Bytes allocated on disk under ``root`` (``du``: blocks, so sparse LMDB maps count what they use)."""
    return sum(p.stat().st_blocks * 512 for p in tree_files(root))


def fsync_files(paths: Iterable[Path]) -> None:
    """fsync each file (so a write timing includes reaching the disk, and its pages are clean)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def drop_page_cache(paths: Iterable[Path], system_wide: bool = True) -> str:
    """Evict ``paths`` from the page cache; return the method used.

    Each file is fsynced and ``posix_fadvise(DONTNEED)``-ed; then, when allowed
    (root, a writable ``/proc/sys/vm/drop_caches``), ``3`` is written to
    ``drop_caches`` as well, which also drops the kernel's dentry and inode
    caches. Pages still mapped by a process are dropped by neither, so close
    stores (LMDB maps) first.

    Returns:
        ``"drop_caches+fadvise"`` or ``"fadvise"``.
    """
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    if system_wide:
        try:
            with open(_DROP_CACHES, "w") as fh:
                fh.write("3\n")
            return "drop_caches+fadvise"
        except OSError as exc:
            logger.debug("cannot write %s (%s); fadvise only", _DROP_CACHES, exc)
    return "fadvise"


def page_cache_fraction(paths: Iterable[Path]) -> float | None:
    """Fraction of the files' pages that are in the page cache (``mincore``), or None when unknown.

    Tells whether a "warm" measurement really read from memory and a "cold" one
    from the disk.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    except (OSError, AttributeError):
        return None
    page = os.sysconf("SC_PAGE_SIZE")
    failed = ctypes.c_void_p(-1).value
    resident = total = 0
    for path in paths:
        size = path.stat().st_size
        if size == 0:
            continue
        fd = os.open(path, os.O_RDONLY)
        try:
            addr = libc.mmap(None, size, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED: the page cache itself
            if addr is None or addr == failed:
                return None
            try:
                vec = np.zeros((size + page - 1) // page, dtype=np.uint8)
                if libc.mincore(addr, size, vec.ctypes.data) != 0:
                    return None
                resident += int(np.count_nonzero(vec & 1))
                total += vec.size
            finally:
                libc.munmap(addr, size)
        finally:
            os.close(fd)
    return resident / total if total else None


def room_for(workdir: Path, store_bytes: int) -> list[str]:
    """Problems with holding ``store_bytes`` of stores in ``workdir`` and in the page cache (empty: none).

    Raises:
        OSError: Not enough free disk space in ``workdir``.
    """
    free = shutil.disk_usage(workdir).free
    if store_bytes > 0.9 * free:
        raise OSError(f"{workdir}: the stores need about {store_bytes / 1e9:.1f} GB and only {free / 1e9:.1f} GB are free; lower --clips or pick --workdir")
    problems = []
    available = _meminfo_gib("MemAvailable")
    if available is not None and store_bytes > 0.8 * available * 1024**3:
        problems.append(
            f"the stores (about {store_bytes / 1e9:.1f} GB) may not all fit in the page cache ({available:.1f} GiB available): "
            "warm numbers may include disk reads (see the page-cache notes in results.csv); lower --clips"
        )
    return problems


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _meminfo_gib(field: str) -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024**2
    except (OSError, ValueError, IndexError):
        pass
    return None


def _mount_of(path: Path) -> str:
    """``device (fstype)`` of the mount holding ``path``, from /proc/mounts."""
    best, desc = "", "unknown"
    real = os.path.realpath(path)
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            dev, mnt, fstype = line.split()[:3]
            if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                best, desc = mnt, f"{dev} ({fstype}) on {mnt}"
    except OSError:
        pass
    return desc


def machine_info(workdir: Path) -> dict[str, str]:
    """Describe the machine: CPU model, cores, RAM, scratch disk, Python and library versions."""
    import h5py
    import lmdb
    import torch
    import webdataset

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    mem = _meminfo_gib("MemTotal")
    return {
        "cpu": _cpu_model(),
        "cores": f"{usable} usable ({os.cpu_count()} online)",
        "ram": f"{mem:.1f} GiB" if mem is not None else "unknown",
        "scratch disk": _mount_of(workdir),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__ + (f", CUDA {torch.version.cuda}" if torch.cuda.is_available() else ", no CUDA device"),
        "numpy": np.__version__,
        "lmdb": f"LMDB {'.'.join(map(str, lmdb.version()))}, py-lmdb {lmdb.__version__}",
        "h5py": h5py.__version__,
        "opencv": cv2.__version__,
        "webdataset": getattr(webdataset, "__version__", "unknown"),
        "drop_caches writable": str(os.access(_DROP_CACHES, os.W_OK)),
    }
