"""FakeAVCeleb catalog: the real CSV's quirks and hostile rows."""

from __future__ import annotations

import pytest

from src.datasets.catalog import get_catalog
from src.datasets.fakeavceleb import labels_for, read_catalog
from src.errors import ConfigError, DatasetError

HEADER = "source,target1,target2,method,category,type,race,gender,path,\n"


def write_csv(root, rows):
    root.mkdir(parents=True, exist_ok=True)
    (root / "meta_data.csv").write_text(HEADER + "".join(r + "\n" for r in rows))
    return root


def test_demo_catalog_quirks(demo_root):
    cat = read_catalog(demo_root)
    rels = [r.relpath for r in cat.records]
    assert rels == sorted(rels) and len(set(rels)) == len(rels)
    assert any("Asian (East)" in r for r in rels)
    # basenames repeat across identities, full relative paths do not
    names = [r.rsplit("/", 1)[1] for r in rels]
    assert len(set(names)) < len(names)
    # the duplicated (faceswap-wav2lip / wav2lip) row is reported, first one kept
    dups = [p for p in cat.problems if "duplicate row" in p.reason]
    assert len(dups) == 1
    kept = next(r for r in cat.records if r.relpath == dups[0].relpath)
    assert kept.metadata["method"] == "faceswap-wav2lip"
    for rec in cat.records:
        assert rec.path.is_relative_to(demo_root)
        assert set(rec.metadata) >= {"category", "method", "source", "target1", "target2", "type", "gender", "race", "video_path"}
        assert rec.identity == rec.metadata["source"]


def test_hostile_rows_are_reported_not_fatal(tmp_path):
    root = write_csv(
        tmp_path / "FakeAVCeleb_v1.2",
        [
            "id1,-,-,real,A,RealVideo-RealAudio,African,men,a.mp4,FakeAVCeleb/RealVideo-RealAudio/African/men/id1",
            "id1,-,-,real,A,RealVideo-RealAudio,African,men,../../etc/passwd,FakeAVCeleb/RealVideo-RealAudio/African/men/id1",
            "id1,-,-,real,A,RealVideo-RealAudio,African,men,x.mp4,FakeAVCeleb/../../outside",
            "id1,-,-,real,A,RealVideo-RealAudio,African,men,x.mp4,/abs/dir",
            "id2,id1,-,magic,E,Weird,African,men,b.mp4,FakeAVCeleb/Weird/African/men/id2",
            "id2,too,few,columns",
            ",-,-,real,A,RealVideo-RealAudio,African,men,c.mp4,FakeAVCeleb/RealVideo-RealAudio/African/men/id3",
            "id1,-,-,real,A,RealVideo-RealAudio,African,men,a.mp4,FakeAVCeleb/RealVideo-RealAudio/African/men/id1",
            "",
        ],
    )
    cat = read_catalog(root)
    assert [r.relpath for r in cat.records] == ["RealVideo-RealAudio/African/men/id1/a.mp4"]
    reasons = [p.reason for p in cat.problems]
    assert sum("escapes the input root" in r for r in reasons) == 3
    assert any("unknown category 'E'" in r for r in reasons)
    assert any("malformed row" in r for r in reasons)
    assert any("empty source" in r for r in reasons)
    assert any("duplicate row" in r for r in reasons)
    assert [p.line for p in cat.problems] == [3, 4, 5, 6, 7, 8, 9]


def test_symlink_escaping_root_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = write_csv(tmp_path / "FakeAVCeleb_v1.2", ["id1,-,-,real,A,RealVideo-RealAudio,African,men,a.mp4,FakeAVCeleb/link"])
    (root / "link").symlink_to(outside)
    cat = read_catalog(root)
    assert not cat.records and "symbolic link" in cat.problems[0].reason


@pytest.mark.parametrize(
    "category, policy, expected",
    [("A", "multimodal", (0, 0, 0)), ("B", "multimodal", (1, 0, 1)), ("C", "multimodal", (1, 1, 0)), ("D", "multimodal", (1, 1, 1)),
     ("B", "video", (0, 0, 1)), ("C", "video", (1, 1, 0)), ("B", "audio", (1, 0, 1)), ("C", "audio", (0, 1, 0))],
)
def test_label_policies(category, policy, expected):
    assert labels_for(category, policy) == expected


def test_catalog_errors(tmp_path):
    with pytest.raises(DatasetError, match="input root not found"):
        read_catalog(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no meta_data.csv .* here, in a subfolder, or in the parent folder"):
        read_catalog(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "meta_data.csv").write_text("name,path\nx,y\n")
    with pytest.raises(DatasetError, match="unexpected header"):
        read_catalog(bad)
    with pytest.raises(ConfigError, match="unknown label policy"):
        read_catalog(bad, "both")
    with pytest.raises(ConfigError, match="unknown dataset 'nosuch'"):
        get_catalog("nosuch")
