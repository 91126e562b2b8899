"""The ``ray`` executor: video processing on Ray actors, which also write the samples.

``processing.executor: ray`` (or ``preprocess.py --executor ray``) runs the
same :class:`~src.preprocessing.pipeline.VideoProcessor` as the process pool,
one per Ray actor. Who writes the stores is ``processing.ray_write``:

* ``shards`` (``auto`` with ``output.format: lmdb``): each actor writes its
  samples into LMDB shards on its node's local disk and publishes each sealed
  shard into the split's ``data.lmdb``, a shard set that reads as one store
  (:mod:`src.data.lmdb_shards`). The driver receives a small result per video
  and holds it until the shard holding the sample is published, then yields it
  (``stored``) to :func:`~src.preprocessing.runner.run_preprocessing`. No
  process sees every clip: the stores are written by all the nodes at once.
* ``driver``: each finished sample streams back to the driver, whose one
  writer commits it exactly as it does the pool's (any output format).

Either way the records hold the same bytes as the pool's (the same encoder
runs), and a killed driver resumes as any run does: the runner skips the keys
already committed (published, with shards).

* **Where**: without ``processing.ray_address`` a local Ray instance is started
  with ``num_cpus = workers`` and stopped at the end; with ``auto`` or
  ``HOST:PORT`` the driver joins that cluster and only disconnects.
* **Actors**: one per worker (``workers: null`` on a cluster: one per cluster
  CPU), each asking for one CPU plus a GPU share when its detector wants one
  (:func:`actor_resources`: a detector class that *needs* a GPU declares
  ``num_gpus``; one that *can use* one, as MTCNN, declares ``gpu_share`` and
  gets GPU actors when the cluster has GPUs). The detector is built once per actor.
* **Batches**: the driver sends ``processing.ray_batch`` videos per actor call
  (:func:`videos_per_call`; measured driver CPU per video 1.26 / 0.42 / 0.19 ms
  with batches of 1 / 4 / 16), and at most ``processing.max_in_flight`` videos
  (two calls at least) are queued on each actor; results are fetched as calls
  finish.
* **Faults**: an actor whose process or node dies is restarted by Ray
  (``max_restarts=-1``) and its queued videos go to the other actors. Only the
  video it was running is charged a retry (when it died in a batch, that
  batch's videos are first retried one per call, uncharged, so that the
  culprit is found and its neighbours go through); after ``processing.max_retries``
  retries that video is reported as a failed result, and the run goes on. With
  shards, the videos it had finished but not yet published are redone, not
  charged. Actors that cannot build their detector stop the run with the
  reason, as do actors that keep dying before any video finishes, and a shard
  that cannot be written or published (a full disk).
* **Offline-safe start**: no dashboard (its agent probes cloud metadata
  endpoints), ``RAY_USAGE_STATS_ENABLED=0``, and a local instance keeps its
  sockets, logs and object spill files in a short temporary directory of its
  own (Unix socket paths are limited to 107 bytes), removed after a clean run.

Ray is imported here only, and only when a run starts.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from src.config import Config
from src.errors import ConfigError, DeepfakeDataError, StorageError
from src.plugins import PLUGINS_ENV, load_plugins
from src.preprocessing.executors import Executor
from src.preprocessing.pipeline import TaskResult, VideoProcessor, VideoTask
from src.preprocessing.registries import DETECTORS

if TYPE_CHECKING:
    from src.data.lmdb_shards import ShardTarget

__all__ = ["RayExecutor", "RayStats", "VideoActor", "actor_resources", "ray_temp_dir", "videos_per_call"]

logger = logging.getLogger(__name__)

#: How long the run waits with no actor alive (cluster lost its nodes, actors unschedulable) before it stops.
STALL_TIMEOUT_S = 600.0
#: A run stops when actors die this many times per actor (at least ``max_retries + 2``) with no video finishing in between.
_CRASHES_PER_ACTOR = 3
_MAX_TEMP_PARENT = 40  # Ray adds ~62 characters (session_<date>_<pid>/sockets/plasma_store) under its temp dir
_SRC_ROOT = str(Path(__file__).resolve().parents[2])  # the checkout holding the src package


def _import_ray() -> Any:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(f"processing.executor: ray needs the ray package (pip install -r requirements.txt): {exc}") from None
    return ray


def _host() -> str:
    import socket

    return socket.gethostname()


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def ray_temp_dir() -> str:
    """Make a short, private temporary directory for a local Ray instance.

    Ray puts Unix sockets under ``<dir>/session_<date>_<pid>/sockets/``, and a
    socket path may not exceed 107 bytes, so a long ``$TMPDIR`` falls back to
    ``/tmp``. The directory is local to this machine (sockets do not work on NFS).
    """
    parent = tempfile.gettempdir()
    if len(parent) > _MAX_TEMP_PARENT and os.path.isdir("/tmp"):
        parent = "/tmp"
    return tempfile.mkdtemp(prefix="dfray-", dir=parent)


def videos_per_call(ray_batch: int | None, actors: int) -> int:
    """Videos sent per actor call: ``ray_batch``, or with ``None`` one per 8 actors, from 1 to 16.

    A call costs the driver ~1.1 ms of CPU and a video ~0.15 ms more (measured
    here by ``benchmarks/bench_ray_batch.py``: 1.26 / 0.42 / 0.19 ms per video
    with batches of 1 / 4 / 16), so the driver's load grows with the actors;
    batches bound it. Few actors get
    single videos: a batch is a unit of work that cannot be shared out, which
    matters at the end of a small run.
    """
    return int(ray_batch) if ray_batch is not None else max(1, min(16, actors // 8))


def actor_resources(config: Config, cluster_gpus: float = 0.0) -> dict[str, float]:
    """Ray resources of one actor: one CPU, plus the GPU share its detector wants.

    The hook for GPU detectors, as class attributes of a class registered in
    ``DETECTORS``: ``num_gpus`` (a GPU it cannot run without, or a fraction to
    share one) is always asked for; ``gpu_share`` (a detector that runs on the
    CPU too, as MTCNN) is asked for only when the cluster has GPUs. Ray then
    places those actors on GPU nodes and sets their ``CUDA_VISIBLE_DEVICES``.

    Args:
        config: The preprocessing config (``faces.detector``).
        cluster_gpus: GPUs in the cluster.
    """
    detector = DETECTORS.get(config.faces.detector)
    gpus = float(getattr(detector, "num_gpus", 0) or 0)
    if not gpus and cluster_gpus > 0:
        gpus = float(getattr(detector, "gpu_share", 0) or 0)
    return {"num_cpus": 1, "num_gpus": gpus}


class VideoActor:
    """One Ray actor: a :class:`~src.preprocessing.pipeline.VideoProcessor` (its detector built once).

    With ``shards``, the actor also writes its samples into LMDB shards on its
    node's local disk (:class:`~src.data.lmdb_shards.ShardWriter`) and
    publishes each sealed shard into the split's store; only a small result
    goes back to the driver.

    Args:
        config: The preprocessing config.
        log_level: The driver's log level, mirrored here.
        plugins: Plugin modules to import first (the driver's ``$DEEPFAKE_DATA_PLUGINS``).
        shards: Where to write shards, or None to return the samples.
    """

    def __init__(self, config: Config, log_level: int, plugins: str = "", shards: ShardTarget | None = None) -> None:
        logging.basicConfig(level=log_level, format="%(levelname)s %(name)s: %(message)s")
        load_plugins(plugins)
        self.processor = VideoProcessor(config)
        #: Names this process of the actor: Ray may restart it unseen between two calls, losing its open shards.
        self.incarnation = uuid.uuid4().hex
        self.writer = None
        if shards is not None:
            from src.data.lmdb_shards import ShardWriter

            self.writer = ShardWriter(shards)

    def ready(self) -> tuple[str, str, list[str], str]:
        """``(host, Ray node id, GPU ids Ray gave it, incarnation)`` of this actor, once its detector is loaded."""
        import ray

        context = ray.get_runtime_context()
        return _host(), context.get_node_id(), [str(g) for g in context.get_accelerator_ids().get("GPU", [])], self.incarnation

    def process(self, tasks: list[VideoTask]) -> tuple[list[TaskResult], list[dict[str, Any]], str]:
        """Process a batch of videos, in order (never raises for a bad video).

        One call per batch (``processing.ray_batch``) divides the driver's
        per-call cost by the batch size.

        Returns:
            ``(results, shards published after them, incarnation)``. With shards,
            each sample is written into the open shard (``result.stored``, no sample).

        Raises:
            StorageError: Writing or publishing a shard failed (a full disk): the run stops.
        """
        results = [self.processor(task) for task in tasks] if self.writer is None else [self._store(task) for task in tasks]
        return results, (self._seal() if self.writer is not None and self.writer.due else []), self.incarnation

    def _store(self, task: VideoTask) -> TaskResult:
        result = self.processor(task)
        if result.status == "ok" and result.sample is not None:
            started = time.perf_counter()
            try:
                self.writer.add(task.split, task.key, result.sample)
            except (OSError, DeepfakeDataError) as exc:
                raise StorageError(f"writing a shard on {_host()} failed: {_one_line(exc)}") from exc
            result.sample, result.stored = None, True
            result.timings["shard_write"] = time.perf_counter() - started
        return result

    def seal(self) -> tuple[list[dict[str, Any]], str]:
        """Seal and publish the open shards: ``({"split", "name", "keys"} per shard published, incarnation)``."""
        return self._seal(), self.incarnation

    def _seal(self) -> list[dict[str, Any]]:
        if self.writer is None:
            return []
        try:
            return self.writer.seal()
        except (OSError, DeepfakeDataError) as exc:
            raise StorageError(f"publishing a shard from {_host()} failed: {_one_line(exc)}") from exc

    def close(self) -> None:
        """Remove this actor's work directory (call after :meth:`seal`)."""
        if self.writer is not None:
            self.writer.close()


@dataclass
class RayStats:
    """What a Ray run did, for logs and benchmarks.

    Attributes:
        start_seconds: ``ray.init`` (local start or connect).
        first_ready_seconds: From the start until the first actor had its detector loaded.
        actors: Actors created.
        hosts: Hosts the actors ran on.
        calls: Actor calls that returned (each a batch of up to ``videos_per_call`` videos).
        videos_per_call: The batch size the run used (:func:`videos_per_call`).
        results: Results received.
        payload_bytes: Array bytes received (clips and audio).
        get_seconds: Driver time spent receiving results (``ray.get``).
        actor_failures: Actor deaths seen (process or node lost).
        retries: Videos charged a retry.
        nodes: Actor index -> the Ray node id it last started on.
        gpu_actors: Actors that were given a GPU (seen once ready).
        actor_gpus: The GPU share each actor asked for.
        shards: Shards published (``ray_write: shards``).
        unpublished_requeued: Finished videos redone because their actor died before publishing their shard.
    """

    start_seconds: float = 0.0
    first_ready_seconds: float = 0.0
    actors: int = 0
    hosts: set[str] = field(default_factory=set)
    nodes: dict[int, str] = field(default_factory=dict)
    gpu_actors: set[int] = field(default_factory=set)
    actor_gpus: list[float] = field(default_factory=list)
    calls: int = 0
    videos_per_call: int = 1
    results: int = 0
    payload_bytes: int = 0
    get_seconds: float = 0.0
    actor_failures: int = 0
    retries: int = 0
    shards: int = 0
    unpublished_requeued: int = 0


@dataclass
class _Actor:
    index: int
    handle: Any
    ready: bool = False
    dead: bool = False
    host: str = ""
    inflight: deque = field(default_factory=deque)  # (seq, ref, tasks) per call, oldest first
    ping: Any = None
    ping_at: float = 0.0
    backoff: float = 0.5
    error: str = ""
    held: dict = field(default_factory=dict)  # (split, key) -> TaskResult written into its open shard, not yet published
    incarnation: str = ""  # the actor process that holds them
    sealing: Any = None  # the pending seal() call


_SEAL = object()  # marks a pending seal() call in the driver's table


def _payload_bytes(result: TaskResult) -> int:
    sample = result.sample or {}
    return sum(int(getattr(v, "nbytes", 0)) for v in sample.values())


def _is_writer_error(exc: BaseException) -> bool:
    return isinstance(exc, StorageError) or isinstance(getattr(exc, "cause", None), StorageError)


def _writer_error(exc: BaseException) -> StorageError:
    cause = getattr(exc, "cause", None)
    return StorageError(str(cause if isinstance(cause, StorageError) else _one_line(exc)))


class RayExecutor(Executor):
    """Runs the videos on Ray actors and streams the results back to the caller.

    With ``shards``, the actors write the samples into LMDB shards themselves;
    a result is yielded (``stored``, no sample) once the shard holding it is
    published, and an actor that dies first has its unpublished videos redone
    (not charged a retry).

    Args:
        config: The preprocessing config (``processing.ray_address``,
            ``max_retries``, ``max_in_flight`` and ``ray_batch`` apply).
        workers: Actors to run; on a cluster with ``processing.workers: null``
            one per CPU of the cluster.
        shards: Where the actors write shards (None: samples come back to the caller).
    """

    writes_shards: ClassVar[bool] = True

    def __init__(self, config: Config, workers: int = 1, shards: ShardTarget | None = None) -> None:
        super().__init__(config, workers, shards)
        p = config.processing
        self.address = p.ray_address
        self.max_retries = p.max_retries
        self.max_in_flight = p.max_in_flight
        self.batch = p.ray_batch  # None: from the number of actors (videos_per_call)
        self.stats = RayStats()
        self.temp_dir: str | None = None  # a local instance's temp dir, once started

    def map(self, tasks: Iterable[VideoTask]) -> Iterator[TaskResult]:
        """Yield one result per task, in completion order."""
        source = iter(tasks)
        first = next(source, None)
        if first is None:  # nothing to do (a finished run resumed): do not start Ray
            return
        ray = _import_ray()
        started = time.perf_counter()
        temp_dir, shutdown, clean = self._init(ray)
        self.temp_dir = temp_dir
        self.stats.start_seconds = time.perf_counter() - started
        actors: list[_Actor] = []
        try:
            actors = self._create_actors(ray)
            yield from self._stream(ray, actors, itertools.chain([first], source), started)
            clean = True
            if self.shards is not None:  # remove the actors' (now empty) work directories
                with contextlib.suppress(Exception):
                    ray.get([a.handle.close.remote() for a in actors if a.ready], timeout=30)
        finally:
            for actor in actors:
                try:
                    ray.kill(actor.handle, no_restart=True)
                except Exception:  # already gone with its node
                    pass
            if shutdown:
                ray.shutdown()
            if temp_dir is not None:
                if clean:
                    shutil.rmtree(temp_dir, ignore_errors=True)
                else:
                    logger.warning("Ray's logs are kept in %s", temp_dir)
        s = self.stats
        logger.info(
            "ray: %d videos on %d actors (%d hosts), %.1f MB received in %.2f s of ray.get, %d shards published, %d actor deaths, %d retries",
            s.results, s.actors, len(s.hosts), s.payload_bytes / 1e6, s.get_seconds, s.shards, s.actor_failures, s.retries,
        )

    # ------------------------------------------------------------------ start-up

    def _init(self, ray: Any) -> tuple[str | None, bool, bool]:
        """Start or join Ray; returns ``(temp_dir or None, shut down at the end, temp dir clean)``."""
        if ray.is_initialized():  # a caller that manages Ray itself: use its connection, leave it open
            return None, False, True
        ray_level = logging.WARNING if logging.getLogger().getEffectiveLevel() > logging.DEBUG else logging.INFO  # Ray's own logger
        env = {"PYTHONPATH": os.pathsep.join(p for p in (_SRC_ROOT, os.environ.get("PYTHONPATH", "")) if p)}
        common = dict(log_to_driver=True, logging_level=ray_level, runtime_env={"env_vars": env})
        if self.address is None:
            temp_dir = ray_temp_dir()
            try:
                # address="local": always a fresh instance, never one found via $RAY_ADDRESS or /tmp/ray
                ray.init(address="local", num_cpus=self.workers, include_dashboard=False, _temp_dir=temp_dir, **common)
            except Exception as exc:
                raise DeepfakeDataError(f"could not start a local Ray instance (logs in {temp_dir}): {_one_line(exc)}") from exc
            logger.info("started a local Ray instance with %d CPUs (temp dir %s)", self.workers, temp_dir)
            return temp_dir, True, False
        try:
            ray.init(address=self.address, **common)
        except Exception as exc:
            raise DeepfakeDataError(f"could not join the Ray cluster at {self.address!r}: {_one_line(exc)}") from exc
        logger.info("joined the Ray cluster at %s: %s", self.address, ray.cluster_resources())
        return None, True, True

    def _create_actors(self, ray: Any) -> list[_Actor]:
        cluster = ray.cluster_resources()
        resources = actor_resources(self.config, float(cluster.get("GPU", 0)))
        needs_gpu = bool(getattr(DETECTORS.get(self.config.faces.detector), "num_gpus", 0))
        count = self.workers
        if self.address is not None and self.config.processing.workers is None:
            count = max(1, int(cluster.get("CPU", 1)))
        if count > cluster.get("CPU", 0):
            logger.warning("%d Ray actors asked for, but the cluster has %g CPUs: the others wait for nodes", count, cluster.get("CPU", 0))
        options = dict(max_restarts=-1, max_task_retries=0)
        level = logging.getLogger().getEffectiveLevel()
        plugins = os.environ.get(PLUGINS_ENV, "")
        if resources["num_gpus"] > 0:
            plan = self._gpu_plan(ray, resources["num_gpus"], needs_gpu)[:count]
        else:
            plan = [(None, False)] * count
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        actors = []
        for i, (node, gpu) in enumerate(plan):
            placement = {} if node is None else {"scheduling_strategy": NodeAffinitySchedulingStrategy(node, soft=True)}
            remote = ray.remote(VideoActor).options(**(resources if gpu else {"num_cpus": 1, "num_gpus": 0}), **placement, **options)
            actors.append(_Actor(i, remote.remote(self.config, level, plugins, self.shards)))
        self.stats.actors = self.workers_used = len(actors)
        self.stats.actor_gpus = [resources["num_gpus"] if gpu else 0.0 for _, gpu in plan]
        if resources["num_gpus"] > 0:
            logger.info("Ray: %d of %d actors with %g GPU each", sum(g for _, g in plan), len(plan), resources["num_gpus"])
        return actors

    def _gpu_plan(self, ray: Any, share: float, needs_gpu: bool) -> list[tuple[str, bool]]:
        """``(node id, GPU?)`` per actor: GPU actors where a CPU and ``share`` fit, then CPU actors on the CPUs left.

        Each actor is placed on its node (soft affinity), so CPU actors never
        take the CPUs the GPU actors of that node need.

        Raises:
            DeepfakeDataError: The detector needs a GPU and none fits.
        """
        nodes = sorted((n for n in ray.nodes() if n.get("Alive")), key=lambda n: n["NodeID"])
        on_gpu: list[tuple[str, bool]] = []
        on_cpu: list[tuple[str, bool]] = []
        for node in nodes:
            cpus = int(node["Resources"].get("CPU", 0))
            fit = min(cpus, int(node["Resources"].get("GPU", 0) / share + 1e-9))
            on_gpu += [(node["NodeID"], True)] * fit
            on_cpu += [(node["NodeID"], False)] * (cpus - fit)
        if needs_gpu and not on_gpu:
            raise DeepfakeDataError(
                f"faces.detector {self.config.faces.detector!r} needs {share:g} GPU per actor; no node of the Ray cluster has a CPU and that much GPU"
            )
        return on_gpu if needs_gpu else on_gpu + on_cpu

    # ------------------------------------------------------------------ the loop

    def _stream(self, ray: Any, actors: list[_Actor], source: Iterator[VideoTask], started: float) -> Iterator[TaskResult]:
        from ray.exceptions import ActorDiedError, RayActorError, RayError, RayTaskError

        batch = videos_per_call(self.batch, len(actors))
        self.stats.videos_per_call = batch
        cap = max(2, -(-self.max_in_flight // batch))  # calls queued per actor: max_in_flight videos, two calls at least
        pending: dict[Any, tuple[_Actor, int, Any]] = {}  # ref -> (actor, seq, tasks | None for a ping | _SEAL)
        tokens: deque[_Actor] = deque()  # one entry per free queue slot of a ready actor (stale ones are skipped)
        requeue: deque[VideoTask] = deque()
        alone: set[str] = set()  # videos of a batch whose actor died in it: each is retried in a call of its own
        retries: Counter[str] = Counter()
        seq = itertools.count()
        exhausted = False
        in_flight = 0
        crashes_since_result = 0
        stalled_since: float | None = None
        warned_stall = False

        def next_task() -> VideoTask | None:
            nonlocal exhausted
            if requeue:
                return requeue.popleft()
            if exhausted:
                return None
            task = next(source, None)
            exhausted = task is None
            return task

        def next_call() -> list[VideoTask]:
            tasks: list[VideoTask] = []
            while len(tasks) < batch:
                task = next_task()
                if task is None:
                    break
                if task.relpath in alone:
                    if tasks:
                        requeue.appendleft(task)
                        break
                    return [task]
                tasks.append(task)
            return tasks

        def charge(task: VideoTask, exc: BaseException) -> Iterator[TaskResult]:
            retries[task.relpath] += 1
            self.stats.retries += 1
            if retries[task.relpath] > self.max_retries:
                yield TaskResult(task, None, f"the Ray worker died while processing this video, {retries[task.relpath]} times (last: {_one_line(exc)})", "failed")
            else:
                requeue.append(task)  # behind the videos waiting already: a crasher must not starve them

        def lose(tasks: list[VideoTask], exc: BaseException) -> Iterator[TaskResult]:
            """A call's results are lost: charge its one video, or retry a batch's videos one by one, uncharged."""
            if len(tasks) == 1:
                yield from charge(tasks[0], exc)
            else:  # which of them broke it is unknown: alone, the culprit is charged and the others go through
                alone.update(t.relpath for t in tasks)
                requeue.extendleft(reversed(tasks))

        def actor_down(actor: _Actor, exc: BaseException, failed: tuple[int, list[VideoTask]] | None) -> Iterator[TaskResult]:
            nonlocal in_flight, crashes_since_result
            lost = sorted([*([failed] if failed else []), *((s, t) for s, _, t in actor.inflight)], key=lambda st: st[0])
            for _, ref, _ in actor.inflight:
                pending.pop(ref, None)
            in_flight -= len(actor.inflight)
            actor.inflight.clear()
            # A seal is only sent with no video in flight: calls queued behind it had not started when it died.
            sealing = failed is None or actor.sealing is not None
            if actor.sealing is not None:
                pending.pop(actor.sealing, None)
                actor.sealing = None
            unheld(actor, "died before publishing its shard")  # finished, but their shard died with the actor
            actor.ready, actor.ping, actor.ping_at = False, None, time.monotonic()
            self.stats.actor_failures += 1
            crashes_since_result += 1
            videos = sum(len(t) for _, t in lost)
            logger.warning("Ray actor %d on %s died (%s); %d video(s) go to the other actors", actor.index, actor.host or "?", _one_line(exc, 160), videos)
            # One bad video costs max_retries + 1 deaths (one more when it was in a batch, one more when a death
            # also swallows the reply of the call finished just before it); more than that in a row, with nothing
            # finishing, is a broken install.
            if crashes_since_result >= max(_CRASHES_PER_ACTOR, self.max_retries + 3) * len(actors):
                raise DeepfakeDataError(f"Ray actors keep dying before finishing any video (last: {_one_line(exc)}); see the log above")
            # Actors run their queue in order: the oldest lost call was the one running, the rest never started.
            if sealing:  # it died sealing: no video to charge
                requeue.extendleft(t for _, tasks in reversed(lost) for t in reversed(tasks))
                return
            requeue.extendleft(t for _, tasks in reversed(lost[1:]) for t in reversed(tasks))
            yield from lose(lost[0][1], exc)

        def unheld(actor: _Actor, why: str) -> None:
            """Redo, uncharged, the videos whose open shard was lost with an actor process."""
            if actor.held:
                logger.warning("Ray actor %d %s: %d finished video(s) whose shard was not published are redone", actor.index, why, len(actor.held))
                self.stats.unpublished_requeued += len(actor.held)
                requeue.extend(r.task for r in actor.held.values())
                actor.held.clear()

        def same_process(actor: _Actor, incarnation: str) -> None:
            # Ray restarts a dead actor by itself; one that died idle is only noticed by the new process's replies.
            if actor.incarnation and incarnation != actor.incarnation:
                unheld(actor, "was restarted")
            actor.incarnation = incarnation

        def release(actor: _Actor, published: list[dict[str, Any]]) -> Iterator[TaskResult]:
            for shard in published:
                self.stats.shards += 1
                for key in shard["keys"]:
                    result = actor.held.pop((shard["split"], key), None)
                    if result is not None:
                        yield result

        while True:
            now = time.monotonic()
            for actor in actors:
                if not actor.dead and not actor.ready and actor.ping is None and now >= actor.ping_at:
                    actor.ping = actor.handle.ready.remote()
                    pending[actor.ping] = (actor, -1, None)
            while tokens:
                actor = tokens.popleft()
                if not actor.ready or len(actor.inflight) >= cap:
                    continue
                tasks = next_call()
                if not tasks:
                    tokens.appendleft(actor)
                    break
                ref = actor.handle.process.remote(tasks)
                n = next(seq)
                actor.inflight.append((n, ref, tasks))
                pending[ref] = (actor, n, tasks)
                in_flight += 1
            if in_flight == 0 and exhausted and not requeue:
                holding = [a for a in actors if a.held]
                if not holding:
                    return
                for actor in holding:  # the end: publish what the actors hold
                    if actor.ready and actor.sealing is None:
                        actor.sealing = actor.handle.seal.remote()
                        pending[actor.sealing] = (actor, -1, _SEAL)
            if all(a.dead for a in actors):
                raise DeepfakeDataError(f"no Ray actor could start: {actors[0].error}")
            if in_flight == 0 and not any(a.ready for a in actors):
                stalled_since = stalled_since or now
                if now - stalled_since > 30 and not warned_stall:
                    warned_stall = True
                    logger.warning("no Ray actor is alive; waiting for the cluster (resources now: %s)", ray.available_resources())
                if now - stalled_since > STALL_TIMEOUT_S:
                    raise DeepfakeDataError(f"no Ray actor has been alive for {STALL_TIMEOUT_S:.0f} s; cluster resources: {ray.cluster_resources()}")
            else:
                stalled_since, warned_stall = None, False

            due = [a.ping_at - now for a in actors if not a.dead and not a.ready and a.ping is None]
            timeout = max(0.0, min([1.0, *due]))
            if not pending:
                time.sleep(timeout)
                continue
            refs = list(pending)
            done, _ = ray.wait(refs, num_returns=1, timeout=timeout)
            if not done:
                continue
            done, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            done.sort(key=lambda r: pending[r][1])  # per actor, in the order it ran them
            for ref in done:
                entry = pending.pop(ref, None)
                if entry is None:  # dropped with its actor
                    continue
                actor, n, tasks = entry
                if tasks is _SEAL:
                    actor.sealing = None
                    try:
                        published, incarnation = ray.get(ref)
                    except RayTaskError as exc:
                        raise _writer_error(exc) from exc
                    except RayError as exc:  # the actor died, or the reply was lost with its node: redo what it held
                        yield from actor_down(actor, exc, None)
                        continue
                    same_process(actor, incarnation)
                    yield from release(actor, published)
                    unheld(actor, "published its shards without them")  # never expected: redo rather than wait forever
                    continue
                if tasks is None:  # a readiness ping
                    actor.ping = None
                    try:
                        host = ray.get(ref)
                    except ActorDiedError as exc:  # __init__ failed, or killed for good
                        actor.dead, actor.error = True, _one_line(exc)
                        logger.warning("Ray actor %d cannot run: %s", actor.index, actor.error)
                    except RayError:  # restarting, or its node not back yet: ask again later
                        actor.ping_at = time.monotonic() + actor.backoff
                        actor.backoff = min(actor.backoff * 2, 5.0)
                    else:
                        if not self.stats.first_ready_seconds:
                            self.stats.first_ready_seconds = time.perf_counter() - started
                        restarted = bool(actor.host)
                        (actor.host, node, gpu_ids, incarnation), actor.ready, actor.backoff = host, True, 0.5
                        same_process(actor, incarnation)
                        self.stats.hosts.add(actor.host)
                        self.stats.nodes[actor.index] = node
                        if gpu_ids:
                            self.stats.gpu_actors.add(actor.index)
                        tokens.extend([actor] * cap)
                        log = logger.info if restarted else logger.debug
                        log("Ray actor %d %s on %s (node %s)", actor.index, "is back" if restarted else "ready", actor.host, node)
                    continue
                for i, (s, _, _) in enumerate(actor.inflight):
                    if s == n:
                        del actor.inflight[i]
                        break
                in_flight -= 1
                t0 = time.perf_counter()
                try:
                    results, published, incarnation = ray.get(ref)
                except RayActorError as exc:  # its process or node died
                    yield from actor_down(actor, exc, (n, tasks))
                    continue
                except RayTaskError as exc:  # something escaped VideoProcessor: charge the video(s)
                    if _is_writer_error(exc):  # the shard writer failed (a full disk): stop, as the driver's writer does
                        raise _writer_error(exc) from exc
                    tokens.append(actor)
                    yield from lose(tasks, exc)
                    continue
                except RayError as exc:  # the results were lost with their node after the call finished
                    tokens.append(actor)
                    yield from lose(tasks, exc)
                    continue
                self.stats.get_seconds += time.perf_counter() - t0
                self.stats.calls += 1
                same_process(actor, incarnation)
                crashes_since_result = 0
                tokens.append(actor)
                for result in results:
                    self.stats.results += 1
                    self.stats.payload_bytes += _payload_bytes(result)
                    if result.stored:
                        actor.held[result.task.split, result.task.key] = result
                    else:
                        yield result
                yield from release(actor, published)
