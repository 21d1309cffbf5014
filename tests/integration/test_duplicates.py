"""What a subscriber dedupes on, through the running system: ``recommendation_id`` names
one (user, request, model version), so a request id reused by many users gives as many
ids; and every copy of one id has the same content, whichever batch scored it."""

from __future__ import annotations

import random
import time
from collections import defaultdict

import pytest

from instructrec.bench import real_requests
from instructrec.chaos import content_of, how_copies_differ, read_topic
from instructrec.kafka import create_topics, make_producer
from instructrec.replay import Replayer, catalog_records
from instructrec.results import ResultCollector
from instructrec.runner import Processes
from model.data import load_ml100k
from schemas.records import Trigger
from schemas.topics import RECOMMENDATIONS, SCORE_REQUESTS
from tests.integration.conftest import env_for, make_settings, tail_logs, user_traffic
from workers.ranking import recommendation_id

pytestmark = pytest.mark.integration


def copies_by_id(settings) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = defaultdict(list)
    for msgs in read_topic(settings, settings.topics.recommendations).values():
        for msg in msgs:
            out[RECOMMENDATIONS.codec.decode(msg.value()).recommendation_id].append(msg.value())
    return out


def test_one_request_id_from_many_users_gives_one_id_each_and_a_copy_keeps_its_id(broker, tmp_path):
    settings = make_settings(broker, tmp_path, partitions=2)
    create_topics(settings)
    dataset = load_ml100k(settings.data_dir)
    replayer = Replayer(settings)
    replayer.send_catalog(catalog_records(dataset))
    events, _ = user_traffic(dataset, "shared", users=40, per_user=5)
    users = sorted({e.user_id for e in events})
    triggers = [Trigger(request_id="shared-1", user_id=u, ts=time.time(), k=5) for u in users]
    procs = Processes(env_for(settings), tmp_path / "logs")
    collector = ResultCollector(settings).start()
    try:
        procs.start("stream-worker", "stream-worker")
        procs.start("scoring-pool", "pool")
        replayer.run(iter([*events, *triggers]), rate=0)
        deadline = time.monotonic() + 240
        while len(copies_by_id(settings)) < len(users):
            procs.check()
            assert time.monotonic() < deadline, tail_logs(procs)
            time.sleep(1)
        first = copies_by_id(settings)
        records = {rid: RECOMMENDATIONS.codec.decode(values[0]) for rid, values in first.items()}
        assert sorted(r.user_id for r in records.values()) == users  # one result per user, none lost
        for rid, rec in records.items():
            assert rec.request_id == "shared-1"
            assert rid == recommendation_id(rec.user_id, "shared-1", rec.model.version)

        # A redelivered score request (what a stream worker re-sends after a crash) is
        # answered again under the same id, with the same content.
        request = next(iter(read_topic(settings, settings.topics.score_requests).values()))[0]
        producer = make_producer(settings)
        producer.produce(settings.topics.score_requests, key=request.key(), value=request.value())
        assert producer.flush(30) == 0
        again = SCORE_REQUESTS.codec.decode(request.value())
        rid = recommendation_id(again.user_id, again.request_id, records[next(iter(records))].model.version)
        while len(copies_by_id(settings).get(rid, [])) < 2:
            assert time.monotonic() < deadline, tail_logs(procs)
            time.sleep(1)
        copies = copies_by_id(settings)[rid]
        assert len({content_of(c) for c in copies}) == 1
    finally:
        collector.close()
        codes = procs.stop()
    assert codes == {"stream-worker": 0, "scoring-pool": 0}, tail_logs(procs)


def test_a_request_scored_again_in_other_batches_gets_the_same_result(broker, tmp_path):
    """60 score requests, then the same 60 again in another order among 60 others: each
    is scored twice in batches of other compositions, and both copies are identical."""
    settings = make_settings(broker, tmp_path)
    create_topics(settings)
    env = env_for(settings)
    env.update(INSTRUCTREC_BATCH_MAX_PAIRS="1200")  # several requests of 100 candidates a batch
    procs = Processes(env, tmp_path / "logs")
    collector = ResultCollector(settings).start()
    dataset = load_ml100k(settings.data_dir)
    requests = real_requests(dataset, 120, 100)
    twice, others = requests[:60], requests[60:]
    producer = make_producer(settings)

    def send(batch):
        for r in batch:
            producer.produce(
                settings.topics.score_requests, key=SCORE_REQUESTS.key_of(r), value=SCORE_REQUESTS.codec.encode(r)
            )
        assert producer.flush(30) == 0

    try:
        procs.start("scoring-pool", "pool")
        send(twice)
        assert collector.wait_for({r.request_id for r in twice}, 240), tail_logs(procs)
        mixed = list(reversed(twice)) + others
        random.Random(5).shuffle(mixed)
        send(mixed)
        assert collector.wait_for({r.request_id for r in requests}, 240), tail_logs(procs)
        assert collector.wait_for(lambda: collector.duplicates >= len(twice), 60), collector.duplicates
    finally:
        collector.close()
        codes = procs.stop()
    assert codes == {"scoring-pool": 0}, tail_logs(procs)
    copies = copies_by_id(settings)
    repeated = {rid: c for rid, c in copies.items() if len(c) > 1}
    assert len(repeated) == len(twice)
    differing = [rid for rid, c in repeated.items() if len({content_of(v) for v in c}) > 1]
    assert differing == [], (
        f"{len(differing)} of {len(repeated)} re-scored requests changed",
        [how_copies_differ(rid, set(repeated[rid])) for rid in differing],
    )
