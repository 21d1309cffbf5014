"""The Faust application: settings mapping and the embedded-broker work-arounds.

Embedded profile only (Tansu): a short consumer session (Tansu answers JoinGroup after
half the session timeout), a short fetch wait (Tansu does not answer a long-poll fetch
early, so the wait *is* the latency), one record per produced batch and no recovery
consistency check (Tansu's high watermark counts batches, not records). Against a real
Kafka cluster none of these apply.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from typing import Any, NoReturn

import faust
from aiokafka.structs import TopicPartition
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka

from instructrec.failpoints import armed, failpoint, skipping, slowdown, starving
from instructrec.logs import get_logger
from instructrec.settings import Settings
from instructrec.watchdog import RESTART_EXIT_CODE

_log = get_logger(__name__)
MAX_REFETCHES = 3  # times one gap is read again before its records are given up (logged as an error)


def tp_label(tp: Any) -> str:
    """``events/3`` for partition 3 of ``<prefix>events``: short enough for a log line."""
    return f"{tp.topic.rsplit('.', 1)[-1]}/{tp.partition}"


def is_leader(topic: str) -> bool:
    """Faust's assignor topic: assigned, never read."""
    return topic.endswith("__assignor-__leader")


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # faust-streaming hard-codes fetch_max_wait_ms=1500; the fetcher reads this
        # attribute when the consumer starts.
        wait = getattr(self.app, "fetch_max_wait_ms", None)
        if wait is not None:
            consumer._fetch_max_wait_ms = wait
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _commit_offsets(self, offsets: Any, start_new_transaction: bool = True) -> bool:
        try:
            did_commit: bool = await super()._commit_offsets(offsets, start_new_transaction=start_new_transaction)
        except ChangelogWriteError as exc:
            exit_uncommitted(exc)
        if did_commit and any(tp.topic in self.app.user_topics for tp in offsets):  # type: ignore[attr-defined]
            failpoint("stream.after-commit")
        return did_commit

    # Stream partitions (every assigned partition but the tables' changelogs) whose records
    # are delivered: those of the current assignment once Faust has sought them to the
    # committed offsets *and* resumed the flow after that seek. A count of assignments
    # keeps a seek that began before the latest assignment from vouching for it.
    _sought: frozenset[Any] = frozenset()
    _assignments: int = 0
    _seek_done: int = -1  # the assignment whose seek to the committed offsets completed
    _reseek_due: bool = False  # the flow resumed after that seek: the drain loop opens the gate
    _first_pending: frozenset[Any] = frozenset()  # user-topic partitions not yet read since the seek

    async def on_partitions_revoked(self, revoked: set[Any]) -> None:
        self._sought = self._sought - set(revoked)
        await super().on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[Any], generation_id: int = 0) -> None:
        self._assignments += 1
        self._sought, self._seek_done, self._reseek_due = frozenset(), -1, False
        await super().on_partitions_assigned(assigned, generation_id)

    def _stream_partitions(self) -> list[Any]:
        changelogs = self.app.tables.changelog_topics
        return [tp for tp in self.assignment() if tp.topic not in changelogs and not is_leader(tp.topic)]

    async def perform_seek(self) -> None:
        """Faust's seek back to the committed offsets, completed for partitions without one.

        Faust drops records it fetched while the flow was stopped (recovery, rebalance)
        or for partitions not yet active, and relies on this seek to read them again. Its
        aiokafka driver only seeks to a committed offset > 0, so a partition with no
        commit (or 0) stayed where that fetch had left it: a worker taking over
        uncommitted partitions began at their end and skipped every record before
        (test_delivery showed it after a SIGKILL). Those partitions are sent back to
        their log start here, as ``auto_offset_reset="earliest"`` promises.

        Faust resumes a new assignment's partitions *before* this seek, and after it
        resumes its flow control, which empties the streams' queues. A record delivered
        before the seek was applied out of order once the seek read the records before it
        again (``make chaos --burn 3`` found users' seen lists in another order); one
        delivered between the seek and that emptying was lost, its offset counted as read
        (the alerts worker never counted a headline after a SIGKILL restart). So no
        stream record is delivered from the start of this seek until the flow resumes
        after it (``resume_flow``); the drain loop then seeks every stream partition to
        the record after the last one delivered and opens the gate.
        """
        assignments = self._assignments
        self._sought, self._seek_done, self._reseek_due = frozenset(), -1, False
        if (delay := slowdown("stream.slow-seek")) and self.assignment():
            await asyncio.sleep(delay / 1000)  # tests only: a slow committed-offsets answer
        await super().perform_seek()
        # Faust's seek leaves a partition's read offset at the committed offset C, the next
        # record to read, but the drain loop below (as Faust's own) keeps the last record
        # *delivered* there: C - 1, so that record C is the next one, not a gap.
        streams = self._stream_partitions()
        for tp in streams:
            committed = self._read_offset.get(tp)
            if committed is not None and committed > 0:
                self._read_offset[tp] = committed - 1
        fresh = [tp for tp in streams if (self._committed_offset.get(tp) or 0) <= 0]
        if fresh:
            await self._thread.seek_to_beginning(*(TopicPartition(tp.topic, tp.partition) for tp in fresh))
            # The last record delivered is the one before the log start, so that a record
            # of a fetch from before this seek (one past the start) is a gap, read again
            # from the start, and not taken as the first record.
            starts = await self._thread.earliest_offsets(*fresh)
            for tp in fresh:
                start = starts.get(tp)
                self._read_offset[tp] = start - 1 if start is not None else None
        user_topics: frozenset[str] = getattr(self.app, "user_topics", frozenset())
        self._first_pending = frozenset(tp for tp in self.assignment() if tp.topic in user_topics)
        if self._assignments == assignments:
            self._seek_done = assignments
        _log.info(
            "reading from committed offsets",
            committed={
                tp_label(tp): self._committed_offset.get(tp)
                for tp in sorted(self.assignment())
                if tp.topic in user_topics
            },
            from_log_start=sorted(tp_label(tp) for tp in fresh),
        )

    def resume_flow(self) -> None:
        # Faust resumes its flow control (emptying the streams' queues) just before this.
        if self._seek_done == self._assignments:
            self._reseek_due = True
        super().resume_flow()

    async def _open_gate(self) -> None:
        """Seek each stream partition to the record after the last one delivered (records
        fetched while the gate was shut were dropped) and deliver from there."""
        self._reseek_due = False
        streams = self._stream_partitions()
        for tp in streams:
            read = self._read_offset.get(tp)
            if read is not None:
                await self.seek(tp, read + 1)
                self._read_offset[tp] = read  # Faust's seek set it to read + 1
        if self._seek_done == self._assignments:
            self._sought = frozenset(streams)

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - runs inside Faust
        """Faust's fetch loop, minus its per-message ``wait_first``.

        Upstream wraps every record's delivery in ``wait_first(callback, suspend_flow)``:
        four tasks and an ``asyncio.wait`` per message, ~15 % of a busy worker's CPU. Here
        delivery is awaited directly while the flow is running (the callback then only
        puts the record on its stream's queue) and upstream's guarded path is used only
        when a rebalance has suspended the flow. A record delivered late across a
        rebalance is at worst applied twice, which the context ignores (events are
        deduplicated by item, type and ts).
        """
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        suspended = self.suspend_flow.is_set
        acks_enabled_for = self.app.topics.acks_enabled_for
        commit_every = self._commit_every
        since_yield = 0
        user_topics: frozenset[str] = getattr(self.app, "user_topics", frozenset())
        # tests only (instructrec/failpoints.py): drop these topics' records unseen
        starve_topics: frozenset[str] = frozenset()
        if armed("stream.starve"):
            starve_topics = getattr(self.app, "starve_topics", frozenset())
        gap_topics = user_topics if armed("stream.gap") else frozenset()
        refetches: dict[Any, tuple[int, int]] = {}  # tp -> (offset read again from, times)
        unsought: dict[Any, int] = {}  # tp -> records dropped before its seek (logged once read)
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                if self._reseek_due:
                    await self._open_gate()
                changelogs = self.app.tables.changelog_topics
                records = getmany(timeout=1.0)
                await asyncio.sleep(0)
                if self.should_stop:
                    continue
                refetching: set[Any] = set()  # partitions sought back in this batch: skip the rest
                async for tp, message in records:
                    since_yield += 1
                    if since_yield > 100:
                        await asyncio.sleep(0)
                        since_yield = 0
                    if tp in refetching:
                        continue
                    if self._reseek_due:
                        await self._open_gate()
                        break  # the rest of this batch was fetched before the gate opened
                    if starve_topics and message.topic in starve_topics and starving("stream.starve"):
                        continue
                    if gap_topics and message.topic in gap_topics and skipping("stream.gap"):
                        continue
                    if tp not in self._sought and message.topic not in changelogs and not is_leader(message.topic):
                        # a stream record fetched before the seek to the committed offsets
                        # and the flow's resumption (perform_seek): read again after them
                        unsought[tp] = unsought.get(tp, 0) + 1
                        continue
                    offset = message.offset
                    read = get_read_offset(tp)
                    if read is not None and offset < read:
                        continue  # already delivered
                    if tp in self._first_pending:
                        # Evidence for the embedded broker's skipped records (README): where
                        # each partition's reading starts after an assignment.
                        self._first_pending = self._first_pending - {tp}
                        _log.info(
                            "first record read",
                            topic=tp.topic,
                            partition=tp.partition,
                            offset=offset,
                            dropped_before_seek=unsought.pop(tp, 0),
                        )
                    if read is not None and offset - read > 1 and acks_enabled_for(message.topic):
                        # No transactions write these topics, so a gap is records the fetch
                        # skipped (a seek racing a fetch at a take-over); they are still in
                        # the log: read them again rather than acknowledge them unread.
                        times = refetches[tp][1] + 1 if refetches.get(tp, (None,))[0] == read + 1 else 1
                        if message.topic in user_topics and times <= MAX_REFETCHES:
                            _log.warning(
                                "offset gap: records skipped by the fetch; reading them again",
                                topic=tp.topic,
                                partition=tp.partition,
                                after=read,
                                got=offset,
                            )
                            refetches[tp] = (read + 1, times)
                            refetching.add(tp)
                            await self.seek(tp, read + 1)
                            set_read_offset(tp, read)  # Faust's seek set it to read + 1
                            continue
                        if message.topic in user_topics:
                            _log.error(
                                "offset gap: records skipped by the fetch, not found again",
                                topic=tp.topic,
                                partition=tp.partition,
                                after=read,
                                got=offset,
                            )
                        await self._add_gap(tp, read + 1, offset)
                    if commit_every is not None and self._n_acked >= commit_every:
                        self._n_acked = 0
                        await self.commit()
                    if suspended():
                        await self.wait_first(callback(message), self.suspend_flow.wait())
                    else:
                        await callback(message)
                    set_read_offset(tp, offset)
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)


