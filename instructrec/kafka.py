"""Thin confluent-kafka plumbing shared by the pools, the tools and the admin commands."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from instructrec.errors import BrokerError
from instructrec.settings import Settings
from schemas.topics import ALL_TOPICS


def make_producer(settings: Settings, **overrides: Any) -> Producer:
    conf = {
        **settings.confluent_config(),
        "linger.ms": 2,
        # Java-compatible key hashing (as aiokafka/Faust and Kafka's own clients use),
        # so every producer puts a user's records in the same partition number.
        "partitioner": "murmur2_random",
        "enable.idempotence": not settings.embedded,
        "acks": "all",
        **overrides,
    }
    return Producer(conf)


def consumer_config(settings: Settings, group: str, **overrides: Any) -> dict[str, Any]:
    conf = {
        **settings.confluent_config(),
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": int(settings.session_timeout * 1000),
        "heartbeat.interval.ms": max(500, int(settings.session_timeout * 1000 / 6)),
        "fetch.wait.max.ms": settings.client_fetch_max_wait_ms,
        # librdkafka's rebalance timeout is max.poll.interval.ms (see Settings.rebalance_timeout_s)
        "max.poll.interval.ms": int(settings.rebalance_timeout_s * 1000),
    }
    conf.update(overrides)
    return conf


def create_topics(settings: Settings, extra: Iterable[str] = (), timeout: float = 30.0) -> list[str]:
    """Create every topic of the contract (idempotent). Returns the names created now."""
    admin = AdminClient(settings.confluent_config())
    wanted = {settings.topics.name(spec): spec for spec in ALL_TOPICS}
    for name in extra:
        wanted.setdefault(name, None)  # type: ignore[arg-type]
    deadline = time.monotonic() + timeout
    while True:
        try:
            existing = set(admin.list_topics(timeout=5).topics)
            break
        except KafkaException as exc:
            if time.monotonic() > deadline:
                raise BrokerError(f"cannot reach Kafka at {settings.bootstrap_servers}: {exc}") from exc
            time.sleep(0.5)
    new = []
    for name, spec in wanted.items():
        if name in existing:
            continue
        config = {"cleanup.policy": "compact"} if spec is not None and spec.compacted and not settings.embedded else {}
        new.append(
            NewTopic(
                name, num_partitions=settings.partitions, replication_factor=settings.replication_factor, config=config
            )
        )
    created = []
    if new:
        for name, fut in admin.create_topics(new, operation_timeout=timeout).items():
            try:
                fut.result()
                created.append(name)
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise BrokerError(f"could not create topic {name}: {exc}") from exc
    return created


def poll_batch(consumer: Consumer, max_messages: int, timeout: float) -> list[Message]:
    """Up to ``max_messages``, returning as soon as one has arrived.

    ``Consumer.consume(n, timeout)`` waits the whole timeout unless n messages arrive, which
    adds up to ``timeout`` of latency to every quiet-time message; this waits only for the
    first, then takes what is already fetched.
    """
    first = consumer.poll(timeout)
    if first is None:
        return []
    if max_messages <= 1:
        return [first]
    return [first, *consumer.consume(max_messages - 1, timeout=0)]


def high_watermarks(
    consumer: Consumer, partitions: Iterable[tuple[str, int]], timeout: float = 5.0
) -> dict[tuple[str, int], int | None]:
    """Each partition's high watermark, asked of the broker now (None where it did not
    answer). On the embedded broker it can be short of the real end: a lower bound."""
    ends: dict[tuple[str, int], int | None] = {}
    for topic, partition in partitions:
        try:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout, cached=False)
        except (KafkaException, RuntimeError):  # RuntimeError: the client was closed (shutdown)
            high = None
        ends[(topic, partition)] = high if high is not None and high >= 0 else None
    return ends


def assigned_consumer(settings: Settings, purpose: str, **overrides: Any) -> Consumer:
    """A consumer that is assigned partitions and never joins a group (its group id is
    unique and unused), for the tools' and checks' own reads."""
    return Consumer(
        {
            **settings.confluent_config(),
            "group.id": f"{purpose}-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": settings.client_fetch_max_wait_ms,
            **overrides,
        }
    )


def broker_serves(settings: Settings, topic: str, partition: int, offset: int, timeout: float = 3.0) -> bool | None:
    """Does a fresh client get the record at ``offset``? (Tells a broker that withholds
    records from a client that stopped asking, when a partition is found unfed.)"""
    consumer = assigned_consumer(settings, "feed-check")
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                return True
        return False
    except KafkaException:
        return None
    finally:
        consumer.close()


class EndWatch:
    """Whether a consumer reading ``partitions`` has reached their end: each partition
    reported at its end (librdkafka's partition-EOF event, sent when a fetch leaves the
    consumer at the high watermark of that fetch's answer; the consumer needs
    ``enable.partition.eof``). Unlike a quiet poll, this cannot come early because the
    broker is slow to answer, and unlike the end offsets listed by the embedded broker
    (which count batches, not records) the fetch's watermark is the partition's end."""

    def __init__(self, partitions: Iterable[int]) -> None:
        self.waiting = set(partitions)

    def record(self, msg: Message) -> bool:
        """True for a record; an end-of-partition event marks its partition reached."""
        err = msg.error()
        if err is None:
            return True
        if err.code() == KafkaError._PARTITION_EOF:
            self.waiting.discard(msg.partition() or 0)
        return False

    @property
    def reached(self) -> bool:
        return not self.waiting


def read_partitions(
    settings: Settings,
    topic: str,
    partitions: Iterable[int],
    *,
    idle_s: float = 1.0,
    timeout: float = 180.0,
) -> dict[int, list[Message]]:
    """Every record of ``partitions`` of ``topic`` from the beginning, per partition in
    offset order: read until every partition has been reported at its end (EndWatch) and
    then ``idle_s`` has passed with nothing new (a record the broker had not yet counted
    in its watermark). A broker slow to answer (a loaded machine, a client still
    connecting) makes the read take longer, never end short; one that does not report
    the ends within ``timeout`` raises BrokerError."""
    wanted = sorted(set(partitions))
    consumer = assigned_consumer(settings, "read", **{"enable.partition.eof": True})
    out: dict[int, list[Message]] = {p: [] for p in wanted}
    ends = EndWatch(wanted)
    deadline = time.monotonic() + timeout
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in wanted])
        last_news = time.monotonic()
        while not ends.reached or time.monotonic() - last_news < idle_s:
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"read of {topic} not at its end after {timeout:.0f}s: partitions {sorted(ends.waiting)} unfinished"
                )
            for msg in consumer.consume(1000, timeout=0.2):
                if ends.record(msg):
                    out[msg.partition() or 0].append(msg)
                    last_news = time.monotonic()
    finally:
        consumer.close()
    for msgs in out.values():
        msgs.sort(key=lambda m: m.offset() or 0)
    return out
