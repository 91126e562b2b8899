"""The ``ray`` executor on real Ray (a two-node ``ray.cluster_utils.Cluster`` on this machine) and real videos.

* fast: the config and CLI options, and that nothing imports Ray before a Ray run starts;
* slow (each starts and stops its own Ray, on ports Ray picks, under a short
  ``$RAY_TMPDIR`` of its own, so ``pytest -n 2`` runs them side by side):
  a two-node run stores byte-identical records to the process pool's; a worker
  node killed mid-run costs retries, not the run; a driver killed mid-run
  resumes with nothing lost or doubled; a video that keeps crashing its actor
  is reported failed while the others are stored.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from src.config import config_from_dict, load_config
from src.data import open_storage
from src.data.lmdb_shards import ShardedLMDBStorage, is_shard_set, read_manifests
from src.data.lmdb_storage import LMDBStorage
from src.datasets.catalog import catalog_spec
from src.errors import ConfigError, StorageError
from src.preprocessing.runner import run_preprocessing
from tests.conftest import REPO, run_cli

SPLITS = ("train", "val", "test")
# Small clips keep the runs short; the CLI test writes the same settings to a YAML file.
SMALL = {"output": {"lmdb": {"commit_every": 2}}, "frames": {"num_frames": 8}, "faces": {"image_size": 112}}
SMALL_YAML = "output:\n  lmdb:\n    commit_every: 2\nframes:\n  num_frames: 8\nfaces:\n  image_size: 112\n"


def _config(demo_root: Path, out: Path, **processing):
    processing.setdefault("shard_mb", 0.5)  # a shard every two clips: several shards per actor
    processing.setdefault("ray_batch", 3)  # batches on two actors (the default would send single videos)
    data = {**SMALL, "dataset": {"input_dir": str(demo_root)}, "output": {**SMALL["output"], "dir": str(out)}, "processing": processing}
    return config_from_dict(data)


def _records(root: Path) -> dict[tuple[str, str], bytes]:
    """Every stored record's bytes (header, arrays, label and metadata as encoded), by (split, key)."""
    out = {}
    for split in SPLITS:
        with open_storage(root / split / "data.lmdb") as store:
            keys = store.get_all_keys()
            with store.raw_records(keys) as buffers:
                out.update({(split, k): bytes(b) for k, b in zip(keys, buffers)})
    return out


def _verify_strict(root: Path) -> None:
    v = run_cli("inspect_data.py", "verify", str(root), "--strict", "--no-progress")
    assert v.returncode == 0, v.stdout + v.stderr


# ----------------------------------------------------------------------------- fast: options


def test_config_and_cli_options():
    cfg = config_from_dict({"processing": {"executor": "ray", "ray_address": "10.0.0.1:6379", "max_retries": 0}})
    assert cfg.processing.ray_address == "10.0.0.1:6379" and cfg.processing.max_retries == 0
    assert config_from_dict({"processing": {"executor": "ray", "ray_address": "auto"}}).processing.ray_address == "auto"
    assert config_from_dict({}).processing.ray_address is None
    for bad in ("10.0.0.1", "host:0", "host:http", ":6379"):
        with pytest.raises(ConfigError, match=f"processing.ray_address: invalid value '{bad}'; must be auto or HOST:PORT"):
            config_from_dict({"processing": {"executor": "ray", "ray_address": bad}})
    with pytest.raises(ConfigError, match="processing.ray_address is only used by executor ray; processing.executor is 'process'"):
        config_from_dict({"processing": {"ray_address": "auto"}})
    with pytest.raises(ConfigError, match="processing.max_retries: must be 0 or more"):
        config_from_dict({"processing": {"max_retries": -1}})
    from src.preprocessing.ray_executor import videos_per_call

    assert [videos_per_call(None, n) for n in (1, 2, 15, 16, 64, 128, 1600)] == [1, 1, 1, 2, 8, 16, 16]
    assert videos_per_call(5, 2) == 5 and config_from_dict({}).processing.ray_batch is None
    with pytest.raises(ConfigError, match="processing.ray_batch: must be a positive number"):
        config_from_dict({"processing": {"executor": "ray", "ray_batch": 0}})
    with pytest.raises(ConfigError, match="processing.ray_write: shards writes LMDB shards; output.format is 'hdf5'"):
        config_from_dict({"output": {"format": "hdf5"}, "processing": {"executor": "ray", "ray_write": "shards"}})
    assert not config_from_dict({"output": {"format": "hdf5"}, "processing": {"executor": "ray"}}).writes_shards  # auto: driver
    assert config_from_dict({"processing": {"executor": "ray"}}).writes_shards  # auto: shards for lmdb
    assert not config_from_dict({}).writes_shards  # the process pool writes in the driver
    yaml_cfg = load_config(REPO / "configs" / "preprocessing.yaml")
    assert yaml_cfg.processing.ray_address is None and yaml_cfg.processing.max_retries == 2

    r = run_cli("preprocess.py", "--dataset", "fakeavceleb", "--executor", "nope")
    assert r.returncode == 2 and "invalid choice: 'nope'" in r.stderr and "ray" in r.stderr
    r = run_cli("preprocess.py", "--dataset", "fakeavceleb", "--executor", "process", "--ray-address", "auto")
    assert r.returncode == 2 and "only used by executor ray" in r.stderr


