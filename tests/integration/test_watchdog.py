"""A worker that is assigned but never fed again recovers by itself (instructrec/watchdog.py).

The starve failpoints make the stream worker's and the pool's consumers drop every record
they fetch after the first few, the way the members stuck on the embedded broker looked
from outside (assigned, ready, never given another record). Each watchdog must notice
within its stall time, fetch the partition again, then stop gracefully and exit 75; the
supervisor (instructrec.runner.Processes) starts it again, and every trigger is answered.
"""

from __future__ import annotations

import time

import pytest

from instructrec.kafka import create_topics
from instructrec.replay import Replayer, catalog_records
from instructrec.results import ResultCollector
from instructrec.runner import Processes
from instructrec.watchdog import RESTART_EXIT_CODE
from model.data import load_ml100k
from tests.integration.conftest import env_for, make_settings, tail_logs, user_traffic
from tests.integration.test_outage import wait_status

pytestmark = pytest.mark.integration

STALL_S = 3.0


def _system(broker, tmp_path):
    """Topics with the catalog in them, processes (not started) with a 3 s stall time, a
    result collector and a replayer."""
    settings = make_settings(broker, tmp_path, partitions=2)
    create_topics(settings)
    dataset = load_ml100k(settings.data_dir)
    procs = Processes({**env_for(settings), "INSTRUCTREC_FEED_STALL_S": str(STALL_S)}, tmp_path / "logs")
    collector = ResultCollector(settings).start()
    replayer = Replayer(settings)
    replayer.send_catalog(catalog_records(dataset))
    return settings, dataset, procs, collector, replayer


def test_starved_workers_are_noticed_fetched_again_and_restarted(broker, tmp_path):
    settings, dataset, procs, collector, replayer = _system(broker, tmp_path)
    try:
        procs.start("stream-worker", "stream-worker")
        procs.start("scoring-pool", "pool", env={"INSTRUCTREC_FAILPOINTS": "pool.starve:3"})
        wait_status(settings.web_port, "/ready/", 200, 120)
        # First traffic: the pool scores 3 requests, then starves.
        events, triggers = user_traffic(dataset, "first", users=8, per_user=4)
        replayer.run(iter([*events, *triggers]), rate=0)
        sent = {t.request_id for t in triggers}
        # The stream worker is restarted with a failpoint of its own: it takes 5 records of
        # the next traffic and starves.
        procs.procs["stream-worker"].terminate()
        assert procs.procs["stream-worker"].wait(60) == 0
        procs.start("stream-worker", "stream-worker", env={"INSTRUCTREC_FAILPOINTS": "stream.starve:5"})
        wait_status(settings.web_port, "/ready/", 200, 120)
        events, triggers = user_traffic(dataset, "second", users=8, per_user=4)
        replayer.run(iter([*events, *triggers]), rate=0)
        sent |= {t.request_id for t in triggers}
        started = time.monotonic()
        deadline = started + 150
        while not sent <= set(collector.results) and time.monotonic() < deadline:
            time.sleep(0.5)
        took = time.monotonic() - started
        assert sent <= set(collector.results), (
            f"unanswered: {sorted(sent - set(collector.results))}\n{tail_logs(procs)}"
        )
    finally:
        collector.close()
        codes = procs.stop()
    assert codes == {"stream-worker": 0, "scoring-pool": 0}, tail_logs(procs)
    # Each was restarted exactly once, by the supervisor, after asking for it with exit 75.
    assert procs.restarts == {"stream-worker": 1, "scoring-pool": 1}, (procs.restarts, tail_logs(procs))
    for name in ("stream-worker", "scoring-pool"):
        log = (tmp_path / "logs" / f"{name}.log").read_text()
        assert "failpoint hit: starving from now on" in log
        assert "partition not fed: fetching it again" in log, name
        # The records were there for any other client: the diagnosis says so.
        assert "fresh_client_gets_it=True" in log, name
        assert "stopping to be restarted" in log and f"exit_code={RESTART_EXIT_CODE}" in log, name
    # Noticed (stall), fetched again (stall), restarted and caught up: well inside a minute.
    assert took < 60, took


def test_a_send_never_acknowledged_restarts_the_worker_and_its_outbox_is_sent(broker, tmp_path):
    """A lost acknowledgement (Faust's producer would wait 20 minutes): the send is bounded
    by the stall time, the worker restarts, and its recovery sends the outbox again."""
    settings, dataset, procs, collector, replayer = _system(broker, tmp_path)
    sent: set[str] = set()
    try:
        procs.start("stream-worker", "stream-worker", env={"INSTRUCTREC_FAILPOINTS": "stream.hang-send:1"})
        procs.start("scoring-pool", "pool")
        wait_status(settings.web_port, "/ready/", 200, 120)
        for step in ("first", "second"):
            events, triggers = user_traffic(dataset, step, users=6, per_user=3)
            replayer.run(iter([*events, *triggers]), rate=0)
            sent |= {t.request_id for t in triggers}
            time.sleep(1.0)
        deadline = time.monotonic() + 120
        while not sent <= set(collector.results) and time.monotonic() < deadline:
            time.sleep(0.5)
        unanswered = sorted(sent - set(collector.results))
        assert not unanswered, f"unanswered: {unanswered}\n{tail_logs(procs)}"
    finally:
        collector.close()
        codes = procs.stop()
    assert codes == {"stream-worker": 0, "scoring-pool": 0}, tail_logs(procs)
    assert procs.restarts == {"stream-worker": 1}, (procs.restarts, tail_logs(procs))
    log = (tmp_path / "logs" / "stream-worker.log").read_text()
    assert "score requests not acknowledged in time" in log
    assert "resending recovered score requests" in log  # the outbox, not a re-plan
