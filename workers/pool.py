"""The scoring pool: one process per GPU (CPU fallback), each a consumer-group member.

Loop: poll a batch of score requests -> decode (bad ones to the dead-letter topic) ->
score all requests of the batch together -> rank -> publish -> wait for the broker's
acknowledgement -> commit offsets. Offsets are committed only after the results are
acknowledged, so a crash re-scores rather than loses (at-least-once).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from instructrec.kafka import consumer_config, make_producer
from instructrec.logs import configure_logging, get_logger
from instructrec.settings import Settings
from schemas.codec import dead_letter
from schemas.exceptions import DecodeError
from schemas.records import ModelInfo, ScoreRequest
from schemas.topics import DEAD_LETTERS, RECOMMENDATIONS, SCORE_REQUESTS
from workers.ranking import rank

log = get_logger(__name__)
COMPONENT = "scoring-pool"


def model_info(settings: Settings) -> ModelInfo:
    return ModelInfo(name=settings.model_name, version=settings.model_version)


class ScoringWorker:
    def __init__(self, settings: Settings, index: int = 0) -> None:
        self.settings = settings
        self.index = index
        self.stop = threading.Event()
        self.model = model_info(settings)
        self.scored = 0
        self.dead = 0
        self._delivery_errors: list[str] = []

    def load_model(self) -> None:
        from model.device import choose_device, set_cpu_threads
        from model.scorer import BiEncoderScorer, TextEncoder

        device = choose_device(self.settings.device, self.index)
        if device.device.type == "cpu":
            set_cpu_threads(self.settings.torch_threads)
        started = time.perf_counter()
        encoder = TextEncoder(self.settings.model_dir, device, self.settings.max_seq_length)
        self.scorer = BiEncoderScorer(encoder, self.settings.item_cache_size)
        self.scorer.encoder.encode(["warm-up"])
        log.info(
            "model loaded",
            model=self.model.name,
            version=self.model.version,
            device=device.label,
            model_dir=str(encoder.model_dir),
            seconds=round(time.perf_counter() - started, 2),
        )

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._delivery_errors.append(f"{msg.topic()}: {err}")

    def run(self) -> int:
        s = self.settings
        self.load_model()
        self.consumer = Consumer(consumer_config(s, s.scoring_group, **{"client.id": f"{COMPONENT}-{self.index}"}))
        self.producer = make_producer(s, **{"client.id": f"{COMPONENT}-{self.index}", "linger.ms": 1})
        self.consumer.subscribe([s.topics.score_requests])
        log.info("scoring pool member started", group=s.scoring_group, topic=s.topics.score_requests, index=self.index)
        try:
            while not self.stop.is_set():
                messages = self.consumer.consume(num_messages=s.pool_poll_batch, timeout=0.2)
                if messages:
                    self.handle(messages)
        finally:
            self.consumer.close()  # leaves the group so partitions move at once
            self.producer.flush(10)
        log.info("scoring pool member stopped", scored=self.scored, dead_letters=self.dead)
        return 0

    def handle(self, messages: Sequence[Message]) -> None:
        good: list[tuple[Message, ScoreRequest]] = []
        offsets: dict[tuple[str, int], int] = {}
        for msg in messages:
            error = msg.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consume error", error=str(error))
                continue
            topic, partition, offset = _origin(msg)
            offsets[(topic, partition)] = offset + 1
            try:
                good.append((msg, SCORE_REQUESTS.codec.decode(msg.value())))
            except DecodeError as exc:
                self._dead_letter(msg, exc.reason, exc.detail)
        if good:
            self._score_and_publish(good)
        self._commit_after_ack(offsets)

    def _score_and_publish(self, good: list[tuple[Message, ScoreRequest]]) -> None:
        requests = [r for _, r in good]
        started = time.time()
        t0 = time.perf_counter()
        try:
            scored = self.scorer.score_many(
                [r.instruction for r in requests],
                [[(c.item_id, c.text) for c in r.candidates] for r in requests],
                [[(h.item_id, h.text) for h in r.history] for r in requests],
            )
        except Exception as exc:  # the model failed: every request of the batch is failed
            log.exception("scoring failed", requests=len(requests))
            for msg, _ in good:
                self._dead_letter(msg, "scoring-failed", f"{type(exc).__name__}: {exc}")
            return
        score_ms = (time.perf_counter() - t0) * 1000
        for request, result in zip(requests, scored, strict=True):
            rec = rank(request, result, self.model, started_ts=started, score_ms=score_ms)
            self.producer.produce(
                self.settings.topics.recommendations,
                key=RECOMMENDATIONS.key_of(rec),
                value=RECOMMENDATIONS.codec.encode(rec),
                on_delivery=self._on_delivery,
            )
            self.scored += 1
        log.debug("batch scored", requests=len(requests), score_ms=round(score_ms, 1))

    def _dead_letter(self, msg: Message, reason: str, detail: str) -> None:
        self.dead += 1
        ts_type, ts = msg.timestamp()
        topic, partition, offset = _origin(msg)
        record = dead_letter(
            topic=topic,
            partition=partition,
            offset=offset,
            key=msg.key(),
            value=msg.value(),
            reason=reason,
            detail=detail,
            component=COMPONENT,
            timestamp_ms=ts if ts_type else None,
        )
        log.warning("dead letter", topic=msg.topic(), partition=msg.partition(), offset=msg.offset(), reason=reason)
        self.producer.produce(
            self.settings.topics.dead_letters,
            key=msg.key(),
            value=DEAD_LETTERS.codec.encode(record),
            on_delivery=self._on_delivery,
        )

    def _commit_after_ack(self, offsets: dict[tuple[str, int], int]) -> None:
        stopping_since: float | None = None
        while self.producer.flush(1.0) > 0:
            log.warning("waiting for the broker to acknowledge results")
            if self.stop.is_set():
                stopping_since = stopping_since or time.monotonic()
                if time.monotonic() - stopping_since > self.settings.pool_drain_timeout_s:
                    # Give up without committing: the batch is scored again after restart.
                    log.error("results unacknowledged at shutdown; offsets not committed")
                    return
        if self._delivery_errors:
            errors, self._delivery_errors = self._delivery_errors, []
            # Not committing means the batch is consumed again after a restart/rebalance.
            raise RuntimeError(f"results not acknowledged, offsets not committed: {errors[:3]}")
        if offsets:
            self.consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False)


def _origin(msg: Message) -> tuple[str, int, int]:
    """Topic, partition, offset of a consumed (error-free) message."""
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    if topic is None or partition is None or offset is None:  # only error events lack them
        raise ValueError("message without topic/partition/offset")
    return topic, partition, offset


def _member_main(settings_json: dict[str, Any], index: int) -> int:
    settings = Settings.model_validate(settings_json)
    configure_logging(settings.log_format, settings.log_level, component=f"{COMPONENT}-{index}")
    worker = ScoringWorker(settings, index)
    signal.signal(signal.SIGTERM, lambda *_: worker.stop.set())
    signal.signal(signal.SIGINT, lambda *_: worker.stop.set())
    return worker.run()


def pool_size(settings: Settings) -> int:
    if settings.pool_workers:
        return settings.pool_workers
    if settings.device in ("auto",) or settings.device.startswith("cuda"):
        from model.device import gpu_count

        return max(1, gpu_count())
    return 1


def run_pool(settings: Settings) -> int:
    """Run the pool until SIGTERM/SIGINT; members drain their batch, then exit 0."""
    configure_logging(settings.log_format, settings.log_level, component=COMPONENT)
    n = pool_size(settings)
    if n == 1:
        return _member_main(settings.model_dump(), 0)
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=_member_main, args=(settings.model_dump(), i), name=f"{COMPONENT}-{i}") for i in range(n)
    ]
    for p in procs:
        p.start()

    def forward(signum: int, _frame: Any) -> None:
        for p in procs:
            if p.pid:
                os.kill(p.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for p in procs:
        p.join()
    return max((p.exitcode or 0) for p in procs)
