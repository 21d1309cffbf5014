"""Prometheus metrics through a running system (instructrec/metrics.py): the stream
worker's ``/metrics/`` on its web port and the pool's ``/metrics`` on its health port
count what was sent through them — events, triggers, results, a dead letter by reason —
and their latency histograms hold one observation per answered trigger. And the stream
worker's log lines for a trigger carry its topic, partition and offset."""

from __future__ import annotations

import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from instructrec.kafka import create_topics, make_producer
from instructrec.replay import Replayer, catalog_records
from instructrec.results import ResultCollector
from instructrec.runner import Processes
from model.data import load_ml100k
from tests.integration.conftest import env_for, make_settings, tail_logs, user_traffic

pytestmark = pytest.mark.integration


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition: (name, sorted labels) -> value."""
    with urllib.request.urlopen(url, timeout=10) as reply:
        assert reply.status == 200 and reply.headers["Content-Type"].startswith("text/plain")
        body = reply.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def test_metrics_count_what_went_through(broker, tmp_path):
    settings = make_settings(broker, tmp_path, partitions=2)
    create_topics(settings)
    dataset = load_ml100k(settings.data_dir)
    procs = Processes(env_for(settings), tmp_path / "logs")
    collector = ResultCollector(settings).start()
    replayer = Replayer(settings)
    replayer.send_catalog(catalog_records(dataset))
    events, triggers = user_traffic(dataset, "metrics", users=8, per_user=6)
    stream_url = f"http://127.0.0.1:{settings.web_port}/metrics/"
    pool_url = f"http://127.0.0.1:{settings.pool_health_port}/metrics"
    try:
        procs.start("stream-worker", "stream-worker")
        procs.start("scoring-pool", "pool")
        replayer.run(iter([*events, *triggers]), rate=0)
        producer = make_producer(settings)
        producer.produce(settings.topics.events, key=b"1", value=b"not json")
        assert producer.flush(30) == 0
        wanted = {t.request_id for t in triggers}
        assert collector.wait_for(wanted, 180), tail_logs(procs)
        deadline = time.monotonic() + 30  # counters move with the processing, lag every 5 s
        while True:
            stream, pool = scrape(stream_url), scrape(pool_url)
            settled = stream.get(("instructrec_dead_letters_total", (("reason", "invalid-json"),))) == 1 and any(
                name == "instructrec_consumer_lag" for name, _ in stream
            )
            if settled or time.monotonic() > deadline:
                break
            time.sleep(1)
    finally:
        collector.close()
        codes = procs.stop()
    assert codes == {"stream-worker": 0, "scoring-pool": 0}, tail_logs(procs)
    n = len(triggers)
    assert stream[("instructrec_events_total", ())] == len(events)
    assert stream[("instructrec_triggers_total", ())] == n
    assert stream[("instructrec_score_requests_total", ())] == n
    assert stream[("instructrec_stream_stage_seconds_count", ())] == n
    assert stream[("instructrec_dead_letters_total", (("reason", "invalid-json"),))] == 1
    assert stream[("instructrec_table_keys", (("table", "user-context"),))] == n  # one context per user
    lags = {labels: v for (name, labels), v in stream.items() if name == "instructrec_consumer_lag"}
    assert lags and all(v >= 0 for v in lags.values()), lags
    assert pool[("instructrec_results_total", (("kind", "recommendation"),))] == n
    assert pool[("instructrec_end_to_end_seconds_count", ())] == n
    assert pool[("instructrec_queue_seconds_count", ())] == n
    assert 0 < pool[("instructrec_end_to_end_seconds_sum", ())] < n * 60
    batches = pool[("instructrec_batch_requests_count", ())]
    assert 1 <= batches <= n and pool[("instructrec_batch_requests_sum", ())] == n
    assert pool[("instructrec_scoring_seconds_count", ())] == batches
    assert pool[("instructrec_model_info", (("device", "cpu/float32"), ("version", "pretrained-1")))] == 1
    assert pool[("instructrec_queue_depth", ())] == 0
    # Every line of a trigger's processing carries where it came from (structlog contextvars).
    planned = [
        line
        for line in (tmp_path / "logs" / "stream-worker.log").read_text().splitlines()
        if "score request planned" in line
    ]
    assert len(planned) == n, planned
    assert all(
        f"topic={settings.topics.triggers}" in line and " partition=" in line and " offset=" in line for line in planned
    )
