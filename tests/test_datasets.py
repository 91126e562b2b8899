"""Every dataset catalog end to end on a generated tree in its exact layout: labels, official
splits, temporal labels, the known traps, and hostile metadata."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from src.config import config_from_dict
from src.data.lmdb_storage import LMDBStorage
from src.datasets import demo_layouts
from src.datasets.catalog import read_dataset
from src.datasets.faceforensics import official_splits
from src.errors import DatasetError
from src.preprocessing.runner import run_preprocessing
from tests.conftest import run_cli

SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    """One generated tree per catalog, made lazily."""
    made: dict[str, demo_layouts.DemoTree] = {}

    def get(name: str, **kwargs) -> demo_layouts.DemoTree:
        key = name + repr(sorted(kwargs.items()))
        if key not in made:
            made[key] = demo_layouts.TREES[name](tmp_path_factory.mktemp(name) / "root", **kwargs)
        return made[key]

    return get


def _config(name: str, root: Path, out: Path, **dataset) -> object:
    return config_from_dict(
        {
            "dataset": {"name": name, "input_dir": str(root), **dataset},
            "output": {"dir": str(out)},
            "frames": {"num_frames": 8},
            "faces": {"image_size": 64},
            "processing": {"executor": "serial"},
        }
    )


def _read_back(out_root: Path) -> dict[str, tuple[str, int, dict]]:
    """``{video_path: (split, label, metadata)}`` read through the spec's API."""
    found = {}
    for split in SPLITS:
        assert (out_root / split / "metadata.json").is_file()
        with LMDBStorage(str(out_root / split / "data.lmdb")) as store:
            for key in store.get_all_keys():
                sample = store.retrieve_sample(key)
                assert sample["data"].shape == (3, 8, 64, 64)
                found[sample["metadata"]["video_path"]] = (split, sample["label"], sample["metadata"])
    return found


@pytest.fixture(scope="module")
def processed(trees, tmp_path_factory):
    """Preprocess a catalog's tree once per module; returns (tree, report, {video_path: (split, label, meta)})."""
    done: dict[str, tuple] = {}

    def get(name: str, **kwargs):
        if name not in done:
            tree = trees(name, **kwargs)
            out = tmp_path_factory.mktemp(f"{name}_out")
            report = run_preprocessing(_config(name, tree.root, out))
            done[name] = (tree, report, _read_back(Path(report.output_root)))
        return done[name]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(demo_layouts.TREES))
def test_catalog_preprocesses_its_tree_and_reads_back(processed, name):
    tree, report, found = processed(name)
    assert {rel: label for rel, (_, label, _) in found.items()} == tree.labels
    assert not set(tree.ignored) & set(found)
    for rel, split in tree.splits.items():
        assert found[rel][0] == split, rel
        assert found[rel][2]["split_origin"] == "official"
    for rel, (_split, _, meta) in found.items():
        assert meta["dataset"] == name
        assert meta["split_origin"] == ("official" if rel in tree.splits else "generated")
    for split in SPLITS:
        meta_json = json.loads((Path(report.output_root) / split / "metadata.json").read_text())
        labels = Counter(str(label) for s, label, _ in found.values() if s == split)
        assert meta_json["counts"]["label"] == dict(sorted(labels.items()))
        assert report.split_labels[split] == dict(sorted(labels.items()))


@pytest.mark.slow
def test_faceforensics_pairs_share_their_official_split(processed):
    tree, report, found = processed("faceforensics")
    pairs = official_splits()
    for _rel, (split, label, meta) in found.items():
        if label:
            assert pairs[frozenset((meta["target"], meta["source"]))] == split
            assert meta["method"] in ("Deepfakes", "FaceSwap") and meta["compression"] == "c23"
    assert any("not an official pair" in row["reason"] for row in report.skipped_rows)
    assert not any("/c40/" in rel or "/masks/" in rel for rel in found)


