import threading
import time

import pytest

from workers.batcher import BatchSizeMismatch, MicroBatcher, Overloaded


class Recorder:
    """A batch function that records batches and can be held on an event."""

    def __init__(self, hold: threading.Event | None = None, fail: Exception | None = None, short: bool = False):
        self.batches: list[list[int]] = []
        self.hold = hold
        self.fail = fail
        self.short = short
        self.entered = threading.Event()

    def __call__(self, items):
        self.entered.set()
        if self.hold is not None:
            assert self.hold.wait(10)
        self.batches.append(list(items))
        if self.fail:
            raise self.fail
        out = [i * 10 for i in items]
        return out[:-1] if self.short else out


def test_flushes_when_the_cost_budget_is_reached_not_the_request_count():
    fn = Recorder()
    b = MicroBatcher(fn, max_cost=100, max_wait_s=30.0, max_queue=100)
    futures = [b.submit(i, cost=50) for i in range(2)]  # 2 requests of 50 pairs fill the budget
    assert [f.result(timeout=5) for f in futures] == [0, 10]
    assert fn.batches == [[0, 1]]
    b.close()


def test_flushes_on_max_wait_with_a_partial_batch():
    fn = Recorder()
    b = MicroBatcher(fn, max_cost=1000, max_wait_s=0.05, max_queue=100)
    start = time.monotonic()
    assert b.submit(7, cost=3).result(timeout=5) == 70
    assert 0.04 <= time.monotonic() - start < 2.0
    assert fn.batches == [[7]]
    b.close()


def test_nothing_is_flushed_before_the_wait_or_the_budget():
    fn = Recorder()
    b = MicroBatcher(fn, max_cost=10, max_wait_s=0.3, max_queue=100)
    f1 = b.submit(1, cost=4)
    f2 = b.submit(2, cost=4)
    assert not fn.entered.wait(0.15)  # 8 < 10 pairs and the wait is not over
    assert not f1.done() and not f2.done()
    assert [f1.result(timeout=5), f2.result(timeout=5)] == [10, 20]
    assert fn.batches == [[1, 2]]
    b.close()


def test_a_batch_never_exceeds_the_budget_and_later_items_wait_for_the_next():
    hold = threading.Event()
    fn = Recorder(hold=hold)
    b = MicroBatcher(fn, max_cost=10, max_wait_s=0.0, max_queue=100)
    first = b.submit(0, cost=1)
    assert fn.entered.wait(5)  # batch [0] is running and held
    rest = [b.submit(i, cost=4) for i in range(1, 5)]  # 16 pairs queue up meanwhile
    hold.set()
    assert first.result(timeout=5) == 0 and [f.result(timeout=5) for f in rest] == [10, 20, 30, 40]
    assert fn.batches == [[0], [1, 2], [3, 4]]
    b.close()


def test_an_error_reaches_every_caller_of_the_batch():
    fn = Recorder(fail=RuntimeError("CUDA out of memory"))
    b = MicroBatcher(fn, max_cost=3, max_wait_s=5.0, max_queue=10)
    futures = [b.submit(i) for i in range(3)]
    for f in futures:
        with pytest.raises(RuntimeError, match="out of memory"):
            f.result(timeout=5)
    b.close()


def test_wrong_number_of_results_fails_the_whole_batch():
    b = MicroBatcher(Recorder(short=True), max_cost=2, max_wait_s=5.0, max_queue=10)
    futures = [b.submit(1), b.submit(2)]
    for f in futures:
        with pytest.raises(BatchSizeMismatch):
            f.result(timeout=5)
    b.close()


def test_the_queue_bound_refuses_instead_of_growing():
    hold = threading.Event()
    fn = Recorder(hold=hold)
    b = MicroBatcher(fn, max_cost=1, max_wait_s=0.0, max_queue=2)
    running = b.submit(0)
    assert fn.entered.wait(5)
    queued = [b.submit(1), b.submit(2)]
    with pytest.raises(Overloaded):
        b.submit(3)
    assert len(b) == 2
    hold.set()
    assert [f.result(timeout=5) for f in [running, *queued]] == [0, 10, 20]
    b.close()


def test_cancelled_callers_are_dropped_from_the_batch():
    hold = threading.Event()
    fn = Recorder(hold=hold)
    b = MicroBatcher(fn, max_cost=1, max_wait_s=0.0, max_queue=10)
    b.submit(0)
    assert fn.entered.wait(5)
    gone = b.submit(1)
    kept = b.submit(2)
    assert gone.cancel()
    hold.set()
    assert kept.result(timeout=5) == 20
    b.close()
    assert [1] not in fn.batches