class ChangelogWriteError(RuntimeError):
    """A table write the broker did not take: the state it carries is not durable."""


async def wait_acknowledged(waiting: list[asyncio.Future[Any]], timeout: float | None = None) -> None:
    """Until each of these sends is acknowledged; one the broker failed, or not all
    acknowledged within ``timeout`` seconds (a lost response), raises."""
    if not waiting:
        return
    _, pending = await asyncio.wait(waiting, timeout=timeout)
    if pending:
        raise ChangelogWriteError(f"{len(pending)} of {len(waiting)} writes not acknowledged within {timeout:g} s")
    failed = [exc for f in waiting if (exc := f.exception() if not f.cancelled() else asyncio.CancelledError())]
    if failed:
        raise ChangelogWriteError(f"{len(failed)} of {len(waiting)} writes failed: {failed[0]!r}"[:300])


def exit_uncommitted(exc: BaseException) -> NoReturn:
    """Table writes that may not be durable: exit at once (75, to be restarted), before
    any offset of their events is committed; the restarted worker recovers the table from
    the changelog and reads those events again."""
    _log.error("table writes not durable: exiting without a commit", error=str(exc), exit_code=RESTART_EXIT_CODE)
    os._exit(RESTART_EXIT_CODE)


class _Producer(faust_aiokafka.Producer):
    """Faust's producer, keeping every record handed to its send buffer (table changelog
    writes go there) until the broker has acknowledged or failed it, and flushing only
    once they are.

    Faust flushes its producer and then commits the source offsets. Its own flush gives up
    on a slow buffer after 0.1 s and does not wait for a record already taken off the
    buffer, so on a loaded machine it committed the offsets of events whose table writes
    had not reached the broker; a SIGKILL then lost those writes for good, since their
    events are never read again (users' contexts missing stretches of events under
    ``make chaos --burn``; tests/integration/test_delivery.py kills a worker right after
    such a commit). A write the broker failed, or writes not acknowledged within the
    feed-stall time (a lost response: Faust's producer would wait its 20-minute request
    timeout), raise ChangelogWriteError; on the commit path the worker then exits 75
    without committing (``exit_uncommitted``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.unacked: set[asyncio.Future[Any]] = set()
        delay = slowdown("stream.slow-changelog")
        if delay:  # tests only (instructrec/failpoints.py): a buffer that drains slowly
            buffer: Any = self.buffer  # faust's ProducerBufferT stub lacks _send_pending
            send_pending = buffer._send_pending

            async def slow_send(fut: Any) -> None:
                await asyncio.sleep(delay / 1000)
                await send_pending(fut)

            buffer._send_pending = slow_send

    def send_soon(self, fut: Any) -> None:
        self.unacked.add(fut)
        fut.add_done_callback(self.unacked.discard)
        super().send_soon(fut)

    async def flush(self) -> None:
        waiting = list(self.unacked)
        await super().flush()
        await wait_acknowledged(waiting, getattr(self.app, "ack_timeout_s", None))


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer
    Producer = _Producer


class StreamApp(faust.App):
    fetch_max_wait_ms: int | None = None
    user_topics: frozenset[str] = frozenset()  # events and triggers
    starve_topics: frozenset[str] = frozenset()  # the stream.starve failpoint's (tests only)
    ack_timeout_s: float | None = None  # longest wait for table writes' acknowledgements

    async def _producer_flush(self, logger: Any) -> None:  # at stop, after the last commit
        try:
            await super()._producer_flush(logger)
        except ChangelogWriteError as exc:
            exit_uncommitted(exc)

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)


def _credentials(settings: Settings) -> Any:
    if settings.security_protocol == "PLAINTEXT":
        return None
    context = None
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=settings.ssl_cafile)
        if settings.ssl_certfile:
            key_password = settings.ssl_key_password.get_secret_value() if settings.ssl_key_password else None
            context.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile, key_password)
    if settings.security_protocol.startswith("SASL"):
        password = settings.sasl_password.get_secret_value() if settings.sasl_password else ""
        return faust.SASLCredentials(
            username=settings.sasl_username or "",
            password=password,
            mechanism=settings.sasl_mechanism or "PLAIN",
            ssl_context=context,
        )
    return faust.SSLCredentials(context)


def create_app(settings: Settings) -> StreamApp:
    servers = settings.require_bootstrap().split(",")
    app_id = f"{settings.topic_prefix}{settings.app_id}"
    datadir = settings.state_dir / app_id
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = StreamApp(
        app_id,
        broker=[f"kafka://{s.strip()}" for s in servers],
        broker_credentials=_credentials(settings),
        store="memory://",
        autodiscover=False,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=max(0.5, settings.session_timeout / 6),
        # Faust's own 60 s even on the embedded broker: with the pools' 18 s (see
        # Settings.rebalance_timeout_s) a restarted stream worker stopped fetching for good
        # once Tansu dropped the killed member (measured in test_delivery).
        broker_rebalance_timeout=60.0,
        consumer_auto_offset_reset="earliest",
        recovery_consistency_check=not settings.embedded,
        producer_acks=-1,
        producer_linger_ms=0,
        web_host=settings.web_host,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        datadir=str(datadir),
        table_cleanup_interval=30.0,
        # Tansu reports a partition's high watermark as the last *batch's* base offset + 1
        # (10 records in one batch -> end offset 1), and Faust recovers a table only up to
        # the high watermark. One record per batch keeps the changelog recoverable there.
        producer_max_batch_size=1 if settings.embedded else 16384,
    )
    app.fetch_max_wait_ms = settings.fetch_max_wait_ms
    app.ack_timeout_s = settings.feed_stall_s or None
    app.user_topics = frozenset({settings.topics.events, settings.topics.triggers})
    app.starve_topics = app.user_topics
    return app