@pytest.mark.slow
def test_celebdf_test_list_labels_are_inverted(processed):
    tree, _, found = processed("celebdf")
    listed = (tree.root / "List_of_testing_videos.txt").read_text().split("\n")
    for line in filter(None, listed):
        flag, rel = line.split()
        split, label, _ = found[rel]
        assert split == "test" and label == 1 - int(flag)
    unlisted = {rel: v for rel, v in found.items() if rel not in tree.splits}
    assert {s for s, _, _ in unlisted.values()} <= {"train", "val"}
    by_identity: dict[str, set[str]] = {}
    for split, _, meta in unlisted.values():
        by_identity.setdefault(meta["source"], set()).add(split)
    assert all(len(s) == 1 for s in by_identity.values()), by_identity


@pytest.mark.slow
def test_dfdc_fakes_share_the_split_of_their_original(processed):
    tree, _, found = processed("dfdc")
    for rel, (split, _label, meta) in found.items():
        if rel.startswith("test/"):
            assert split == "test"
        else:
            assert split in ("train", "val")
        if meta.get("original"):
            original = next(v for r, v in found.items() if r.endswith("/" + meta["original"]))
            assert original[0] == split
    assert any("/dfdc_train_part_0/dfdc_train_part_0/" in "/" + rel for rel in found)  # the nested part


def _dominant_hz(audio: np.ndarray, rate: int = 16000) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.fft.rfftfreq(len(audio), 1 / rate)[spectrum.argmax()])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lavdf", "avdeepfake1m"])
def test_frame_labels_match_the_fake_segments_and_the_media(processed, name):
    tree, report, found = processed(name)
    checked = 0
    for rel, (split, _label, meta) in found.items():
        segments = tree.segments[rel]
        assert meta["fake_segments"] == segments
        times = [i / meta["fps"] for i in meta["frame_indices"]]
        assert meta["frame_times_s"] == pytest.approx(times)
        assert meta["frame_labels"] == [int(any(s <= t < e for s, e in segments)) for t in times]
        if meta["audio_label"]:
            # the stored audio changes voice exactly where the clip-relative segment says
            (lo, hi), = meta["audio_clip_fake_segments"]
            path = Path(report.output_root) / split / "data.lmdb"
            with LMDBStorage(str(path)) as store:
                key = next(k for k in store.get_all_keys() if store.retrieve_metadata(k)[1]["video_path"] == rel)
                audio = store.retrieve_sample(key)["audio"]
            a, b = round(lo * 16000), round(hi * 16000)
            assert _dominant_hz(audio[a + 400 : b - 400]) > 450 > _dominant_hz(audio[: max(a - 400, 800)])
            checked += 1
        if not meta["video_label"]:
            assert not any(meta.get("visual_frame_labels", []))
    assert checked >= 2
    assert all(1 in m["frame_labels"] for _, lab, m in found.values() if lab)


@pytest.mark.slow
def test_avdeepfake1m_val_is_our_test_and_train_is_split_by_identity(processed):
    tree, _, found = processed("avdeepfake1m")
    for rel, (split, _, _meta) in found.items():
        assert split == ("test" if rel.startswith("val/") else split)
        if rel.startswith("train/"):
            assert split in ("train", "val")
    ids: dict[str, set[str]] = {}
    for rel, (split, _, _) in found.items():
        if rel.startswith("train/"):
            ids.setdefault(rel.split("/")[1], set()).add(split)
    assert all(len(s) == 1 for s in ids.values())
    both = [m for _, _, m in found.values() if m["method"] == "both_modified"]
    assert both and all(m["video_label"] == m["audio_label"] == 1 for m in both)  # "both-modified" read too


def test_avdeepfake1m_unlabelled_test_only_when_asked(trees):
    tree = trees("avdeepfake1m")
    plain = read_dataset("avdeepfake1m", tree.root, "multimodal")
    assert not any(r.relpath.startswith("test/") for r in plain.records)
    extra = read_dataset("avdeepfake1m", tree.root, "multimodal", include_unlabelled=True)
    unlabelled = [r for r in extra.records if r.relpath.startswith("test/")]
    assert [r.label for r in unlabelled] == [-1] and unlabelled[0].split == "test"