def test_ray_is_imported_only_when_a_ray_run_starts():
    code = (
        "import sys, preprocess, src.config, src.preprocessing.runner, src.preprocessing.ray_executor\n"
        "from src.preprocessing.registries import EXECUTORS\n"
        "assert EXECUTORS.get('ray').__name__ == 'RayExecutor'\n"
        "print('ray' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_ray_temp_dir_is_short_and_private(monkeypatch, tmp_path):
    from src.preprocessing.ray_executor import ray_temp_dir

    long_dir = tmp_path / ("x" * 60)
    long_dir.mkdir()
    monkeypatch.setenv("TMPDIR", str(long_dir))
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read $TMPDIR
    d = ray_temp_dir()
    try:
        assert d.startswith("/tmp/dfray-") and len(d) < 45 and oct(os.stat(d).st_mode)[-3:] == "700"
    finally:
        os.rmdir(d)


# ----------------------------------------------------------------------------- slow: real Ray


@pytest.fixture
def ray_tmpdir(monkeypatch):
    """A short private ``$RAY_TMPDIR``: the cluster's sockets, logs and address file, apart from other test workers."""
    d = tempfile.mkdtemp(prefix="rt-", dir="/tmp")
    os.mkdir(os.path.join(d, "ray"))
    monkeypatch.setenv("RAY_TMPDIR", d)
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def cluster(ray_tmpdir):
    """Two Ray nodes on this machine: a head and a worker node, one CPU each."""
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    worker = c.add_node(num_cpus=1)
    c.wait_for_nodes()
    yield c, worker
    c.shutdown()


@pytest.fixture(scope="module")
def pool_root(demo_root, tmp_path_factory):
    """The demo dataset preprocessed by the process pool (2 workers): the reference output."""
    out = tmp_path_factory.mktemp("pool")
    report = run_preprocessing(_config(demo_root, out, executor="process", workers=2))
    assert report.stored > 10 and len(report.failed) == 3
    return out / "FakeAVCeleb_v1.2"


@pytest.fixture(scope="module")
def pool_records(pool_root):
    """The reference records."""
    return _records(pool_root)


def _split_metadata(root: Path) -> dict[str, dict]:
    """Each split's metadata.json, less what names the run (its config's paths and executor)."""
    out = {}
    for split in SPLITS:
        meta = json.loads((root / split / "metadata.json").read_text())
        meta.pop("config")
        out[split] = meta
    return out


def _check_layout(root: Path, ray_write: str) -> None:
    """``shards``: each split is a shard set of several published shards; ``driver``: one LMDB environment."""
    for split in SPLITS:
        path = root / split / "data.lmdb"
        assert is_shard_set(path) == (ray_write == "shards") and (path / "data.mdb").exists() == (ray_write == "driver")
        with LMDBStorage(path) as store:  # the spec's call opens either
            assert store.is_complete and len(store) > 0
            if ray_write == "shards":
                assert isinstance(store, ShardedLMDBStorage) and len(store.shards) >= 1 and store.duplicate_keys == 0
    if ray_write == "shards":
        assert sum(len(read_manifests(root / s / "data.lmdb")) for s in SPLITS) > len(SPLITS)  # sealed by size mid-run


@pytest.mark.slow
@pytest.mark.parametrize("ray_write", ["shards", "driver"])
def test_two_nodes_store_the_same_records_as_the_process_pool(cluster, pool_root, pool_records, demo_root, tmp_path, ray_write):
    import ray

    c, _ = cluster
    report = run_preprocessing(_config(demo_root, tmp_path, executor="ray", ray_address=c.address, ray_write=ray_write))
    assert not ray.is_initialized()  # the driver disconnected; the cluster is the fixture's
    assert len(report.failed) == 3 and report.stored == len(pool_records) and report.workers == 2
    root = tmp_path / "FakeAVCeleb_v1.2"
    records = _records(root)
    assert records.keys() == pool_records.keys()
    assert all(records[k] == pool_records[k] for k in records)  # byte-identical: arrays, label, metadata, checksums
    _check_layout(root, ray_write)
    # metadata.json: the same samples, summaries and counts as the pool's (with shards, built from the summaries
    # the actors published beside their manifests, not by reading the records again)
    assert _split_metadata(root) == _split_metadata(pool_root)
    if ray_write == "shards":
        with LMDBStorage(root / "train" / "data.lmdb") as store:
            assert store.sample_summaries(("video_path", "label")) is None  # other fields: the runner would read records
            summaries = store.sample_summaries(catalog_spec("fakeavceleb").summary_fields)
            assert summaries is not None and summaries.keys() == set(store.get_all_keys())
    _verify_strict(root)


@pytest.mark.slow
@pytest.mark.parametrize("ray_write", ["shards", "driver"])
def test_a_worker_node_killed_mid_run_costs_a_retry_not_the_run(cluster, pool_records, demo_root, tmp_path, caplog, ray_write):
    c, worker = cluster
    seen: list[int] = []  # the result after which the driver knew the worker node's actor was ready
    killed: list[int] = []

    def kill_worker_node(event) -> None:
        # Once the driver has queued videos on the worker node's actor, take the node away with them.
        if not seen:
            if any(worker.node_id in r.getMessage() and " ready on " in r.getMessage() for r in caplog.records):
                seen.append(event.done)
            else:
                time.sleep(0.3)  # hold the head node's actor back until the worker node's has started (slow under load)
        elif not killed:
            c.remove_node(worker)  # its raylet, object store and actor: gone, with the videos queued there
            killed.append(event.done)

    with caplog.at_level("DEBUG", logger="src.preprocessing.ray_executor"):
        report = run_preprocessing(_config(demo_root, tmp_path, executor="ray", ray_address=c.address, ray_write=ray_write), progress=kill_worker_node)
    assert killed, "the worker node's actor never became ready"
    died = [r.getMessage() for r in caplog.records if " died (" in r.getMessage()]
    assert len(died) == 1 and "video(s) go to the other actors" in died[0]
    assert len(report.failed) == 3 and report.stored == len(pool_records)
    root = tmp_path / "FakeAVCeleb_v1.2"
    assert _records(root) == pool_records
    _check_layout(root, ray_write)
    _verify_strict(root)


def _committed(out: Path) -> int:
    n = 0
    for split in SPLITS:
        path = out / "FakeAVCeleb_v1.2" / split / "data.lmdb"
        try:
            with open_storage(path) as store:
                n += len(store)
        except StorageError:
            pass  # not created or not committed yet
    return n


@pytest.mark.slow
@pytest.mark.parametrize("ray_write", ["shards", "driver"])
def test_a_killed_driver_resumes_with_nothing_lost_or_doubled(ray_tmpdir, pool_records, demo_root, tmp_path, ray_write):
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(SMALL_YAML + f"processing:\n  ray_write: {ray_write}\n  shard_mb: 0.5\n  ray_batch: 2\n")
    args = ["preprocess.py", "--dataset", "fakeavceleb", "--config", str(cfg_file), "--input-dir", str(demo_root),
            "--output-dir", str(tmp_path), "--workers", "1", "--executor", "ray", "--no-progress"]
    proc = subprocess.Popen([sys.executable, *args], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while _committed(tmp_path) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed: " + proc.stderr.read().decode()[-2000:]
        proc.send_signal(signal.SIGKILL)  # the driver only, as the OOM killer would; its local Ray goes with it
        proc.wait()
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever of its Ray instance outlived it
        except ProcessLookupError:
            pass
        log = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
        for temp_dir in re.findall(r"temp dir (/\S+)\)", log):  # a killed driver leaves its Ray logs behind, by design
            shutil.rmtree(temp_dir, ignore_errors=True)
    before = _committed(tmp_path)
    assert 2 <= before < len(pool_records)

    r = run_cli(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    root = tmp_path / "FakeAVCeleb_v1.2"
    report = json.loads((root / "preprocess_report.json").read_text())
    assert report["already_stored"] >= before and report["already_stored"] + report["stored"] == len(pool_records)
    records = _records(root)
    assert records == pool_records  # nothing lost, nothing doubled, the same bytes
    paths = []
    for split in SPLITS:
        with open_storage(root / split / "data.lmdb") as store:
            paths += [store.retrieve_metadata(k)[1]["video_path"] for k in store.get_all_keys()]
    assert len(paths) == len(set(paths)) == len(pool_records)
    _check_layout(root, ray_write)
    _verify_strict(root)


CRASH_PLUGIN = '''
"""Loaded by the Ray actors only: the video named crash.mp4 kills its process, as a native decoder bug would."""
import os
import time

from src.preprocessing import pipeline

_call = pipeline.VideoProcessor.__call__


def _crashing_call(self, task):
    if task.relpath == "crash.mp4":
        time.sleep(0.3)  # some way into decoding, as a real crash (the previous video's reply is out by then)
        os._exit(3)
    return _call(self, task)


pipeline.VideoProcessor.__call__ = _crashing_call
'''


@pytest.mark.slow
@pytest.mark.parametrize("ray_batch", [1, 3])
def test_a_video_that_keeps_crashing_its_actor_is_reported_failed(ray_tmpdir, tmp_path, monkeypatch, ray_batch):
    import ray

    from src.preprocessing.pipeline import VideoTask
    from src.preprocessing.ray_executor import RayExecutor
    from tests.media import make_face_video

    module = f"crash_plugin_{os.getpid()}"
    (tmp_path / f"{module}.py").write_text(CRASH_PLUGIN)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), str(REPO)]))  # the actors find the plugin...
    monkeypatch.setenv("DEEPFAKE_DATA_PLUGINS", module)  # ...and import it; this process never does
    video = tmp_path / "v.mp4"
    make_face_video(video, num_frames=10, size=(112, 112), face_center=(56, 56), face_size=60)
    tasks = [VideoTask(f"sample_{i + 1:06d}", "train", name, str(video), 1, 1, 0, {}) for i, name in enumerate(["a.mp4", "crash.mp4", "b.mp4"])]
    cfg = config_from_dict({**SMALL, "faces": {"detector": "haar", "image_size": 64}, "processing": {"executor": "ray", "max_retries": 1, "ray_batch": ray_batch}})
    executor = RayExecutor(cfg, workers=1)
    results = {r.task.relpath: r for r in executor.map(tasks)}
    assert not ray.is_initialized()  # the local instance it started is stopped
    assert executor.temp_dir.startswith("/tmp/dfray-") and not os.path.exists(executor.temp_dir)  # and its temp dir removed
    assert results.keys() == {"a.mp4", "crash.mp4", "b.mp4"}
    assert results["a.mp4"].status == results["b.mp4"].status == "ok"
    crashed = results["crash.mp4"]
    assert crashed.status == "failed" and "the Ray worker died while processing this video, 2 times" in crashed.error
    s = executor.stats
    if ray_batch == 1:
        # Each death charges the video the actor was running: crash.mp4 twice. The one before it (a.mp4) is charged too
        # when the death also swallowed its finished reply (Ray: "may or may not have been executed"); b.mp4, queued behind, never.
        assert s.actors == 1 and s.results == 2 and s.actor_failures in (2, 3) and s.retries == s.actor_failures
    else:
        # All three went in one call. Its death charges nobody: each is retried in a call of its own, where crash.mp4
        # dies twice (charged twice) and a.mp4 and b.mp4 go through (a.mp4 charged once more if a death swallowed its reply).
        assert s.actors == 1 and s.results == 2 and s.retries in (2, 3) and s.actor_failures == s.retries + 1
        assert s.calls == 2  # a.mp4 and b.mp4, one call each
    ok = [results["a.mp4"], results["b.mp4"]]
    assert s.payload_bytes == sum(r.sample["data"].nbytes + r.sample["audio"].nbytes for r in ok)


