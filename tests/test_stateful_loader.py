"""Resuming loaders mid-epoch: state_dict / load_state_dict on real stores, threads and worker processes."""

from __future__ import annotations

import json

import pytest

from src.data.loaders import create_data_loader
from src.data.transforms import LMDBDataTransform
from src.errors import ConfigError
from tests.loader_helpers import build_store, corrupt_record

SHAPE = (3, 2, 8, 8)

# (num_workers, worker_type, per-sample transform, prefetch): the loader paths that read ahead differently.
PATHS = {
    "inline": (0, "thread", False, 2),
    "threads2": (2, "thread", False, 4),
    "threads3": (3, "thread", False, 1),
    "processes2": (2, "process", False, 3),
    "per_sample_processes": (2, "process", True, 2),
    "per_sample_threads": (2, "thread", True, 2),
}


class Tag(LMDBDataTransform):
    """A per-sample transform (importable, so worker processes can unpickle it)."""

    def __call__(self, sample):
        out = super().__call__(sample)
        out["data"] = out["data"].flip(-1)
        return out


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """43 samples: batches of 8 leave a partial last batch."""
    return build_store(tmp_path_factory.mktemp("stateful") / "data.lmdb", 43, shape=SHAPE)


def make(store, path: str, **options):
    num_workers, worker_type, per_sample, prefetch = PATHS[path]
    prefetch = options.pop("prefetch", prefetch)
    options.setdefault("batch_size", 8)
    options.setdefault("seed", 11)
    return create_data_loader(
        store.path, Tag() if per_sample else None, num_workers=num_workers, worker_type=worker_type, prefetch=prefetch, **options
    )


def keys_of(batches) -> list[str]:
    return [k for b in batches for k in b["key"]]


def reference(store, epochs: int = 3, **options) -> list[list[str]]:
    loader = make(store, "inline", **options)
    return [keys_of(loader) for _ in range(epochs)]


def save_after(loader, batches: int) -> dict:
    """Iterate ``batches`` batches into the loader's current epoch, save inside the loop, then leave it."""
    state = None
    for i, _batch in enumerate(loader):
        if i + 1 == batches:
            state = loader.state_dict()
            break
    assert state is not None
    return json.loads(json.dumps(state))  # plain JSON round trip, as a checkpoint would


# ----------------------------------------------------------------------------- the rest of the epoch


@pytest.mark.parametrize(
    ("saver", "restorer"),
    [
        ("threads2", "inline"),
        ("inline", "threads3"),
        ("threads3", "processes2"),
        ("processes2", "threads2"),
        ("per_sample_processes", "per_sample_threads"),
        ("per_sample_threads", "per_sample_processes"),
    ],
)
def test_restore_yields_exactly_the_rest_of_the_epoch(store, saver, restorer):
    ref = reference(store)
    loader = make(store, saver)
    assert keys_of(loader) == ref[0]
    state = save_after(loader, 3)  # mid-epoch 1, with batches read ahead behind the 3rd
    assert state["epoch"] == 1 and state["position"] == 24 and state["batches"] == 3
    loader.close()
    resumed = make(store, restorer)
    resumed.load_state_dict(state)
    assert len(resumed) == 3  # 19 samples left in batches of 8
    assert keys_of(resumed) == ref[1][24:]
    assert keys_of(resumed) == ref[2]  # then the following epochs, as if never interrupted
    resumed.close()


def test_same_loader_resumes_after_leaving_early(store):
    ref = reference(store, 2)
    loader = make(store, "processes2", persistent_workers=True)
    state = save_after(loader, 2)
    assert loader.state_dict() == state  # leaving the loop changes nothing
    loader.load_state_dict(state)
    assert keys_of(loader) == ref[0][16:]
    assert keys_of(loader) == ref[1]


@pytest.mark.parametrize("path", ["threads2", "processes2"])
def test_state_counts_only_yielded_batches(store, path):
    loader = make(store, path, prefetch=4)
    iterator = iter(loader)
    first = next(iterator)
    # The sampler has handed out more than was yielded: the thread path takes the epoch's
    # batch list up front, worker processes get prefetch * workers batches of indices at once.
    assert loader.sampler.state_dict()["position"] == 43
    state = loader.state_dict()
    assert state["position"] == len(first["key"]) == 8
    next(iterator)
    assert loader.state_dict()["position"] == 16
    iterator.close()


def test_state_at_epoch_boundaries(store):
    ref = reference(store, 3)
    loader = make(store, "threads2")
    fresh = loader.state_dict()
    assert (fresh["epoch"], fresh["position"]) == (0, 0)
    # after the last batch, inside the loop: the epoch is consumed, the rest of it is empty
    last = None
    for _ in loader:
        last = loader.state_dict()
    assert (last["epoch"], last["position"]) == (0, 43)
    # after the loop ends: the next epoch, from its start
    done = loader.state_dict()
    assert (done["epoch"], done["position"]) == (1, 0)
    resumed = make(store, "inline")
    resumed.load_state_dict(last)
    assert len(resumed) == 0 and keys_of(resumed) == []
    assert keys_of(resumed) == ref[1]
    again = make(store, "inline")
    again.load_state_dict(done)
    assert keys_of(again) == ref[1] and keys_of(again) == ref[2]


def test_restore_with_another_batch_size(store):
    ref = reference(store)
    state = save_after(make(store, "threads2"), 2)
    resumed = make(store, "threads3", batch_size=5)
    resumed.load_state_dict(state)
    batches = list(resumed)
    assert keys_of(batches) == ref[0][16:] and [len(b["key"]) for b in batches] == [5, 5, 5, 5, 5, 2]


