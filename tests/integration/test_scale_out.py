"""Stream workers scale out by partitions: two processes in one consumer group share the
events and triggers topics. Kafka splits the partitions between them, each keeps the
context of its own partitions' users, and every trigger is planned exactly once from the
context of everything its user did before it."""

from __future__ import annotations

import re
import time
from pathlib import Path

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

pytestmark = pytest.mark.integration

ASSIGNED = re.compile(r"partitions assigned\s.*events=\[([0-9, ]*)\]")


def last_assignment(path: Path) -> set[int] | None:
    if not path.exists():
        return None
    found = ASSIGNED.findall(path.read_text(errors="replace"))
    return {int(p) for p in found[-1].split(",") if p.strip()} if found else None


def wait_for_split(procs: Processes, names: list[str], partitions: int, timeout: float) -> dict[str, set[int]]:
    """Until each worker's latest assignment is non-empty and together they hold every
    partition exactly once."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs.check()
        got = {n: last_assignment(procs.log_dir / f"{n}.log") for n in names}
        sets = [s for s in got.values() if s]
        whole = set(range(partitions))
        if len(sets) == len(names) and sum(map(len, sets)) == partitions and set().union(*sets) == whole:
            return {n: s for n, s in got.items() if s is not None}
        time.sleep(0.5)
    raise AssertionError(f"partitions never split between {names}:\n{tail_logs(procs)}")


def test_two_stream_workers_share_the_partitions_and_each_trigger_is_planned_once(broker, tmp_path):
    settings = make_settings(broker, tmp_path, partitions=4)
    create_topics(settings)
    procs = Processes(env_for(settings), tmp_path / "logs")
    names = ["stream-worker-a", "stream-worker-b"]
    requests: dict[str, list[ScoreRequest]] = {}
    dataset = load_ml100k(settings.data_dir)
    replayer = Replayer(settings)
    # The catalog first: the workers load it into their global table before they start.
    replayer.send_catalog(catalog_records(dataset))
    try:
        for n, name in enumerate(names):
            # Own web port and state directory each, as two hosts would have.
            procs.start(
                name,
                "stream-worker",
                env={
                    "INSTRUCTREC_WEB_PORT": str(settings.web_port + 1 + n),
                    "INSTRUCTREC_STATE_DIR": str(tmp_path / name),
                },
            )
        split = wait_for_split(procs, names, 4, timeout=120)

        events = [
            Event(user_id=x.user_id, item_id=x.item_id, event_type="view", ts=x.ts) for x in dataset.interactions[:3000]
        ]
        users = sorted({e.user_id for e in events})
        last = {e.user_id: e for e in events}
        # after_ts: a trigger on another topic may be fetched before its user's events are;
        # the contract is that it names the event it must see, and the worker waits for it.
        triggers = [
            Trigger(
                request_id=f"scale-{u}",
                user_id=u,
                ts=time.time(),
                k=5,
                after_ts=last[u].ts,
                after_item_id=last[u].item_id,
            )
            for u in users
        ]
        replayer.run(iter([*events, *triggers]), rate=0)

        consumer = Consumer(consumer_config(settings, "scale-out-check"))
        consumer.subscribe([settings.topics.score_requests])
        deadline = time.monotonic() + 120
        wanted = {t.request_id for t in triggers}
        while not wanted <= requests.keys() and time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=0.5):
                if msg.error() is None:
                    request = SCORE_REQUESTS.codec.decode(msg.value())
                    requests.setdefault(request.request_id, []).append(request)
        time.sleep(2)  # anything planned twice would arrive by now
        for msg in consumer.consume(500, timeout=1.0):
            if msg.error() is None:
                request = SCORE_REQUESTS.codec.decode(msg.value())
                requests.setdefault(request.request_id, []).append(request)
        consumer.close()
        # Still split: no rebalance happened while the work was done.
        assert {n: last_assignment(procs.log_dir / f"{n}.log") for n in names} == split
    finally:
        codes = procs.stop()
    assert codes == {name: 0 for name in names}, tail_logs(procs)

    assert wanted <= requests.keys(), f"{len(wanted - requests.keys())} triggers never planned\n{tail_logs(procs)}"
    assert all(len(v) == 1 for v in requests.values()), "a trigger was planned twice"
    # Each request was planned from its user's whole history, whichever worker owned it.
    for user in users:
        mine = [(e.item_id, e.event_type, e.ts) for e in events if e.user_id == user]
        context = apply_events(None, mine, settings.context_length)
        expected = [entry[0] for entry in recent_distinct(context, PlannerConfig().history_for_explanation)]
        request = requests[f"scale-{user}"][0]
        assert [h.item_id for h in request.history] == expected, (user, request.cold_start, len(request.candidates))
    # Both processes did real work: each one's log counts the events it applied.
    applied = [
        int(m.group(1))
        for name in names
        for m in [re.search(r"stream worker stopping\s.*\bevents=(\d+)", (procs.log_dir / f"{name}.log").read_text())]
        if m
    ]
    assert len(applied) == 2 and all(n > 0 for n in applied) and sum(applied) == len(events), applied
