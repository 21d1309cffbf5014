"""The scoring pool: one process per GPU (CPU fallback), each a consumer-group member.

Loop: poll score requests -> decode (bad ones to the dead-letter topic) -> submit to the
micro-batcher, which packs candidates of many requests into one forward pass -> rank ->
publish in consumption order -> wait for the broker's acknowledgement -> commit offsets.
When the batcher's queue is full the member pauses its partitions instead of buffering.
Offsets are committed only after the results are acknowledged, so a crash re-scores
rather than loses (at-least-once).
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from instructrec.failpoints import armed, failpoint, slowdown, starving
from instructrec.health import BrokerProbe, Readiness, serve_health
from instructrec.kafka import broker_serves, consumer_config, high_watermarks, make_producer, poll_batch
from instructrec.logs import configure_logging, get_logger
from instructrec.metrics import PoolMetrics, lag_of
from instructrec.settings import Settings
from instructrec.watchdog import RESTART_EXIT_CODE, FeedWatchdog, Verdict
from model.registry import ModelChoice, read_card
from schemas.codec import dead_letter
from schemas.exceptions import DecodeError
from schemas.records import ModelInfo, Recommendation, ScoreRequest, SentimentRequest, SentimentResult
from schemas.topics import DEAD_LETTERS, RECOMMENDATIONS, SCORE_REQUESTS, SENTIMENT_REQUESTS, SENTIMENT_RESULTS
from workers.batcher import MicroBatcher
from workers.ranking import rank

if TYPE_CHECKING:
    from model.scorer import ScoredRequest

log = get_logger(__name__)
COMPONENT = "scoring-pool"
LAG_EVERY_S = 5.0


def _texts(request: Any) -> int:
    """Texts the model reads for a request (its batching cost): the candidates plus the
    instruction; one for a headline."""
    return 1 + len(request.candidates) if isinstance(request, ScoreRequest) else 1


@dataclass(frozen=True)
class Rejected:
    """A request that gets a dead letter instead of a result."""

    reason: str
    detail: str


Outcome = Recommendation | SentimentResult | Rejected
Request = ScoreRequest | SentimentRequest


class ScoringWorker:
    def __init__(self, settings: Settings, index: int = 0) -> None:
        self.settings = settings
        self.index = index
        self.stop = threading.Event()
        self.scored = 0
        self.dead = 0
        self.pauses = 0
        self.feed_seeks = 0
        self.restart_requested = False  # the feed watchdog gave up: exit 75 to be restarted
        # next offset this member needs per (topic, partition): what it took, else committed
        self.next_offset: dict[tuple[str, int], int] = {}
        self.watchdog: FeedWatchdog[tuple[str, int]] | None = (
            FeedWatchdog(settings.feed_stall_s) if settings.feed_stall_s > 0 else None
        )
        self.model_lock = threading.Lock()  # one forward pass at a time (scoring or warming)
        self.sentiment: Any = None  # model/sentiment.py SentimentModel, when configured
        self._delivery_errors: list[str] = []
        # "catalog": every catalog item embedded (workers/warmer.py), so the first score
        # request after ready is answered at normal speed.
        checks = ("broker", "model", "catalog", "partitions")
        self.readiness = Readiness(*(c for c in checks if c != "catalog" or settings.pool_warm_catalog))
        self.warmer: Any = None  # workers/warmer.py CatalogWarmer, when warming is on
        self.commits_refused = 0
        self.metrics = PoolMetrics()

    def _model_choice(self) -> ModelChoice:
        from model.registry import resolve_model
        from model.scorer import default_model_dir

        return resolve_model(self.settings.model_dir or default_model_dir(), self.settings.model_version)

    def load_model(self, choice: ModelChoice | None = None) -> None:
        """Load (or hot-swap to) a model version. Scorer and version are swapped together,
        between batches, so every result names the version that produced it."""
        from model.device import choose_device, set_cpu_threads
        from model.scorer import load_scorer

        choice = choice or self._model_choice()
        device = choose_device(self.settings.device, self.index)
        if device.device.type == "cpu":
            set_cpu_threads(self.settings.torch_threads)
        started = time.perf_counter()
        scorer = load_scorer(
            choice.path,
            device,
            self.settings.max_seq_length,
            self.settings.int8,
            self.settings.item_cache_size,
            batch_invariant=self.settings.batch_invariant,
        )
        scorer.encoder.encode(["warm-up"])
        stored = scorer.attach_store(self.settings.state_dir / "item-embeddings", choice.version)
        if self.warmer is not None:  # a new version: embed the catalog before it serves
            self.warmer.warm(scorer)
        card = read_card(choice.path) or {}
        fusion = card.get("fusion")
        cross = self._load_reranker(device)
        rerank_dir = self.settings.rerank_model_dir
        reranker = rerank_dir.name if cross is not None and rerank_dir is not None else None
        info = ModelInfo(name=self.settings.model_name, version=choice.version, reranker=reranker, fusion=fusion)
        self.active = (scorer, info, cross)  # swapped as one: a batch never mixes versions
        self.choice = choice
        self.metrics.serving(choice.version, device.label)
        log.info(
            "model loaded",
            model=self.settings.model_name,
            version=choice.version,
            device=device.label,
            model_dir=str(choice.path),
            item_vectors_loaded=stored,
            seconds=round(time.perf_counter() - started, 2),
        )

    def _load_sentiment(self) -> Any:
        """The headline sentiment model, when one is configured (model/sentiment.py)."""
        if self.settings.sentiment_model_dir is None:
            return None
        from model.device import choose_device
        from model.sentiment import load_sentiment

        model = load_sentiment(self.settings.sentiment_model_dir, choose_device(self.settings.device, self.index))
        model.predict(["warm-up"])
        self.sentiment_info = ModelInfo(name="minilm-sentiment", version=model.version)
        log.info("sentiment model loaded", version=model.version)
        return model

    def _load_reranker(self, device: Any) -> Any:
        """The cross-encoder stage, where the device can afford it: on CUDA, or on CPU
        when INSTRUCTREC_RERANK_ON_CPU is set."""
        s = self.settings
        if s.rerank_model_dir is None:
            return None
        if device.device.type == "cpu" and not s.rerank_on_cpu:
            log.info(
                "re-rank stage off on CPU (INSTRUCTREC_RERANK_ON_CPU=true turns it on)", model=str(s.rerank_model_dir)
            )
            return None
        from model.cross import CrossEncoder

        cross = CrossEncoder(s.rerank_model_dir, device)
        cross.score_pairs([("warm-up", "warm-up")])
        log.info("re-rank stage on", model=str(s.rerank_model_dir), top_m=s.rerank_top_m, device=device.label)
        return cross

    def _watch_models(self) -> None:
        """Look for a new model version every model_poll_s; load it beside the running one."""
        while not self.stop.wait(self.settings.model_poll_s):
            try:
                choice = self._model_choice()
                if choice != self.choice:
                    log.info("new model version found", version=choice.version, previous=self.choice.version)
                    self.load_model(choice)
            except Exception as exc:  # a half-copied version must not take the pool down
                log.warning("model reload failed; keeping the current version", error=repr(exc)[:300])

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._delivery_errors.append(f"{msg.topic()}: {err}")

    def run(self) -> int:
        s = self.settings
        health = (
            serve_health(
                self.readiness,
                s.health_host,
                s.pool_health_port + self.index,
                f"{COMPONENT}-{self.index}",
                metrics=self.metrics.render,
            )
            if s.pool_health_port
            else None
        )
        self.load_model()
        self.sentiment = self._load_sentiment()
        self.readiness.set("model", True, self.choice.version)
        if s.model_poll_s > 0:
            threading.Thread(target=self._watch_models, name="model-watch", daemon=True).start()
        self.batcher: MicroBatcher[Request, Outcome] = MicroBatcher(
            self.score_batch,
            max_cost=s.batch_max_pairs,
            max_wait_s=s.batch_max_wait_ms / 1000,
            max_queue=s.batch_queue,
            name=f"{COMPONENT}-{self.index}-batcher",
        )
        self.inflight: deque[tuple[Message, Future[Outcome]]] = deque()
        if s.pool_warm_catalog:
            from workers.warmer import CatalogWarmer

            self.warmer = CatalogWarmer(s, lambda: self.active[0], self.model_lock, self.readiness).start()
            # Take no score request before the catalog is embedded: "ready" means the
            # first one is answered at normal speed.
            while not self.warmer.caught_up.wait(0.2) and not self.stop.is_set():
                pass
        probe = BrokerProbe(
            self.readiness,
            lambda timeout: self.producer.list_topics(timeout=timeout),
            s.broker_probe_s,
            f"{COMPONENT}-{self.index}",
            passive=True,
        )
        self.readiness.set("broker", True, "reachable")  # until a client says otherwise

        def on_error(err: KafkaError) -> None:
            if err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, KafkaError._RESOLVE):
                probe.suspect(str(err))

        client_id = {"client.id": f"{COMPONENT}-{self.index}", "error_cb": on_error}
        self.consumer = Consumer(consumer_config(s, s.scoring_group, **client_id))
        self.producer = make_producer(s, **client_id, **{"linger.ms": 1})
        self.assigned_once = False
        topics = [s.topics.score_requests] + ([s.topics.sentiment_requests] if self.sentiment is not None else [])
        self.consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        probe.start()
        log.info("scoring pool member started", group=s.scoring_group, topics=topics, index=self.index)
        paused: list[TopicPartition] = []
        starve = armed("pool.starve")  # tests only (instructrec/failpoints.py)
        watch_every = max(0.5, s.feed_stall_s / 4)
        next_watch = time.monotonic() + watch_every
        next_lag = time.monotonic() + LAG_EVERY_S
        try:
            while not self.stop.is_set():
                room = s.batch_queue - len(self.inflight)
                if room <= 0 and not paused:
                    # Backpressure: stop fetching instead of buffering without bound.
                    paused = self.consumer.assignment()
                    self.consumer.pause(paused)
                    self.pauses += 1
                    log.debug("backpressure: partitions paused", inflight=len(self.inflight))
                elif room > 0 and paused:
                    self.consumer.resume(paused)
                    paused = []
                if room > 0:
                    wait = 0.005 if self.inflight else 0.2
                    for msg in poll_batch(self.consumer, min(room, s.pool_poll_batch), wait):
                        if starve and msg.error() is None and starving("pool.starve"):
                            continue
                        self._accept(msg)
                else:
                    self.consumer.poll(0.005)  # heartbeats and callbacks while paused
                self._publish_done(wait_all=False)
                self.metrics.queue_depth.set(len(self.inflight))
                if time.monotonic() >= next_lag:
                    next_lag = time.monotonic() + LAG_EVERY_S
                    self._measure_lag()
                if self.watchdog is not None and time.monotonic() >= next_watch:
                    next_watch = time.monotonic() + watch_every
                    if paused or not self.readiness.ok("broker"):
                        self.watchdog.forget()
                    else:
                        self._watch_feed()
            self._drain()
        finally:
            probe.stop.set()
            if health is not None:
                health.shutdown()
            if self.warmer is not None:
                self.warmer.close()
            else:
                self.active[0].save_store()
            # A batch still running after the drain's bound is abandoned (its requests
            # were not committed, so they are scored again); the thread is a daemon.
            self.batcher.close(timeout=1.0)
            if self.assigned_once or not s.embedded:
                self.consumer.close()  # leaves the group so partitions move at once
            else:
                # Embedded broker: a member that leaves while its JoinGroup is pending can be
                # elected leader anyway and the group never completes that rebalance (seen in
                # `make chaos`: SIGTERM during a pool's start). Going without a LeaveGroup,
                # it is dropped when the rebalance times out (Settings.rebalance_timeout_s).
                log.info("left without LeaveGroup: never assigned (embedded broker)")
            self.producer.flush(10)
        log.info(
            "scoring pool member stopped",
            scored=self.scored,
            dead_letters=self.dead,
            pauses=self.pauses,
            feed_seeks=self.feed_seeks,
            commits_refused=self.commits_refused,
        )
        return RESTART_EXIT_CODE if self.restart_requested else 0

    def _accept(self, msg: Message) -> None:
        error = msg.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("consume error", error=str(error))
            return
        future: Future[Outcome]
        sentiment = msg.topic() == self.settings.topics.sentiment_requests
        spec = SENTIMENT_REQUESTS if sentiment else SCORE_REQUESTS
        try:
            request = spec.codec.decode(msg.value(), self.settings.max_message_bytes)
        except DecodeError as exc:
            future = Future()
            future.set_result(Rejected(exc.reason, exc.detail))
        else:
            future = self.batcher.submit(request, cost=_texts(request))
        self.inflight.append((msg, future))
        topic, partition, offset = _origin(msg)
        self.next_offset[(topic, partition)] = offset + 1

    def score_batch(self, requests: Sequence[Request]) -> list[Outcome]:
        """The batcher's function: score requests and headlines that arrived together,
        each kind in one forward pass, answers in the order asked."""
        started = time.perf_counter()
        if delay := slowdown("pool.slow-batch"):  # tests only: a loaded machine's long batch
            time.sleep(delay)
        try:
            return self._score_batch(requests)
        finally:
            m = self.metrics
            m.scoring_seconds.observe(time.perf_counter() - started)
            m.batch_requests.observe(len(requests))
            m.batch_texts.observe(sum(map(_texts, requests)))

    def _score_batch(self, requests: Sequence[Request]) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(requests)
        recommend = [(i, r) for i, r in enumerate(requests) if isinstance(r, ScoreRequest)]
        headlines = [(i, r) for i, r in enumerate(requests) if isinstance(r, SentimentRequest)]
        if recommend:
            scorer = self.active[0]
            computed = scorer.items_computed
            for (i, _), outcome in zip(recommend, self.score_recommendations([r for _, r in recommend]), strict=True):
                outcomes[i] = outcome
            # Items the warmer had not embedded beforehand (the catalog's own are).
            self.metrics.items_embedded_while_scoring.inc(scorer.items_computed - computed)
        if headlines:
            for (i, _), outcome in zip(headlines, self.score_sentiment([r for _, r in headlines]), strict=True):
                outcomes[i] = outcome
        return [o if o is not None else Rejected("scoring-failed", "no outcome") for o in outcomes]

    def score_sentiment(self, requests: Sequence[SentimentRequest]) -> list[Outcome]:
        """Headlines, one forward pass; a failing batch is split like a recommendation batch."""
        try:
            with self.model_lock:
                predicted = self.sentiment.predict([r.text for r in requests])
        except Exception as exc:
            return self._split_failed(self.score_sentiment, requests, exc)
        scored_ts = time.time()
        return [
            SentimentResult(
                request_id=r.request_id,
                news_id=r.news_id,
                ticker=r.ticker,
                label=label,  # type: ignore[arg-type]
                score=max(-1.0, min(1.0, score)),
                probabilities=probs,
                text=r.text[:512],
                model=self.sentiment_info,
                news_ts=r.news_ts,
                scored_ts=scored_ts,
            )
            for r, (label, score, probs) in zip(requests, predicted, strict=True)
        ]

    def _split_failed(self, score: Any, requests: Sequence[Any], exc: Exception) -> list[Outcome]:
        """Out of memory, or one request the model cannot take: split the batch in halves
        until the failing request is alone, so it alone is rejected."""
        from model.device import is_out_of_memory, release_cached_memory

        oom = is_out_of_memory(exc)
        if oom:
            release_cached_memory()
        if len(requests) == 1:
            reason = "out-of-memory" if oom else "scoring-failed"
            log.error("request rejected by the model", reason=reason, error=repr(exc))
            return [Rejected(reason, f"{type(exc).__name__}: {str(exc)[:300]}")]
        half = len(requests) // 2
        log.warning("batch failed; splitting it", requests=len(requests), out_of_memory=oom, error=repr(exc))
        return list(score(requests[:half])) + list(score(requests[half:]))

    def score_recommendations(self, requests: Sequence[ScoreRequest]) -> list[Outcome]:
        """One forward pass for many score requests. On CUDA out of memory (or any failure)
        the batch is split in halves and retried; a request that fails alone is rejected
        by itself."""
        from workers.ranking import scoring_jobs, with_baselines

        scorer, model, cross = self.active  # one version for the whole batch
        started = time.time()
        t0 = time.perf_counter()
        # A request whose intention names some of its candidates is scored once more with
        # its baseline instruction (no intention), in the same pass: rank() holds those
        # candidates back to no higher than that places them (workers/ranking.py).
        jobs = scoring_jobs(requests)
        try:
            with self.model_lock:
                scored = scorer.score_many(
                    [instruction for _, instruction in jobs],
                    [[(c.item_id, c.text) for c in r.candidates] for r, _ in jobs],
                    [[(h.item_id, h.text) for h in r.history] for r, _ in jobs],
                )
                if model.fusion is not None:
                    scored = [fused(model.fusion, r, x) for (r, _), x in zip(jobs, scored, strict=True)]
                if cross is not None:
                    from model.cross import rerank_top

                    scored = rerank_top(
                        cross,
                        [instruction for _, instruction in jobs],
                        [[c.text for c in r.candidates] for r, _ in jobs],
                        scored,
                        # every returned item is re-ranked, so one score scale per result
                        max(self.settings.rerank_top_m, max(r.k for r in requests)),
                    )
                paired = with_baselines(requests, scored)
        except Exception as exc:
            return self._split_failed(self.score_recommendations, requests, exc)
        score_ms = (time.perf_counter() - t0) * 1000
        return [
            rank(request, result, model, baseline=baseline, started_ts=started, score_ms=score_ms)
            for request, (result, baseline) in zip(requests, paired, strict=True)
        ]

    def _drain(self) -> None:
        """SIGTERM: stop fetching, keep polling (so the group keeps this member while its
        batch finishes), publish and commit what is scored; requests not yet started are
        given back, uncommitted, to the partition's next owner."""
        self.consumer.pause(self.consumer.assignment())
        self._settle(time.monotonic() + self.settings.pool_drain_timeout_s, poll=True)

    def _settle(self, deadline: float, poll: bool) -> None:
        """Cancel the requests the batcher has not started, wait until ``deadline`` for
        the running batch, publish and commit the finished prefix, drop the rest (not
        committed: it is consumed and scored again)."""
        for _, future in self.inflight:
            future.cancel()  # only succeeds for requests still queued
        while self.inflight and not all(f.done() for _, f in self.inflight) and time.monotonic() < deadline:
            if poll:
                self.consumer.poll(0.05)  # heartbeats, max.poll.interval; partitions paused
            else:
                time.sleep(0.05)
            self._publish_done(wait_all=False)
        self._publish_done(wait_all=False)
        if self.inflight:
            log.info("requests given back unscored", requests=len(self.inflight))
            self.inflight.clear()

    def _publish_done(self, wait_all: bool) -> None:
        """Publish finished requests in consumption order, then commit their offsets once
        the broker has acknowledged the results. A cancelled request (given back at
        shutdown or revocation) ends the run: nothing from it on is published."""
        offsets: dict[tuple[str, int], int] = {}
        while self.inflight and (wait_all or self.inflight[0][1].done()):
            if self.inflight[0][1].cancelled():
                break
            msg, future = self.inflight.popleft()
            try:
                outcome = future.result()
            except Exception as exc:  # the whole batch failed
                log.error("scoring failed", error=repr(exc)[:300])
                outcome = Rejected("scoring-failed", f"{type(exc).__name__}: {str(exc)[:300]}")
            if isinstance(outcome, Rejected):
                self._dead_letter(msg, outcome.reason, outcome.detail)
            else:
                out = SENTIMENT_RESULTS if isinstance(outcome, SentimentResult) else RECOMMENDATIONS
                value = out.codec.encode(outcome)
                try:
                    self.producer.produce(
                        self.settings.topics.name(out),
                        key=out.key_of(outcome),
                        value=value,
                        on_delivery=self._on_delivery,
                    )
                    self.scored += 1
                    self._count(outcome)
                except KafkaException as exc:
                    if exc.args[0].code() != KafkaError.MSG_SIZE_TOO_LARGE:
                        raise
                    self._dead_letter(msg, "result-too-large", f"the result is {len(value)} bytes: {exc}")
            topic, partition, offset = _origin(msg)
            offsets[(topic, partition)] = offset + 1
        if offsets:
            self._commit_after_ack(offsets)

    def _count(self, outcome: Recommendation | SentimentResult) -> None:
        m = self.metrics
        if isinstance(outcome, SentimentResult):
            m.results.labels(kind="sentiment").inc()
            return
        m.results.labels(kind="recommendation").inc()
        m.queue_seconds.observe(outcome.timings.queue_ms / 1000)
        m.end_to_end_seconds.observe(outcome.timings.pipeline_ms / 1000)

    def _measure_lag(self) -> None:
        """Consumer lag per assigned partition, from the client's own view (the high
        watermark the last fetch reported): no request to the broker."""
        try:
            assigned = self.consumer.assignment()
            positions = {(tp.topic, tp.partition): tp.offset for tp in self.consumer.position(assigned)}
            ends = {}
            for tp in assigned:
                _low, high = self.consumer.get_watermark_offsets(tp, cached=True)
                ends[(tp.topic, tp.partition)] = high
        except KafkaException:
            return
        self.metrics.set_lag(lag_of(positions, ends))

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned_once = True
        self.readiness.set("partitions", True, f"{len(partitions)} assigned")
        self.next_offset.clear()
        if self.watchdog is not None:
            self.watchdog.forget()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Publish and commit what this member scored before the partitions move on; what
        # it has not scored within a bound goes to their next owner. (No poll inside a
        # rebalance callback, so the wait stays well within the rebalance timeout.)
        bound = min(self.settings.pool_drain_timeout_s, self.settings.rebalance_timeout_s / 3)
        self._settle(time.monotonic() + bound, poll=False)
        self.next_offset.clear()
        if self.watchdog is not None:
            self.watchdog.forget()

    def _watch_feed(self) -> None:
        """Feed watchdog (instructrec/watchdog.py) over this member's partitions."""
        assert self.watchdog is not None
        keys = [(tp.topic, tp.partition) for tp in self.consumer.assignment()]
        unknown = [TopicPartition(t, p) for t, p in keys if (t, p) not in self.next_offset]
        if unknown:  # nothing taken since the assignment: start from the committed offsets
            try:
                for tp in self.consumer.committed(unknown, timeout=5):
                    if tp.offset >= 0:
                        self.next_offset[(tp.topic, tp.partition)] = tp.offset
            except KafkaException:
                pass
        idle = self.watchdog.note({k: self.next_offset.get(k) for k in keys}, time.monotonic())
        if not idle:
            return
        ends = high_watermarks(self.consumer, idle)
        for key in idle:
            position = self.watchdog.position(key)
            verdict = self.watchdog.judge(key, ends.get(key), time.monotonic())
            if verdict is Verdict.SEEK and position is not None:
                self.feed_seeks += 1
                log.warning(
                    "partition not fed: fetching it again",
                    topic=key[0],
                    partition=key[1],
                    position=position,
                    high_watermark=ends.get(key),
                    fresh_client_gets_it=broker_serves(self.settings, key[0], key[1], position),
                    stalled_s=self.settings.feed_stall_s,
                )
                self.consumer.seek(TopicPartition(key[0], key[1], position))
            elif verdict is Verdict.RESTART:
                log.error(
                    "partition still not fed after fetching it again: stopping to be restarted",
                    topic=key[0],
                    partition=key[1],
                    position=position,
                    high_watermark=ends.get(key),
                    exit_code=RESTART_EXIT_CODE,
                )
                self.restart_requested = True
                self.stop.set()  # the graceful path: finish, publish, commit, leave the group
                return

    def _dead_letter(self, msg: Message, reason: str, detail: str) -> None:
        self.dead += 1
        self.metrics.dead_letters.labels(reason=reason).inc()
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
        key = msg.key()
        try:
            self.producer.produce(
                self.settings.topics.dead_letters,
                key=key[:1024] if key is not None else None,
                value=DEAD_LETTERS.codec.encode(record),
                on_delivery=self._on_delivery,
            )
        except KafkaException as exc:  # the pool goes on; the request's offset is still committed
            log.error("dead letter could not be written", reason=reason, offset=msg.offset(), error=repr(exc))

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
        failpoint("pool.after-publish")
        if offsets:
            try:
                self.consumer.commit(
                    offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False
                )
            except KafkaException as exc:
                # The group moved on (this member was too slow, or a rebalance is under
                # way): the partitions' next owner scores these requests again. Nothing
                # is lost, and identical results are published twice at most.
                self.commits_refused += 1
                self.metrics.commits_refused.inc()
                log.warning(
                    "offsets not committed: the group moved on; the requests are scored again by their next owner",
                    error=str(exc.args[0]) if exc.args else repr(exc),
                    partitions=sorted(f"{t}[{p}]" for t, p in offsets),
                )


