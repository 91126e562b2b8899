"""A small synthetic dataset in the exact FakeAVCeleb v1.2 layout, for demos and tests.

``make_demo_dataset(root)`` writes ``root/meta_data.csv`` and the videos it lists::

    root/                                      (e.g. data/raw/FakeAVCeleb_v1.2)
      meta_data.csv                            header: source,...,gender,path,   <- trailing comma
      RealVideo-RealAudio/Asian (East)/women/id00003/00109.mp4
      FakeVideo-FakeAudio/African/men/id00001/00118_3_id00004_wavtolip.mp4
      ...

The quirks of the real metadata are reproduced on purpose: the unnamed last column
holds the folder prefixed with ``FakeAVCeleb/``, ``path`` holds only the file name,
file names repeat across identities, race folders contain spaces and parentheses,
and one file is listed twice (as ``faceswap-wav2lip`` and as ``wav2lip``). With
``include_broken`` a zero-byte file, a truncated file and a row whose file is
missing exercise failure reporting.

Every identity is the scikit-image astronaut face with its own tint, size, position
and gentle panning, speaking a tone of its own. Fake videos are visibly manipulated
(colour-swapped face, swapped upper half, blurred jittering mouth) and fake audio is
a different, noisy tone. :func:`plan_demo_dataset` returns the plan (ground truth)
without writing anything. Output is deterministic for a seed.

Run ``python -m src.datasets.demo --out data/raw/FakeAVCeleb_v1.2``.
"""

from __future__ import annotations

import argparse
import csv
import functools
import logging
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from src.datasets import synth
from src.errors import DatasetError

__all__ = [
    "CATEGORY_TYPES",
    "GENDERS",
    "MANIPULATIONS",
    "META_HEADER",
    "RACES",
    "DemoVideo",
    "Identity",
    "main",
    "make_demo_dataset",
    "plan_demo_dataset",
    "render_row",
]

logger = logging.getLogger(__name__)

#: The header line of FakeAVCeleb v1.2's meta_data.csv, trailing comma included.
META_HEADER = "source,target1,target2,method,category,type,race,gender,path,"
#: Race folder names, exactly as in the dataset.
RACES = ("African", "Asian (East)", "Asian (South)", "Caucasian (American)", "Caucasian (European)")
#: Gender folder names.
GENDERS = ("men", "women")
#: Category letter -> type (top-level folder).
CATEGORY_TYPES = {
    "A": "RealVideo-RealAudio",
    "B": "RealVideo-FakeAudio",
    "C": "FakeVideo-RealAudio",
    "D": "FakeVideo-FakeAudio",
}
_CATEGORY_METHODS = {
    "A": ("real",),
    "B": ("rtvc",),
    "C": ("faceswap", "fsgan", "wav2lip"),
    "D": ("faceswap-wav2lip", "fsgan-wav2lip", "wav2lip"),
}
_FAKE_AUDIO_CATEGORIES = ("B", "D")
_FILE_SUFFIX = {
    "faceswap": "faceswap",
    "fsgan": "fsgan",
    "wav2lip": "wavtolip",
    "faceswap-wav2lip": "faceswap-wavtolip",
    "fsgan-wav2lip": "fsgan-wavtolip",
}
# A few base names shared by every identity, as in the real data (00109.mp4 exists
# under many identities), so file names alone never identify a video.
_BASENAMES = ("00109", "00118", "00052")
_SAMPLE_RATE = 44100
_FRAME_SIZE = (224, 224)
_LARGE_SIZE = (320, 256)


@dataclass(frozen=True)
class Identity:
    """How one synthetic person looks and sounds.

    Attributes:
        id: Identity id, ``idNNNNN``.
        race: Race folder name.
        gender: ``men`` or ``women``.
        tint: RGB multipliers applied to the face.
        face_frac: Face patch side over the frame's shorter side.
        offset: Face centre offset from the frame centre, as fractions of (w, h).
        pan: Panning amplitude (fraction of the shorter side) and period in seconds.
        background: Background RGB colour.
        voice_hz: Frequency of the identity's tone.
    """

    id: str
    race: str
    gender: str
    tint: tuple[float, float, float]
    face_frac: float
    offset: tuple[float, float]
    pan: tuple[float, float]
    background: tuple[int, int, int]
    voice_hz: float


