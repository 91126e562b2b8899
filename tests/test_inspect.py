"""Tests of inspect_data.py and src.inspect: info, verify and preview on small real stores.

Stores are built through the Storage API (and, end to end, by preprocess.py on
the demo dataset); damage is planted through the raw ``lmdb`` module, the way a
flipped disk bit, a truncated copy or a malicious file would arrive.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import cv2
import lmdb
import numpy as np
import pytest

import inspect_data
from src.data import open_storage
from src.data.storage import DEFAULT_STORE_NAMES
from src.inspect import find_stores
from src.inspect.info import compact_config, flatten_config
from src.inspect.preview import CAPTION_HEIGHT, clip_frames, frame_indices, select_keys
from src.inspect.stores import human_size, store_size

REPO = Path(__file__).resolve().parents[1]
CATEGORIES = ["A", "B", "C", "D"]
METHODS = {"A": "real", "B": "rtvc", "C": "fsgan", "D": "fsgan-wav2lip"}
CONFIG = {"frames": {"num_frames": 6, "sampling": "uniform"}, "faces": {"image_size": 32}}


# --------------------------------------------------------------------------- helpers


def make_sample(i: int, frames: int = 6, height: int = 24, width: int = 32) -> dict:
    """Sample ``i`` (1-based): category A is real (label 0), the rest fake; every fourth has no face."""
    rng = np.random.default_rng(i)
    category = CATEGORIES[(i - 1) % len(CATEGORIES)]
    return {
        "data": rng.integers(0, 256, (3, frames, height, width), dtype=np.uint8),
        "audio": rng.standard_normal(800).astype(np.float32),
        "label": 0 if category == "A" else 1,
        "metadata": {"category": category, "method": METHODS[category], "face_found": i % 4 != 0},
    }


def build_store(path: Path, n: int = 6, fmt: str = "lmdb", complete: bool = True) -> Path:
    """Write ``n`` samples through the Storage API; ``complete=False`` leaves no completion marker."""
    path.parent.mkdir(parents=True, exist_ok=True)
    store = open_storage(path, "w", format=fmt, config=CONFIG, commit_every=4)
    try:
        for i in range(1, n + 1):
            store.store_sample(f"sample_{i:06d}", make_sample(i))
    finally:
        store.close(complete=complete)
    return path


def expected_counts(n: int) -> dict[str, dict[str, int]]:
    samples = [make_sample(i) for i in range(1, n + 1)]
    return {
        "label": dict(Counter(str(s["label"]) for s in samples)),
        "category": dict(Counter(s["metadata"]["category"] for s in samples)),
        "method": dict(Counter(s["metadata"]["method"] for s in samples)),
    }


@contextmanager
def raw_lmdb(path: Path):
    """The store's LMDB environment opened directly, for planting damage."""
    env = lmdb.open(str(path), max_dbs=64, map_size=1 << 30)
    try:
        yield env
    finally:
        env.close()


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Run inspect_data.main in-process; return (exit code, stdout, stderr)."""
    capsys.readouterr()
    rc = inspect_data.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def run_subprocess(*argv: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "inspect_data.py"), *map(str, argv)], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def bad_keys_in(text: str) -> set[str]:
    """Keys on the ``  bad key KEY: reason`` lines of verify's text output."""
    return {line.split()[2].rstrip(":") for line in text.splitlines() if line.startswith("  bad key ")}