# ----------------------------------------------------------------------------- GPU actors


def test_actor_resources_ask_for_a_gpu_share_when_the_detector_wants_one():
    from src.preprocessing.ray_executor import actor_resources
    from src.preprocessing.registries import DETECTORS

    mtcnn = config_from_dict({"faces": {"detector": "mtcnn"}, "processing": {"executor": "ray"}})
    assert actor_resources(mtcnn, cluster_gpus=0) == {"num_cpus": 1, "num_gpus": 0.0}  # CPU actors where there is no GPU
    assert actor_resources(mtcnn, cluster_gpus=2) == {"num_cpus": 1, "num_gpus": 0.25}  # GPU actors where there are
    hog = config_from_dict({"faces": {"detector": "dlib_hog"}, "processing": {"executor": "ray"}})
    assert actor_resources(hog, cluster_gpus=2)["num_gpus"] == 0.0  # a CPU detector never holds a GPU

    class NeedsGpu(DETECTORS.get("haar")):
        num_gpus = 1

    DETECTORS.register("needs_gpu_test")(NeedsGpu)
    try:
        cfg = config_from_dict({"faces": {"detector": "needs_gpu_test"}, "processing": {"executor": "ray"}})
        assert actor_resources(cfg, cluster_gpus=0)["num_gpus"] == 1.0  # asked for anyway: the run says none fits
    finally:
        DETECTORS.unregister("needs_gpu_test")


