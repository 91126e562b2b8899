"""Distributed sampling: disjoint covering shares, one global order per (seed, epoch), elastic resume."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch.utils.data import DistributedSampler

from src.data.loaders import create_data_loader
from src.data.samplers import BalancedSampler, EpochSampler
from tests.loader_helpers import build_store

SHAPE = (3, 2, 8, 8)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_store(tmp_path_factory.mktemp("distributed") / "data.lmdb", 37, shape=SHAPE)


def interleave(shares: list[list[int]]) -> list[int]:
    """The global sequence the shares were cut from: position p is rank p % W's (p // W)-th index."""
    world_size = len(shares)
    return [shares[p % world_size][p // world_size] for p in range(sum(map(len, shares)))]


def keys_of(batches) -> list[str]:
    return [k for b in batches for k in b["key"]]


# ----------------------------------------------------------------------------- samplers


@pytest.mark.parametrize("n", [1, 10, 11, 13])
@pytest.mark.parametrize("drop_last", [False, True])
def test_global_order_does_not_depend_on_world_size(n, drop_last):
    single = EpochSampler(n, seed=9)
    single.set_epoch(4)
    order = list(single)
    for world_size in range(1, 6):
        shares = []
        for rank in range(world_size):
            sampler = EpochSampler(n, seed=9, rank=rank, world_size=world_size, drop_last=drop_last)
            sampler.set_epoch(4)
            shares.append(list(sampler))
        assert len({len(s) for s in shares}) == 1  # the same number of steps on every rank
        sequence = interleave(shares)
        if drop_last:
            assert sequence == order[: (n // world_size) * world_size]  # only the uneven tail is dropped
        else:
            padding = (-n) % world_size
            assert sequence == order + (order * world_size)[:padding]  # padded with the head, explicitly
        reference = []
        for r in range(world_size):
            ds = DistributedSampler(range(n), num_replicas=world_size, rank=r, seed=9, drop_last=drop_last)
            ds.set_epoch(4)
            reference.append(list(ds))
        assert shares == reference  # torch's DistributedSampler, exactly


def test_resume_position_on_another_world_size():
    n = 23
    full = EpochSampler(n, seed=1)
    full.set_epoch(2)
    order = list(full)
    for position in (0, 5, 12, 22, 23):
        for world_size in (1, 2, 3, 5):
            shares = []
            for rank in range(world_size):
                sampler = EpochSampler(n, seed=1, rank=rank, world_size=world_size)
                sampler.load_state_dict({"epoch": 2, "position": position})
                assert len(sampler) == -(-(n - position) // world_size)
                shares.append(list(sampler))
            rest = order[position:]
            padding = (-len(rest)) % world_size
            assert interleave(shares) == rest + (order * 2)[:padding]


def test_balanced_draws_do_not_depend_on_world_size():
    labels = [0] * 5 + [1] * 45
    groups = ["a"] * 20 + ["b"] * 30
    single = BalancedSampler(labels, num_samples=300, seed=3, groups=groups)
    single.set_epoch(1)
    draws = list(single)
    assert len(draws) == 300
    for world_size in (2, 3, 7):
        shares = []
        for rank in range(world_size):
            sampler = BalancedSampler(labels, num_samples=300, seed=3, rank=rank, world_size=world_size, groups=groups)
            sampler.set_epoch(1)
            shares.append(list(sampler))
        assert interleave(shares)[:300] == draws
    for rank in range(3):  # drop_last rounds down
        assert len(BalancedSampler(labels, num_samples=301, rank=rank, world_size=3, drop_last=True)) == 100


def test_every_epoch_splits_disjointly():
    for epoch in range(3):
        shares = []
        for rank in range(3):
            sampler = EpochSampler(30, seed=0, rank=rank, world_size=3)
            sampler.set_epoch(epoch)
            shares.append(set(sampler))
        assert set.union(*shares) == set(range(30)) and sum(map(len, shares)) == 30


# ----------------------------------------------------------------------------- loaders


def rank_loaders(store, world_size: int, **options) -> list:
    options = {"batch_size": 3, "num_workers": 0, "seed": 5, **options}
    return [create_data_loader(store.path, rank=rank, world_size=world_size, **options) for rank in range(world_size)]


def global_order(store, epoch: int) -> list[str]:
    sampler = EpochSampler(len(store.keys), seed=5)
    sampler.set_epoch(epoch)
    return [store.keys[i] for i in sampler]


@pytest.mark.parametrize(("before", "after"), [(2, 3), (3, 2), (4, 1), (1, 4), (2, 2)])
@pytest.mark.parametrize("drop_last", [False, True])
def test_elastic_resume_continues_the_same_epoch(store, before, after, drop_last):
    order = global_order(store, 1)
    first, states = [], []
    for loader in rank_loaders(store, before, drop_last=drop_last, num_workers=2):
        loader.set_epoch(1)
        iterator = iter(loader)
        for _ in range(2):  # every rank takes two steps, in lock-step
            first.extend(next(iterator)["key"])
        states.append(json.loads(json.dumps(loader.state_dict())))
        iterator.close()
    assert len({(s["epoch"], s["position"]) for s in states}) == 1  # every rank saved the same global position
    position = states[0]["position"]
    assert position == 2 * 3 * before
    assert Counter(first) == Counter(order[:position])  # the consumed prefix of the global order, exactly
    second = []
    shares = []
    for loader in rank_loaders(store, after, drop_last=drop_last, worker_type="process", num_workers=2):
        loader.load_state_dict(states[0])  # rank 0's state restores every rank
        share = keys_of(loader)
        shares.append(share)
        second.extend(share)
    assert len({len(s) for s in shares}) == 1
    rest = order[position:]
    if drop_last:
        per_rank = (len(rest) // after) // 3 * 3  # the uneven tail between ranks, then each rank's partial batch, dropped
        kept = per_rank * after
        assert Counter(second) == Counter(rest[:kept]) and len(second) == len(set(second))
        assert len(set(first) | set(second)) == position + kept
    else:
        padding = (-len(rest)) % after
        assert Counter(second) == Counter(rest + order[:padding])
        assert set(first) | set(second) == set(store.keys)  # the epoch is covered


def test_loader_ranks_in_one_epoch_cover_the_store(store):
    for drop_last in (False, True):
        shares = [keys_of(loader) for loader in rank_loaders(store, 4, drop_last=drop_last)]
        assert len({len(s) for s in shares}) == 1
        flat = [k for s in shares for k in s]
        if drop_last:
            assert len(flat) == len(set(flat)) == 36
        else:
            assert set(flat) == set(store.keys) and len(flat) == 40


def _distributed_worker(rank: int, world_size: int, init_file: str, store_path: str, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        loader = create_data_loader(store_path, batch_size=4, num_workers=0, seed=5)  # rank and world size from the group
        loader.set_epoch(1)
        keys = keys_of(loader)
        result = {"rank": loader.sampler.rank, "world_size": loader.sampler.world_size, "keys": keys, "state": loader.state_dict()}
        Path(out_dir, f"{rank}.json").write_text(json.dumps(result))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_rank_and_world_size_default_from_torch_distributed(store, tmp_path):
    torch.multiprocessing.spawn(_distributed_worker, args=(2, str(tmp_path / "init"), str(store.path), str(tmp_path)), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"{r}.json").read_text()) for r in range(2)]
    assert [(r["rank"], r["world_size"]) for r in results] == [(0, 2), (1, 2)]
    order = global_order(store, 1)
    assert interleave([r["keys"] for r in results]) == order + order[:1]  # 37 items: one padded
    assert all((r["state"]["epoch"], r["state"]["position"]) == (2, 0) for r in results)
