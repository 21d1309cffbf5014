"""``instructrec chaos``: replay ml-100k through the real processes while SIGKILLing the
stream worker and the scoring pool at random moments, restarting them, then check what
users of the output topic rely on.

Checks, after the replay and every kill:
- every trigger has an answer: a result, or a dead letter naming it (never silence);
- every duplicate of a recommendation id has the same content (the record without its
  ``timings``, which measure the delivery that carried it);
- the ``user-context`` table, as its changelog holds it, equals a rebuild from the events
  topic (events and seen items of every user);
- nothing is stuck: no outbox entry or waiting trigger left in the table, no lag on the
  stream worker's or the pools' consumer groups, and both processes stop on SIGTERM with
  exit code 0 (the time that takes is reported).
The last line printed is ``chaos: {json}``.
"""

from __future__ import annotations

import base64
import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition

from instructrec.broker import EmbeddedBroker, free_port
from instructrec.kafka import consumer_config, create_topics, read_partitions
from instructrec.logs import get_logger
from instructrec.progress import progress
from instructrec.replay import ReplayConfig, Replayer, catalog_records, plan
from instructrec.results import ResultCollector
from instructrec.runner import Processes, child_env, wait_until_ready
from instructrec.settings import Settings
from instructrec.watchdog import RESTART_EXIT_CODE
from model.context import UserContext
from schemas.codec import check_key, check_not_future, decode_events
from schemas.exceptions import DecodeError
from schemas.topics import DEAD_LETTERS, RECOMMENDATIONS

log = get_logger(__name__)
STREAM, POOL = "stream-worker", "scoring-pool"


@dataclass(frozen=True)
class ChaosOptions:
    events: int = 50_000
    trigger_every: int = 24  # ~2,000 triggers in 50,000 events
    rate: float = 600.0  # events/s offered by the replay
    stream_kills: int = 5
    pool_kills: int = 5
    terms: int = 1  # graceful restarts (SIGTERM under load) of each, timed
    gap_s: tuple[float, float] = (3.0, 9.0)  # random wait before each kill
    down_s: tuple[float, float] = (0.2, 2.0)  # how long a killed process stays down
    settle_timeout_s: float = 300.0  # after the replay, longest wait for every answer
    stop_timeout_s: float = 60.0  # SIGTERM -> exit, at most (the drain bound is checked below it)
    seed: int = 0
    partitions: int = 4
    burn: int = 0  # busy processes beside the system for the whole run (a loaded machine)
    quiet: bool = False


@dataclass
class Kill:
    target: str
    at_s: float  # since the replay started
    pid: int
    signal: str = "SIGKILL"
    exit_code: int | None = None
    exit_s: float | None = None  # SIGTERM -> exit


