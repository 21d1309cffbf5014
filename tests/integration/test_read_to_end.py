"""Reading a topic to its end through a broker that is slow to answer.

The stream worker reads its changelog partitions to their end after recovery (the embedded
profile's catch-up, streams/agents.py ``read_to_end``) and ``make chaos`` reads whole topics
to check them; the catalog replica and the pool's catalog warmer read the catalog to its end
before they report ready. On a loaded machine the broker's first answers can take longer than a few
empty polls; a read that takes quiet for the end then returns short, and the catch-up puts
older values back into the table. The broker here sits behind a proxy that holds back every
chunk it sends (instructrec/netproxy.py), so each answer comes late.
"""

from __future__ import annotations

import orjson
import pytest

from instructrec.broker import EmbeddedBroker
from instructrec.chaos import read_topic
from instructrec.kafka import create_topics, make_producer
from instructrec.netproxy import CuttableProxy
from instructrec.replay import Replayer, catalog_records
from model.data import load_ml100k
from streams.agents import read_to_end
from streams.catalog import CatalogReplica
from tests.integration.conftest import BrokerInfo, make_settings

pytestmark = pytest.mark.integration
KEYS, VERSIONS = 120, 3


def slow_broker() -> tuple[CuttableProxy, EmbeddedBroker]:  # a broker behind a proxy
    proxy = CuttableProxy(("127.0.0.1", 0))
    proxy.reserve()
    return proxy, EmbeddedBroker(advertised_port=proxy.port)


def test_a_slow_broker_makes_reads_to_the_end_slower_not_shorter(tmp_path):
    proxy, embedded = slow_broker()
    with embedded as broker, proxy:
        proxy.upstream = ("127.0.0.1", broker.port)
        settings = make_settings(BrokerInfo(broker.bootstrap_servers, "embedded"), tmp_path, partitions=2)
        topic = f"{settings.topic_prefix}user-context-changelog"
        create_topics(settings, extra=[topic])
        producer = make_producer(settings)
        for version in range(VERSIONS):  # each key written three times; the last write counts
            for i in range(KEYS):
                value = orjson.dumps({"user": i, "version": version})
                producer.produce(topic, key=f"user-{i}".encode(), value=value, partition=i % 2)
            producer.flush(30)
        want = {f"user-{i}".encode(): orjson.dumps({"user": i, "version": VERSIONS - 1}) for i in range(KEYS)}

        assert read_to_end(settings, topic, [0, 1]) == want  # a broker at normal speed

        proxy.delay_s = 0.8  # every answer now comes 0.8 s late: longer than three empty polls
        assert read_to_end(settings, topic, [0, 1]) == want
        records = read_topic(settings, topic)
        assert sorted(records) == [0, 1]
        assert sum(map(len, records.values())) == KEYS * VERSIONS
        for partition, msgs in records.items():
            assert [m.offset() for m in msgs] == list(range(len(msgs))), partition


def test_the_catalog_replica_is_ready_only_with_the_whole_catalog_on_a_slow_broker(tmp_path):
    proxy, embedded = slow_broker()
    with embedded as broker, proxy:
        proxy.upstream = ("127.0.0.1", broker.port)
        settings = make_settings(BrokerInfo(broker.bootstrap_servers, "embedded"), tmp_path, partitions=2)
        create_topics(settings)
        items = catalog_records(load_ml100k(settings.data_dir))
        Replayer(settings).send_catalog(items)  # batched as any producer would
        proxy.delay_s = 0.8
        replica = CatalogReplica(settings).start()
        try:
            assert replica.ready.wait(180), "the replica never caught up"
            assert len(replica.items) == len(items)  # at the moment it said ready
        finally:
            replica.stop()