def test_folder_csv_splits_and_identities(tmp_path):
    tree = demo_layouts.make_folder_tree(tmp_path / "mine", with_csv=True)
    cat = read_dataset("folder", tree.root, "video")
    assert cat.name == "mine"
    assert {r.relpath: r.label for r in cat.records} == tree.labels
    assert {r.relpath: r.split for r in cat.records} == tree.splits
    assert {r.metadata["method"] for r in cat.records} == {"real", "swap", "reenact"}


def test_root_one_level_up_or_down(trees, tmp_path):
    tree = trees("celebdf")
    outer = tmp_path / "download"
    shutil.copytree(tree.root, outer / "Celeb-DF-v2")
    assert len(read_dataset("celebdf", outer, "video").records) == len(tree.labels)  # one level down
    assert len(read_dataset("celebdf", outer / "Celeb-DF-v2" / "Celeb-real", "video").records) == len(tree.labels)  # one up


def test_cli_runs_a_new_dataset_and_prints_label_counts(trees, tmp_path):
    tree = trees("folder")
    r = run_cli(
        "preprocess.py", "--dataset", "folder", "--input-dir", str(tree.root), "--output-dir", str(tmp_path), "--workers", "1", "--no-progress"
    )
    assert r.returncode == 0, r.stderr
    assert "real" in r.stdout and "fake" in r.stdout and "samples" in r.stdout
    for split in SPLITS:
        assert (tmp_path / "root" / split / "metadata.json").is_file()


# --------------------------------------------------------------------------- hostile metadata


def _copy(tree, tmp_path: Path) -> Path:
    root = tmp_path / "copy"
    shutil.copytree(tree.root, root)
    return root


@pytest.mark.parametrize("name, meta_file", [("lavdf", "metadata.json"), ("avdeepfake1m", "train_metadata.json")])
def test_malformed_json_is_one_line_error(trees, tmp_path, name, meta_file):
    root = _copy(trees(name), tmp_path)
    (root / meta_file).write_text('[{"file": "x.mp4",', encoding="utf-8")
    with pytest.raises(DatasetError, match=rf"{meta_file}: malformed JSON at line 1 column \d+") as err:
        read_dataset(name, root, "multimodal")
    assert "\n" not in str(err.value)


def _entries_with_faults(entries: list[dict], split_field: str = "split") -> list[dict]:
    bad = [dict(entries[0]), dict(entries[1]), dict(entries[2]), dict(entries[3])]
    del bad[0]["file"]
    bad[1]["file"] = "../../etc/passwd.mp4"
    bad[2][split_field] = "holdout"
    bad[3]["file"] = "C:\\videos\\x.mp4"
    return entries + bad


@pytest.mark.parametrize("name, meta_file", [("lavdf", "metadata.json"), ("avdeepfake1m", "train_metadata.json")])
def test_hostile_entries_are_reported_skips(trees, tmp_path, name, meta_file):
    root = _copy(trees(name), tmp_path)
    entries = json.loads((root / meta_file).read_text())
    (root / meta_file).write_text(json.dumps(_entries_with_faults(entries)), encoding="utf-8")
    cat = read_dataset(name, root, "multimodal")
    reasons = [p.reason for p in cat.problems if p.skipped]
    assert any("'file' field" in r for r in reasons)
    assert any("escapes the dataset root" in r for r in reasons)
    assert any("holdout" in r for r in reasons)
    assert any("absolute path" in r for r in reasons)
    assert len(cat.records) == len(read_dataset(name, trees(name).root, "multimodal").records)


