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

import logging
import multiprocessing
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from src.config import Config
from src.errors import ConfigError, DeepfakeDataError
from src.preprocessing.pipeline import TaskResult, VideoProcessor, VideoTask

__all__ = ["EXECUTORS", "run_tasks", "SerialExecutor", "ProcessExecutor"]

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


class SerialExecutor:
    """Processes tasks one by one in this process."""

    def __init__(self, config: Config, workers: int = 1) -> None:
        self.config = config

    def map(self, tasks: Iterable[VideoTask]) -> Iterator[TaskResult]:
        """Yield one result per task, in order."""
        processor = VideoProcessor(self.config)
        for task in tasks:
            yield processor(task)


class ProcessExecutor:
    """A pool of worker processes (``spawn``: no state inherited from the writer).

    Args:
        config: The preprocessing config (sent once to each worker).
        workers: Number of worker processes.
    """

    max_retries = 1

    def __init__(self, config: Config, workers: int) -> None:
        self.config = config
        self.workers = max(1, workers)
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
        queue = iter(tasks)
        retries: dict[str, int] = {}
        pending: dict[Future, VideoTask] = {}
        requeue: list[VideoTask] = []
        pool = self._pool()
        breaks_without_progress = 0
        try:
            while True:
                while len(pending) < self.max_in_flight:
                    task = requeue.pop() if requeue else next(queue, None)
                    if task is None:
                        break
                    pending[pool.submit(_run_in_worker, task)] = task
                if not pending:
                    return
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                broken = False
                for future in done:
                    task = pending.pop(future)
                    try:
                        result = future.result()
                    except BrokenProcessPool:
                        broken = True
                        requeue.append(task)
                        continue
                    breaks_without_progress = 0
                    yield result
                if broken:
                    breaks_without_progress += 1
                    if breaks_without_progress >= 3:
                        raise DeepfakeDataError("worker processes keep dying before finishing any video (start-up failure?); see the log above")
                    # Every task still in flight died with the pool: retry each once, then report it.
                    requeue.extend(pending.values())
                    pending.clear()
                    pool.shutdown(wait=False, cancel_futures=True)
                    logger.warning("a worker process died; restarting the pool and retrying %d videos", len(requeue))
                    survivors = []
                    for task in requeue:
                        retries[task.relpath] = retries.get(task.relpath, 0) + 1
                        if retries[task.relpath] > self.max_retries:
                            yield TaskResult(task, None, "worker process crashed while decoding this video", "failed")
                        else:
                            survivors.append(task)
                    requeue = survivors
                    pool = self._pool()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


EXECUTORS = {"process": ProcessExecutor, "serial": SerialExecutor}


def run_tasks(config: Config, tasks: Iterable[VideoTask], workers: int | None = None) -> Iterator[TaskResult]:
    """Run tasks with the executor named by ``config.processing.executor``.

    Raises:
        ConfigError: Unknown executor name.
    """
    name = config.processing.executor
    if name not in EXECUTORS:
        raise ConfigError(f"unknown executor {name!r}; must be one of {', '.join(EXECUTORS)}")
    n = workers or config.processing.num_workers
    return EXECUTORS[name](config, n).map(tasks)
