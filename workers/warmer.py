"""Pre-compute item embeddings from the catalog topic while the pool is idle, so a score
request costs one instruction encoding and a matrix product even for items it is the
first to see. Reads every catalog partition from the start (no consumer group); after a
model switch the new model's cache is warmed again."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from instructrec.kafka import poll_batch
from instructrec.logs import get_logger
from instructrec.settings import Settings
from schemas.exceptions import DecodeError
from schemas.topics import CATALOG

log = get_logger(__name__)


class CatalogWarmer:
    def __init__(
        self,
        settings: Settings,
        scorer: Callable[[], Any],
        lock: threading.Lock,
        is_idle: Callable[[], bool],
        chunk: int = 16,
    ) -> None:
        self.settings = settings
        self.scorer = scorer
        self.lock = lock
        self.is_idle = is_idle
        self.chunk = chunk
        self.stop = threading.Event()
        self.known: dict[str, str] = {}  # item id -> scoring text (latest record wins)
        self.pending: dict[str, str] = {}
        self.warmed = 0
        self._thread = threading.Thread(target=self._run, name="catalog-warmer", daemon=True)

    def start(self) -> CatalogWarmer:
        self._thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        s = self.settings
        topic = s.topics.catalog
        consumer = Consumer(
            {
                **s.confluent_config(),
                "group.id": f"{s.topic_prefix}warmer-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": s.client_fetch_max_wait_ms,
            }
        )
        try:
            meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
            if meta is None or meta.error is not None:
                log.warning("catalog topic not found; item embeddings are computed on demand", topic=topic)
                return
            consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
            current = self.scorer()
            while not self.stop.is_set():
                for msg in poll_batch(consumer, 500, 0.2 if not self.pending else 0.0):
                    if msg.error() is not None:
                        continue
                    try:
                        item = CATALOG.codec.decode(msg.value())
                    except DecodeError:
                        continue  # the stream worker dead-letters bad catalog records
                    text = item.scoring_text()
                    if self.known.get(item.item_id) != text:
                        self.known[item.item_id] = text
                        self.pending[item.item_id] = text
                if self.scorer() is not current:  # a new model version: its cache is empty
                    current = self.scorer()
                    self.pending = dict(self.known)
                if self.pending and self.is_idle():
                    self._warm_some(current)
                elif not self.pending:
                    self.stop.wait(0.05)
        except Exception as exc:  # warming is an optimisation: never take the pool down
            log.warning("catalog warmer stopped", error=repr(exc)[:300])
        finally:
            consumer.close()

    def _warm_some(self, scorer: Any) -> None:
        ids = list(self.pending)[: self.chunk]
        items = [(i, self.pending.pop(i)) for i in ids]
        with self.lock:
            scorer.item_vectors(items)
        self.warmed += len(items)
        if not self.pending:
            log.info("item embeddings warmed", items=len(self.known), total_warmed=self.warmed)