@dataclass(frozen=True)
class DemoVideo:
    """One row of the demo meta_data.csv and how its file is made.

    Attributes:
        source: Identity whose folder holds the file.
        target1: Other identity used by the fake, or ``-``.
        target2: Extra index of the fake, or ``-``.
        method: ``real``, ``rtvc``, ``faceswap``, ``fsgan``, ``wav2lip``, ...
        category: ``A``..``D``.
        type: Top-level folder, see :data:`CATEGORY_TYPES`.
        race: Race folder.
        gender: Gender folder.
        filename: The ``path`` column: file name only.
        directory: The unnamed last column: ``FakeAVCeleb/<type>/<race>/<gender>/<id>``.
        fps: Frame rate.
        size: Frame (width, height).
        num_frames: Number of frames.
        fault: None for a good file, else ``zero_byte``, ``truncated`` or ``missing``.
        seed: Seed of this file's noise.
    """

    source: str
    target1: str
    target2: str
    method: str
    category: str
    type: str
    race: str
    gender: str
    filename: str
    directory: str
    fps: float
    size: tuple[int, int]
    num_frames: int
    fault: str | None = None
    seed: int = 0

    @property
    def relpath(self) -> Path:
        """Path of the file relative to the dataset root (``FakeAVCeleb/`` dropped)."""
        return Path(self.directory.split("/", 1)[1]) / self.filename

    @property
    def label(self) -> int:
        """1 for any manipulated video or audio, 0 for category A."""
        return 0 if self.category == "A" else 1

    def csv_row(self) -> list[str]:
        """Return the meta_data.csv fields of this row."""
        return [
            self.source,
            self.target1,
            self.target2,
            self.method,
            self.category,
            self.type,
            self.race,
            self.gender,
            self.filename,
            self.directory,
        ]


# --------------------------------------------------------------------------- planning


def _make_identities(identities_per_group: int, rng: np.random.Generator) -> list[Identity]:
    """Identities race by race, alternating men and women within a race."""
    people = []
    for r, race in enumerate(RACES):
        for j in range(identities_per_group):
            k = len(people)
            people.append(
                Identity(
                    id=f"id{k + 1:05d}",
                    race=race,
                    gender=GENDERS[(r + j) % 2],
                    tint=tuple(float(v) for v in rng.uniform(0.7, 1.25, size=3)),
                    face_frac=float(rng.uniform(0.48, 0.66)),
                    offset=tuple(float(v) for v in rng.uniform(-0.06, 0.06, size=2)),
                    pan=(float(rng.uniform(0.01, 0.04)), float(rng.uniform(1.5, 3.0))),
                    background=tuple(int(v) for v in rng.integers(40, 200, size=3)),
                    voice_hz=float(180 + 35 * k),
                )
            )
    return people


