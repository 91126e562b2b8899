"""Identity-disjoint seeded splits and deterministic keys (pure functions)."""

from __future__ import annotations

import pytest

from src.errors import ConfigError
from src.preprocessing.splits import allocate, assign_keys, assign_splits, interleave_for_limit, sample_key


def test_sample_key_is_zero_padded_and_sorts():
    assert sample_key(0) == "sample_000001"
    keys = [sample_key(i) for i in (0, 9, 10, 99, 100, 12345)]
    assert keys == sorted(keys)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 10, 500, 501])
def test_allocate_sums_and_covers(n):
    counts = allocate(n, (0.7, 0.15, 0.15))
    assert sum(counts) == n
    if n >= 3:
        assert all(c >= 1 for c in counts)


def test_allocate_fakeavceleb_size():
    assert allocate(500, (0.7, 0.15, 0.15)) == [350, 75, 75]


def test_splits_are_identity_disjoint_seeded_and_stable():
    ids = {f"id{i:05d}": {0, 1} for i in range(100)}
    ids.update({f"fake{i}": {1} for i in range(20)})
    a = assign_splits(ids, (0.7, 0.15, 0.15), seed=1)
    assert a == assign_splits(dict(reversed(list(ids.items()))), (0.7, 0.15, 0.15), seed=1)
    assert a != assign_splits(ids, (0.7, 0.15, 0.15), seed=2)
    assert set(a) == set(ids)
    by = {s: [i for i, v in a.items() if v == s] for s in ("train", "val", "test")}
    assert [len(v) for v in by.values()] == [84, 18, 18]
    # every split gets identities with real videos
    for members in by.values():
        assert any(0 in ids[m] for m in members)
    # adding an identity moves no other identity
    more = dict(ids, extra={0, 1})
    b = assign_splits(more, (0.7, 0.15, 0.15), seed=1)
    moved = [i for i in ids if a[i] != b[i]]
    assert len(moved) <= 1


def test_bad_ratios():
    with pytest.raises(ConfigError):
        assign_splits({"a": {0}}, (0.5, 0.5))
    with pytest.raises(ConfigError):
        assign_splits({"a": {0}}, (0.5, 0.4, 0.4))


def test_keys_follow_sorted_paths_per_split():
    items = [("b.mp4", "train"), ("a.mp4", "train"), ("c.mp4", "val")]
    keys = assign_keys(items)
    assert keys["a.mp4"].key == "sample_000001" and keys["b.mp4"].key == "sample_000002"
    assert keys["c.mp4"] == ("val", "sample_000001", 0)


def test_limit_order_is_proportional():
    items = [(f"t{i:03d}", "train") for i in range(70)] + [(f"v{i:03d}", "val") for i in range(15)] + [(f"s{i:03d}", "test") for i in range(15)]
    order = interleave_for_limit(assign_keys(items))
    first = order[:20]
    assert sum(r.startswith("t") for r in first) in (13, 14, 15)
    assert any(r.startswith("v") for r in first) and any(r.startswith("s") for r in first)
    assert sorted(order) == sorted(r for r, _ in items)


def test_connected_groups_unions_linked_identities():
    from src.preprocessing.splits import connected_groups

    groups = connected_groups([["a", "b"], ["c"], ["b", "d", ""], ["e", "c"]])
    assert groups == {"a": "a", "b": "a", "d": "a", "c": "c", "e": "c"}


def test_connected_grouping_keeps_borrowed_faces_in_one_split(demo_root):
    from src.config import config_from_dict
    from src.datasets.fakeavceleb import read_catalog
    from src.preprocessing.runner import plan_tasks

    catalog = read_catalog(demo_root)
    tasks, fp_connected = plan_tasks(catalog, config_from_dict({"splits": {"group_by": "connected"}}))
    split_of_identity: dict[str, set[str]] = {}
    for t in tasks:
        for ident in (t.metadata["source"], t.metadata["target1"], t.metadata["target2"]):
            if ident not in ("", "-"):
                split_of_identity.setdefault(ident, set()).add(t.split)
    assert all(len(splits) == 1 for splits in split_of_identity.values())
    _, fp_source = plan_tasks(catalog, config_from_dict({}))
    assert fp_source != fp_connected
