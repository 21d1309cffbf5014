"""Embed the catalog before a pool member takes score requests, and every new catalog item
as it arrives, so a score request costs one instruction encoding and a matrix product
even for items it is the first to name.

The warmer reads every catalog partition from the start (no consumer group). Once every
partition has been reported at its end (instructrec.kafka.EndWatch), it embeds what
the model's store (model/item_store.py) does not already hold, saves the new vectors and
sets ``caught_up``: the member subscribes to score requests and reports ready only then.
Afterwards new and changed items are embedded between batches, and the vectors saved
every ``SAVE_EVERY_S``. A new model version is warmed (``warm``) before it is swapped in.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from instructrec.health import Readiness
from instructrec.kafka import EndWatch, poll_batch
from instructrec.logs import get_logger
from instructrec.settings import Settings
from schemas.exceptions import DecodeError
from schemas.topics import CATALOG

log = get_logger(__name__)
CHUNK = 32  # items embedded per hold of the model lock: scoring waits at most one chunk
SAVE_EVERY_S = 5.0
TOPIC_RETRY_S = 5.0


class CatalogWarmer:
    def __init__(
        self, settings: Settings, scorer: Callable[[], Any], lock: threading.Lock, readiness: Readiness
    ) -> None:
        self.settings = settings
        self.scorer = scorer
        self.lock = lock
        self.readiness = readiness
        self.stop = threading.Event()
        self.caught_up = threading.Event()
        self._known_lock = threading.Lock()
        self.known: dict[str, str] = {}  # item id -> scoring text (latest record wins)
        self.warmed = 0
        self._thread = threading.Thread(target=self._run, name="catalog-warmer", daemon=True)

    def start(self) -> CatalogWarmer:
        self._thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        self._thread.join(timeout=10)
        self._save(self.scorer())

    def warm(self, scorer: Any) -> int:
        """Embed every known catalog item ``scorer`` has neither cached nor stored (a new
        model version, before it serves); returns how many were computed."""
        with self._known_lock:
            items = list(self.known.items())
        return self._embed(scorer, scorer.missing(items))

    def _embed(self, scorer: Any, items: list[tuple[str, str]]) -> int:
        for start in range(0, len(items), CHUNK):
            if self.stop.is_set():
                break
            with self.lock:
                scorer.item_vectors(items[start : start + CHUNK])
            self.warmed += len(items[start : start + CHUNK])
        return len(items)

    def _save(self, scorer: Any) -> None:
        try:
            saved = scorer.save_store()
        except OSError as exc:  # a full or read-only disk costs the next start, not this run
            log.warning("item embeddings not saved", error=repr(exc)[:300])
            return
        if saved:
            log.debug("item embeddings saved", vectors=saved)

    def _ready(self, detail: str) -> None:
        if not self.caught_up.is_set():
            self.readiness.set("catalog", True, detail)
            self.caught_up.set()

    def _run(self) -> None:
        s = self.settings
        consumer = Consumer(
            {
                **s.confluent_config(),
                "group.id": f"{s.topic_prefix}warmer-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": s.client_fetch_max_wait_ms,
                "enable.partition.eof": True,
            }
        )
        try:
            self._follow(consumer)
        except Exception as exc:  # scoring embeds what it lacks on demand: never take the pool down
            log.warning("catalog warmer stopped; items are embedded on demand", error=repr(exc)[:300])
            self._ready(f"warmer stopped: {exc!r}"[:200])
        finally:
            consumer.close()

    def _follow(self, consumer: Consumer) -> None:
        topic = self.settings.topics.catalog
        ends = self._assign(consumer, topic)
        while ends is None and not self.stop.is_set():
            self._ready("no catalog topic yet: items are embedded on demand")
            self.stop.wait(TOPIC_RETRY_S)
            ends = self._assign(consumer, topic)
        pending: dict[str, str] = {}
        last_save = time.monotonic()
        while not self.stop.is_set():
            batch = poll_batch(consumer, 500, 0.2)
            for msg in batch:
                if ends is None or not ends.record(msg):
                    continue
                try:
                    item = CATALOG.codec.decode(msg.value())
                except DecodeError:
                    continue  # the stream worker dead-letters bad catalog records
                text = item.scoring_text()
                with self._known_lock:
                    changed = self.known.get(item.item_id) != text
                    self.known[item.item_id] = text
                if changed:
                    pending[item.item_id] = text
            scorer = self.scorer()
            if not self.caught_up.is_set():
                if ends is not None and not ends.reached:
                    continue  # still reading the catalog as it stood at start
                started = time.monotonic()
                computed = self._embed(scorer, scorer.missing(list(pending.items())))
                pending.clear()
                self._save(scorer)
                log.info(
                    "catalog embedded",
                    items=len(self.known),
                    computed=computed,
                    loaded=len(self.known) - computed,
                    seconds=round(time.monotonic() - started, 2),
                )
                self._ready(f"{len(self.known)} items embedded")
                continue
            if pending:
                self._embed(scorer, scorer.missing(list(pending.items())))
                pending.clear()
            if time.monotonic() - last_save >= SAVE_EVERY_S:
                self._save(scorer)  # also what scoring computed on demand
                last_save = time.monotonic()

    def _assign(self, consumer: Consumer, topic: str) -> EndWatch | None:
        """Read ``topic`` from the start (None: no such topic yet)."""
        try:
            meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        except KafkaException:
            return None
        if meta is None or meta.error is not None or not meta.partitions:
            return None
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
        return EndWatch(meta.partitions)