def plan_demo_dataset(
    identities_per_group: int = 2,
    seed: int = 0,
    include_broken: bool = True,
) -> tuple[list[Identity], list[DemoVideo]]:
    """Return the identities and the CSV rows of the demo dataset, writing nothing.

    Each identity gets one real video (A), one cloned-voice video (B), one fake
    video with its real audio (C) and one or two fully fake videos (D); fakes name
    another identity as ``target1``. One D file is listed twice, as
    ``faceswap-wav2lip`` and ``wav2lip``. Rows with a ``fault`` are the broken or
    missing files of ``include_broken``.

    Args:
        identities_per_group: Identities per race (5 races); 2 gives 10 identities.
        seed: Seed of every random choice.
        include_broken: Add a zero-byte file, a truncated file and a missing file.

    Returns:
        ``(identities, rows)``; rows sorted like the real CSV (by category).

    Raises:
        DatasetError: ``identities_per_group`` < 1.
    """
    if (
        isinstance(identities_per_group, bool)
        or not isinstance(identities_per_group, int)
        or identities_per_group < 1
    ):
        raise DatasetError(
            f"identities_per_group must be an integer >= 1, got {identities_per_group!r}"
        )
    rng = np.random.default_rng(seed)
    people = _make_identities(identities_per_group, rng)
    rows: list[DemoVideo] = []
    large_done = False

    def add(
        person: Identity,
        category: str,
        method: str,
        filename: str,
        target1: str = "-",
        target2: str = "-",
        fault: str | None = None,
    ) -> DemoVideo:
        nonlocal large_done
        fps = 29.97 if rng.random() < 0.15 else 25.0
        size = _FRAME_SIZE
        if not large_done and category == "A" and len(rows) >= 2:
            size, large_done = _LARGE_SIZE, True
        num_frames = round(rng.uniform(1.5, 3.0) * fps)
        type_ = CATEGORY_TYPES[category]
        row = DemoVideo(
            source=person.id,
            target1=target1,
            target2=target2,
            method=method,
            category=category,
            type=type_,
            race=person.race,
            gender=person.gender,
            filename=filename,
            directory=f"FakeAVCeleb/{type_}/{person.race}/{person.gender}/{person.id}",
            fps=fps,
            size=size,
            num_frames=num_frames,
            fault=fault,
            seed=int(rng.integers(0, 2**31 - 1)),
        )
        rows.append(row)
        return row

    def fake_name(base: str, method: str, n: int, target: str) -> str:
        return f"{base}_{n}_{target}_{_FILE_SUFFIX[method]}.mp4"

    n = len(people)
    for k, person in enumerate(people):
        base = _BASENAMES[k % len(_BASENAMES)]
        other = people[(k + 1 + int(rng.integers(0, n - 1))) % n] if n > 1 else person
        add(person, "A", "real", f"{base}.mp4")
        add(person, "B", "rtvc", f"{base}_fake.mp4")
        c_method = _CATEGORY_METHODS["C"][k % 3]
        add(person, "C", c_method, fake_name(base, c_method, k + 1, other.id), other.id)
        d_methods = [_CATEGORY_METHODS["D"][k % 3]]
        if k % 2 == 0:
            d_methods.append(_CATEGORY_METHODS["D"][(k + 1) % 3])
        for j, method in enumerate(d_methods):
            target2 = str(j + 2) if method == "wav2lip" else "-"
            add(
                person,
                "D",
                method,
                fake_name(base, method, k + 10 + j, other.id),
                other.id,
                target2,
            )
    # The real CSV lists some files twice, once per method; reproduce one such pair.
    first = people[0]
    dup_name = fake_name(_BASENAMES[0], "wav2lip", 99, people[-1].id)
    dup = add(first, "D", "faceswap-wav2lip", dup_name, people[-1].id)
    rows.append(replace(dup, method="wav2lip"))
    if include_broken:
        for fault, person in zip(("zero_byte", "truncated", "missing"), people[-3:], strict=False):
            add(
                person,
                "C",
                "faceswap",
                fake_name(_BASENAMES[1], "faceswap", 77, first.id),
                first.id,
                fault=fault,
            )
    order = {c: i for i, c in enumerate(CATEGORY_TYPES)}
    rows.sort(
        key=lambda r: (order[r.category], RACES.index(r.race), r.gender, r.source, r.filename)
    )
    return people, rows


# --------------------------------------------------------------------------- rendering


def _tinted(patch: np.ndarray, tint: tuple[float, float, float]) -> np.ndarray:
    return np.clip(patch.astype(np.float32) * np.asarray(tint, np.float32), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=16)