class PlantMarker:
    """Unpickling this creates ``path``: proof that somebody called pickle.loads."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.fixture(params=list(DEFAULT_STORE_NAMES))
def fmt(request) -> str:
    """Every store format whose backend module exists."""
    if request.param != "lmdb":
        pytest.importorskip(f"src.data.{request.param}_storage")
    return request.param


@pytest.fixture
def lmdb_store(tmp_path) -> Path:
    return build_store(tmp_path / "train" / "data.lmdb")


# --------------------------------------------------------------------------- finding stores


def test_find_stores_accepts_a_store_a_split_and_a_root(tmp_path):
    root = tmp_path / "FakeAVCeleb_v1.2"
    for split in ("val", "train", "test"):
        build_store(root / split / "data.lmdb", n=2)
    (root / "preprocess_report.json").write_text("{}")
    (root / "train" / "metadata.json").write_text("{}")

    assert [t.name for t in find_stores(root)] == ["train/data.lmdb", "val/data.lmdb", "test/data.lmdb"]
    assert [t.path for t in find_stores(root / "val")] == [root / "val" / "data.lmdb"]
    assert [t.split for t in find_stores(root / "test" / "data.lmdb")] == ["test"]
    assert find_stores(tmp_path / "missing") == []
    assert find_stores(root / "train" / "metadata.json") == []
    (tmp_path / "empty").mkdir()
    assert find_stores(tmp_path / "empty") == []


@pytest.mark.parametrize("command", ["info", "verify", "preview"])
def test_a_path_without_a_store_exits_2(tmp_path, capsys, command):
    (tmp_path / "empty").mkdir()
    rc, out, err = run_cli(capsys, command, tmp_path / "empty")
    assert rc == 2 and "is not a store" in err
    rc, out, err = run_cli(capsys, command, tmp_path / "missing")
    assert rc == 2 and "does not exist" in err


# --------------------------------------------------------------------------- info


def test_info_reports_counts_schema_codec_size_and_config(lmdb_store, capsys):
    rc, out, err = run_cli(capsys, "info", lmdb_store)
    assert rc == 0, err
    lines = {
        line.split()[0] + (" " + line.split()[1] if line.split()[0] == "by" else ""): line for line in out.splitlines() if line.strip()
    }
    assert "lmdb, format version 1, complete" in lines["format"]
    assert lines["samples"].split()[-1] == "6"
    assert "0 (real): 2, 1 (fake): 4" in lines["by label"]
    assert "A: 2, B: 2, C: 1, D: 1" in lines["by category"]
    assert "fsgan: 1, fsgan-wav2lip: 1, real: 2, rtvc: 2" in lines["by method"]
    assert "data |u1 (3, 6, 24, 32)" in lines["schema"] and "audio <f4 (800)" in lines["schema"]
    assert lines["codec"].split()[1] == "raw"
    assert f"({store_size(lmdb_store):,} bytes)" in lines["size"]
    assert "frames: num_frames=6 sampling=uniform" in out and "faces: image_size=32" in out


def test_info_json_has_everything(lmdb_store, capsys):
    rc, out, _ = run_cli(capsys, "info", lmdb_store.parent, "--json")
    assert rc == 0
    doc = json.loads(out)
    assert doc["errors"] == []
    (info,) = doc["stores"]
    assert info["format"] == "lmdb" and info["format_version"] == 1 and info["complete"] is True
    assert info["num_samples"] == 6
    assert info["counts"] == expected_counts(6)
    assert info["schema"]["data"] == {"dtype": "|u1", "shape": [3, 6, 24, 32]}
    assert info["codec"] == "raw"
    assert info["config"] == CONFIG
    assert info["size_bytes"] == store_size(lmdb_store) > 0
    assert info["index_fields"] == ["label", "category", "method"]


def test_info_on_an_incomplete_store_says_so(tmp_path, capsys):
    store = build_store(tmp_path / "s" / "data.lmdb", n=3, complete=False)
    rc, out, _ = run_cli(capsys, "info", store)
    assert rc == 0 and "INCOMPLETE" in out


def test_config_views():
    assert flatten_config({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": "x"}) == {"a.b": 1, "a.c.d": [1, 2], "e": "x"}
    assert compact_config({"a": {"b": 1, "c": True}, "fp": "f" * 60}, value_limit=10) == [("a", "b=1 c=true"), ("fp", "fffffffff\u2026")]
    assert compact_config(None) == []
    assert human_size(512) == "512 B" and human_size(1536) == "1.5 KiB" and human_size(3 * 1024**3) == "3.0 GiB"


# --------------------------------------------------------------------------- verify


def test_verify_is_clean_on_a_good_store(lmdb_store, capsys):
    rc, out, err = run_cli(capsys, "verify", lmdb_store)
    assert rc == 0, out + err
    assert out.splitlines()[0] == "train/data.lmdb (lmdb, 6 samples, 6 decoded): OK"


def _flip_payload(env, marker):
    samples = env.open_db(b"samples")
    with env.begin(write=True) as txn:
        value = bytearray(txn.get(b"sample_000002", db=samples))
        value[-50] ^= 0x01  # inside the audio array: only the payload digest can notice
        txn.put(b"sample_000002", bytes(value), db=samples)
    return {"sample_000002": "payload checksum mismatch"}


def _plant_pickle(env, marker):
    samples = env.open_db(b"samples")
    with env.begin(write=True) as txn:
        txn.put(b"sample_000003", pickle.dumps(PlantMarker(marker)), db=samples)
    return {"sample_000003": "bad magic"}


def _truncate(env, marker):
    samples = env.open_db(b"samples")
    with env.begin(write=True) as txn:
        value = txn.get(b"sample_000004", db=samples)
        txn.put(b"sample_000004", value[: len(value) // 2], db=samples)
    return {"sample_000004": "truncated"}


def _flip_header(env, marker):
    samples = env.open_db(b"samples")
    with env.begin(write=True) as txn:
        value = bytearray(txn.get(b"sample_000005", db=samples))
        value[20] ^= 0x40
        txn.put(b"sample_000005", bytes(value), db=samples)
    return {"sample_000005": "header checksum mismatch"}


def _orphan_index_entry(env, marker):
    index = env.open_db(b"idx:label", dupsort=True)
    with env.begin(write=True) as txn:
        txn.put(b"1", b"sample_999999", db=index)
    return {"sample_999999": "no such sample"}


def _drop_index_entry(env, marker):
    index = env.open_db(b"idx:method", dupsort=True)
    with env.begin(write=True) as txn:
        assert txn.delete(b"real", b"sample_000001", db=index)
    return {"sample_000001": "missing from index 'method'"}


def _misfile_index_entry(env, marker):
    index = env.open_db(b"idx:category", dupsort=True)
    with env.begin(write=True) as txn:
        assert txn.delete(b"B", b"sample_000002", db=index)
        txn.put(b"C", b"sample_000002", db=index)
    return {"sample_000002": "its metadata says 'B'"}


DAMAGE = {
    "payload-byte": _flip_payload,
    "pickle": _plant_pickle,
    "truncated": _truncate,
    "header-byte": _flip_header,
    "orphan-index-entry": _orphan_index_entry,
    "missing-index-entry": _drop_index_entry,
    "misfiled-index-entry": _misfile_index_entry,
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_verify_lists_exactly_the_damaged_key(lmdb_store, tmp_path, capsys, damage):
    marker = tmp_path / "unpickled"
    with raw_lmdb(lmdb_store) as env:
        expected = DAMAGE[damage](env, marker)

    rc, out, err = run_cli(capsys, "verify", lmdb_store, "--json")
    assert rc == 1, out + err
    (report,) = json.loads(out)["stores"]
    assert set(report["bad_keys"]) == set(expected)
    for key, words in expected.items():
        assert any(words in reason for reason in report["bad_keys"][key]), report["bad_keys"][key]

    rc, out, _ = run_cli(capsys, "verify", lmdb_store)
    assert rc == 1 and bad_keys_in(out) == set(expected)
    assert not marker.exists()


def test_verify_damage_end_to_end_never_unpickles(lmdb_store, tmp_path):
    marker = tmp_path / "unpickled"
    with raw_lmdb(lmdb_store) as env:
        expected = {**_flip_payload(env, marker), **_plant_pickle(env, marker), **_orphan_index_entry(env, marker)}

    result = run_subprocess("verify", lmdb_store.parent)
    assert result.returncode == 1, result.stdout + result.stderr
    assert bad_keys_in(result.stdout) == set(expected)
    assert "Traceback" not in result.stderr
    assert "problem: index 'label' counts sum to 7, but the store holds 6 samples" in result.stdout

    # The other commands read the same damaged store without unpickling or crashing either.
    assert inspect_data.main(["info", str(lmdb_store)]) == 0
    assert inspect_data.main(["preview", str(lmdb_store), "--num", "6", "--out", str(tmp_path / "p.png")]) == 1
    assert cv2.imread(str(tmp_path / "p.png")) is not None
    assert not marker.exists()


def test_incomplete_store_is_a_warning_unless_strict(tmp_path, capsys):
    store = build_store(tmp_path / "s" / "data.lmdb", n=3, complete=False)
    rc, out, _ = run_cli(capsys, "verify", store)
    assert rc == 0 and "  warning: no completion marker" in out
    rc, out, _ = run_cli(capsys, "verify", store, "--strict")
    assert rc == 1 and "  problem: no completion marker" in out


@pytest.mark.parametrize(
    ("new_meta", "message"),
    [
        (lambda meta: None, "no __meta__ record"),
        (lambda meta: json.dumps({**meta, "format_version": 99}).encode(), "format version 99 is not supported"),
        (lambda meta: b"{not json", "unreadable __meta__"),
    ],
    ids=["missing", "wrong-version", "garbage"],
)
@pytest.mark.parametrize("command", ["info", "verify", "preview"])
def test_bad_meta_is_one_clear_line_and_exit_1(lmdb_store, tmp_path, capsys, new_meta, message, command):
    with raw_lmdb(lmdb_store) as env:
        db = env.open_db(b"meta")
        with env.begin(write=True) as txn:
            value = new_meta(json.loads(txn.get(b"__meta__", db=db)))
            if value is None:
                txn.delete(b"__meta__", db=db)
            else:
                txn.put(b"__meta__", value, db=db)
    extra = ["--out", tmp_path / "p.png"] if command == "preview" else []
    rc, out, err = run_cli(capsys, command, lmdb_store, *extra)
    assert rc == 1
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert not (tmp_path / "p.png").exists()


def test_a_bad_split_does_not_hide_the_others(tmp_path, capsys):
    root = tmp_path / "root"
    build_store(root / "train" / "data.lmdb", n=3)
    build_store(root / "val" / "data.lmdb", n=3)
    with raw_lmdb(root / "val" / "data.lmdb") as env:
        meta = env.open_db(b"meta")  # before the write transaction: open_db inside one deadlocks
        with env.begin(write=True) as txn:
            txn.delete(b"__meta__", db=meta)
    rc, out, err = run_cli(capsys, "verify", root)
    assert rc == 1
    assert "train/data.lmdb (lmdb, 3 samples, 3 decoded): OK" in out
    assert "val/data.lmdb" in err and "no __meta__" in err


def test_verify_on_every_format(tmp_path, capsys, fmt):
    store = build_store(tmp_path / "split" / DEFAULT_STORE_NAMES[fmt], n=5, fmt=fmt)
    rc, out, err = run_cli(capsys, "verify", store.parent, "--json")
    assert rc == 0, out + err
    (report,) = json.loads(out)["stores"]
    assert report["format"] == fmt and report["num_samples"] == report["decoded"] == 5 and report["ok"]
    rc, out, _ = run_cli(capsys, "info", store, "--json")
    assert rc == 0 and json.loads(out)["stores"][0]["counts"] == expected_counts(5)


# --------------------------------------------------------------------------- preview


def test_frame_selection_and_key_choice():
    assert frame_indices(16, 8) == [0, 2, 4, 6, 9, 11, 13, 15]
    assert frame_indices(6, 8) == [0, 1, 2, 3, 4, 5]
    assert frame_indices(5, 1) == [0]
    keys = [f"k{i:02d}" for i in range(20)]
    assert select_keys(keys, 5, seed=3) == select_keys(keys, 5, seed=3)
    assert select_keys(keys, 5, seed=3) != select_keys(keys, 5, seed=4)
    assert select_keys(keys[:3], 5, seed=0) == keys[:3]
    clip = np.zeros((3, 2, 4, 5), np.uint8)
    clip[0] = 255
    frames = clip_frames(clip)
    assert frames.shape == (2, 4, 5, 3) and (frames[..., 0] == 255).all() and (frames[..., 1] == 0).all()
    assert clip_frames(np.linspace(-1, 1, 2 * 4 * 5).reshape(2, 4, 5).astype(np.float32)).shape == (2, 4, 5, 3)


def test_preview_writes_a_png_of_the_expected_size(tmp_path, capsys, fmt):
    store = build_store(tmp_path / "split" / DEFAULT_STORE_NAMES[fmt], n=5, fmt=fmt)
    out_png = tmp_path / "sheet.png"
    rc, out, err = run_cli(capsys, "preview", store, "--num", "3", "--frames", "8", "--tile", "40", "--seed", "1", "--out", out_png)
    assert rc == 0, out + err
    image = cv2.imread(str(out_png))
    assert image.shape == (3 * (CAPTION_HEIGHT + 40), 8 * 40, 3)
    # Clips have 6 frames: tiles 7 and 8 stay background; the first tile shows the clip (letterboxed 24x32 -> 30x40).
    first_tile = image[CAPTION_HEIGHT : CAPTION_HEIGHT + 40, 0:40]
    last_tile = image[CAPTION_HEIGHT : CAPTION_HEIGHT + 40, 7 * 40 : 8 * 40]
    assert first_tile[5:35].std() > 20 and last_tile.std() == 0

    rc, _, _ = run_cli(capsys, "preview", store, "--num", "50", "--frames", "2", "--tile", "16", "--out", out_png)
    assert rc == 0 and cv2.imread(str(out_png)).shape == (5 * (CAPTION_HEIGHT + 16), 2 * 16, 3)


def test_preview_default_out_is_in_the_current_directory(lmdb_store, tmp_path):
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    result = run_subprocess("preview", lmdb_store, "--num", "2", "--frames", "3", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert cv2.imread(str(workdir / "preview.png")).shape == (2 * (CAPTION_HEIGHT + 128), 3 * 128, 3)


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def processed(tmp_path_factory) -> Path:
    """The demo dataset through preprocess.py (8 videos); returns the dataset output root."""
    from src.datasets.demo import make_demo_dataset

    base = tmp_path_factory.mktemp("inspect_e2e")
    raw = base / "raw" / "FakeAVCeleb_v1.2"
    make_demo_dataset(raw, identities_per_group=1, seed=0)
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "preprocess.py"),
            "--dataset",
            "fakeavceleb",
            "--input-dir",
            str(raw),
            "--output-dir",
            str(base / "out"),
            "--limit",
            "8",
            "--workers",
            "2",
            "--no-progress",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return base / "out" / "FakeAVCeleb_v1.2"


@pytest.mark.slow
def test_end_to_end_on_the_preprocessed_demo(processed, tmp_path):
    """info agrees with the pipeline's metadata.json, verify is clean, preview draws the train split."""
    result = run_subprocess("info", processed, "--json")
    assert result.returncode == 0, result.stderr
    stores = json.loads(result.stdout)["stores"]
    splits = [p.name for p in processed.iterdir() if (p / "data.lmdb").exists()]
    assert stores and sorted(s["name"] for s in stores) == sorted(f"{split}/data.lmdb" for split in splits)
    for info in stores:
        metadata = json.loads((processed / info["name"].split("/")[0] / "metadata.json").read_text())
        assert info["num_samples"] == metadata["num_samples"]
        assert info["counts"] == metadata["counts"]
        assert all(sum(c.values()) == info["num_samples"] for c in info["counts"].values())
        assert info["complete"] is True
        assert info["config"]["preprocessing"]["frames"]["num_frames"] == info["schema"]["data"]["shape"][1]

    result = run_subprocess("verify", processed)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(": OK") == len(stores)

    train = processed / "train"
    with open_storage(train / "data.lmdb") as store:
        n = len(store)
    assert inspect_data.main(["preview", str(train), "--out", str(tmp_path / "train.png")]) == 0
    assert cv2.imread(str(tmp_path / "train.png")).shape == (min(8, n) * (CAPTION_HEIGHT + 128), 8 * 128, 3)