@pytest.mark.slow
def test_gpu_detector_actors_are_placed_on_the_gpu_node(ray_tmpdir, tmp_path):
    # Ray schedules on declared resources: a node declaring one GPU is a GPU node to it. MTCNN's GPU actors ask for
    # a quarter GPU each, so they land there (as many as its CPUs allow) and get a GPU id from Ray; the remaining
    # CPUs get CPU actors. All run (on this machine's CPU, since torch finds no CUDA device behind the id).
    from ray.cluster_utils import Cluster

    from src.preprocessing.pipeline import VideoTask
    from src.preprocessing.ray_executor import RayExecutor
    from tests.media import make_face_video

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    gpu_node = c.add_node(num_cpus=2, num_gpus=1)
    c.wait_for_nodes()
    try:
        video = tmp_path / "v.mp4"
        make_face_video(video, num_frames=10, size=(112, 112), face_center=(56, 56), face_size=60)
        tasks = [VideoTask(f"sample_{i + 1:06d}", "train", f"v{i}.mp4", str(video), 1, 1, 0, {}) for i in range(6)]
        cfg = config_from_dict({**SMALL, "faces": {"detector": "mtcnn", "image_size": 64}, "processing": {"executor": "ray", "ray_address": c.address}})
        executor = RayExecutor(cfg, workers=1)
        results = list(executor.map(tasks))
        assert sorted(r.task.key for r in results) == [t.key for t in tasks] and all(r.status == "ok" for r in results)
        s = executor.stats
        # 3 CPUs in the cluster: the GPU node's 2 hold GPU actors, the head's one a CPU actor (MTCNN runs there too)
        assert s.actors == 3 and s.actor_gpus == [0.25, 0.25, 0.0]
        assert s.gpu_actors and s.gpu_actors <= {0, 1}  # those that got ready before the six videos were done
        assert all((s.nodes[i] == gpu_node.node_id) == (i in (0, 1)) for i in s.nodes)
        assert all((i in s.gpu_actors) == (i in (0, 1)) for i in s.nodes)
    finally:
        c.shutdown()


