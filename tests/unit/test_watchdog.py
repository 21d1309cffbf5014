"""The feed watchdog's decisions (instructrec/watchdog.py), on a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from instructrec.watchdog import FeedWatchdog, Verdict

TP = ("triggers", 0)


def tick(dog: FeedWatchdog, now: float, position: int | None, end: int | None) -> Verdict | None:
    """One watchdog round as the workers run it: note, then judge what is idle."""
    idle = dog.note({TP: position}, now)
    if TP not in idle:
        return None
    return dog.judge(TP, end, now)


def test_a_starved_partition_is_fetched_again_then_restarted():
    dog = FeedWatchdog(stall_s=10)
    assert tick(dog, 0, 5, 9) is None
    assert tick(dog, 9.9, 5, 9) is None  # not yet stalled for 10 s
    assert tick(dog, 10, 5, 9) is Verdict.SEEK
    assert tick(dog, 15, 5, 9) is None  # the seek gets its own 10 s
    assert tick(dog, 20, 5, 9) is Verdict.RESTART


def test_a_partition_fed_after_the_seek_starts_over():
    dog = FeedWatchdog(stall_s=10)
    tick(dog, 0, 5, 9)
    assert tick(dog, 10, 5, 9) is Verdict.SEEK
    assert tick(dog, 12, 9, 9) is None  # moved: fed again
    assert tick(dog, 30, 9, 12) is Verdict.SEEK  # a new stall starts with a seek, not a restart


def test_an_idle_partition_is_never_called_stalled():
    dog = FeedWatchdog(stall_s=10)
    verdicts = [tick(dog, t, 7, 7) for t in range(0, 200, 5)]
    assert set(verdicts) <= {None, Verdict.OK}
    # The high watermark is a lower bound (the embedded broker reports it short): an end
    # at or below the position means nothing is known to be waiting.
    assert set(tick(dog, t, 7, 3) for t in range(200, 300, 5)) <= {None, Verdict.OK}


def test_a_member_busy_with_other_partitions_is_not_stalled():
    """A saturated member may be served one partition at a time: while any partition moves,
    the others wait their turn (seen: a backpressured pool, partition 3 unserved for 10 s)."""
    dog = FeedWatchdog(stall_s=10)
    busy, waiting = ("requests", 0), ("requests", 3)
    for t in range(0, 100):
        assert dog.note({busy: t, waiting: 8}, float(t)) == []


def test_unfed_partitions_are_judged_once_the_member_gets_nothing():
    """The case seen in CI: one partition was served to its end, the other three stopped
    after their first records while their triggers waited."""
    dog = FeedWatchdog(stall_s=10)
    done, stuck = ("triggers", 1), [("triggers", p) for p in (0, 2, 3)]
    dog.note({done: 0, **{k: 3 for k in stuck}}, 0)
    dog.note({done: 17, **{k: 3 for k in stuck}}, 1)  # the last thing that moved
    assert dog.note({done: 17, **{k: 3 for k in stuck}}, 10.9) == []
    idle = dog.note({done: 17, **{k: 3 for k in stuck}}, 11)
    assert set(idle) == {done, *stuck}
    assert dog.judge(done, 17, 11) is Verdict.OK  # at its end: idle
    assert {dog.judge(k, 19, 11) for k in stuck} == {Verdict.SEEK}


def test_unknown_end_or_position_is_no_verdict():
    dog = FeedWatchdog(stall_s=10)
    assert {tick(dog, t, 5, None) for t in range(0, 100, 5)} <= {None, Verdict.OK}  # broker not answering
    other = FeedWatchdog(stall_s=10)
    assert {tick(other, t, None, 50) for t in range(0, 100, 5)} <= {None, Verdict.OK}


def test_partitions_no_longer_named_are_forgotten():
    dog = FeedWatchdog(stall_s=10)
    dog.note({TP: 5, ("events", 1): 3}, 0)
    assert set(dog.note({TP: 5, ("events", 1): 3}, 10)) == {TP, ("events", 1)}
    assert dog.note({("events", 1): 3}, 11) == [("events", 1)]
    assert dog.note({TP: 5}, 12) == []  # back after a rebalance: its clock starts again
    dog.forget()
    assert dog.note({TP: 5}, 100) == []


def test_stall_time_must_be_positive():
    with pytest.raises(ValueError):
        FeedWatchdog(stall_s=0)


@given(st.lists(st.tuples(st.floats(0.1, 9.9), st.integers(1, 5)), min_size=1, max_size=60))
def test_a_partition_that_keeps_moving_is_never_judged(steps):
    """Whatever the backlog, a position that moves at least every stall_s gets no verdict."""
    dog = FeedWatchdog(stall_s=10)
    now, position = 0.0, 0
    tick(dog, now, position, 10**9)
    for gap, advance in steps:
        now += gap
        position += advance
        assert tick(dog, now, position, 10**9) is None
