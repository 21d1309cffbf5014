"""The scoring pool alone on a real broker with the real model: backpressure and a
graceful drain on SIGTERM (finish, publish, commit, exit 0), then a new member carries on
without re-scoring anything."""

from __future__ import annotations

import signal

import pytest

from instructrec.bench import real_requests
from instructrec.kafka import create_topics, make_producer
from instructrec.results import ResultCollector
from instructrec.runner import Processes
from model.data import load_ml100k
from schemas.topics import SCORE_REQUESTS
from tests.integration.conftest import env_for, make_settings, tail_logs

pytestmark = pytest.mark.integration

N = 200


def test_pool_pauses_under_load_and_drains_on_sigterm_without_loss_or_rescoring(broker, tmp_path):
    settings = make_settings(broker, tmp_path)
    create_topics(settings)
    env = env_for(settings)
    env.update(INSTRUCTREC_BATCH_QUEUE="8", INSTRUCTREC_BATCH_MAX_PAIRS="400")
    procs = Processes(env, tmp_path / "logs")
    collector = ResultCollector(settings).start()
    try:
        requests = real_requests(load_ml100k(settings.data_dir), N, 100)
        producer = make_producer(settings)
        for r in requests:
            producer.produce(
                settings.topics.score_requests, key=SCORE_REQUESTS.key_of(r), value=SCORE_REQUESTS.codec.encode(r)
            )
        producer.flush(30)
        ids = {r.request_id for r in requests}

        first = procs.start("pool-1", "pool")
        assert collector.wait_for(lambda: len(collector.results) >= 20, 180), tail_logs(procs)
        first.send_signal(signal.SIGTERM)
        assert first.wait(60) == 0, tail_logs(procs)
        done_before = set(collector.results)
        assert 20 <= len(done_before) < N  # stopped mid-way, not after everything

        procs.start("pool-2", "pool")
        assert collector.wait_for(ids, 180), tail_logs(procs)
        assert collector.duplicates == 0  # what the first member published, it committed
        log = (tmp_path / "logs" / "pool-1.log").read_text()
        assert "backpressure: partitions paused" in log
        for rid in ids:
            rec = collector.results[rid]
            assert len(rec.items) == 10 and rec.model.version
    finally:
        collector.close()
        procs.stop()
