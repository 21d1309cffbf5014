"""Replay a real interaction log (ml-100k) as live catalog, event and trigger streams.

Ratings become events (4-5 stars: ``click``, else ``view``), in timestamp order with ties
broken by file order. Every ``trigger_every``-th event that belongs to a user with enough
history is followed by a trigger for that user, carrying that event as ``after_ts``/``after_item_id``
(the refresh must reflect the click that prompted it); some triggers carry a free-text
intention, some an explicit candidate list, and some are for brand-new users (cold start).
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from confluent_kafka import Producer

from instructrec.kafka import make_producer
from instructrec.settings import Settings
from model.data import Dataset
from schemas.records import CatalogItem, Event, Trigger
from schemas.topics import CATALOG, EVENTS, TRIGGERS

INTENTIONS = (
    "something light for tonight",
    "a 90s comedy",
    "a scary horror film",
    "a classic sci-fi adventure",
    "an animated movie for the kids",
    "a romantic drama",
    "an action thriller with a good plot",
    "a documentary",
)


@dataclass(frozen=True)
class ReplayConfig:
    start: int = 0  # position in the time-ordered log
    events: int | None = None  # how many events; None: to the end of the log
    trigger_every: int = 25
    min_history: int = 3  # a trigger's user has at least this many earlier events
    intention_share: float = 0.25
    candidates_share: float = 0.1
    explicit_candidates: int = 20
    cold_start_every: int = 20  # every n-th trigger is for a brand-new user
    k: int = 10
    seed: int = 7


def catalog_records(dataset: Dataset) -> list[CatalogItem]:
    out = []
    for item in dataset.items.values():
        attributes: dict[str, str | float | list[str]] = {"genres": list(item.genres)}
        if item.year:
            attributes["year"] = item.year
        out.append(CatalogItem(item_id=item.item_id, title=item.title, attributes=attributes))
    return out


def plan(dataset: Dataset, config: ReplayConfig, clock: Callable[[], float] = time.time) -> Iterator[Event | Trigger]:
    """The replay as a lazy sequence of records. Trigger timestamps are taken when the
    trigger is generated (i.e. just before it is sent)."""
    rng = random.Random(config.seed)
    item_ids = sorted(dataset.items)
    seen: Counter[str] = Counter()
    end = None if config.events is None else config.start + config.events
    n_triggers = 0
    run_id = uuid.uuid4().hex[:8]
    for n, x in enumerate(dataset.interactions[config.start : end]):
        seen[x.user_id] += 1
        yield Event(user_id=x.user_id, item_id=x.item_id, event_type="click" if x.rating >= 4 else "view", ts=x.ts)
        if (n + 1) % config.trigger_every or seen[x.user_id] < config.min_history:
            continue
        n_triggers += 1
        user: str = x.user_id
        after_item: str | None = x.item_id
        after_ts: float | None = x.ts
        if config.cold_start_every and n_triggers % config.cold_start_every == 0:
            user, after_item, after_ts = f"new-{run_id}-{n_triggers}", None, None
        candidates = None
        if rng.random() < config.candidates_share:
            candidates = rng.sample(item_ids, config.explicit_candidates)
        intention = rng.choice(INTENTIONS) if rng.random() < config.intention_share else None
        yield Trigger(
            request_id=f"replay-{run_id}-{n_triggers}",
            user_id=user,
            ts=clock(),
            k=config.k,
            candidates=candidates,
            intention=intention,
            after_ts=after_ts,
            after_item_id=after_item,
        )


@dataclass
class ReplayStats:
    catalog: int = 0
    events: int = 0
    triggers: int = 0
    trigger_ids: list[str] = field(default_factory=list)


class Replayer:
    def __init__(self, settings: Settings, producer: Producer | None = None) -> None:
        self.settings = settings
        self.producer = producer or make_producer(settings)
        self.stats = ReplayStats()

    def send_catalog(self, items: list[CatalogItem]) -> None:
        for item in items:
            self._send(self.settings.topics.catalog, CATALOG.key_of(item), CATALOG.codec.encode(item))
            self.stats.catalog += 1
        self.producer.flush()

    def send_trigger(self, trigger: Trigger) -> None:
        self._send(self.settings.topics.triggers, TRIGGERS.key_of(trigger), TRIGGERS.codec.encode(trigger))
        self.producer.flush()

    def run(
        self,
        records: Iterator[Event | Trigger],
        rate: float,
        stop: threading.Event | None = None,
        on_trigger: Callable[[Trigger], None] | None = None,
        flush: bool = True,
    ) -> ReplayStats:
        """Send events at ``rate`` events/s (0: as fast as possible); triggers are sent
        as they come, stamped at send time. ``flush``: wait until the broker has them all."""
        start = time.monotonic()
        topics = self.settings.topics
        for record in records:
            if stop is not None and stop.is_set():
                break
            if isinstance(record, Event):
                self._send(topics.events, EVENTS.key_of(record), EVENTS.codec.encode(record))
                self.stats.events += 1
                if rate > 0:
                    ahead = self.stats.events / rate - (time.monotonic() - start)
                    if ahead > 0:
                        self.producer.flush(ahead) if ahead > 0.005 else None
                        remaining = self.stats.events / rate - (time.monotonic() - start)
                        if remaining > 0:
                            time.sleep(remaining)
            else:
                trigger = record.model_copy(update={"ts": time.time()})
                if on_trigger is not None:
                    on_trigger(trigger)
                self._send(topics.triggers, TRIGGERS.key_of(trigger), TRIGGERS.codec.encode(trigger))
                self.producer.poll(0)
                self.stats.triggers += 1
                self.stats.trigger_ids.append(trigger.request_id)
        if flush:
            self.producer.flush()
        return self.stats

    def _send(self, topic: str, key: bytes, value: bytes) -> None:
        while True:
            try:
                self.producer.produce(topic, key=key, value=value)
                return
            except BufferError:  # local queue full: let it drain
                self.producer.poll(0.05)