def test_set_epoch_after_restore(store):
    ref = reference(store, 3)
    state = save_after(make(store, "inline"), 4)
    resumed = make(store, "inline")
    resumed.load_state_dict(state)
    resumed.set_epoch(state["epoch"])  # the DistributedSampler habit: same epoch keeps the position
    assert resumed.state_dict()["position"] == 32
    assert keys_of(resumed) == ref[0][32:]
    other = make(store, "inline")
    other.load_state_dict(state)
    other.set_epoch(2)  # another epoch starts from its beginning
    assert other.state_dict()["position"] == 0
    assert keys_of(other) == ref[2]


def test_stats_continue(store):
    loader = make(store, "inline")
    keys_of(loader)
    state = save_after(loader, 1)
    assert state["stats"] == {"batches": 7, "samples": 51, "skipped": 0}
    resumed = make(store, "inline")
    resumed.load_state_dict(state)
    keys_of(resumed)
    assert (resumed.stats.batches, resumed.stats.samples) == (7 + 5, 51 + 35)


def test_unshuffled_and_balanced_loaders_resume(store):
    plain = make(store, "threads2", shuffle=False)
    state = save_after(plain, 2)
    resumed = make(store, "processes2", shuffle=False)
    resumed.load_state_dict(state)
    assert keys_of(resumed) == store.keys[16:]

    ref = keys_of(make(store, "inline", balanced=True, num_samples=100))
    state = save_after(make(store, "threads2", balanced=True, num_samples=100), 5)
    resumed = make(store, "threads3", balanced=True, num_samples=100)
    resumed.load_state_dict(state)
    assert keys_of(resumed) == ref[40:]


def test_skipped_samples_count_as_consumed(tmp_path):
    damaged = build_store(tmp_path / "data.lmdb", 20, shape=SHAPE)
    corrupt_record(damaged.path, "sample_000003")
    corrupt_record(damaged.path, "sample_000012")
    options = {"batch_size": 4, "shuffle": False, "on_error": "skip", "num_workers": 2}
    loader = create_data_loader(damaged.path, **options)
    state = None
    for i, _ in enumerate(loader):
        if i == 1:
            state = loader.state_dict()
            break
    assert state["position"] == 8 and state["stats"]["skipped"] == 1
    resumed = create_data_loader(damaged.path, **options, worker_type="process")
    resumed.load_state_dict(state)
    assert keys_of(resumed) == [k for k in damaged.keys[8:] if k != "sample_000012"]
    assert resumed.stats.skipped == 2


def test_multi_store_loader_resumes(tmp_path):
    a = build_store(tmp_path / "A" / "train" / "data.lmdb", 17, shape=SHAPE)
    b = build_store(tmp_path / "B" / "train" / "data.lmdb", 9, shape=SHAPE, start=100)
    paths = [a.path, b.path]
    ref = keys_of(create_data_loader(paths, batch_size=4, num_workers=0, seed=2))
    loader = create_data_loader(paths, batch_size=4, num_workers=2, seed=2)
    state = save_after(loader, 3)
    resumed = create_data_loader(paths, batch_size=4, num_workers=2, worker_type="process", seed=2)
    resumed.load_state_dict(state)
    assert keys_of(resumed) == ref[12:]
    with pytest.raises(ConfigError, match="another dataset"):
        create_data_loader([a.path], num_workers=0, seed=2).load_state_dict(state)


# ----------------------------------------------------------------------------- refusing a state that means other samples


def test_mismatched_states_are_refused(store, tmp_path):
    state = save_after(make(store, "inline"), 1)
    with pytest.raises(ConfigError, match=r"another sample order \(seed: saved 11, here 12\)"):
        make(store, "inline", seed=12).load_state_dict(state)
    with pytest.raises(ConfigError, match="shuffle: saved True, here False"):
        make(store, "inline", shuffle=False).load_state_dict(state)
    with pytest.raises(ConfigError, match="kind: saved 'EpochSampler', here 'BalancedSampler'"):
        make(store, "inline", balanced=True).load_state_dict(state)
    with pytest.raises(ConfigError, match="another dataset"):
        make(store, "inline", labels=[1]).load_state_dict(state)
    other = build_store(tmp_path / "data.lmdb", 43, shape=SHAPE, start=2)
    with pytest.raises(ConfigError, match="another dataset"):
        create_data_loader(other.path, num_workers=0, seed=11).load_state_dict(state)
    with pytest.raises(ConfigError, match="version 7 is not supported"):
        make(store, "inline").load_state_dict({**state, "version": 7})
    with pytest.raises(ConfigError, match="position 99 is past"):
        make(store, "inline").load_state_dict({**state, "position": 99})
    with pytest.raises(ConfigError, match="must be a dict"):
        make(store, "inline").load_state_dict([1, 2])  # type: ignore[arg-type]


def test_state_is_plain_json(store):
    state = save_after(make(store, "threads2"), 2)
    assert json.loads(json.dumps(state)) == state
    assert set(state) == {
        "version",
        "epoch",
        "position",
        "epoch_length",
        "order",
        "dataset",
        "world_size",
        "rank",
        "batch_size",
        "batches",
        "stats",
    }
    assert state["order"] == {"kind": "EpochSampler", "seed": 11, "shuffle": True}
    assert state["epoch_length"] == 43 and state["world_size"] == 1 and state["rank"] == 0


def test_sampler_state_protocol(store):
    loader = make(store, "inline")
    sampler = loader.sampler
    sampler.set_epoch(3)
    iterator = iter(sampler)
    taken = [next(iterator) for _ in range(10)]
    saved = sampler.state_dict()
    assert saved == {"epoch": 3, "position": 10}
    rest = list(iterator)
    fresh = make(store, "inline").sampler
    fresh.load_state_dict(saved)
    assert list(fresh) == rest and taken + rest == list(sampler)