def test_preview_marks_frames_without_a_face_and_draws_landmarks(tmp_path):
    from src.inspect.preview import CAPTION_HEIGHT, contact_sheet

    data = np.full((3, 4, 64, 64), 128, np.uint8)
    points = np.full((4, 5, 2), np.nan)
    points[0] = [[20, 20], [44, 20], [32, 34], [22, 48], [42, 48]]
    meta = {"face_presence": [True, False, True, True], "face_coverage": 0.75, "face_found": True, "landmarks": points.tolist()}
    path = tmp_path / "data.lmdb"
    with open_storage(path, "w", format="lmdb") as store:
        store.store_sample("sample_000001", {"data": data, "label": 1, "metadata": meta})
    with open_storage(path) as store:
        plain = contact_sheet(store, num=1, frames=4, tile=64).image
        drawn = contact_sheet(store, num=1, frames=4, tile=64, landmarks=True).image
    tiles = [plain[CAPTION_HEIGHT:, i * 64 : (i + 1) * 64] for i in range(4)]
    red = [int(((t[..., 0] > 200) & (t[..., 1] < 100)).sum()) for t in tiles]
    assert red[1] > 100 and red[0] == red[2] == red[3] == 0  # only the frame without a face is crossed out
    green = (drawn[..., 1] > 200) & (drawn[..., 0] < 100)
    assert green[CAPTION_HEIGHT:, :64].sum() >= 5 and not green[CAPTION_HEIGHT:, 64:].any()
    assert green[CAPTION_HEIGHT + 20, 20] or green[CAPTION_HEIGHT + 20, 21] or green[CAPTION_HEIGHT + 19, 20]
