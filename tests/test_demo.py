"""Tests of src.datasets.demo: the synthetic dataset in the FakeAVCeleb v1.2 layout."""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from src.datasets import demo
from src.datasets.demo import (
    CATEGORY_TYPES,
    META_HEADER,
    RACES,
    make_demo_dataset,
    plan_demo_dataset,
)
from src.errors import DatasetError, VideoDecodeError
from src.preprocessing.audio import load_audio
from src.preprocessing.video import probe_video

METHODS = {
    "A": {"real"},
    "B": {"rtvc"},
    "C": {"faceswap", "fsgan", "wav2lip"},
    "D": {"faceswap-wav2lip", "fsgan-wav2lip", "wav2lip"},
}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A demo dataset with one identity per race (5 identities)."""
    root = tmp_path_factory.mktemp("demo") / "FakeAVCeleb_v1.2"
    return make_demo_dataset(root, identities_per_group=1, seed=3)


def read_rows(root: Path) -> list[dict[str, str]]:
    with open(root / "meta_data.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def file_of(root: Path, row: dict[str, str]) -> Path:
    directory = row[""]
    assert directory.startswith("FakeAVCeleb/")
    return root / directory.removeprefix("FakeAVCeleb/") / row["path"]


def digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# --------------------------------------------------------------------------- plan


def test_default_plan_supports_identity_disjoint_splits():
    people, rows = plan_demo_dataset()
    assert len(people) == 10
    assert 40 <= len(rows) <= 60
    by_source: dict[str, set[str]] = {}
    for row in rows:
        if row.fault is None:
            by_source.setdefault(row.source, set()).add(row.category)
    # Every identity has a real and a fake video, so any identity-disjoint split
    # with at least one identity per part has both labels in every part.
    assert all("A" in cats and cats & {"B", "C", "D"} for cats in by_source.values())
    assert len(by_source) == 10
    assert {p.race for p in people} == set(RACES)
    assert {p.gender for p in people} == {"men", "women"}


def test_plan_is_deterministic_and_seeded():
    assert plan_demo_dataset(seed=1) == plan_demo_dataset(seed=1)
    assert plan_demo_dataset(seed=1) != plan_demo_dataset(seed=2)


def test_plan_rows_are_consistent():
    people, rows = plan_demo_dataset()
    ids = {p.id for p in people}
    for row in rows:
        assert row.type == CATEGORY_TYPES[row.category]
        assert row.method in METHODS[row.category]
        assert row.directory == f"FakeAVCeleb/{row.type}/{row.race}/{row.gender}/{row.source}"
        if row.category == "A":
            assert (row.target1, row.target2) == ("-", "-")
        if row.category in "CD":
            assert row.target1 in ids and row.target1 != row.source
        assert 1.5 <= row.num_frames / row.fps <= 3.0
    assert Counter(r.fault for r in rows if r.fault) == {
        "zero_byte": 1,
        "truncated": 1,
        "missing": 1,
    }
    assert {r.size for r in rows} == {(224, 224), (320, 256)}
    assert {r.fps for r in rows} == {25.0, 29.97}


def test_plan_without_broken():
    _, rows = plan_demo_dataset(include_broken=False)
    assert all(r.fault is None for r in rows)


def test_plan_rejects_bad_group_size():
    with pytest.raises(DatasetError):
        plan_demo_dataset(identities_per_group=0)


# --------------------------------------------------------------------------- written tree


def test_csv_header_has_trailing_comma(small):
    first = (small / "meta_data.csv").read_text(encoding="utf-8").splitlines()[0]
    assert first == META_HEADER == "source,target1,target2,method,category,type,race,gender,path,"


def test_csv_columns(small):
    rows = read_rows(small)
    assert list(rows[0]) == [
        "source",
        "target1",
        "target2",
        "method",
        "category",
        "type",
        "race",
        "gender",
        "path",
        "",
    ]
    for row in rows:
        assert "/" not in row["path"] and row["path"].endswith(".mp4")
        assert row[""].split("/")[1:] == [row["type"], row["race"], row["gender"], row["source"]]


def test_layout_has_spaces_and_parentheses(small):
    races = {p.name for p in (small / "RealVideo-RealAudio").iterdir()}
    assert races == set(RACES)
    assert (small / "RealVideo-RealAudio" / "Asian (East)").is_dir()
    assert {p.name for p in small.iterdir()} == {"meta_data.csv", *CATEGORY_TYPES.values()}


def test_every_listed_file_exists_except_the_missing_one(small):
    rows = read_rows(small)
    missing = [r for r in rows if not file_of(small, r).is_file()]
    assert len(missing) == 1
    _, plan = plan_demo_dataset(identities_per_group=1, seed=3)
    assert [r.filename for r in plan if r.fault == "missing"] == [missing[0]["path"]]


def test_good_files_decode_and_broken_ones_fail(small):
    _, plan = plan_demo_dataset(identities_per_group=1, seed=3)
    good = 0
    for row in plan:
        path = small / row.relpath
        if row.fault is None:
            info = probe_video(path)
            assert (info.width, info.height) == row.size
            assert info.num_frames == row.num_frames
            assert info.fps == pytest.approx(row.fps, abs=1e-3)
            assert info.has_audio
            good += 1
        else:
            with pytest.raises(VideoDecodeError):
                probe_video(path)
    assert good == sum(r.fault is None for r in plan) >= 20
    assert (small / next(r.relpath for r in plan if r.fault == "zero_byte")).stat().st_size == 0


def test_duplicate_row_pair_for_one_file(small):
    rows = read_rows(small)
    counts = Counter((r[""], r["path"]) for r in rows)
    dups = [key for key, n in counts.items() if n > 1]
    assert len(dups) == 1
    methods = sorted(r["method"] for r in rows if (r[""], r["path"]) == dups[0])
    assert methods == ["faceswap-wav2lip", "wav2lip"]


def test_basenames_repeat_across_identities(small):
    rows = read_rows(small)
    sources_by_name: dict[str, set[str]] = {}
    for r in rows:
        sources_by_name.setdefault(r["path"], set()).add(r["source"])
    assert max(len(s) for s in sources_by_name.values()) >= 2
    assert "00109.mp4" in sources_by_name


def test_real_and_fake_audio_differ(small):
    _, plan = plan_demo_dataset(identities_per_group=1, seed=3)
    person = plan[0].source
    real = next(r for r in plan if r.source == person and r.category == "A")
    fake = next(r for r in plan if r.source == person and r.category == "B")

    def peak_hz(row):
        x, _ = load_audio(small / row.relpath, 0.0, 1.0)
        return np.fft.rfftfreq(x.size, 1 / 16000)[np.abs(np.fft.rfft(x)).argmax()]

    assert abs(peak_hz(real) - peak_hz(fake)) > 50


def _rendered(seed: int) -> dict[str, str]:
    people, rows = plan_demo_dataset(1, seed, True)
    by_id = {p.id: p for p in people}
    out = {}
    for row in rows:
        if row.fault is None:
            frames, audio = demo.render_row(row, by_id)
            out[str(row.relpath)] = hashlib.sha256(b"".join(f.tobytes() for f in frames) + audio.tobytes()).hexdigest()
    return out


def test_same_seed_same_media(small):
    # Rendering is a pure function of the seed: the same pixels and samples on every run ...
    first = _rendered(3)
    assert first == _rendered(3)
    assert first != _rendered(4)
    # ... and every rendered row is a file of the dataset.
    assert set(first) <= set(digest(small))


def test_rewritten_files_decode_to_the_same_frames(small, tmp_path):
    # Written again, a file decodes to the same picture (encoded bytes usually match too;
    # x264 has been seen to pick other modes for a packet under heavy load).
    import av

    again = make_demo_dataset(tmp_path / "FakeAVCeleb_v1.2", identities_per_group=1, seed=3)
    assert set(digest(again)) == set(digest(small))
    rel = next(k for k in sorted(digest(small)) if k.endswith(".mp4") and "FakeVideo" in k)

    def frames(root):
        with av.open(str(root / rel)) as c:
            return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]).astype(np.int16)

    a, b = frames(small), frames(again)
    assert a.shape == b.shape and np.abs(a - b).mean() < 1.5


def test_refuses_non_empty_root(small):
    with pytest.raises(DatasetError, match="not empty"):
        make_demo_dataset(small, identities_per_group=1, seed=3)


def test_cli_passes_arguments(monkeypatch, tmp_path):
    seen = {}

    def fake_make(root, **kwargs):
        seen.update(root=root, **kwargs)
        return root

    monkeypatch.setattr(demo, "make_demo_dataset", fake_make)
    out = tmp_path / "FakeAVCeleb_v1.2"
    assert demo.main(["--out", str(out), "--seed", "7", "--no-broken"]) == 0
    assert seen == {
        "root": out,
        "identities_per_group": 2,
        "seed": 7,
        "include_broken": False,
        "overwrite": False,
    }


def test_cli_reports_dataset_errors(small):
    assert demo.main(["--out", str(small), "--identities-per-group", "1"]) == 2


def test_encoder_bytes_do_not_depend_on_cpu_affinity(tmp_path):
    # x264's "auto" thread count follows the calling thread's CPU affinity, which other
    # libraries may pin; the demo writer fixes the count, so a pinned run writes the same bytes.
    import os

    from src.datasets import synth

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (224, 224, 3), dtype=np.uint8) for _ in range(30)]
    synth.write_video(tmp_path / "free.mp4", frames, fps=25)
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(allowed)})
    try:
        synth.write_video(tmp_path / "pinned.mp4", frames, fps=25)
    finally:
        os.sched_setaffinity(0, allowed)
    assert (tmp_path / "free.mp4").read_bytes() == (tmp_path / "pinned.mp4").read_bytes()
