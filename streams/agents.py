"""Agents: decode, call the pure core, encode, send. Nothing else happens here.

- events + triggers (one agent, one stream over both topics, taken in batches):
  every event of a batch is applied to the ``user-context`` table first, then every
  trigger of the batch is planned into a score request. A user's events and triggers
  share a partition number, and Kafka hands the worker every partition's new records in
  the same fetch, so a click followed at once by a refresh is applied before the refresh
  is answered -- ordering that two separate agents could not give.
- catalog: validated here (bad records dead-lettered once); every worker reads the whole
  topic into its own ``CatalogReplica`` (streams/catalog.py).

A message that cannot be decoded or processed goes to the dead-letter topic with its
original bytes, where it came from and why; the agent carries on.

Delivery (at-least-once, with identical duplicates): a planned score request is written
to the user's table entry (its *outbox*), the changelog is flushed, then the request is
sent, and once the broker has acknowledged it the outbox entry is removed. A worker
killed in between leaves the entry on the changelog; whoever recovers the partition
sends the same bytes again. A trigger waiting for its ``after_ts`` event is likewise
kept in the table until it is answered. See README "Guarantees and limits".
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
import zlib
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import faust
import orjson
from aiokafka.partitioner import murmur2
from faust.exceptions import ProducerSendError
from faust.types import Message
from structlog.contextvars import bound_contextvars

from instructrec.failpoints import failpoint, starving
from instructrec.health import BrokerProbe, Readiness
from instructrec.kafka import read_partitions
from instructrec.logs import get_logger
from instructrec.metrics import StreamMetrics, lag_of
from instructrec.settings import Settings
from instructrec.watchdog import RESTART_EXIT_CODE
from model.context import UserContext, items_of
from model.instructions import templates_for
from model.recall import ItemGraph
from schemas.codec import check_key, check_not_future, dead_letter, decode_events
from schemas.exceptions import DecodeError
from schemas.records import Trigger
from schemas.topics import CATALOG, DEAD_LETTERS, SCORE_REQUESTS, TRIGGERS
from streams.app import ChangelogWriteError, wait_acknowledged
from streams.catalog import CatalogReplica
from streams.feed import FaustFeed
from streams.planner import NoCandidates, PlannerConfig, catalog_lookup, plan_score_request

log = get_logger(__name__)
LAG_EVERY_S = 5.0  # metrics: table size, waiting triggers, consumer lag
COMPONENT = "stream-worker"
DEAD_LETTER_KEY_MAX = 1024


class RawSchema(faust.Schema):
    """Key and value stay bytes and the event is built directly: the agents decode with
    schemas/ themselves (and send undecodable records to the dead-letter topic), so
    Faust's serializer registry would only cost ~5 % of a busy worker's CPU."""

    def __init__(self) -> None:
        super().__init__(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

    def compile(self, app: Any, **_kwargs: Any) -> Any:
        create_event = app.create_event

        async def decode(message: Message, *, propagate: bool = False) -> Any:
            return create_event(message.key, message.value, message.headers, message)

        return decode


_RAW: dict[str, Any] = {"schema": RawSchema()}


@dataclass
class StreamCounters:
    events: int = 0
    context_writes: int = 0  # table (and changelog) writes: at most one per user per batch
    catalog: int = 0
    triggers: int = 0
    score_requests: int = 0
    batches: int = 0
    waited: int = 0  # triggers that waited for their after_ts event
    wait_expired: int = 0  # ... and were answered without it when the wait ran out
    redelivered_triggers: int = 0  # seen again after a restart and not answered twice
    resent: int = 0  # outbox entries a previous owner left, sent again (same bytes)
    feed_seeks: int = 0  # partitions the feed watchdog fetched again
    dead_letters: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Origin:
    """Where a trigger came from: enough to dead-letter it later (the fields a Faust
    ``Message`` has), and to keep it in the table while it waits."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float | None = None

    @classmethod
    def of(cls, message: Message) -> Origin:
        return cls(message.topic, message.partition, message.offset, message.key, message.value, message.timestamp)

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "key": pack(self.key) if self.key is not None else None,
            "value": pack(self.value or b""),
            "timestamp": self.timestamp,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Origin:
        key = data.get("key")
        return cls(
            data["topic"],
            int(data["partition"]),
            int(data["offset"]),
            unpack(key) if key is not None else None,
            unpack(data["value"]),
            data.get("timestamp"),
        )