def test_dfdc_hostile_parts_are_reported(trees, tmp_path):
    root = _copy(trees("dfdc"), tmp_path)
    (root / "dfdc_train_part_1" / "metadata.json").write_text("{not json", encoding="utf-8")
    meta_path = root / "dfdc_train_part_0" / "dfdc_train_part_0" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["../escape.mp4"] = {"label": "REAL", "split": "train", "original": None}
    meta["p0real0.mp4"]["split"] = "holdout"
    meta["p0fake1.mp4"].pop("label")
    meta["p0fake2.mp4"]["original"] = None
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    cat = read_dataset("dfdc", root, "video")
    reasons = " | ".join(p.reason for p in cat.problems)
    assert "malformed JSON" in reasons and "the part is left out" in reasons
    assert "a file name with a folder in it" in reasons
    assert "unknown split 'holdout'" in reasons and "missing or unknown label" in reasons
    assert "a FAKE without its original" in reasons
    assert not any(r.relpath.startswith("dfdc_train_part_1") for r in cat.records)


def test_celebdf_and_folder_hostile_lines(trees, tmp_path):
    root = _copy(trees("celebdf"), tmp_path)
    listing = root / "List_of_testing_videos.txt"
    listing.write_text(listing.read_text() + "1 ../outside.mp4\nnonsense\n1 Celeb-real/missing.mp4\n0 YouTube-real\\00001.mp4\n")
    cat = read_dataset("celebdf", root, "video")
    reasons = " | ".join(p.reason for p in cat.problems)
    assert "escapes the dataset root" in reasons and "malformed line 'nonsense'" in reasons
    assert "lists Celeb-real/missing.mp4, which is not on disk" in reasons
    assert "normalised to 'YouTube-real/00001.mp4'" in reasons
    assert "labels YouTube-real/00001.mp4 fake but its folder says real" in reasons
    assert next(r for r in cat.records if r.relpath == "YouTube-real/00001.mp4").label == 0
    folder = tmp_path / "f"
    (folder / "v").mkdir(parents=True)
    (folder / "labels.csv").write_text("path,label,split\nv/a.mp4,1,train\nv/b.mp4,maybe,train\nv/c.mp4,0,holdout\n/abs.mp4,0,\n")
    cat = read_dataset("folder", folder, "video")
    reasons = " | ".join(p.reason for p in cat.problems)
    assert [r.relpath for r in cat.records] == ["v/a.mp4"]
    assert "'maybe' is not 0, 1" in reasons and "unknown split 'holdout'" in reasons and "absolute path" in reasons
    (folder / "labels.csv").write_text("file,kind\nv/a.mp4,1\n")
    with pytest.raises(DatasetError, match="must name path and label"):
        read_dataset("folder", folder, "video")


def test_official_splits_can_be_turned_off(trees):
    from src.preprocessing.runner import plan_tasks

    tree = trees("lavdf")
    cat = read_dataset("lavdf", tree.root, "multimodal")
    on, _ = plan_tasks(cat, _config("lavdf", tree.root, tree.root))
    assert {t.relpath: t.split for t in on} == tree.splits
    off_cfg = config_from_dict({"dataset": {"name": "lavdf", "input_dir": str(tree.root)}, "splits": {"official": False, "seed": 3}})
    off, _ = plan_tasks(cat, off_cfg)
    assert {t.metadata["split_origin"] for t in off} == {"generated"}
    assert {t.split for t in off} == set(SPLITS)


@pytest.mark.slow
def test_two_datasets_load_as_one_and_inspect_lists_both(processed, tmp_path):
    from src.utils.lmdb_utils import create_data_loader

    roots = [Path(processed(name)[1].output_root) for name in ("celebdf", "lavdf")]
    loader = create_data_loader([str(r / "train" / "data.lmdb") for r in roots], batch_size=4, shuffle=True, num_workers=0)
    seen = Counter()
    for batch in loader:
        assert batch["data"].shape[1:] == (3, 8, 64, 64)  # (batch, channels, frames, height, width)
        seen.update(m["dataset"] for m in batch["metadata"])
    assert set(seen) == {"celebdf", "lavdf"}
    out = tmp_path / "processed"
    for r in roots:
        shutil.copytree(r, out / r.name)
    r = run_cli("inspect_data.py", "info", str(out))
    assert r.returncode == 0, r.stderr
    assert "datasets:" in r.stdout and "Celeb-DF-v2" in r.stdout and "LAV-DF" in r.stdout