def run_chaos(base: Settings, options: ChaosOptions) -> dict[str, Any]:
    from model.data import fetch_ml100k, load_ml100k

    say = (lambda *_: None) if options.quiet else (lambda *a: print(*a, flush=True))
    fetch_ml100k(base.data_dir)
    dataset = load_ml100k(base.data_dir)
    rng = random.Random(options.seed)
    work = Path(tempfile.mkdtemp(prefix="instructrec-chaos-"))
    started = time.monotonic()
    with (
        cpu_burners(options.burn),
        EmbeddedBroker(log_path=work / "tansu.log") if not base.bootstrap_servers else _Null() as broker,
    ):
        bootstrap = broker.bootstrap_servers if broker else base.require_bootstrap()
        settings = Settings(
            **{
                **base.model_dump(exclude_unset=False),
                "bootstrap_servers": bootstrap,
                "broker_profile": "embedded" if broker else base.broker_profile,
                "topic_prefix": f"chaos-{uuid.uuid4().hex[:8]}.",
                "partitions": options.partitions,
                "web_port": free_port(),
                "state_dir": work / "state",
                "model_poll_s": 0.0,  # one model version for the whole run
            }
        )
        create_topics(settings)
        env = {
            **child_env(settings, bootstrap, settings.embedded),
            "INSTRUCTREC_TOPIC_PREFIX": settings.topic_prefix,
            "INSTRUCTREC_PARTITIONS": str(settings.partitions),
            "INSTRUCTREC_WEB_PORT": str(settings.web_port),
            "INSTRUCTREC_STATE_DIR": str(settings.state_dir),
            "INSTRUCTREC_MODEL_POLL_S": "0",
        }
        procs = Processes(env, work / "logs")
        collector = ResultCollector(settings).start()
        replayer = Replayer(settings)
        replayer.send_catalog(catalog_records(dataset))
        procs.start(STREAM, "stream-worker")
        procs.start(POOL, "pool")
        try:
            ready_s = wait_until_ready(replayer, collector, procs, 240.0)
            say(f"chaos: pipeline ready after {ready_s:.1f}s (broker {bootstrap}, logs {work / 'logs'})")
            config = ReplayConfig(events=options.events, trigger_every=options.trigger_every, seed=options.seed)
            sent: list[str] = []
            replay_done = threading.Event()
            replay_started = time.monotonic()

            def replay() -> None:
                try:
                    replayer.run(
                        progress(plan(dataset, config), "chaos replay", unit="msg"),
                        options.rate,
                        on_trigger=lambda t: sent.append(t.request_id),
                    )
                finally:
                    replay_done.set()

            threading.Thread(target=replay, name="chaos-replay", daemon=True).start()
            kills = _kill_loop(procs, options, rng, replay_started, say)
            replay_done.wait()
            replay_s = time.monotonic() - replay_started
            say(f"chaos: replay done ({len(sent)} triggers in {replay_s:.0f}s), {len(kills)} kills; settling")

            triggers = set(sent)
            answered_by = _answered_ids(collector)
            collector.wait_for(lambda: triggers <= answered_by(), options.settle_timeout_s)
            settle_s = time.monotonic() - replay_started - replay_s
            procs.check()
            time.sleep(max(6.0, settings.session_timeout))  # let Faust's periodic commit catch up
            checks = verify(settings, triggers)
            lag = group_lag(settings)
        finally:
            collector.close()
            stop_started = time.monotonic()
            codes = procs.stop(timeout=options.stop_timeout_s)
            stop_s = time.monotonic() - stop_started
    sigkills = [k for k in kills if k.signal == "SIGKILL"]
    terms = [k for k in kills if k.signal == "SIGTERM"]
    summary = {
        "kills": len(sigkills),
        "stream_kills": sum(k.target == STREAM for k in sigkills),
        "pool_kills": sum(k.target == POOL for k in sigkills),
        "sigterm_restarts": [{"target": k.target, "exit_code": k.exit_code, "exit_s": k.exit_s} for k in terms],
        "events": options.events,
        "burn": options.burn,
        "triggers": len(triggers),
        **checks,
        "lag": lag,
        "exit_codes": codes,
        "watchdog_restarts": dict(procs.restarts),
        "stop_s": round(stop_s, 1),
        "replay_s": round(replay_s, 1),
        "settle_s": round(settle_s, 1),
        "duration_s": round(time.monotonic() - started, 1),
        "kill_times_s": [round(k.at_s, 1) for k in sigkills],
        "logs": str(work / "logs"),
    }
    return summary