def pack(data: bytes) -> str:
    """Bytes kept in a JSON table value: deflated (a score request shrinks ~5x), base64."""
    return base64.b64encode(zlib.compress(data, 1)).decode("ascii")


def unpack(text: str) -> bytes:
    return zlib.decompress(base64.b64decode(text))


@dataclass(frozen=True)
class Staged:
    """A score request in the user's outbox, to be sent once the changelog is flushed."""

    user_key: bytes
    request_id: str
    key: bytes
    value: bytes
    trigger_ts: float = 0.0  # 0: unknown (re-sent from a recovered outbox)


@dataclass
class PendingTrigger:
    """A trigger waiting for the event its ``after_ts`` names."""

    trigger: Trigger
    message: Message | Origin
    deadline: float  # event-loop time


@dataclass
class StreamWorker:
    """Everything the agents share, built once per app."""

    app: faust.App
    settings: Settings
    graph: ItemGraph = field(default_factory=ItemGraph)
    counters: StreamCounters = field(default_factory=StreamCounters)
    pending: dict[str, list[PendingTrigger]] = field(default_factory=dict)
    # Outbox entries and waiting triggers found in recovered partitions, taken up by the timer.
    recovered: list[tuple[bytes, dict[str, Any]]] = field(default_factory=list)
    readiness: Readiness = field(default_factory=lambda: Readiness("broker", "partitions", "catalog"))
    feed: FaustFeed = field(init=False, repr=False)  # the feed watchdog; it also asks for restarts
    metrics: StreamMetrics = field(init=False, repr=False)  # over ``counters``

    def __post_init__(self) -> None:
        s, t = self.settings, self.settings.topics
        self.metrics = StreamMetrics(self.counters)
        self.activity_topic = self.app.topic(t.events, t.triggers, partitions=s.partitions, **_RAW)
        self.catalog_topic = self.app.topic(t.catalog, partitions=s.partitions, **_RAW)
        self.requests_topic = self.app.topic(t.score_requests, partitions=s.partitions, **_RAW)
        self.dead_topic = self.app.topic(t.dead_letters, partitions=s.partitions, **_RAW)
        # Keys are the topic's key bytes (the user id) and the changelog partition comes
        # from the same murmur2 partitioner as the events topic, so a user's context
        # lives in the changelog partition with the user's events partition number.
        # (Batches span partitions, so Faust's "partition of the current event" default
        # would file writes under the wrong partition.)
        self.context = self.app.Table(
            "user-context",
            partitions=s.partitions,
            use_partitioner=True,
            key_type=bytes,
            schema=faust.Schema(key_type=bytes, key_serializer="raw", value_serializer="json"),
            help="user id -> {events: last N [item_id, event_type, ts] oldest first, seen: [item_id]}",
        )
        self.catalog = CatalogReplica(s)  # every worker holds the whole catalog
        self.lookup = catalog_lookup(self.catalog.items)
        self.planner = PlannerConfig(
            recall_size=s.recall_size,
            history_in_instruction=s.history_in_instruction,
            intention_max_chars=s.intention_max_chars,
            template_seed=s.template_seed,
            templates=templates_for(s.template_languages),
        )
        self.context.on_recover(self._rebuild_graph)
        self.app.agent(self.activity_topic, name="user-activity")(self._on_activity)
        self.app.agent(self.catalog_topic, name="catalog")(self._on_catalog)
        self.app.timer(interval=0.02, name="release-expired-triggers")(self._release_expired)
        # Waiting triggers were acked with their batch: answer them before this worker
        # gives their partitions away (rebalance) or stops, or they would be lost.
        self.app.on_partitions_revoked.connect(self._answer_all_pending)
        self.app.on_before_shutdown.connect(self._answer_all_pending)
        self.app.on_before_shutdown.connect(self._log_counters)
        self.app.on_partitions_assigned.connect(self._log_assignment)
        self.app.task(self._start_catalog)
        self.app.on_partitions_revoked.connect(self._not_ready_while_rebalancing)
        worker = self

        async def ready(view: Any, request: Any) -> Any:  # Faust calls it as View.get(self, request)
            return await worker._ready_view(view, request)

        self.app.page("/ready/")(ready)

        async def metrics(view: Any, request: Any) -> Any:
            return await worker._metrics_view(view, request)

        self.app.page("/metrics/")(metrics)
        self.app.timer(interval=LAG_EVERY_S, name="measure-lag")(self._measure)
        self.app.on_before_shutdown.connect(self._stop_catalog)
        self.feed = FaustFeed(
            self.app,
            s,
            (t.events, t.triggers, t.catalog),
            working=self._ready_to_be_fed,
            on_seek=self._count_feed_seek,
        )

    async def _rebuild_graph(self) -> None:
        if self.settings.embedded:
            await self._catch_up_changelog()
        self.graph.rebuild(items_of(UserContext.events(ctx)) for ctx in self.context.values())
        log.info("item graph rebuilt", users=len(self.context), items=len(self.graph.popularity))
        self._collect_unfinished()
        self.readiness.set("partitions", True, "assigned and recovered")

    def _active_changelog_partitions(self) -> set[int]:
        topic = self.context.changelog_topic.get_topic_name()
        return {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == topic}

    def _collect_unfinished(self) -> None:
        """Outbox entries and waiting triggers of the partitions this worker now owns (a
        standby's copy is left to its owner)."""
        mine = self._active_changelog_partitions()
        n = self.settings.partitions
        found = []
        for key, value in self.context.data.items():
            if not value or not (value.get("outbox") or value.get("waiting")):
                continue
            if (murmur2(key) & 0x7FFFFFFF) % n in mine:
                found.append((key, value))
        if found:
            self.recovered.extend(found)
            log.info(
                "unfinished triggers recovered",
                users=len(found),
                outbox=sum(len(UserContext.outbox(v)) for _, v in found),
                waiting=sum(len(UserContext.waiting(v)) for _, v in found),
            )

    async def _catch_up_changelog(self) -> None:
        """Embedded broker only: Faust recovers a changelog partition up to the high
        watermark the broker reports, and Tansu sometimes reports it one record short, so
        the users whose last write is past it would come back stale. Read this worker's
        changelog partitions to their real end (the end the broker's fetches report; see
        ``read_to_end``) and put the newest value of each key into the table's store, as
        recovery would have."""
        topic = self.context.changelog_topic.get_topic_name()
        mine = sorted(tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == topic)
        if not mine:
            return
        newest = await asyncio.get_running_loop().run_in_executor(None, read_to_end, self.settings, topic, mine)
        store = self.context.data
        fixed = 0
        for key, raw in newest.items():
            value = orjson.loads(raw) if raw is not None else None
            if store.get(key) != value:
                fixed += 1
                if value is None:
                    store.pop(key, None)
                else:
                    store[key] = value
        log.info(
            "changelog caught up past the reported high watermark", partitions=mine, keys=len(newest), keys_fixed=fixed
        )

    async def _dead_letter(self, message: Message | Origin, reason: str, detail: str) -> None:
        self.counters.dead_letters[reason] = self.counters.dead_letters.get(reason, 0) + 1
        await send_dead_letter(self.dead_topic, message, reason, detail, COMPONENT)

    async def _on_activity(self, stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        s = self.settings
        events_topic = s.topics.events
        # faust's StreamT stub lacks take_events; the Stream class has it.
        take_events = stream.take_events  # type: ignore[attr-defined]
        async for batch in take_events(s.stream_batch_max, within=s.stream_batch_within_ms / 1000):
            messages = [event.message for event in batch]
            touched = await self.apply_events([m for m in messages if m.topic == events_topic])
            if not self.catalog.ready.is_set():
                await self._catalog_loaded()  # triggers are planned against the whole catalog
            staged: list[Staged] = []
            for message in messages:
                if message.topic != events_topic:
                    staged.extend(await self.handle_trigger(message))
                    if len(staged) >= self.settings.outbox_flush_every:
                        await self._send(staged)  # bounds the outbox (and table values)
                        staged = []
            staged.extend(await self._release(touched & self.pending.keys()))
            await self._send(staged)
            self.counters.batches += 1
            yield None

    async def apply_events(self, messages: Sequence[Message]) -> set[str]:
        """Decode, group by user, and write each user's context once for the batch.
        Returns the users whose context was written."""
        by_user: defaultdict[str, list[tuple[str, str, float]]] = defaultdict(list)
        for message in messages:
            try:
                records = decode_events(
                    message.value, self.settings.max_message_bytes, self.settings.max_events_per_message
                )
                check_not_future((r.ts for r in records), time.time(), self.settings.max_future_skew_s or None)
                # Every event is the key's user's: the key chose this partition, and with it
                # this worker as the owner of that user's context (an array is one user's).
                check_key(message.key, records[0].user_id)
            except DecodeError as exc:
                await self._dead_letter(message, exc.reason, exc.detail)
                continue
            events = by_user[records[0].user_id]
            for record in records:
                events.append((record.item_id, record.event_type, record.ts))
        limit, seen_limit = self.settings.context_length, self.settings.seen_limit
        for user_id, events in by_user.items():
            key = user_id.encode()
            old = self.context.get(key)
            new = UserContext.apply(old, events, limit, seen_limit)
            if new != old:
                self.context[key] = new
                self.counters.context_writes += 1
                self.graph.replace_user(
                    items_of(UserContext.events(old)), items_of(new["events"]), max_shift=len(events)
                )
            self.counters.events += len(events)
        return set(by_user)

    async def handle_trigger(self, message: Message) -> list[Staged]:
        """Dead-letter, park (waiting for its event) or plan a trigger; a planned request
        is returned for ``_send``. Every log line of it carries the message's topic,
        partition and offset and, once decoded, its request and user."""
        with bound_contextvars(topic=message.topic, partition=message.partition, offset=message.offset):
            return await self._handle_trigger(message)

    async def _handle_trigger(self, message: Message) -> list[Staged]:
        try:
            trigger: Trigger = TRIGGERS.codec.decode(message.value, self.settings.max_message_bytes)
            check_not_future((trigger.ts, trigger.after_ts), time.time(), self.settings.max_future_skew_s or None)
            if trigger.candidates is not None and len(trigger.candidates) > self.settings.max_trigger_candidates:
                raise DecodeError(
                    "too-many-candidates", f"{len(trigger.candidates)} > limit {self.settings.max_trigger_candidates}"
                )
            # Planned by the worker that owns the user's context, which the key chose.
            check_key(message.key, trigger.user_id)
        except DecodeError as exc:
            await self._dead_letter(message, exc.reason, exc.detail)
            return []
        room = sum(map(len, self.pending.values())) < self.settings.max_pending_triggers
        if trigger.after_ts is not None and room and not self._reflects(trigger):
            key = trigger.user_id.encode()
            context = self.context.get(key)
            if UserContext.was_answered(context, trigger.request_id):
                self.counters.redelivered_triggers += 1
                return []
            origin = Origin.of(message)
            # Kept in the table too: the batch's offsets are committed while it waits.
            self.context[key] = UserContext.wait(context, trigger.request_id, origin.to_json())
            self._park(trigger, origin)
            return []
        # (With too many waiting, it is answered now rather than let memory grow.)
        with bound_contextvars(request_id=trigger.request_id, user_id=trigger.user_id):
            staged = await self._plan(trigger, message)
        return [staged] if staged else []

    def _park(self, trigger: Trigger, origin: Origin) -> None:
        waiting = self.pending.setdefault(trigger.user_id, [])
        if any(p.trigger.request_id == trigger.request_id for p in waiting):
            return
        deadline = asyncio.get_running_loop().time() + self.settings.trigger_wait_ms / 1000
        waiting.append(PendingTrigger(trigger, origin, deadline))
        self.counters.waited += 1
        log.debug("trigger waits for its event", request_id=trigger.request_id, after_ts=trigger.after_ts)

    def _reflects(self, trigger: Trigger) -> bool:
        return UserContext.reflects(
            self.context.get(trigger.user_id.encode()), trigger.after_ts or 0.0, trigger.after_item_id
        )

    async def _release(self, users: set[str], now: float | None = None) -> list[Staged]:
        """Plan the waiting triggers of ``users`` whose event arrived or whose wait ran out."""
        now = asyncio.get_running_loop().time() if now is None else now
        staged: list[Staged] = []
        for user in users:
            keep = []
            for p in self.pending.get(user, ()):
                if self._reflects(p.trigger):
                    staged.extend([s] if (s := await self._plan(p.trigger, p.message)) else [])
                elif now >= p.deadline:
                    self.counters.wait_expired += 1
                    log.warning(
                        "trigger answered without its after_ts event",
                        request_id=p.trigger.request_id,
                        user_id=user,
                        after_ts=p.trigger.after_ts,
                    )
                    staged.extend([s] if (s := await self._plan(p.trigger, p.message)) else [])
                else:
                    keep.append(p)
            if keep:
                self.pending[user] = keep
            else:
                self.pending.pop(user, None)
        return staged

    async def _answer_all_pending(self, *_args: Any, **_kwargs: Any) -> None:
        if not self.pending:
            return
        log.info("answering waiting triggers now", triggers=sum(map(len, self.pending.values())))
        await self._send(await self._release(set(self.pending), now=float("inf")))

    async def _start_catalog(self) -> None:
        self.catalog.start()
        from confluent_kafka.admin import AdminClient

        admin = AdminClient(self.settings.confluent_config())
        self.probe = BrokerProbe(
            self.readiness,
            # one existing topic's metadata, not every topic's: cheap for any broker
            lambda timeout: admin.list_topics(topic=self.settings.topics.triggers, timeout=timeout),
            self.settings.broker_probe_s,
            COMPONENT,
        ).start()

    async def _not_ready_while_rebalancing(self, *_args: Any, **_kwargs: Any) -> None:
        self.readiness.set("partitions", False, "rebalancing")

    async def _metrics_view(self, view: Any, request: Any) -> Any:
        """``GET /metrics/`` on the Faust web port: Prometheus text (instructrec/metrics.py)."""
        # aiohttp takes the charset apart: text/plain; charset=utf-8 is the 0.0.4 exposition
        return view.text(self.metrics.render().decode(), content_type="text/plain")

    async def _measure(self) -> None:
        """Table size, waiting triggers and consumer lag for the metrics, every few seconds."""
        m = self.metrics
        m.waiting.set(sum(len(ps) for ps in self.pending.values()))
        try:
            m.table_keys.labels(table="user-context").set(len(self.context))
        except Exception:  # the table is not there (stopping)
            return
        if not self.readiness.ok("partitions"):
            return
        positions = {(tp.topic, tp.partition): pos for tp, pos in (await self.feed.positions()).items()}
        loop = asyncio.get_running_loop()
        ends = await loop.run_in_executor(None, self.feed.high_watermarks, list(positions))
        m.set_lag(lag_of(positions, ends))

    async def _ready_view(self, view: Any, request: Any) -> Any:
        """``GET /ready/`` on the Faust web port: 200 when ready, else 503."""
        self.readiness.set("catalog", self.catalog.ready.is_set(), f"{len(self.catalog.items)} items")
        snap = self.readiness.snapshot()
        return view.json(snap, status=200 if snap["ready"] else 503)

    async def _stop_catalog(self, *_args: Any, **_kwargs: Any) -> None:
        self.catalog.stop()
        if getattr(self, "probe", None) is not None:
            self.probe.stop.set()

    async def _catalog_loaded(self, timeout: float = 120.0) -> None:
        """Triggers are planned against the catalog: wait until this worker has read it."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not self.catalog.ready.is_set():
            if asyncio.get_running_loop().time() > deadline:
                log.warning("catalog still loading; planning with what has been read", items=len(self.catalog.items))
                return
            await asyncio.sleep(0.05)

    async def _log_assignment(self, *args: Any, **_kwargs: Any) -> None:
        assigned = args[-1] if args else ()
        events = sorted(tp.partition for tp in assigned if tp.topic == self.settings.topics.events)
        log.info("partitions assigned", events=events)

    def _ready_to_be_fed(self) -> bool:
        return self.readiness.ok("partitions") and self.readiness.ok("broker") and self.catalog.ready.is_set()

    def _count_feed_seek(self) -> None:
        self.counters.feed_seeks += 1

    async def _log_counters(self, *_args: Any, **_kwargs: Any) -> None:
        log.info("stream worker stopping", **asdict(self.counters))

    async def _release_expired(self) -> None:
        if self.recovered:
            await self._resume_recovered()
        if not self.pending:
            return
        now = asyncio.get_running_loop().time()
        await self._send(
            await self._release({u for u, ps in self.pending.items() if any(now >= p.deadline for p in ps)}, now)
        )

    async def _resume_recovered(self) -> None:
        """Send again what a previous owner left in the outbox (the same bytes), and take
        up the triggers it left waiting."""
        found, self.recovered = self.recovered, []
        mine = self._active_changelog_partitions()
        n = self.settings.partitions
        staged: list[Staged] = []
        for key, _ in found:
            if (murmur2(key) & 0x7FFFFFFF) % n not in mine:
                continue  # moved on again since
            value = self.context.get(key)
            for request_id, packed in UserContext.outbox(value).items():
                data = unpack(packed)
                staged.append(Staged(key, request_id, key, data))
                self.counters.resent += 1
            for request_id, origin_json in UserContext.waiting(value).items():
                origin = Origin.from_json(origin_json)
                try:
                    trigger = TRIGGERS.codec.decode(origin.value)
                except DecodeError:  # it decoded when it was parked; keep nothing undecodable
                    self.context[key] = UserContext.unwait(self.context.get(key), request_id)
                    continue
                self._park(trigger, origin)
        if staged:
            log.info("resending recovered score requests", requests=len(staged))
            await self._send(staged, flush=False)

    async def _plan(self, trigger: Trigger, message: Message | Origin) -> Staged | None:
        """Plan a trigger into a score request and put it in the user's outbox."""
        key = trigger.user_id.encode()
        context = self.context.get(key)
        if UserContext.was_answered(context, trigger.request_id):
            self.counters.redelivered_triggers += 1
            log.info("trigger already answered", request_id=trigger.request_id, user_id=trigger.user_id)
            return None
        try:
            request = plan_score_request(
                trigger, context, self.lookup, self.graph, self.planner, fresh=self._fresh_items()
            )
        except NoCandidates as exc:
            await self._dead_letter(message, exc.reason, exc.detail)
            if trigger.request_id in UserContext.waiting(context):
                self.context[key] = UserContext.unwait(context, trigger.request_id)
            return None
        except Exception as exc:  # a bug meeting odd input: that trigger is dead-lettered, the worker goes on
            log.exception("planning failed", request_id=trigger.request_id)
            await self._dead_letter(message, "processing-failed", f"{type(exc).__name__}: {exc}")
            if trigger.request_id in UserContext.waiting(context):
                self.context[key] = UserContext.unwait(context, trigger.request_id)
            return None
        data = SCORE_REQUESTS.codec.encode(request)
        if len(data) > self.settings.max_message_bytes:  # the pools would reject it: say so here
            await self._dead_letter(
                message,
                "request-too-large",
                f"the planned score request is {len(data)} bytes > limit {self.settings.max_message_bytes} "
                f"({len(request.candidates)} candidates); send fewer candidates",
            )
            if trigger.request_id in UserContext.waiting(context):
                self.context[key] = UserContext.unwait(context, trigger.request_id)
            return None
        self.context[key] = UserContext.stage(context, trigger.request_id, pack(data))
        self.counters.triggers += 1
        log.debug(
            "score request planned",
            request_id=request.request_id,
            user_id=request.user_id,
            candidates=len(request.candidates),
            cold_start=request.cold_start,
        )
        return Staged(key, request.request_id, SCORE_REQUESTS.key_of(request), data, request.trigger_ts)

    async def _send(self, staged: Sequence[Staged], flush: bool = True) -> None:
        """Flush the changelog (the outbox entries are durable before any request
        leaves), send, wait for the broker's acknowledgements, then clear the outbox.

        Bounded by ``feed_stall_s``: a send not acknowledged by then (a lost response;
        Faust's producer would wait 20 minutes) leaves the entries in the outbox and has
        the worker restarted, whose recovery sends them again."""
        if not staged:
            return
        timeout = self.settings.feed_stall_s or None
        try:
            await asyncio.wait_for(self._deliver(staged, flush), timeout=timeout)
        except TimeoutError:
            self.feed.request_restart(
                "score requests not acknowledged in time: stopping to be restarted",
                requests=len(staged),
                timeout_s=timeout,
            )
            return
        except ChangelogWriteError as exc:
            # The outbox entries are not durable and nothing was sent: exit at once, without
            # the graceful stop's commit, so that the restarted worker reads these triggers again.
            log.error("outbox not written: exiting to be restarted", requests=len(staged), error=str(exc))
            os._exit(RESTART_EXIT_CODE)
        except ProducerSendError as exc:
            if not self.app.should_stop:
                raise
            # Stopping (SIGTERM), and the producer closed under a timer's send: the entries
            # were flushed to the outbox before the send, so the next start sends them.
            log.warning("stopping: score requests stay in the outbox", requests=len(staged), error=str(exc)[:200])
            return
        self.counters.score_requests += len(staged)
        acknowledged = time.time()
        for s in staged:
            if s.trigger_ts > 0:
                self.metrics.stream_seconds.observe(max(0.0, acknowledged - s.trigger_ts))
        sent: defaultdict[bytes, list[str]] = defaultdict(list)
        for s in staged:
            sent[s.user_key].append(s.request_id)
        for key, request_ids in sent.items():
            try:
                self.context[key] = UserContext.confirm(self.context.get(key), request_ids)
            except Exception as exc:  # table stopped (answering at shutdown): resent after restart
                log.warning("could not clear the outbox", requests=len(request_ids), error=repr(exc)[:200])

    async def _deliver(self, staged: Sequence[Staged], flush: bool) -> None:
        if flush:
            await flush_producer(self.app)
            failpoint("stream.after-stage")
        if starving("stream.hang-send"):  # tests only: an acknowledgement that never comes
            await asyncio.Event().wait()
        futures = [await self.requests_topic.send(key=s.key, value=s.value) for s in staged]
        await asyncio.gather(*futures)
        failpoint("stream.after-send")

    async def _on_catalog(self, stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        """Validates catalog records so that a bad one is dead-lettered once, by the worker
        owning its partition; every worker's CatalogReplica holds the items themselves."""
        codec = CATALOG.codec
        async for event in stream.events():
            message = event.message
            try:
                codec.decode(message.value, self.settings.max_message_bytes)
            except DecodeError as exc:
                await self._dead_letter(message, exc.reason, exc.detail)
                continue
            self.counters.catalog += 1
            yield None

    def _fresh_items(self) -> Iterator[str]:
        """Newest catalog items first (the replica keeps first-seen order). A generator: the
        catalog is only walked when recall runs short (cold system)."""
        yield from reversed(list(self.catalog.items))


async def send_dead_letter(topic: Any, message: Message | Origin, reason: str, detail: str, component: str) -> None:
    """Write ``message`` (its original bytes and origin) to the dead-letter ``topic``,
    with the reason; a failure to write is logged, never raised (one bad message must not
    take an agent and its batch down)."""
    record = dead_letter(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
        reason=reason,
        detail=detail,
        component=component,
        timestamp_ms=int(message.timestamp * 1000) if message.timestamp else None,
    )
    log.warning(
        "dead letter",
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        reason=reason,
        detail=detail[:200],
    )
    key = message.key[:DEAD_LETTER_KEY_MAX] if message.key is not None else None
    try:
        await topic.send(key=key, value=DEAD_LETTERS.codec.encode(record))
    except Exception as exc:
        log.error("dead letter could not be written", reason=reason, offset=message.offset, error=repr(exc))


async def flush_producer(app: faust.App) -> None:
    """Until every record handed to Faust's producer so far (table writes wait in its send
    buffer) is acknowledged by the broker; a write the broker failed raises
    ``ChangelogWriteError``. (The app's producer, streams.app._Producer, flushes this way
    itself; Faust's own flush gives up on a slow buffer after 0.1 s.)"""
    producer = app.producer
    waiting = list(getattr(producer, "unacked", ()))
    await producer.flush()
    await wait_acknowledged(waiting)


def read_to_end(settings: Settings, topic: str, partitions: list[int]) -> dict[bytes, bytes | None]:
    """Newest value per key in ``partitions`` of ``topic``, read from the beginning to the
    end the broker reports in its fetches (instructrec.kafka.read_partitions: never cut
    short by a slow first fetch; a broker that does not get there within a minute raises,
    and the worker is restarted rather than run on a table it could not check)."""
    newest: dict[bytes, bytes | None] = {}
    for msgs in read_partitions(settings, topic, partitions, timeout=60.0).values():
        for msg in msgs:
            key = msg.key()
            if key is not None:
                newest[key] = msg.value()
    return newest


def build_worker(settings: Settings) -> StreamWorker:
    from streams.app import create_app

    return StreamWorker(create_app(settings), settings)
