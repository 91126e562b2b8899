"""Produce items on a background thread, a bounded number ahead of the consumer.

:func:`prefetch` is the loader's thread pipeline in general form: one producer
thread walks a list of work, turns each piece into an item and puts it on a
bounded queue; the consumer iterates over the items. Exceptions raised by the
producer are re-raised in the consumer. When the consumer stops early (break,
exception, ``close()``), the producer is told to stop, joined, and every item
made but never delivered is handed to ``drop`` (e.g. to give a staging buffer
back).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["prefetch"]

W = TypeVar("W")
T = TypeVar("T")

_POLL_S = 0.1


class _End:
    pass


@dataclass
class _Failure:
    exc: BaseException


def prefetch(
    work: Iterable[W],
    produce: Callable[[W, threading.Event], T | None],
    *,
    depth: int = 2,
    drop: Callable[[T], None] | None = None,
    name: str = "prefetch-producer",
) -> Iterator[T]:
    """Yield ``produce(w, stop)`` for each ``w`` of ``work``, computed ahead on a background thread.

    Args:
        work: The pieces of work, in order.
        produce: Makes one item. It gets the stop event, to give up waiting on
            a resource once the consumer has gone; returning None ends production.
        depth: Items made ahead at most (queue size, at least 1).
        drop: Called on each item that was made but not delivered.
        name: The producer thread's name.

    Yields:
        The items, in the order of ``work``.

    Raises:
        BaseException: Whatever ``produce`` raised, re-raised in the consumer.
    """
    out: queue.Queue = queue.Queue(maxsize=max(1, int(depth)))
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def produce_all() -> None:
        try:
            for piece in work:
                if stop.is_set():
                    return
                item = produce(piece, stop)
                if item is None:
                    return
                if not put(item):
                    if drop is not None:
                        drop(item)
                    return
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put(_Failure(exc))
        finally:
            put(_End())

    producer = threading.Thread(target=produce_all, name=name, daemon=True)
    producer.start()
    try:
        while True:
            item = out.get()
            if isinstance(item, _End):
                break
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        stop.set()
        producer.join()
        while True:
            try:
                item = out.get_nowait()
            except queue.Empty:
                break
            if drop is not None and not isinstance(item, (_End, _Failure)):
                drop(item)
