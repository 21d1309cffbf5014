"""The per-user context comes back whole after a restart: every user's context as the
restarted stream worker recovers it from the changelog equals the context before. (On the
embedded broker this needs the catch-up read after recovery: Tansu sometimes reports a
changelog's high watermark one record short, and Faust recovers only up to it.)"""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer

from instructrec.kafka import consumer_config, create_topics
from instructrec.replay import Replayer, catalog_records
from instructrec.runner import Processes
from model.context import apply_events, recent_distinct
from model.data import load_ml100k
from schemas.records import Event, ScoreRequest, Trigger
from schemas.topics import SCORE_REQUESTS
from streams.planner import PlannerConfig
from tests.integration.conftest import env_for, make_settings, tail_logs
from tests.integration.test_scale_out import wait_for_split

pytestmark = pytest.mark.integration


def ask_everyone(replayer: Replayer, consumer: Consumer, users: list[str], last: dict[str, Event], tag: str):
    """One trigger per user (naming the user's last event, so it sees it); their score
    requests by user."""
    triggers = {
        f"{tag}-{u}": Trigger(
            request_id=f"{tag}-{u}", user_id=u, ts=time.time(), k=5, after_ts=last[u].ts, after_item_id=last[u].item_id
        )
        for u in users
    }
    replayer.run(iter(triggers.values()), rate=0)
    got: dict[str, ScoreRequest] = {}
    deadline = time.monotonic() + 120
    while len(got) < len(triggers) and time.monotonic() < deadline:
        for msg in consumer.consume(500, timeout=0.5):
            if msg.error() is None:
                request = SCORE_REQUESTS.codec.decode(msg.value())
                if request.request_id in triggers:
                    got[request.user_id] = request
    return got


def test_every_users_context_is_recovered_after_a_restart(broker, tmp_path):
    settings = make_settings(broker, tmp_path, partitions=4)
    create_topics(settings)
    dataset = load_ml100k(settings.data_dir)
    replayer = Replayer(settings)
    replayer.send_catalog(catalog_records(dataset))
    procs = Processes(env_for(settings), tmp_path / "logs")
    consumer = Consumer(consumer_config(settings, "recovery-check"))
    consumer.subscribe([settings.topics.score_requests])
    try:
        procs.start("stream-worker", "stream-worker")
        wait_for_split(procs, ["stream-worker"], 4, timeout=120)
        events = [
            Event(user_id=x.user_id, item_id=x.item_id, event_type="view", ts=x.ts) for x in dataset.interactions[:8000]
        ]
        replayer.run(iter(events), rate=0)
        users = sorted({e.user_id for e in events})
        last = {e.user_id: e for e in events}
        before = ask_everyone(replayer, consumer, users, last, "before")
        assert len(before) == len(users), tail_logs(procs)

        procs.procs["stream-worker"].terminate()
        assert procs.procs["stream-worker"].wait(60) == 0
        log = procs.log_dir / "stream-worker.log"
        log.rename(log.with_suffix(".first.log"))
        procs.start("stream-worker", "stream-worker")
        wait_for_split(procs, ["stream-worker"], 4, timeout=120)
        after = ask_everyone(replayer, consumer, users, last, "after")
        assert len(after) == len(users), tail_logs(procs)
    finally:
        consumer.close()
        codes = procs.stop()
    assert codes == {"stream-worker": 0}, tail_logs(procs)

    n = PlannerConfig().history_for_explanation
    wrong = {}
    for user in users:
        context = apply_events(None, [(e.item_id, e.event_type, e.ts) for e in events if e.user_id == user], 50)
        expected = [entry[0] for entry in recent_distinct(context, n)]
        assert [h.item_id for h in before[user].history] == expected, user
        if [h.item_id for h in after[user].history] != expected:
            wrong[user] = ([h.item_id for h in after[user].history], expected)
    assert not wrong, f"{len(wrong)} of {len(users)} users recovered stale: {list(wrong.items())[:3]}"
    for user in users:
        # Everything the user has seen is still excluded from recall after the restart.
        assert not {c.item_id for c in after[user].candidates} & {e.item_id for e in events if e.user_id == user}
