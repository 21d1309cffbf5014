"""``instructrec run``: broker (embedded unless configured), stream worker, scoring pool,
replay and a live view of the results, as separate processes; a summary at the end."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from instructrec.broker import EmbeddedBroker
from instructrec.kafka import create_topics
from instructrec.logs import get_logger
from instructrec.replay import ReplayConfig, Replayer, catalog_records, plan
from instructrec.results import ResultCollector, format_result, percentile, stage_medians_ms
from instructrec.settings import Settings
from instructrec.watchdog import RESTART_EXIT_CODE
from schemas.records import DeadLetter, Recommendation, Trigger

log = get_logger(__name__)


@dataclass(frozen=True)
class RunOptions:
    duration: float | None = None  # None: until Ctrl-C
    rate: float = 200.0  # events/s
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    quiet: bool = False
    startup_timeout: float = 240.0
    # Triggers sent in the first ``warmup`` seconds of the replay are answered and
    # counted, but left out of the latency figures (cold caches, JIT-free warm-up).
    warmup: float = 0.0
    alerts: bool = True  # alerts worker and sample news, when a sentiment model is there
    news_rate: float = 20.0  # sample headlines/s (instructrec/news.py), when alerts run


class Processes:
    """Child processes started with the same interpreter; stopped with SIGTERM.

    A supervisor: a child that exits with RESTART_EXIT_CODE (its feed watchdog gave up,
    instructrec/watchdog.py) is started again, with the same arguments and environment
    but no failpoints. Any other exit is left to the caller."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.restarts: dict[str, int] = {}
        self._specs: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        threading.Thread(target=self._supervise, name="supervisor", daemon=True).start()

    def _supervise(self) -> None:
        while not self._stopping.wait(0.5):
            with self._lock:
                for name, proc in list(self.procs.items()):
                    if proc.poll() == RESTART_EXIT_CODE and not self._stopping.is_set():
                        args, env = self._specs[name]
                        env = {k: v for k, v in env.items() if k != "INSTRUCTREC_FAILPOINTS"}
                        self.restarts[name] = self.restarts.get(name, 0) + 1
                        log.warning(
                            "process asked for a restart; starting it again", process=name, exit_code=RESTART_EXIT_CODE
                        )
                        self._spawn(name, args, env)

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``instructrec <args>`` as ``name``; ``env`` adds to the shared environment."""
        with self._lock:
            self._specs[name] = (args, env or {})
            return self._spawn(name, args, env or {})

    def _spawn(self, name: str, args: tuple[str, ...], env: dict[str, str]) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.log", "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "instructrec", *args],
                env={**self.env, **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches the runner, which stops children in order
            )
        self.procs[name] = proc
        return proc

    def check(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() not in (None, RESTART_EXIT_CODE):
                raise RuntimeError(f"{name} exited with code {proc.returncode}; see {self.log_dir / name}.log")

    def stop(self, timeout: float = 30.0) -> dict[str, int | None]:
        self._stopping.set()
        with self._lock:  # no restart is under way
            pass
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        deadline = time.monotonic() + timeout
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait()
        return codes


def child_env(settings: Settings, bootstrap: str, embedded: bool) -> dict[str, str]:
    env = dict(os.environ)
    env["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
    env["INSTRUCTREC_BROKER_PROFILE"] = "embedded" if embedded else settings.broker_profile
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def run_all(settings: Settings, options: RunOptions) -> dict[str, Any]:
    from model.data import fetch_ml100k, load_ml100k

    started = time.monotonic()
    say = (lambda *_: None) if options.quiet else print
    fetch_ml100k(settings.data_dir)
    dataset = load_ml100k(settings.data_dir)
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    log_dir = settings.data_dir / "logs" / time.strftime("%Y%m%d-%H%M%S")
    summary: dict[str, Any] = {}
    with ExitStack() as stack:
        embedded = not settings.bootstrap_servers
        if embedded:
            broker = stack.enter_context(EmbeddedBroker(log_path=log_dir / "tansu.log" if _mk(log_dir) else None))
            bootstrap = broker.bootstrap_servers
            say(f"embedded broker (Tansu, memory storage) on {bootstrap}")
        else:
            bootstrap = settings.require_bootstrap()
        env = child_env(settings, bootstrap, embedded)
        settings = Settings(
            **{
                **_overrides(settings),
                "bootstrap_servers": bootstrap,
                "broker_profile": "embedded" if embedded else settings.broker_profile,
            }
        )
        create_topics(settings)
        sentiment_dir = sentiment_model(settings) if options.alerts else None
        if sentiment_dir is not None:  # the pools then also score headlines
            env["INSTRUCTREC_SENTIMENT_MODEL_DIR"] = str(sentiment_dir)
        procs = Processes(env, log_dir)
        stack.callback(lambda: summary.update(exit_codes=procs.stop()))
        procs.start("stream-worker", "stream-worker")
        procs.start("scoring-pool", "pool")
        if sentiment_dir is not None:
            procs.start("alerts-worker", "alerts-worker")
            say(f"stream worker, scoring pool and alerts worker started; logs in {log_dir}")
        elif options.alerts:
            say(
                f"stream worker and scoring pool started; logs in {log_dir} (no sentiment model under "
                f"{settings.data_dir}/models/sentiment: no alerts; `make sentiment` trains one)"
            )
        else:
            say(f"stream worker and scoring pool started (alerts off); logs in {log_dir}")

        say(
            f"metrics (Prometheus): stream worker http://{settings.web_host}:{settings.web_port}/metrics/, "
            f"scoring pool http://{settings.health_host}:{settings.pool_health_port}/metrics; "
            f"readiness at /ready/ and /ready"
        )
        intentions: dict[str, str] = {}  # request id -> the intention its trigger carried
        genres = {i: item.genres for i, item in dataset.items.items()}

        def printer(rec: Recommendation, lat: float | None) -> None:
            if not options.quiet:
                print(format_result(rec, lat, intentions.get(rec.request_id), genres), flush=True)

        collector = ResultCollector(settings, on_result=printer).start()
        stack.callback(collector.close)
        replayer = Replayer(settings)
        replayer.send_catalog(catalog_records(dataset))

        wait_until_ready(replayer, collector, procs, options.startup_timeout, stop)
        ready_s = time.monotonic() - started
        say(f"pipeline ready after {ready_s:.1f}s; replaying ml-100k at {options.rate:.0f} events/s")

        sent: list[str] = []
        measured: list[str] = []
        drain = 0.0
        if options.duration is not None:
            drain = min(20.0, max(5.0, options.duration * 0.15))
            replay_until = started + options.duration - drain
            threading.Thread(target=_stop_at, args=(stop, replay_until), daemon=True).start()
        replay_started = time.monotonic()
        measure_from = replay_started + options.warmup

        def on_trigger(t: Trigger) -> None:
            if t.intention:
                intentions[t.request_id] = t.intention
            sent.append(t.request_id)
            if time.monotonic() >= measure_from:
                measured.append(t.request_id)

        if sentiment_dir is not None:  # beside the ml-100k replay, from its own thread
            threading.Thread(
                target=_send_news, args=(settings, options.news_rate, stop), name="news", daemon=True
            ).start()
        stats = replayer.run(plan(dataset, options.replay), options.rate, stop, on_trigger=on_trigger)
        replay_s = time.monotonic() - replay_started
        collector.wait_for(set(sent), drain if options.duration is not None else 10.0)
        procs.check()
        if sentiment_dir is not None:
            summary.update(alert_summary(settings, say))
        lat = [collector.latencies_ms[r] for r in measured if r in collector.latencies_ms]
        answered = sum(1 for r in sent if r in collector.results)
        summary.update(
            events=stats.events,
            triggers=stats.triggers,
            results=answered,
            unanswered=stats.triggers - answered,
            duplicate_results=collector.duplicates,
            # Readiness probes sent before the catalog was read are dead-lettered
            # (no-candidates) by design; they are counted apart.
            dead_letters=sum(1 for d in collector.dead_letters if not _is_probe(d)),
            probe_dead_letters=sum(1 for d in collector.dead_letters if _is_probe(d)),
            p50_ms=_round(percentile(lat, 50)),
            p99_ms=_round(percentile(lat, 99)),
            max_ms=_round(max(lat) if lat else None),
            stage_p50_ms=stage_medians_ms(collector, measured),
            measured_triggers=len(measured),
            warmup_s=options.warmup,
            latencies_ms=lat,
            events_per_s=round(stats.events / replay_s, 1) if replay_s else None,
            **served_versions(collector),
            intention_genre_share=intention_genre_share(collector, intentions, genres),
            ready_s=round(ready_s, 1),
            replay_s=round(replay_s, 1),
            bootstrap=bootstrap,
            embedded=embedded,
            logs=str(log_dir),
        )
    summary["duration_s"] = round(time.monotonic() - started, 1)
    signal.signal(signal.SIGINT, previous)
    return summary


def served_versions(collector: ResultCollector) -> dict[str, Any]:
    """``model_version``: the version that produced most of the run's results (a pool that
    found a new one mid-run switches); ``model_versions``: results per version."""
    counts = Counter(rec.model.version for rec in collector.results.values())
    return {"model_version": counts.most_common(1)[0][0] if counts else None, "model_versions": dict(counts)}


def intention_genre_share(
    collector: ResultCollector, intentions: dict[str, str], genres: dict[str, tuple[str, ...]]
) -> dict[str, list[float | int]]:
    """Whether the lists follow the intentions sent: for each intention that names genres
    (``model.evaluation.genres_named``), the share of recommended items of those genres in
    the answers to triggers without an intention, in the answers to the triggers with it,
    and how many answers that is."""
    from model.evaluation import genres_named

    def share(recs: list[Recommendation], wanted: set[str]) -> float:
        items = [i.item_id for rec in recs for i in rec.items]
        return round(sum(1 for i in items if wanted & set(genres.get(i, ()))) / max(1, len(items)), 3)

    plain = [rec for rid, rec in collector.results.items() if rid not in intentions and not rec.cold_start]
    out: dict[str, list[float | int]] = {}
    for text in sorted(set(intentions.values())):
        wanted = genres_named(text)
        answered = [rec for rid, rec in collector.results.items() if intentions.get(rid) == text]
        if wanted and answered:
            out[text] = [share(plain, wanted), share(answered, wanted), len(answered)]
    return out


def sentiment_model(settings: Settings) -> Path | None:
    """The headline sentiment model `make run` serves: the configured one, else the latest
    under ``<data_dir>/models/sentiment`` (``make sentiment`` puts one there); None: none."""
    from model.exceptions import ModelNotFound
    from model.sentiment import resolve_sentiment, sentiment_root

    root = settings.sentiment_model_dir or sentiment_root(settings.data_dir)
    try:
        return resolve_sentiment(root)
    except ModelNotFound:
        if settings.sentiment_model_dir is not None:
            raise
        return None


def _send_news(settings: Settings, rate: float, stop: threading.Event) -> None:
    """The sample news stream (instructrec/news.py): follows of ml-100k users 1-50, then
    the headlines, in event time ending now, at ``rate`` per second."""
    from instructrec.kafka import make_producer
    from instructrec.news import sample_news
    from model.sentiment import load_headlines
    from schemas.topics import FOLLOWS, NEWS

    news_plan = sample_news(
        load_headlines(),
        end_ts=time.time(),
        window_s=settings.alert_window_s,
        baseline_windows=settings.alert_baseline_windows,
        min_count=settings.alert_min_count,
        users=[str(u) for u in range(1, 51)],
    )
    producer = make_producer(settings)
    for f in news_plan.follows:
        producer.produce(settings.topics.follows, key=FOLLOWS.key_of(f), value=FOLLOWS.codec.encode(f))
    producer.flush(30)
    log.info("sample news", headlines=len(news_plan.news), surge_ticker=news_plan.surge_ticker)
    gap = 1.0 / rate if rate > 0 else 0.0
    for item in news_plan.news:
        if stop.wait(gap) if gap else stop.is_set():
            break
        producer.produce(settings.topics.news, key=NEWS.key_of(item), value=NEWS.codec.encode(item))
        producer.poll(0)
    producer.flush(30)


def alert_summary(settings: Settings, say: Any) -> dict[str, Any]:
    """Alerts raised and delivered during the run; the first alert printed."""
    from instructrec.chaos import read_records
    from schemas.topics import ALERTS, USER_ALERTS

    alerts, delivered = read_records(settings, ALERTS), read_records(settings, USER_ALERTS)
    for a in alerts[:3]:
        top = a.headlines[0].text if a.headlines else ""
        say(
            f"alert {a.alert_id}: {a.ticker} negative share {a.negative_share:.2f} of {a.count} headlines "
            f"(z {a.z:.1f}); e.g. “{top}”; delivered to {sum(d.alert_id == a.alert_id for d in delivered)} followers"
        )
    return {"alerts": len(alerts), "alert_tickers": sorted({a.ticker for a in alerts}), "user_alerts": len(delivered)}


def wait_until_ready(
    replayer: Replayer,
    collector: ResultCollector,
    procs: Processes | None,
    timeout: float,
    stop: threading.Event | None = None,
) -> float:
    """Ready = a probe trigger came back through the whole pipeline. Probes are resent
    until one is answered: the first may arrive before the catalog has been read.
    Returns the seconds it took."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        probe = Trigger(
            request_id=f"probe-{uuid.uuid4().hex[:8]}", user_id=f"probe-{uuid.uuid4().hex[:6]}", ts=time.time(), k=3
        )
        replayer.send_trigger(probe)
        if collector.wait_for({probe.request_id}, 3.0):
            return time.monotonic() - started
        if procs is not None:
            procs.check()
        if (stop is not None and stop.is_set()) or time.monotonic() > deadline:
            raise RuntimeError(f"the pipeline did not answer a probe within {timeout:.0f}s")


def _is_probe(letter: DeadLetter) -> bool:
    return b'"request_id":"probe-' in base64.b64decode(letter.value_b64)


def _mk(path: Path) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return True


def _stop_at(stop: threading.Event, when: float) -> None:
    stop.wait(max(0.0, when - time.monotonic()))
    stop.set()


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _overrides(settings: Settings) -> dict[str, Any]:
    return settings.model_dump(exclude_unset=False)


def print_summary(summary: dict[str, Any]) -> None:
    shown = {k: v for k, v in summary.items() if k != "latencies_ms"}  # every latency: for plots, not the console
    print("summary: " + orjson.dumps(shown).decode(), flush=True)