IDLE_DEATH_PLUGIN = '''
"""Loaded by the Ray actors: the first actor to sit idle for a second after a video dies (once per run), as a lost
node would, with no call of the driver's in flight to notice it; Ray restarts it unseen."""
import os
import threading
import time

from src.preprocessing import pipeline

_call = pipeline.VideoProcessor.__call__
_timer = [None]
_arrived = []


def _die():
    try:
        os.close(os.open(os.environ["IDLE_DEATH_MARK"], os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return
    os._exit(9)


def _patched(self, task):
    if _timer[0] is not None:
        _timer[0].cancel()
    if not _arrived:  # a barrier: each actor's first video waits for the other's, so that both get work
        _arrived.append(os.getpid())
        barrier = os.environ["IDLE_DEATH_MARK"] + ".arrived"
        os.makedirs(barrier, exist_ok=True)
        open(os.path.join(barrier, str(os.getpid())), "w").close()
        deadline = time.time() + 60
        while len(os.listdir(barrier)) < 2 and time.time() < deadline:
            time.sleep(0.05)
    if "slow" in task.relpath:
        time.sleep(5)
    result = _call(self, task)
    _timer[0] = threading.Timer(1.0, _die)
    _timer[0].daemon = True
    _timer[0].start()
    return result


pipeline.VideoProcessor.__call__ = _patched
'''


