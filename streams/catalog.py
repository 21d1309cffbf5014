"""Every stream worker's own full copy of the catalog, read straight from the catalog topic.

Faust's GlobalTable was meant for this, but with two workers in a group each one held only
the items of its own catalog partitions (found by tests/integration/test_scale_out.py:
history items and candidates silently went missing). So each worker reads every catalog
partition from the beginning itself, with a group-less confluent-kafka consumer on a
thread (its waits release the GIL), and keeps the newest record per item. The partitioned
``catalog`` agent still validates records, so a bad one is dead-lettered once, by the
worker that owns its partition, rather than once per worker.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from instructrec.kafka import EndWatch
from instructrec.logs import get_logger
from instructrec.settings import Settings
from schemas.exceptions import DecodeError
from schemas.records import CatalogItem
from schemas.topics import CATALOG

log = get_logger(__name__)


class CatalogReplica:
    """``items``: item id -> CatalogItem, in first-seen order (newest ids last)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.items: dict[str, CatalogItem] = {}
        self.ready = threading.Event()  # caught up with the topic as it was at start
        self.records = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="catalog-replica", daemon=True)

    def start(self) -> CatalogReplica:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def apply(self, value: bytes | None) -> bool:
        """One catalog record; False (and nothing changes) if it does not decode."""
        try:
            item: CatalogItem = CATALOG.codec.decode(value, self.settings.max_message_bytes)
        except DecodeError:
            return False
        if self.items.get(item.item_id) != item:
            self.items[item.item_id] = item
        self.records += 1
        return True

    def _run(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        s = self.settings
        topic = s.topics.catalog
        consumer = Consumer(
            {
                **s.confluent_config(),
                "group.id": f"catalog-replica-{uuid.uuid4().hex[:12]}",  # never joins: offsets are assigned
                "enable.auto.commit": False,
                "fetch.wait.max.ms": s.fetch_max_wait_ms,
                "enable.partition.eof": True,
            }
        )
        try:
            partitions = self._partitions(consumer, topic)
            consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
            # Caught up = every partition reported at its end once (instructrec.kafka.EndWatch);
            # records written later are read on as they come.
            ends = EndWatch(partitions)
            while not self._stop.is_set():
                for msg in consumer.consume(500, timeout=0.2):
                    if ends.record(msg):
                        self.apply(msg.value())
                if ends.reached and not self.ready.is_set():
                    self.ready.set()
                    log.info("catalog loaded", items=len(self.items), records=self.records)
        except Exception as exc:  # the worker must not run on silently without its catalog
            log.error("catalog replica failed", error=repr(exc))
            raise
        finally:
            consumer.close()

    @staticmethod
    def _partitions(consumer: Any, topic: str, timeout: float = 30.0) -> list[int]:
        deadline = time.monotonic() + timeout
        while True:
            meta = consumer.list_topics(topic, timeout=5)
            found = meta.topics.get(topic)
            if found is not None and found.error is None and found.partitions:
                return sorted(found.partitions)
            if time.monotonic() > deadline:
                raise RuntimeError(f"catalog topic {topic} not found")
            time.sleep(0.2)