@contextlib.contextmanager
def cpu_burners(n: int) -> Iterator[None]:
    """``n`` processes that spin on a core each until the block ends: the rest of the
    machine's work (other jobs, noisy neighbours) that the system must survive."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *_: object) -> None:
        return None


def _kill_loop(procs: Processes, options: ChaosOptions, rng: random.Random, t0: float, say: Any) -> list[Kill]:
    """SIGKILL the stream worker and the pool in random order at random moments; each is
    restarted after a random pause (its log continues in the same file)."""
    order = [(STREAM, "SIGKILL")] * options.stream_kills + [(POOL, "SIGKILL")] * options.pool_kills
    order += [(STREAM, "SIGTERM"), (POOL, "SIGTERM")] * options.terms
    rng.shuffle(order)
    kills = []
    for target, how in order:
        time.sleep(rng.uniform(*options.gap_s))
        proc = procs.procs[target]
        if proc.poll() == RESTART_EXIT_CODE:  # its feed watchdog gave up; the supervisor restarts it
            while procs.procs[target] is proc:
                time.sleep(0.1)
            proc = procs.procs[target]
        if proc.poll() is not None:
            raise RuntimeError(f"{target} exited on its own with code {proc.returncode}")
        at = time.monotonic()
        if how == "SIGKILL":
            os.killpg(proc.pid, signal.SIGKILL)  # the process and any children (pool members)
            proc.wait()
            kills.append(Kill(target, at - t0, proc.pid))
        else:
            proc.send_signal(signal.SIGTERM)  # drain: finish, publish, commit, exit 0
            try:
                code = proc.wait(options.stop_timeout_s)
            except Exception:
                os.killpg(proc.pid, signal.SIGKILL)
                code = proc.wait()
            kills.append(Kill(target, at - t0, proc.pid, how, code, round(time.monotonic() - at, 2)))
        say(f"chaos: {how} {target} (pid {proc.pid}) at {kills[-1].at_s:.1f}s")
        time.sleep(rng.uniform(*options.down_s))
        procs.start(target, "stream-worker" if target == STREAM else "pool")
    return kills


def _answered_ids(collector: ResultCollector) -> Any:
    """A function giving the request ids answered so far: results and dead letters."""
    cache: dict[int, set[str]] = {}

    def answered() -> set[str]:
        ids = set(collector.results)
        n = len(collector.dead_letters)
        if n not in cache:
            cache.clear()
            cache[n] = {rid for d in collector.dead_letters if (rid := _request_id_of(d)) is not None}
        return ids | cache[n]

    return answered


def _request_id_of(letter: Any) -> str | None:
    try:
        value = orjson.loads(base64.b64decode(letter.value_b64))
    except orjson.JSONDecodeError:
        return None
    rid = value.get("request_id") if isinstance(value, dict) else None
    return rid if isinstance(rid, str) else None


# --- checks -----------------------------------------------------------------------------


def read_topic(settings: Settings, topic: str) -> dict[int, list[Any]]:
    """Every record of ``topic``, per partition in offset order (partitions that hold any):
    read to the end the broker reports in its fetches, then until nothing new comes for a
    second (instructrec.kafka.read_partitions), so a loaded machine slows the read down
    rather than cutting it short."""
    return {p: msgs for p, msgs in read_partitions(settings, topic, range(settings.partitions)).items() if msgs}


def read_records(settings: Settings, spec: Any) -> list[Any]:
    """Every record of ``spec``'s topic (a schemas.topics.TopicSpec), decoded, partition by
    partition in offset order."""
    return [
        spec.codec.decode(m.value()) for ms in read_topic(settings, settings.topics.name(spec)).values() for m in ms
    ]


def content_of(value: bytes) -> bytes:
    """A result's content: everything but the timings of the delivery that carried it."""
    record = orjson.loads(value)
    record.pop("timings", None)
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


def verify(settings: Settings, triggers: set[str]) -> dict[str, Any]:
    t = settings.topics
    contents: dict[str, set[bytes]] = defaultdict(set)
    deliveries: Counter[str] = Counter()
    answered: set[str] = set()
    for msgs in read_topic(settings, t.recommendations).values():
        for msg in msgs:
            rec = RECOMMENDATIONS.codec.decode(msg.value())
            contents[rec.recommendation_id].add(content_of(msg.value()))
            deliveries[rec.recommendation_id] += 1
            answered.add(rec.request_id)
    dead: set[str] = set()
    reasons: Counter[str] = Counter()
    for msgs in read_topic(settings, t.dead_letters).values():
        for msg in msgs:
            letter = DEAD_LETTERS.codec.decode(msg.value())
            rid = _request_id_of(letter)
            if rid in triggers:
                dead.add(rid)
                reasons[letter.reason] += 1
    unanswered = triggers - answered - dead
    inconsistent = {rid: c for rid, c in contents.items() if len(c) > 1}
    table_checks = check_context(settings)
    return {
        "answered": len(triggers & (answered | dead)),
        "results": len(triggers & answered),
        "dead_lettered": len(triggers & dead - answered),
        "dead_letter_reasons": dict(reasons),
        "unanswered": len(unanswered),
        "unanswered_ids": sorted(unanswered)[:10],
        "duplicate_deliveries": sum(n - 1 for n in deliveries.values()),
        "inconsistent_duplicates": len(inconsistent),
        "inconsistent_examples": [how_copies_differ(rid, c) for rid, c in sorted(inconsistent.items())[:5]],
        **table_checks,
    }


def how_copies_differ(recommendation_id: str, copies: set[bytes]) -> dict[str, Any]:
    """What differs between copies of one result: the top-level fields, and for the items
    whether the order or only the scores changed (and by how much)."""
    records = [orjson.loads(c) for c in sorted(copies)]
    fields = sorted(
        {key for r in records for key in r if any(r.get(key) != other.get(key) for other in records)} - {"items"}
    )
    orders = {tuple(i["item_id"] for i in r["items"]) for r in records}
    scores: dict[str, list[float]] = defaultdict(list)
    for r in records:
        for item in r["items"]:
            scores[item["item_id"]].append(item["score"])
    score_spread = max((max(v) - min(v) for v in scores.values() if len(v) > 1), default=0.0)
    return {
        "recommendation_id": recommendation_id,
        "request_id": records[0].get("request_id"),
        "copies": len(records),
        "fields": fields,
        "item_order_differs": len(orders) > 1,
        "max_score_difference": score_spread,
    }


