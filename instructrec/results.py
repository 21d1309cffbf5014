"""Follow the output and dead-letter topics: print results, measure latency, count."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from confluent_kafka import Consumer

from instructrec.kafka import consumer_config, poll_batch
from instructrec.settings import Settings
from schemas.exceptions import DecodeError
from schemas.records import DeadLetter, Recommendation
from schemas.topics import DEAD_LETTERS, RECOMMENDATIONS


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def stage_medians_ms(collector: ResultCollector, request_ids: list[str]) -> dict[str, float | None]:
    """Median time per stage: trigger -> score request (stream worker), request -> scoring
    start (pool queue), model time, result produced -> consumed (delivery)."""
    stream, queue, score, deliver = [], [], [], []
    for rid in request_ids:
        rec = collector.results.get(rid)
        if rec is None:
            continue
        t = rec.timings
        stream.append((t.request_ts - t.trigger_ts) * 1000)
        queue.append(t.queue_ms)
        score.append(t.score_ms)
        deliver.append((collector.received_ts[rid] - t.scored_ts) * 1000)
    return {
        name: None if (v := percentile(values, 50)) is None else round(v, 1)
        for name, values in (("stream", stream), ("queue", queue), ("score", score), ("deliver", deliver))
    }


def format_result(
    rec: Recommendation,
    latency_ms: float | None,
    intention: str | None = None,
    genres: Mapping[str, Sequence[str]] | None = None,
    top: int = 5,
) -> str:
    """A result on two lines; with the trigger's intention, a third line shows it and
    each item carries its genres (a reader sees whether the list follows it)."""

    def tag(item_id: str) -> str:
        names = (genres or {}).get(item_id, ())
        return f" [{'/'.join(names)}]" if intention and names else ""

    items = "  ".join(f"{i.rank}. {i.title}{tag(i.item_id)} ({i.score:.2f})" for i in rec.items[:top])
    lat = f" {latency_ms:.0f} ms" if latency_ms is not None else ""
    asked = f"\n    asked for: “{intention}”" if intention else ""
    return f"[{rec.user_id}] {rec.request_id}{lat}: {items}{asked}\n    why: {rec.explanation}"


@dataclass
class ResultCollector:
    """Consumes recommendations (and dead letters) on a private consumer group."""

    settings: Settings
    on_result: Callable[[Recommendation, float | None], None] | None = None
    results: dict[str, Recommendation] = field(default_factory=dict)
    duplicates: int = 0
    latencies_ms: dict[str, float] = field(default_factory=dict)
    received_ts: dict[str, float] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def start(self) -> ResultCollector:
        self._thread = threading.Thread(target=self._run, name="results", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        s = self.settings
        consumer = Consumer(consumer_config(s, f"results-{uuid.uuid4().hex[:12]}", **{"enable.auto.commit": True}))
        consumer.subscribe([s.topics.recommendations, s.topics.dead_letters])
        try:
            while not self.stop.is_set():
                for msg in poll_batch(consumer, 500, 0.1):
                    if msg.error() is not None:
                        continue
                    received = time.time()
                    try:
                        if msg.topic() == s.topics.recommendations:
                            self._on_result(RECOMMENDATIONS.codec.decode(msg.value()), received)
                        else:
                            with self._cond:
                                self.dead_letters.append(DEAD_LETTERS.codec.decode(msg.value()))
                                self._cond.notify_all()
                    except DecodeError:
                        continue
        finally:
            consumer.close()

    def _on_result(self, rec: Recommendation, received: float) -> None:
        with self._cond:
            if rec.request_id in self.results:
                self.duplicates += 1
                return
            latency = (received - rec.timings.trigger_ts) * 1000
            self.results[rec.request_id] = rec
            self.latencies_ms[rec.request_id] = latency
            self.received_ts[rec.request_id] = received
            self._cond.notify_all()
        if self.on_result is not None:
            self.on_result(rec, latency)

    def wait_for(self, request_ids: set[str] | Callable[[], bool], timeout: float) -> bool:
        """Wait until every id has a result (or the predicate holds)."""
        deadline = time.monotonic() + timeout

        def done() -> bool:
            if callable(request_ids):
                return request_ids()
            return request_ids.issubset(self.results)

        with self._cond:
            while not done():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
        return True

    def close(self) -> None:
        self.stop.set()
        if hasattr(self, "_thread"):
            self._thread.join(timeout=10)
