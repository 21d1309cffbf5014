"""Dynamic batching: many callers, one model call per batch.

``MicroBatcher`` owns one queue and one thread. ``submit(item, cost)`` returns a
``Future`` at once; the thread cuts a batch when the summed cost reaches ``max_cost``
(e.g. candidate pairs, not requests) or ``max_wait_s`` after the batch's first item,
calls ``fn(items)`` once, checks it returned one result per item, and resolves every
future. A failed batch fails every future of that batch, never some. Beyond
``max_queue`` items waiting, ``submit`` raises ``Overloaded`` instead of growing memory.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, TypeVar

from instructrec.errors import InstructRecError

T = TypeVar("T")
R = TypeVar("R")


class Overloaded(InstructRecError):
    """The batcher's queue is full: slow down (pause consumption) and retry."""


class BatchSizeMismatch(InstructRecError):
    """The batch function returned a different number of results than it was given."""


@dataclass
class _Entry(Generic[T, R]):
    item: T
    cost: int
    future: Future[R]


class MicroBatcher(Generic[T, R]):
    def __init__(
        self,
        fn: Callable[[Sequence[T]], Sequence[R]],
        *,
        max_cost: int,
        max_wait_s: float,
        max_queue: int,
        name: str = "batcher",
    ) -> None:
        if max_cost < 1 or max_queue < 1 or max_wait_s < 0:
            raise ValueError("max_cost and max_queue must be >= 1, max_wait_s >= 0")
        self.fn = fn
        self.max_cost = max_cost
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self._queue: deque[_Entry[T, R]] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.batches = 0
        self.items = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def __len__(self) -> int:
        with self._cond:
            return len(self._queue)

    def submit(self, item: T, cost: int = 1) -> Future[R]:
        future: Future[R] = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("batcher is closed")
            if len(self._queue) >= self.max_queue:
                raise Overloaded(f"{len(self._queue)} items waiting (bound {self.max_queue})")
            self._queue.append(_Entry(item, max(1, cost), future))
            self._cond.notify_all()
        return future

    def close(self, timeout: float | None = None) -> None:
        """Stop taking work; batches already queued are still run."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def _take_batch(self) -> list[_Entry[T, R]] | None:
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            deadline = time.monotonic() + self.max_wait_s
            while sum(e.cost for e in self._queue) < self.max_cost and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch: list[_Entry[T, R]] = []
            cost = 0
            while self._queue and (not batch or cost + self._queue[0].cost <= self.max_cost):
                entry = self._queue.popleft()
                batch.append(entry)
                cost += entry.cost
            return batch

    def _run(self) -> None:
        while (batch := self._take_batch()) is not None:
            live = [e for e in batch if e.future.set_running_or_notify_cancel()]
            if not live:
                continue
            try:
                results = self.fn([e.item for e in live])
                if len(results) != len(live):
                    raise BatchSizeMismatch(f"batch function returned {len(results)} results for {len(live)} items")
            except BaseException as exc:  # every caller of the batch learns of it
                for e in live:
                    e.future.set_exception(exc)
                continue
            self.batches += 1
            self.items += len(live)
            for e, result in zip(live, results, strict=True):
                e.future.set_result(result)