def fused(weights: dict[str, float], request: ScoreRequest, scored: ScoredRequest) -> ScoredRequest:
    """A trained model's score: its cosine fused with the candidates' collaborative
    features (see model.features)."""
    from model.features import fuse
    from model.scorer import ScoredRequest

    collab = [(math.log1p(c.cooc), math.log1p(c.cooc_long), math.log1p(c.popularity)) for c in request.candidates]
    return ScoredRequest(fuse(weights, scored.scores, collab), scored.because)


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

    def start(i: int) -> Any:
        proc = ctx.Process(target=_member_main, args=(settings.model_dump(), i), name=f"{COMPONENT}-{i}")
        proc.start()
        return proc

    members = {i: start(i) for i in range(n)}
    stopping = threading.Event()

    def forward(signum: int, _frame: Any) -> None:
        stopping.set()
        for p in list(members.values()):
            if p.pid:
                os.kill(p.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes: list[int] = []
    while members:
        for i, p in list(members.items()):
            p.join(timeout=0.5)
            if p.exitcode is None:
                continue
            if p.exitcode == RESTART_EXIT_CODE and not stopping.is_set():
                log.warning("pool member asked for a restart", index=i)  # its feed watchdog gave up
                members[i] = start(i)
                continue
            codes.append(p.exitcode)
            del members[i]
    return max(codes, default=0)