def _swap_mask(height: int, width: int) -> np.ndarray:
    """The blended ellipse of a face swap, computed once per patch size on one thread.

    OpenCV's threaded float GaussianBlur can differ in the last bit between calls
    (seen under load), which flips pixels after the uint8 cast; the demo data
    must be identical for a seed, so the mask is made single-threaded and cached.
    """
    s = height
    mask = np.zeros((height, width), np.float32)
    cv2.ellipse(mask, (s // 2, s // 2 + s // 20), (int(s * 0.3), int(s * 0.38)), 0, 0, 360, 1.0, -1)
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        mask = cv2.GaussianBlur(mask, (0, 0), s * 0.03)
    finally:
        cv2.setNumThreads(threads)
    mask.flags.writeable = False
    return mask[..., None]


def _face_swap(patch: np.ndarray, target: np.ndarray, _frame: int) -> np.ndarray:
    """Replace the inner face with the target's colours, with a blended border."""
    mask = _swap_mask(*patch.shape[:2])
    return (patch * (1 - mask) + target * mask).astype(np.uint8)


def _half_swap(patch: np.ndarray, target: np.ndarray, _frame: int) -> np.ndarray:
    """Take the upper half of the face from the target identity (fsgan-like seam)."""
    out = patch.copy()
    half = patch.shape[0] // 2
    out[:half] = target[:half]
    return out


def _mouth_blur(patch: np.ndarray, _target: np.ndarray, frame: int) -> np.ndarray:
    """Blur and jitter the mouth region, differently every frame (lip-sync-like)."""
    out = patch.copy()
    s = patch.shape[0]
    y0, y1, x0, x1 = int(s * 0.62), int(s * 0.82), int(s * 0.3), int(s * 0.7)
    region = cv2.GaussianBlur(out[y0:y1, x0:x1], (0, 0), 2.5 + 1.5 * np.sin(frame * 0.9))
    shift = round(3 * np.sin(frame * 1.3))
    out[y0:y1, x0:x1] = np.roll(region, shift, axis=0)
    return out


def _compose(*steps: Callable[[np.ndarray, np.ndarray, int], np.ndarray]):
    def apply(patch: np.ndarray, target: np.ndarray, frame: int) -> np.ndarray:
        for step in steps:
            patch = step(patch, target, frame)
        return patch

    return apply


def _identity_op(patch: np.ndarray, _target: np.ndarray, _frame: int) -> np.ndarray:
    return patch


#: Method -> fn(face_patch, target_patch, frame_index) -> manipulated face patch.
MANIPULATIONS: dict[str, Callable[[np.ndarray, np.ndarray, int], np.ndarray]] = {
    "real": _identity_op,
    "rtvc": _identity_op,
    "faceswap": _face_swap,
    "fsgan": _half_swap,
    "wav2lip": _mouth_blur,
    "faceswap-wav2lip": _compose(_face_swap, _mouth_blur),
    "fsgan-wav2lip": _compose(_half_swap, _mouth_blur),
}

#: Methods whose manipulation changes from frame to frame (the mouth moves).
_PER_FRAME_METHODS = frozenset({"wav2lip", "faceswap-wav2lip", "fsgan-wav2lip"})


def _frames(row: DemoVideo, person: Identity, target: Identity) -> Iterator[np.ndarray]:
    """Yield the RGB frames of one video."""
    width, height = row.size
    face = _tinted(synth.astronaut_face(), person.tint)
    target_face = _tinted(synth.astronaut_face(), target.tint)
    manipulate = MANIPULATIONS[row.method]
    static = row.method not in _PER_FRAME_METHODS
    patch = manipulate(face, target_face, 0) if static else None
    background = synth.noise_background(width, height, color=person.background, seed=row.seed)
    short = min(width, height)
    side = round(person.face_frac * short)
    amp, period = person.pan
    for i in range(row.num_frames):
        t = i / row.fps
        cx = width / 2 + person.offset[0] * width + amp * short * np.sin(2 * np.pi * t / period)
        cy = (
            height / 2
            + person.offset[1] * height
            + 0.5 * amp * short * np.cos(2 * np.pi * t / period)
        )
        frame = background.copy()
        synth.paste_patch(
            frame, patch if static else manipulate(face, target_face, i), (cx, cy), side
        )
        yield frame


def _audio(row: DemoVideo, person: Identity) -> np.ndarray:
    """The identity's tone (real audio) or a detuned noisy tone (fake audio)."""
    duration = row.num_frames / row.fps
    if row.category in _FAKE_AUDIO_CATEGORIES:
        return synth.tone(
            person.voice_hz * 1.5 + 13.0,
            duration,
            _SAMPLE_RATE,
            amplitude=0.25,
            noise=0.03,
            seed=row.seed,
        )
    return synth.tone(person.voice_hz, duration, _SAMPLE_RATE, amplitude=0.3)


def render_row(row: DemoVideo, people: dict[str, Identity]) -> tuple[Iterator[np.ndarray], np.ndarray]:
    """The frames (lazily) and the audio of one row, before encoding.

    Rendering is a pure function of the row: the same seed gives the same pixels
    and samples. (The encoded files usually match byte for byte too, but x264 has
    been seen to emit a different packet now and then under heavy load, from
    identical input, so only the rendered media is promised.)
    """
    person = people[row.source]
    target = people.get(row.target1, person)
    return _frames(row, person, target), _audio(row, person)


def _write_row(root: Path, row: DemoVideo, people: dict[str, Identity]) -> None:
    """Write the file of one row (a good, empty or truncated video)."""
    path = root / row.relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    if row.fault == "zero_byte":
        path.write_bytes(b"")
        return
    frames, audio = render_row(row, people)
    synth.write_video(path, frames, fps=row.fps, audio=audio, sample_rate=_SAMPLE_RATE)
    if row.fault == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * 0.3)])


