"""The feed watchdog (instructrec/watchdog.py) for a Faust app: the stream worker's and
the alerts worker's source partitions.

A timer notes where each watched partition stands (the record after the last one the
drain loop delivered, streams/app.py); one that has not moved for ``feed_stall_s`` while
the broker's high watermark is past it is sought to that position (the client fetches it
again), and if it is still not fed after as long again the worker stops gracefully and
exits 75 for its supervisor to start it again. Not while the app is rebalancing or
recovering, nor for partitions Faust paused.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from instructrec.kafka import broker_serves, high_watermarks
from instructrec.logs import get_logger
from instructrec.settings import Settings
from instructrec.watchdog import RESTART_EXIT_CODE, FeedWatchdog, Verdict

log = get_logger(__name__)


class FaustFeed:
    """Watches ``app``'s partitions of ``topics``; ``working()`` says when to (besides not
    rebalancing); ``on_seek()`` counts a partition fetched again."""

    def __init__(
        self,
        app: Any,
        settings: Settings,
        topics: Iterable[str],
        working: Callable[[], bool] = lambda: True,
        on_seek: Callable[[], None] = lambda: None,
    ) -> None:
        self.app, self.settings = app, settings
        self.topics = frozenset(topics)
        self.working, self.on_seek = working, on_seek
        self.restart_requested = False  # the worker then exits 75 (streams/worker.py)
        self._end_client: Any = None  # confluent Consumer asking high watermarks, made on first use
        self.watchdog: FeedWatchdog[Any] | None = (
            FeedWatchdog(settings.feed_stall_s) if settings.feed_stall_s > 0 else None
        )
        if self.watchdog is not None:
            app.timer(interval=max(0.5, settings.feed_stall_s / 4), name="feed-watchdog")(self._watch)
            app.on_partitions_revoked.connect(self._forget)
        app.on_before_shutdown.connect(self._close)

    async def positions(self, skip: Any = ()) -> dict[Any, int | None]:
        """The next offset this worker needs, for each assigned partition of the topics."""
        consumer: Any = self.app.consumer
        positions: dict[Any, int | None] = {}
        for tp in consumer.assignment():
            if tp.topic in self.topics and tp not in skip:
                read = consumer._read_offset.get(tp)  # the last record delivered (our drain loop keeps it)
                positions[tp] = read + 1 if read is not None else await consumer.position(tp)
        return positions

    def high_watermarks(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int | None]:
        if self._end_client is None:
            from confluent_kafka import Consumer

            self._end_client = Consumer(
                {
                    **self.settings.confluent_config(),
                    "group.id": f"feed-watchdog-{uuid.uuid4().hex[:12]}",  # asks offsets, never joins
                    "enable.auto.commit": False,
                }
            )
        return high_watermarks(self._end_client, partitions)

    def request_restart(self, message: str, **fields: Any) -> None:
        """Stop gracefully (drain, commit, leave the group) and exit 75: the supervisor
        starts the worker again."""
        if self.restart_requested:
            return
        log.error(message, exit_code=RESTART_EXIT_CODE, **fields)
        self.restart_requested = True
        os.kill(os.getpid(), signal.SIGTERM)

    async def _forget(self, *_args: Any, **_kwargs: Any) -> None:
        if self.watchdog is not None:
            self.watchdog.forget()

    async def _close(self, *_args: Any, **_kwargs: Any) -> None:
        if self._end_client is not None:
            self._end_client.close()
            self._end_client = None

    async def _watch(self) -> None:
        watchdog = self.watchdog
        consumer: Any = self.app.consumer  # Faust's Consumer (the ConsumerT stub lacks these)
        if watchdog is None or self.restart_requested:
            return
        busy = self.app.rebalancing or self.app.in_recovery or consumer.suspend_flow.is_set()
        if busy or not self.working():
            watchdog.forget()
            return
        positions = await self.positions(skip=consumer._paused_partitions)
        loop = asyncio.get_running_loop()
        idle = watchdog.note(positions, loop.time())
        if not idle:
            return
        ends = await loop.run_in_executor(None, self.high_watermarks, [(tp.topic, tp.partition) for tp in idle])
        for tp in idle:
            end = max_known(ends.get((tp.topic, tp.partition)), fetched_end(consumer, tp))
            position = watchdog.position(tp)
            verdict = watchdog.judge(tp, end, loop.time())
            if verdict is Verdict.SEEK and position is not None:
                self.on_seek()
                served = await loop.run_in_executor(
                    None, broker_serves, self.settings, tp.topic, tp.partition, position
                )
                log.warning(
                    "partition not fed: fetching it again",
                    topic=tp.topic,
                    partition=tp.partition,
                    position=position,
                    high_watermark=end,
                    fresh_client_gets_it=served,
                    stalled_s=self.settings.feed_stall_s,
                )
                await consumer.seek(tp, position)
                consumer._read_offset[tp] = position - 1 if position > 0 else None  # Faust's seek moved it
            elif verdict is Verdict.RESTART:
                self.request_restart(
                    "partition still not fed after fetching it again: stopping to be restarted",
                    topic=tp.topic,
                    partition=tp.partition,
                    position=position,
                    high_watermark=end,
                )
                return


def fetched_end(consumer: Any, tp: Any) -> int | None:
    """The high watermark of ``tp`` in the consumer's last fetch answer. On the embedded
    broker the listed one counts batches and can be far short; the fetch's is right."""
    try:
        end = consumer.highwater(tp)
    except Exception:  # not assigned any more, or the client is stopping
        return None
    return end if isinstance(end, int) and end >= 0 else None


def max_known(*offsets: int | None) -> int | None:
    known = [o for o in offsets if o is not None]
    return max(known) if known else None
