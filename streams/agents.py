"""Agents: decode, call the pure core, encode, send. Nothing else happens here.

- events   -> ``user-context`` table (last N interactions per user) and the item graph
- catalog  -> ``items`` global table (every worker holds the whole catalog)
- triggers -> score request (instruction + candidates) for the scoring pools

A message that cannot be decoded or processed goes to the dead-letter topic with its
original bytes, where it came from and why; the agent carries on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import faust

from instructrec.logs import get_logger
from instructrec.settings import Settings
from model.context import apply_events, items_of
from model.recall import ItemGraph
from schemas.codec import dead_letter
from schemas.exceptions import DecodeError
from schemas.records import CatalogItem, Event, Trigger
from schemas.topics import CATALOG, DEAD_LETTERS, EVENTS, SCORE_REQUESTS, TRIGGERS
from streams.planner import NoCandidates, PlannerConfig, catalog_lookup, plan_score_request

log = get_logger(__name__)
COMPONENT = "stream-worker"
_JSON_TABLE = faust.Schema(key_serializer="json", value_serializer="json")
_RAW: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}


@dataclass
class StreamCounters:
    events: int = 0
    catalog: int = 0
    triggers: int = 0
    score_requests: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)


@dataclass
class StreamWorker:
    """Everything the agents share, built once per app."""

    app: faust.App
    settings: Settings
    graph: ItemGraph = field(default_factory=ItemGraph)
    counters: StreamCounters = field(default_factory=StreamCounters)

    def __post_init__(self) -> None:
        s, t = self.settings, self.settings.topics
        self.events_topic = self.app.topic(t.events, partitions=s.partitions, **_RAW)
        self.catalog_topic = self.app.topic(t.catalog, partitions=s.partitions, **_RAW)
        self.triggers_topic = self.app.topic(t.triggers, partitions=s.partitions, **_RAW)
        self.requests_topic = self.app.topic(t.score_requests, partitions=s.partitions, **_RAW)
        self.dead_topic = self.app.topic(t.dead_letters, partitions=s.partitions, **_RAW)
        self.context = self.app.Table(
            "user-context", partitions=s.partitions, schema=_JSON_TABLE,
            help="user id -> last N [item_id, event_type, ts], oldest first",
        )
        self.items = self.app.GlobalTable(
            "items", partitions=s.partitions, schema=_JSON_TABLE,
            help="item id -> catalog record (every worker holds all items)",
        )
        self.lookup = catalog_lookup(self.items)
        self.planner = PlannerConfig(
            recall_size=s.recall_size,
            history_in_instruction=s.history_in_instruction,
            intention_max_chars=s.intention_max_chars,
        )
        self.context.on_recover(self._rebuild_graph)
        self.app.agent(self.events_topic, name="events")(self._on_events)
        self.app.agent(self.catalog_topic, name="catalog")(self._on_catalog)
        self.app.agent(self.triggers_topic, name="triggers")(self._on_triggers)

    async def _rebuild_graph(self) -> None:
        self.graph.rebuild(items_of(ctx) for ctx in self.context.values())
        log.info("item graph rebuilt", users=len(self.context), items=len(self.graph.popularity))

    async def _dead_letter(self, message: Any, reason: str, detail: str) -> None:
        self.counters.dead_letters[reason] = self.counters.dead_letters.get(reason, 0) + 1
        record = dead_letter(
            topic=message.topic, partition=message.partition, offset=message.offset,
            key=message.key, value=message.value, reason=reason, detail=detail,
            component=COMPONENT, timestamp_ms=int(message.timestamp * 1000) if message.timestamp else None,
        )
        log.warning("dead letter", topic=message.topic, partition=message.partition,
                    offset=message.offset, reason=reason, detail=detail[:200])
        await self.dead_topic.send(key=message.key, value=DEAD_LETTERS.codec.encode(record))

    async def _on_events(self, stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        codec, limit = EVENTS.codec, self.settings.context_length
        async for event in stream.events():
            message = event.message
            try:
                record: Event = codec.decode(message.value)
            except DecodeError as exc:
                await self._dead_letter(message, exc.reason, exc.detail)
                continue
            old = self.context.get(record.user_id)
            new = apply_events(old, [(record.item_id, record.event_type, record.ts)], limit)
            if new != old:
                self.context[record.user_id] = new
                self.graph.replace_user(items_of(old), items_of(new))
            self.counters.events += 1
            yield None

    async def _on_catalog(self, stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        codec = CATALOG.codec
        async for event in stream.events():
            message = event.message
            try:
                item: CatalogItem = codec.decode(message.value)
            except DecodeError as exc:
                await self._dead_letter(message, exc.reason, exc.detail)
                continue
            if self.items.get(item.item_id) != (value := item.model_dump(mode="json")):
                self.items[item.item_id] = value
            self.counters.catalog += 1
            yield None

    async def _on_triggers(self, stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        codec = TRIGGERS.codec
        async for event in stream.events():
            message = event.message
            try:
                trigger: Trigger = codec.decode(message.value)
                if trigger.candidates is not None and len(trigger.candidates) > self.settings.max_trigger_candidates:
                    raise DecodeError(
                        "too-many-candidates",
                        f"{len(trigger.candidates)} > limit {self.settings.max_trigger_candidates}",
                    )
            except DecodeError as exc:
                await self._dead_letter(message, exc.reason, exc.detail)
                continue
            try:
                request = plan_score_request(
                    trigger,
                    self.context.get(trigger.user_id),
                    self.lookup,
                    self.graph,
                    self.planner,
                    fresh=self._fresh_items(),
                )
            except NoCandidates as exc:
                await self._dead_letter(message, exc.reason, exc.detail)
                continue
            await self.requests_topic.send(
                key=SCORE_REQUESTS.key_of(request), value=SCORE_REQUESTS.codec.encode(request)
            )
            self.counters.triggers += 1
            self.counters.score_requests += 1
            log.debug("score request sent", request_id=request.request_id, user_id=request.user_id,
                      candidates=len(request.candidates), cold_start=request.cold_start)
            yield None

    def _fresh_items(self) -> Iterator[str]:
        """Newest catalog items first (the table keeps insertion order). A generator: the
        catalog is only walked when recall runs short (cold system)."""
        yield from reversed(list(self.items.keys()))


def build_worker(settings: Settings) -> StreamWorker:
    from streams.app import create_app

    return StreamWorker(create_app(settings), settings)
