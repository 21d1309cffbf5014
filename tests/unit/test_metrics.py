"""instructrec/metrics.py without a broker: lag arithmetic, the per-partition lag gauge
replaced as a whole, and plain counter dataclasses exposed as Prometheus counters."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import generate_latest

from instructrec.metrics import PoolMetrics, StreamMetrics, counters_registry, families, lag_of
from streams.agents import StreamCounters


def test_lag_is_end_minus_position_where_both_are_known() -> None:
    positions = {("e", 0): 10, ("e", 1): None, ("e", 2): 5, ("e", 3): -1001}
    ends = {("e", 0): 15, ("e", 1): 9, ("e", 2): None, ("e", 3): 4}
    assert lag_of(positions, ends) == {("e", 0): 5}


def test_the_lag_gauge_forgets_partitions_given_away() -> None:
    m = StreamMetrics(StreamCounters())
    m.set_lag({("events", 0): 3, ("events", 1): -2})
    text = m.render().decode()
    assert 'instructrec_consumer_lag{partition="0",topic="events"} 3.0' in text
    assert 'instructrec_consumer_lag{partition="1",topic="events"} 0.0' in text  # never negative
    m.set_lag({("events", 1): 7})
    text = m.render().decode()
    assert 'partition="0"' not in text and 'instructrec_consumer_lag{partition="1",topic="events"} 7.0' in text


def test_each_process_has_its_own_registry_and_names() -> None:
    counters = StreamCounters(events=48, dead_letters={"invalid-json": 1})
    stream, pool, pool2 = StreamMetrics(counters), PoolMetrics(), PoolMetrics()  # no duplicate-registration error
    pool.serving("v2", "cuda:0/bfloat16")
    pool.serving("v3", "cuda:0/bfloat16")
    assert "instructrec_events" in families(stream.render())
    assert "instructrec_events_total 48.0" in stream.render().decode()  # the worker's own counters
    assert 'instructrec_dead_letters_total{reason="invalid-json"} 1.0' in stream.render().decode()
    assert "context_writes" not in stream.render().decode()  # only the fields it names
    assert {"instructrec_end_to_end_seconds", "instructrec_batch_requests", "instructrec_model_info"} <= set(
        families(pool.render())
    )
    text = pool.render().decode()
    assert 'version="v3"' in text and 'version="v2"' not in text  # one version served at a time
    assert pool2.render() != pool.render()


def test_counter_dataclasses_are_exposed_as_counters() -> None:
    @dataclass
    class Counters:
        news: int = 0
        dead_letters: dict[str, int] = field(default_factory=dict)

    counters = Counters()
    registry = counters_registry(counters, "alerts", "Alerts worker")
    counters.news = 4  # read at scrape time
    counters.dead_letters["too-late"] = 2
    text = generate_latest(registry).decode()
    assert "instructrec_alerts_news_total 4.0" in text
    assert 'instructrec_alerts_dead_letters_total{reason="too-late"} 2.0' in text