def check_context(settings: Settings) -> dict[str, Any]:
    """The table as its changelog holds it (newest record per key) against a rebuild from
    the events topic, decoded and applied as the stream worker does."""
    changelog = f"{settings.topic_prefix}{settings.app_id}-user-context-changelog"
    table: dict[bytes, Any] = {}
    for msgs in read_topic(settings, changelog).values():
        for msg in msgs:
            table[msg.key()] = orjson.loads(msg.value()) if msg.value() is not None else None
    rebuilt: dict[bytes, Any] = {}
    limit, seen_limit = settings.context_length, settings.seen_limit
    skew = settings.max_future_skew_s or None
    for msgs in read_topic(settings, settings.topics.events).values():
        for msg in msgs:
            try:
                events = decode_events(msg.value(), settings.max_message_bytes, settings.max_events_per_message)
                check_not_future((e.ts for e in events), time.time(), skew)
                check_key(msg.key(), events[0].user_id)
            except DecodeError:
                continue
            key = events[0].user_id.encode()
            rebuilt[key] = UserContext.apply(
                rebuilt.get(key), [(e.item_id, e.event_type, e.ts) for e in events], limit, seen_limit
            )
    mismatches: list[str] = []
    details: list[dict[str, Any]] = []
    for key in set(table) | set(rebuilt):
        have, want = table.get(key), rebuilt.get(key)
        if UserContext.events(have) != UserContext.events(want) or UserContext.seen(have) != UserContext.seen(want):
            mismatches.append(key.decode(errors="replace"))
            if len(details) < 3:
                details.append(
                    {
                        "user": key.decode(errors="replace"),
                        "table": [len(UserContext.events(have)), UserContext.events(have)[-3:]],
                        "rebuilt": [len(UserContext.events(want)), UserContext.events(want)[-3:]],
                        "seen": [len(UserContext.seen(have)), len(UserContext.seen(want))],
                        **first_difference(UserContext.events(have), UserContext.events(want), "events"),
                        **first_difference(UserContext.seen(have), UserContext.seen(want), "seen"),
                    }
                )
    return {
        "users": len(rebuilt),
        "context_mismatches": len(mismatches),
        "context_mismatch_users": sorted(mismatches)[:10],
        "context_mismatch_examples": details,
        "stuck_outbox": sum(len(UserContext.outbox(v)) for v in table.values()),
        "stuck_waiting": sum(len(UserContext.waiting(v)) for v in table.values()),
    }


def first_difference(have: list[Any], want: list[Any], name: str) -> dict[str, Any]:
    """Where two lists first differ, with an entry either side (nothing when equal)."""
    if have == want:
        return {}
    i = next((i for i, (a, b) in enumerate(zip(have, want, strict=False)) if a != b), min(len(have), len(want)))
    around = slice(max(0, i - 1), i + 2)
    return {f"{name}_differ_at": i, f"{name}_table": have[around], f"{name}_rebuilt": want[around]}


def group_lag(settings: Settings) -> dict[str, int]:
    """Records not yet committed by the stream worker's and the pools' consumer groups."""
    t = settings.topics
    groups = {
        "stream": (f"{settings.topic_prefix}{settings.app_id}", [t.events, t.triggers]),
        "pool": (settings.scoring_group, [t.score_requests]),
    }
    out = {}
    for name, (group, topics) in groups.items():
        ends = {}
        for topic in topics:
            for partition, msgs in read_topic(settings, topic).items():
                ends[(topic, partition)] = msgs[-1].offset() + 1 if msgs else 0
        consumer = Consumer(consumer_config(settings, group))
        try:
            committed = consumer.committed([TopicPartition(tp[0], tp[1]) for tp in ends], timeout=10)
        finally:
            consumer.close()
        done = {(c.topic, c.partition): max(c.offset, 0) for c in committed}
        out[name] = sum(max(0, end - done.get(tp, 0)) for tp, end in ends.items())
    return out


def print_summary(summary: dict[str, Any]) -> None:
    print("chaos: " + orjson.dumps(summary).decode(), flush=True)
