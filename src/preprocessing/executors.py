"""Executors run :class:`~src.preprocessing.pipeline.VideoProcessor` over tasks.

A registry maps names to executors (``process``: a pool of worker processes,
each building its face detector once; ``serial``: in-process, for debugging and
profiling). Both yield results as they complete and keep at most
``max_in_flight`` tasks per worker outstanding, so memory stays bounded on runs
of 20,000+ videos. A worker process that dies (a crash inside a native decoder)
costs the videos it was working on, which are retried once and then reported,
never the run.
"""

from __future__ import annotations

import abc
import logging
import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, ClassVar

from src.config import Config
from src.errors import ConfigError, DeepfakeDataError
from src.preprocessing.pipeline import TaskResult, VideoProcessor, VideoTask
from src.preprocessing.registries import EXECUTORS

if TYPE_CHECKING:
    from src.data.lmdb_shards import ShardTarget

__all__ = ["EXECUTORS", "Executor", "ProcessExecutor", "SerialExecutor", "bounded_map", "make_executor", "run_tasks"]

logger = logging.getLogger(__name__)

_WORKER: VideoProcessor | None = None


def _init_worker(config: Config, log_level: int) -> None:
    global _WORKER
    # A spawned worker starts with no logging set up: mirror the parent's level.
    logging.basicConfig(level=log_level, format="%(levelname)s %(name)s: %(message)s")
    _WORKER = VideoProcessor(config)


def _run_in_worker(task: VideoTask) -> TaskResult:
    assert _WORKER is not None, "worker not initialised"
    return _WORKER(task)


class Executor(abc.ABC):
    """Runs :class:`~src.preprocessing.pipeline.VideoProcessor` over tasks; register subclasses in ``EXECUTORS``.

    Args:
        config: The preprocessing config.
        workers: Parallel workers to use.
    """

    #: Whether the executor's workers can write the samples themselves, into LMDB shards (``shards=``).
    writes_shards: ClassVar[bool] = False

    def __init__(self, config: Config, workers: int = 1, shards: ShardTarget | None = None) -> None:
        if shards is not None and not self.writes_shards:
            raise ConfigError(f"executor {type(self).__name__} does not write shards; only executor ray does (processing.ray_write)")
        self.config = config
        self.workers = max(1, int(workers))
        self.shards = shards
        #: Workers the last run used (the actors on a cluster).
        self.workers_used = self.workers

    @abc.abstractmethod
    def map(self, tasks: Iterable[VideoTask]) -> Iterator[TaskResult]:
        """Yield one result per task (in any order); a crashed task yields a failed result."""


def bounded_map(
    submit: Callable[[VideoTask], Future],
    tasks: Iterable[VideoTask],
    max_in_flight: int,
    *,
    max_retries: int = 1,
    restart: Callable[[], None] | None = None,
    is_crash: Callable[[BaseException], bool] = lambda exc: isinstance(exc, BrokenProcessPool),
) -> Iterator[TaskResult]:
    """Submit tasks with at most ``max_in_flight`` outstanding; retry the tasks of a crashed worker.

    The in-flight cap bounds memory on runs of 20,000+ videos. When a future
    fails with a crash (``is_crash``), every task still in flight is taken to
    have died with it: ``restart()`` rebuilds the workers and each such task is
    retried up to ``max_retries`` times, then reported as failed. Three crashes
    in a row without any finished task stop the run.

    Args:
        submit: Starts one task, returns its future (result: a TaskResult).
        tasks: The tasks.
        max_in_flight: Outstanding tasks at most.
        max_retries: Retries per task after a crash.
        restart: Rebuilds the workers after a crash.
        is_crash: Whether a future's exception means its worker died.

    Raises:
        DeepfakeDataError: Workers keep dying before finishing anything.
    """
    queue = iter(tasks)
    retries: dict[str, int] = {}
    pending: dict[Future, VideoTask] = {}
    requeue: list[VideoTask] = []
    crashes_without_progress = 0
    while True:
        while len(pending) < max_in_flight:
            task = requeue.pop() if requeue else next(queue, None)
            if task is None:
                break
            pending[submit(task)] = task
        if not pending:
            return
        done, _ = wait(pending, return_when=FIRST_COMPLETED)
        crashed = False
        for future in done:
            task = pending.pop(future)
            exc = future.exception()
            if exc is not None and is_crash(exc):
                crashed = True
                requeue.append(task)
                continue
            if exc is not None:
                raise exc
            crashes_without_progress = 0
            yield future.result()
        if crashed:
            crashes_without_progress += 1
            if crashes_without_progress >= 3:
                raise DeepfakeDataError("worker processes keep dying before finishing any video (start-up failure?); see the log above")
            # Every task still in flight died with the workers: retry each, then report it.
            requeue.extend(pending.values())
            pending.clear()
            logger.warning("a worker process died; restarting the workers and retrying %d videos", len(requeue))
            survivors = []
            for task in requeue:
                retries[task.relpath] = retries.get(task.relpath, 0) + 1
                if retries[task.relpath] > max_retries:
                    yield TaskResult(task, None, "worker process crashed while decoding this video", "failed")
                else:
                    survivors.append(task)
            requeue = survivors
            if restart is not None:
                restart()


class SerialExecutor(Executor):
    """Processes tasks one by one in this process (debugging, profiling)."""

    def map(self, tasks: Iterable[VideoTask]) -> Iterator[TaskResult]:
        """Yield one result per task, in order."""
        processor = VideoProcessor(self.config)
        for task in tasks:
            yield processor(task)


class ProcessExecutor(Executor):
    """A pool of worker processes (``spawn``: no state inherited from the writer).

    Args:
        config: The preprocessing config (sent once to each worker).
        workers: Number of worker processes.
    """

    #: Retries of the videos in flight when a worker died (the whole pool breaks, so each is charged;
    #: ``processing.max_retries`` is the Ray executor's, where only the running video is).
    max_retries = 1

    def __init__(self, config: Config, workers: int, shards: ShardTarget | None = None) -> None:
        super().__init__(config, workers, shards)
        self.max_in_flight = self.workers * config.processing.max_in_flight

    def _pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(self.config, logging.getLogger().getEffectiveLevel()),
        )

    def map(self, tasks: Iterable[VideoTask]) -> Iterator[TaskResult]:
        """Yield one result per task, in completion order."""
        pool = self._pool()

        def restart() -> None:
            nonlocal pool
            pool.shutdown(wait=False, cancel_futures=True)
            pool = self._pool()

        try:
            yield from bounded_map(lambda task: pool.submit(_run_in_worker, task), tasks, self.max_in_flight, max_retries=self.max_retries, restart=restart)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def make_executor(config: Config, workers: int | None = None, shards: ShardTarget | None = None) -> Executor:
    """The executor named by ``config.processing.executor``.

    Args:
        config: The preprocessing config.
        workers: Workers (default ``processing.num_workers``).
        shards: Have the workers write the samples into these shard sets.

    Raises:
        ConfigError: Unknown executor name, or one that cannot write shards.
    """
    executor = EXECUTORS.get(config.processing.executor)
    if shards is None:  # executors from plugins may take (config, workers) only
        return executor(config, workers or config.processing.num_workers)
    return executor(config, workers or config.processing.num_workers, shards)


def run_tasks(config: Config, tasks: Iterable[VideoTask], workers: int | None = None) -> Iterator[TaskResult]:
    """Run tasks with the executor named by ``config.processing.executor``.

    Raises:
        ConfigError: Unknown executor name.
    """
    return make_executor(config, workers).map(tasks)