def _prepare_root(root: Path, overwrite: bool) -> None:
    """Create ``root``; refuse a non-empty one unless ``overwrite`` (then clear our folders)."""
    if root.exists() and not root.is_dir():
        raise DatasetError(f"{root}: exists and is not a directory")
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise DatasetError(f"{root}: directory is not empty (pass overwrite=True to replace)")
        for name in CATEGORY_TYPES.values():
            shutil.rmtree(root / name, ignore_errors=True)
        (root / "meta_data.csv").unlink(missing_ok=True)
    root.mkdir(parents=True, exist_ok=True)


def make_demo_dataset(
    root: str | Path,
    *,
    identities_per_group: int = 2,
    seed: int = 0,
    include_broken: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write the demo dataset (meta_data.csv and videos) under ``root``.

    Args:
        root: The dataset folder that will hold ``meta_data.csv`` (``.../FakeAVCeleb_v1.2``).
        identities_per_group: Identities per race (5 races); 2 gives 10 identities
            and about 50 videos.
        seed: Seed of every random choice; the same seed gives the same rendered frames and audio (see :func:`render_row`).
        include_broken: Add a zero-byte file, a truncated file and a CSV row whose
            file does not exist.
        overwrite: Replace an existing demo dataset in ``root``.

    Returns:
        ``root`` as a Path.

    Raises:
        DatasetError: ``root`` is not empty (and not ``overwrite``), or bad arguments.
    """
    root = Path(root)
    people, rows = plan_demo_dataset(identities_per_group, seed, include_broken)
    _prepare_root(root, overwrite)
    by_id = {p.id: p for p in people}
    written: set[Path] = set()
    started = time.perf_counter()
    with synth.single_threaded():  # the same pixels for a seed, whatever the thread settings
        for row in rows:
            if row.fault == "missing" or row.relpath in written:
                continue
            _write_row(root, row, by_id)
            written.add(row.relpath)
    with open(root / "meta_data.csv", "w", newline="", encoding="utf-8") as f:
        f.write(META_HEADER + "\n")
        writer = csv.writer(f, lineterminator="\n")
        writer.writerows(row.csv_row() for row in rows)
    logger.info(
        "wrote %d rows, %d files under %s in %.1f s",
        len(rows),
        len(written),
        root,
        time.perf_counter() - started,
    )
    return root


def main(argv: list[str] | None = None) -> int:
    """Command line entry point: ``python -m src.datasets.demo --out DIR``.

    Args:
        argv: Arguments (defaults to ``sys.argv[1:]``).

    Returns:
        Process exit code.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("data/raw/FakeAVCeleb_v1.2"),
        help="dataset folder to create (holds meta_data.csv)",
    )
    parser.add_argument(
        "--identities-per-group", type=int, default=2, help="identities per race (5 races)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-broken", action="store_true", help="leave out the broken and missing files"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing demo dataset in --out"
    )
    args = parser.parse_args(argv)
    try:
        make_demo_dataset(
            args.out,
            identities_per_group=args.identities_per_group,
            seed=args.seed,
            include_broken=not args.no_broken,
            overwrite=args.overwrite,
        )
    except DatasetError as exc:
        logger.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