@pytest.mark.slow
def test_an_actor_restarted_unseen_has_its_unpublished_videos_redone(ray_tmpdir, tmp_path, monkeypatch):
    # An idle actor holding finished videos in its open shard dies and Ray restarts it before the driver calls it
    # again: the new process's replies carry another incarnation, so the driver redoes those videos (it used to
    # wait forever for a shard the new process never had).
    from src.data.lmdb_shards import ShardTarget
    from src.preprocessing.pipeline import VideoTask
    from src.preprocessing.ray_executor import RayExecutor
    from tests.media import make_face_video

    module = f"idle_death_plugin_{os.getpid()}"
    (tmp_path / f"{module}.py").write_text(IDLE_DEATH_PLUGIN)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), str(REPO)]))
    monkeypatch.setenv("DEEPFAKE_DATA_PLUGINS", module)
    monkeypatch.setenv("IDLE_DEATH_MARK", str(tmp_path / "died"))
    video = tmp_path / "v.mp4"
    make_face_video(video, num_frames=10, size=(112, 112), face_center=(56, 56), face_size=60)
    store = ShardedLMDBStorage(tmp_path / "train" / "data.lmdb", readonly=False)
    target = ShardTarget(stores={"train": str(store.path)}, local_dir=str(tmp_path / "scratch"), seal_bytes=1 << 30, seal_seconds=300)
    names = ["f1.mp4", "f2.mp4", "slow.mp4"]
    tasks = [VideoTask(f"sample_{i + 1:06d}", "train", n, str(video), 1, 1, 0, {}) for i, n in enumerate(names)]
    cfg = config_from_dict({**SMALL, "faces": {"detector": "haar", "image_size": 64}, "processing": {"executor": "ray", "ray_batch": 1, "max_in_flight": 1}})
    executor = RayExecutor(cfg, workers=2, shards=target)
    results = {r.task.relpath: r for r in executor.map(tasks)}
    assert (tmp_path / "died").exists()  # the plugin did kill an actor
    assert results.keys() == set(names) and all(r.status == "ok" and r.stored for r in results.values())
    assert executor.stats.unpublished_requeued >= 1 and executor.stats.retries == 0  # redone, not charged
    store.close()
    with LMDBStorage(tmp_path / "train" / "data.lmdb") as reread:
        assert reread.get_all_keys() == [t.key for t in tasks] and reread.duplicate_keys == 0
