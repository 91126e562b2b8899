"""Small trees in the exact layouts of FaceForensics++, Celeb-DF v2, DFDC, LAV-DF, AV-Deepfake1M
and the generic folder catalog, with real faces and audio.

Each ``make_<name>_tree(root)`` writes real mp4 files (the astronaut face from
:mod:`src.datasets.synth` on a noisy background, a tone on the audio track) and
the dataset's own metadata files, and returns a :class:`DemoTree`: what a catalog
must find (every video's label, and its official split where the dataset has
one). A fake's face is swapped (a blended ellipse from another identity); inside
a temporal fake segment only the frames and audio of that segment are altered,
so the per-frame labels are checkable against the media.

    python -m src.datasets.demo_layouts --dataset lavdf --out data/raw/LAV-DF
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from src.datasets import synth
from src.datasets.faceforensics import official_splits

__all__ = ["DemoTree", "TREES", "main", "write_face_video"]

logger = logging.getLogger(__name__)

_SAMPLE_RATE = 16000


@dataclass
class DemoTree:
    """What was written: ``labels`` and ``splits`` by relative path (``splits`` only where official).

    Attributes:
        root: The dataset root.
        labels: ``{relpath: label}`` of every video a catalog must read (0 real, 1 fake).
        splits: ``{relpath: split}`` where the dataset's own files give one.
        segments: ``{relpath: fake segments in seconds}`` for temporal datasets.
        ignored: Files on disk a catalog must not read (other qualities, masks, unlisted).
    """

    root: Path
    labels: dict[str, int] = field(default_factory=dict)
    splits: dict[str, str] = field(default_factory=dict)
    segments: dict[str, list[list[float]]] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)


def _tint(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 1000)
    return rng.uniform(0.7, 1.25, size=3).astype(np.float32)


def _face(seed: int) -> np.ndarray:
    return np.clip(synth.astronaut_face().astype(np.float32) * _tint(seed), 0, 255).astype(np.uint8)


def _swap_mask(side: int) -> np.ndarray:
    yy, xx = np.mgrid[:side, :side].astype(np.float32) / side
    inside = ((xx - 0.5) / 0.3) ** 2 + ((yy - 0.55) / 0.38) ** 2
    return np.clip((1.2 - inside) / 0.4, 0.0, 1.0)[..., None]


def _inside(t: float, spans: Sequence[Sequence[float]]) -> bool:
    return any(s <= t < e for s, e in spans)


def _frames(seed: int, size: int, num_frames: int, fps: float, fake_spans: Sequence[Sequence[float]], swap_seed: int) -> Iterator[np.ndarray]:
    face = _face(seed)
    mask = _swap_mask(face.shape[0])
    swapped = (face * (1 - mask) + _face(swap_seed) * mask).astype(np.uint8)
    background = synth.noise_background(size, size, color=(90 + seed * 7 % 60, 100, 110), seed=seed)
    for i in range(num_frames):
        frame = background.copy()
        dx = 0.04 * size * np.sin(i / 6.0)
        patch = swapped if _inside(i / fps, fake_spans) else face
        synth.paste_patch(frame, patch, (size / 2 + dx, size / 2), round(size * 0.62))
        yield frame


def _audio(seed: int, duration: float, fake_spans: Sequence[Sequence[float]]) -> np.ndarray:
    real = synth.tone(180.0 + 17.0 * (seed % 11), duration, _SAMPLE_RATE, amplitude=0.3, channels=1)
    fake = synth.tone(520.0 + 17.0 * (seed % 11), duration, _SAMPLE_RATE, amplitude=0.25, channels=1, noise=0.03, seed=seed)
    t = np.arange(real.shape[1]) / _SAMPLE_RATE
    inside = np.zeros(t.shape, dtype=bool)
    for s, e in fake_spans:
        inside |= (t >= s) & (t < e)
    return np.where(inside[None, :], fake, real).astype(np.float32)


def write_face_video(
    path: Path,
    *,
    seed: int,
    fake: bool = False,
    video_spans: Sequence[Sequence[float]] | None = None,
    audio_spans: Sequence[Sequence[float]] = (),
    num_frames: int = 20,
    fps: float = 20.0,
    size: int = 160,
) -> None:
    """Write one talking-head clip.

    Args:
        path: Output mp4 (parents created).
        seed: Identity of the face, background and voice.
        fake: Swap the face in every frame (unless ``video_spans`` limits it).
        video_spans: Seconds whose frames get the swapped face (None: all when ``fake``).
        audio_spans: Seconds whose audio is replaced by another voice.
        num_frames: Frames to write.
        fps: Frame rate.
        size: Frame side in pixels (even).
    """
    duration = num_frames / fps
    spans = video_spans if video_spans is not None else ([[0.0, duration + 1.0]] if fake else [])
    path.parent.mkdir(parents=True, exist_ok=True)
    with synth.single_threaded():
        synth.write_video(path, _frames(seed, size, num_frames, fps, spans, seed + 1), fps=fps, audio=_audio(seed, duration, audio_spans), sample_rate=_SAMPLE_RATE)


# --------------------------------------------------------------------------- the layouts


def make_faceforensics_tree(root: str | Path, methods: Sequence[str] = ("Deepfakes", "FaceSwap")) -> DemoTree:
    """FF++ with one official pair per split, c23 and c40 copies, mask videos and one
    fake of two ids that are not a pair (reported)."""
    tree = DemoTree(Path(root))
    by_split: dict[str, tuple[str, str]] = {}
    for pair, split in sorted(official_splits().items(), key=lambda kv: sorted(kv[0])):
        by_split.setdefault(split, tuple(sorted(pair)))
    for split, (a, b) in sorted(by_split.items()):
        for comp in ("c23", "c40"):
            for vid in (a, b):
                rel = f"original_sequences/youtube/{comp}/videos/{vid}.mp4"
                write_face_video(tree.root / rel, seed=int(vid), num_frames=12)
                _expect(tree, rel, 0, split, comp == "c23")
            for method in methods:
                for t, s in ((a, b), (b, a)):
                    rel = f"manipulated_sequences/{method}/{comp}/videos/{t}_{s}.mp4"
                    write_face_video(tree.root / rel, seed=int(t), fake=True, num_frames=12)
                    _expect(tree, rel, 1, split, comp == "c23")
        mask = f"manipulated_sequences/{methods[0]}/masks/videos/{a}_{b}.mp4"
        write_face_video(tree.root / mask, seed=1, num_frames=4)
        tree.ignored.append(mask)
    (a, _), (c, _) = by_split["train"], by_split["test"]
    stray = f"manipulated_sequences/{methods[0]}/c23/videos/{a}_{c}.mp4"
    write_face_video(tree.root / stray, seed=int(a), fake=True, num_frames=12)
    tree.ignored.append(stray)
    return tree


def _expect(tree: DemoTree, rel: str, label: int, split: str | None, read: bool = True) -> None:
    if not read:
        tree.ignored.append(rel)
        return
    tree.labels[rel] = label
    if split is not None:
        tree.splits[rel] = split


def make_celebdf_tree(root: str | Path) -> DemoTree:
    """Celeb-DF v2 with four celebrities, two YouTube reals and the inverted test list."""
    tree = DemoTree(Path(root))
    test_lines = []
    for i in range(4):
        for k in range(2):
            rel = f"Celeb-real/id{i}_{k:04d}.mp4"
            write_face_video(tree.root / rel, seed=i, num_frames=12)
            listed = i == 0 and k == 1
            _expect(tree, rel, 0, "test" if listed else None)
            if listed:
                test_lines.append(f"1 {rel}")
        rel = f"Celeb-synthesis/id{i}_id{(i + 1) % 4}_0000.mp4"
        write_face_video(tree.root / rel, seed=i, fake=True, num_frames=12)
        listed = i in (0, 3)
        _expect(tree, rel, 1, "test" if listed else None)
        if listed:
            test_lines.append(f"0 {rel}")
    for k in range(2):
        rel = f"YouTube-real/{k:05d}.mp4"
        write_face_video(tree.root / rel, seed=20 + k, num_frames=12)
        _expect(tree, rel, 0, "test" if k == 0 else None)
        if k == 0:
            test_lines.append(f"1 {rel}")
    (tree.root / "List_of_testing_videos.txt").write_text("\n".join(test_lines) + "\n", encoding="utf-8")
    return tree


def make_dfdc_tree(root: str | Path, *, with_test: bool = True, nested: bool = True) -> DemoTree:
    """DFDC with two parts (the first nested in a same-named folder) and a ``test/`` folder."""
    tree = DemoTree(Path(root))
    seed = 0
    for part in range(2):
        name = f"dfdc_train_part_{part}"
        folder = tree.root / name / name if nested and part == 0 else tree.root / name
        meta = {}
        for r in range(3):
            seed += 1
            real = f"p{part}real{r}.mp4"
            write_face_video(folder / real, seed=seed, num_frames=12)
            meta[real] = {"label": "REAL", "split": "train", "original": None}
            _expect(tree, (folder / real).relative_to(tree.root).as_posix(), 0, None)
            fake = f"p{part}fake{r}.mp4"
            write_face_video(folder / fake, seed=seed, fake=True, num_frames=12)
            meta[fake] = {"label": "FAKE", "split": "train", "original": real}
            _expect(tree, (folder / fake).relative_to(tree.root).as_posix(), 1, None)
        (folder / "metadata.json").write_text(json.dumps(meta), encoding="utf-8")
    if with_test:
        rows = []
        for k in range(4):
            rel = f"test/t{k}.mp4"
            write_face_video(tree.root / rel, seed=40 + k, fake=bool(k % 2), num_frames=12)
            rows.append((f"t{k}.mp4", k % 2))
            _expect(tree, rel, k % 2, "test")
        with open(tree.root / "test" / "labels.csv", "w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows([("filename", "label"), *rows])
    return tree


def _temporal_entries(tree: DemoTree, folder: str, count: int, start_seed: int) -> Iterator[tuple[str, int, int, list[list[float]], int]]:
    """(relpath, video_fake, audio_fake, segments, seed) for a cycle of real / video / audio / both."""
    kinds = [(0, 0), (1, 0), (0, 1), (1, 1)]
    for k in range(count):
        video, audio = kinds[k % 4]
        segments = [[0.5, 1.0]] if (video or audio) else []
        yield f"{folder}/{start_seed + k:06d}.mp4", video, audio, segments, start_seed + k


def make_lavdf_tree(root: str | Path) -> DemoTree:
    """LAV-DF with all four kinds per split, fake periods of 0.5 s, and one file without an entry."""
    tree = DemoTree(Path(root))
    entries = []
    for n, (folder, split) in enumerate((("train", "train"), ("dev", "val"), ("test", "test"))):
        for rel, video, audio, segments, seed in _temporal_entries(tree, folder, 4, 1 + 10 * n):
            write_face_video(tree.root / rel, seed=seed, video_spans=segments if video else [], audio_spans=segments if audio else [], num_frames=30)
            entries.append(
                {
                    "file": rel,
                    "split": folder,
                    "modify_video": bool(video),
                    "modify_audio": bool(audio),
                    "fake_periods": segments,
                    "n_fakes": len(segments),
                    "original": None if not (video or audio) else f"{folder}/{seed - 1:06d}.mp4",
                    "duration": 1.5,
                    "video_frames": 30,
                    "audio_frames": 24000,
                }
            )
            _expect(tree, rel, int(video or audio), split)
            tree.segments[rel] = segments
    unlisted = "train/000999.mp4"
    write_face_video(tree.root / unlisted, seed=99, num_frames=10)
    tree.ignored.append(unlisted)
    (tree.root / "metadata.json").write_text(json.dumps(entries), encoding="utf-8")
    return tree


_AV1M_TYPES = {(0, 0): "real", (1, 0): "visual_modified", (0, 1): "audio_modified", (1, 1): "both_modified"}


def make_avdeepfake1m_tree(root: str | Path) -> DemoTree:
    """AV-Deepfake1M with two identities in train, one in val, and an unlabelled ``test/``."""
    tree = DemoTree(Path(root))
    for meta_name, folder, ids in (("train_metadata.json", "train", ("id00010", "id00020")), ("val_metadata.json", "val", ("id00030",))):
        entries = []
        for j, ident in enumerate(ids):
            for k, (video, audio) in enumerate(_AV1M_TYPES):
                modify = _AV1M_TYPES[video, audio]
                inner = f"{ident}/yt{j}abc/{k:05d}/{modify}.mp4"
                segments = [[0.5, 1.0]] if (video or audio) else []
                write_face_video(
                    tree.root / folder / inner, seed=30 + 4 * j + k, video_spans=segments if video else [], audio_spans=segments if audio else [], num_frames=30
                )
                entries.append(
                    {
                        "file": inner,
                        "original": None if modify == "real" else f"{ident}/yt{j}abc/{k:05d}/real.mp4",
                        "split": folder,
                        "modify_type": "both-modified" if (video and audio and j == 0) else modify,
                        "audio_model": "demo",
                        "fake_segments": segments,
                        "visual_fake_segments": segments if video else [],
                        "audio_fake_segments": segments if audio else [],
                        "video_frames": 30,
                        "audio_frames": 12345,  # wrong on purpose: the real file does not match either
                    }
                )
                _expect(tree, f"{folder}/{inner}", int(video or audio), "test" if folder == "val" else None)
                tree.segments[f"{folder}/{inner}"] = segments
        (tree.root / meta_name).write_text(json.dumps(entries), encoding="utf-8")
    inner = "id00040/ytzz/00000/unknown.mp4"
    write_face_video(tree.root / "test" / inner, seed=77, num_frames=12)
    (tree.root / "test_files.txt").write_text(inner + "\n", encoding="utf-8")
    tree.ignored.append(f"test/{inner}")
    return tree


def make_folder_tree(root: str | Path, *, with_csv: bool = False) -> DemoTree:
    """``real/`` and ``fake/<method>/`` folders, or the same files listed in ``labels.csv`` with splits."""
    tree = DemoTree(Path(root))
    rows = []
    for k in range(4):
        real = f"real/person{k}/clip.mp4"
        fake = f"fake/{'swap' if k % 2 else 'reenact'}/person{k}_fake.mp4"
        write_face_video(tree.root / real, seed=60 + k, num_frames=12)
        write_face_video(tree.root / fake, seed=60 + k, fake=True, num_frames=12)
        split = ("train", "train", "val", "test")[k]
        rows += [(real, "real", split, "real", f"person{k}"), (fake, "fake", split, fake.split("/")[1], f"person{k}")]
        _expect(tree, real, 0, split if with_csv else None)
        _expect(tree, fake, 1, split if with_csv else None)
    if with_csv:
        with open(tree.root / "labels.csv", "w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows([("path", "label", "split", "method", "identity"), *rows])
    return tree


#: Dataset name -> tree writer.
TREES: dict[str, Callable[..., DemoTree]] = {
    "faceforensics": make_faceforensics_tree,
    "celebdf": make_celebdf_tree,
    "dfdc": make_dfdc_tree,
    "lavdf": make_lavdf_tree,
    "avdeepfake1m": make_avdeepfake1m_tree,
    "folder": make_folder_tree,
}


def main(argv: list[str] | None = None) -> int:
    """CLI: write one dataset's demo tree."""
    parser = argparse.ArgumentParser(description="Write a small demo tree in a dataset's layout.")
    parser.add_argument("--dataset", required=True, choices=sorted(TREES))
    parser.add_argument("--out", required=True, type=Path, help="dataset root to create (must be empty or absent)")
    args = parser.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        print(f"error: {args.out} is not empty", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    tree = TREES[args.dataset](args.out)
    print(f"wrote {len(tree.labels)} videos ({sum(tree.labels.values())} fake) in the {args.dataset} layout under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
