"""``make bench``: a benchmark harness (not timed tests). Medians over repeated rounds,
baselines measured side by side in the same run.

Scoring part (in-process, the real model, real ml-100k requests, no broker):
- ``raw_forward_per_s``: candidate scores/s of the scorer's own batched call on all
  requests at once -- no queueing at all, the limit;
- ``one_at_a_time_c{N}_per_s``: N concurrent callers, each request scored by itself;
- ``batched_c{N}_per_s``: the same callers through the MicroBatcher.

Writes a markdown report and a PNG plot under ``.data/bench/`` and prints, as its last
line, ``bench: {json}``.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from instructrec.plots import pyplot
from instructrec.progress import progress
from instructrec.settings import Settings
from model.context import UserContext
from model.data import Dataset, fetch_ml100k, load_ml100k
from model.recall import ItemGraph
from schemas.records import CatalogItem, ModelInfo, ScoreRequest, Trigger
from streams.planner import PlannerConfig, plan_score_request
from workers.batcher import MicroBatcher


@dataclass(frozen=True)
class BenchConfig:
    concurrencies: tuple[int, ...] = (1, 8, 32, 128)
    rounds: int = 5
    candidates: int = 100
    ingest_rounds: int = 3
    ingest_single_events: int = 40_000
    ingest_batched_events: int = 300_000  # ml-100k replayed 3x with new user ids: steady state, not start-up
    events_per_message: int = 50
    trigger_seconds: float = 120.0  # including start-up (~20 s) and the final drain
    trigger_warmup_seconds: float = 30.0  # replay whose triggers are left out (cold item-embedding cache)
    out_dir: Path = Path(".data/bench")


def real_requests(dataset: Dataset, n: int, candidates: int, seed: int = 3) -> list[ScoreRequest]:
    """Score requests as the stream worker would build them from ml-100k histories."""
    rng = random.Random(seed)
    catalog = {
        i: CatalogItem(item_id=i, title=it.title, attributes={"year": it.year, "genres": list(it.genres)})
        for i, it in dataset.items.items()
    }
    by_user: dict[str, list[tuple[str, str, float]]] = {}
    for x in dataset.interactions:
        by_user.setdefault(x.user_id, []).append((x.item_id, "click" if x.rating >= 4 else "view", x.ts))
    graph = ItemGraph()
    graph.rebuild([[e[0] for e in evs[-50:]] for evs in by_user.values()])
    users = rng.sample(sorted(by_user), n)
    out = []
    for k, user in enumerate(users):
        ctx = UserContext.apply(None, by_user[user][-50:], 50, 1000)
        trig = Trigger(request_id=f"bench-{k}", user_id=user, ts=time.time(), k=10)
        out.append(
            plan_score_request(
                trig, ctx, catalog.get, graph, PlannerConfig(recall_size=candidates), fresh=iter(catalog)
            )
        )
    return out


def _pairs(requests: Sequence[ScoreRequest]) -> int:
    return sum(len(r.candidates) for r in requests)


def _args(
    requests: Sequence[ScoreRequest],
) -> tuple[list[str], list[list[tuple[str, str]]], list[list[tuple[str, str]]]]:
    return (
        [r.instruction for r in requests],
        [[(c.item_id, c.text) for c in r.candidates] for r in requests],
        [[(h.item_id, h.text) for h in r.history] for r in requests],
    )


def _median_rate(run: Callable[[], int], rounds: int) -> float:
    rates = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        n = run()
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates)


def bench_int8_agreement(settings: Settings, n: int = 128) -> dict[str, float]:
    """How far int8 moves the ranking: mean overlap of the top 10 and share of equal top 1
    against fp32 on real requests (the offline eval of issue #4 adds NDCG)."""
    from model.device import choose_device
    from model.scorer import BiEncoderScorer, TextEncoder

    dataset = load_ml100k(fetch_ml100k(settings.data_dir).parent)
    requests = real_requests(dataset, n, 100, seed=11)
    device = choose_device("cpu")
    tops = []
    for int8 in (False, True):
        scorer = BiEncoderScorer(TextEncoder(settings.model_dir, device, settings.max_seq_length, int8=int8))
        scored = scorer.score_many(*_args(requests))
        tops.append([_top(s.scores, 10) for s in scored])
    overlap = statistics.mean(len(set(a) & set(b)) / 10 for a, b in zip(*tops, strict=True))
    top1 = statistics.mean(float(a[0] == b[0]) for a, b in zip(*tops, strict=True))
    return {"int8_top10_overlap": round(overlap, 3), "int8_top1_agreement": round(top1, 3)}


def _top(scores: Sequence[float], k: int) -> list[int]:
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k]


def bench_scoring(settings: Settings, config: BenchConfig, int8: bool = False) -> dict[str, Any]:
    from model.device import choose_device, set_cpu_threads
    from model.scorer import BiEncoderScorer, TextEncoder
    from workers.pool import ScoringWorker

    dataset = load_ml100k(fetch_ml100k(settings.data_dir).parent)
    device = choose_device(settings.device)
    threads = set_cpu_threads(settings.torch_threads) if device.device.type == "cpu" else None
    info = ModelInfo(name=settings.model_name, version=settings.model_version)
    scorer = BiEncoderScorer(TextEncoder(settings.model_dir, device, settings.max_seq_length, int8=int8))
    worker = ScoringWorker(settings)
    worker.active = (scorer, info, None)
    # The baseline of the batch-invariant encoder: texts padded to their batch (last bits
    # then depend on the batch), micro-batched the same way.
    dynamic = BiEncoderScorer(
        TextEncoder(settings.model_dir, device, settings.max_seq_length, int8=int8, batch_invariant=False)
    )
    dynamic_worker = ScoringWorker(settings)
    dynamic_worker.active = (dynamic, info, None)
    lock = threading.Lock()
    label = device.label + ("/int8" if scorer.encoder.int8 else "")
    results: dict[str, Any] = {"device": label, "torch_threads": threads, "rows": []}
    for conc in config.concurrencies:
        requests = real_requests(dataset, conc, config.candidates)
        scorer.score_many(*_args(requests))  # warm: item embeddings cached, as in steady state
        dynamic.score_many(*_args(requests))

        def raw(reqs: Sequence[ScoreRequest] = requests) -> int:
            scorer.score_many(*_args(reqs))
            return _pairs(reqs)

        def one_at_a_time(reqs: Sequence[ScoreRequest] = requests) -> int:
            def one(r: ScoreRequest) -> None:
                with lock:  # one model, one request per forward pass
                    worker.score_batch([r])

            with ThreadPoolExecutor(len(reqs)) as pool:
                list(pool.map(one, reqs))
            return _pairs(reqs)

        batcher, dynamic_batcher = (
            MicroBatcher[ScoreRequest, Any](
                w.score_batch,
                max_cost=settings.batch_max_pairs,
                max_wait_s=settings.batch_max_wait_ms / 1000,
                max_queue=max(settings.batch_queue, conc),
            )
            for w in (worker, dynamic_worker)
        )

        def batched(reqs: Sequence[ScoreRequest] = requests, b: MicroBatcher[ScoreRequest, Any] = batcher) -> int:
            with ThreadPoolExecutor(len(reqs)) as pool:
                list(pool.map(lambda r: b.submit(r, cost=1 + len(r.candidates)).result(), reqs))
            return _pairs(reqs)

        def batched_dynamic(b: MicroBatcher[ScoreRequest, Any] = dynamic_batcher) -> int:
            return batched(b=b)

        # Interleave the four so machine noise hits them alike.
        rates: dict[str, list[float]] = {"raw": [], "one": [], "batched": [], "dynamic": []}
        for _ in range(config.rounds):
            rates["raw"].append(_median_rate(raw, 1))
            rates["one"].append(_median_rate(one_at_a_time, 1))
            rates["batched"].append(_median_rate(batched, 1))
            rates["dynamic"].append(_median_rate(batched_dynamic, 1))
        batcher.close()
        dynamic_batcher.close()
        row = {
            "concurrency": conc,
            "raw_forward_per_s": round(statistics.median(rates["raw"]), 1),
            "one_at_a_time_per_s": round(statistics.median(rates["one"]), 1),
            "batched_per_s": round(statistics.median(rates["batched"]), 1),
            "batched_dynamic_padding_per_s": round(statistics.median(rates["dynamic"]), 1),
        }
        row["invariant_vs_dynamic"] = round(row["batched_per_s"] / row["batched_dynamic_padding_per_s"], 3)
        row["batched_vs_raw"] = round(row["batched_per_s"] / row["raw_forward_per_s"], 3)
        row["batched_vs_one"] = round(row["batched_per_s"] / row["one_at_a_time_per_s"], 3)
        results["rows"].append(row)
        print(f"scoring {label} c={conc}: {row}", flush=True)
    return results


# --------------------------------------------------------------------------- ingestion


def _event_messages(dataset: Dataset, n: int, per_message: int) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs for ``n`` ml-100k events in time order: single events, or
    arrays of up to ``per_message`` consecutive events of one user. Beyond the data set's
    100k interactions it is replayed with new user ids (``<user>~<round>``)."""
    out: list[tuple[bytes, bytes]] = []
    pending: dict[str, list[dict[str, Any]]] = {}
    interactions = dataset.interactions
    for i in range(n):
        x = interactions[i % len(interactions)]
        rounds = i // len(interactions)
        user = f"{x.user_id}~{rounds}" if rounds else x.user_id
        event = {"user_id": user, "item_id": x.item_id, "event_type": "click" if x.rating >= 4 else "view", "ts": x.ts}
        if per_message <= 1:
            out.append((user.encode(), orjson.dumps(event)))
            continue
        batch = pending.setdefault(user, [])
        batch.append(event)
        if len(batch) >= per_message:
            out.append((user.encode(), orjson.dumps(pending.pop(user))))
    out += [(user.encode(), orjson.dumps(batch)) for user, batch in pending.items()]
    return out


class ChangelogWatch:
    """Reads a changelog topic from its start by manual assignment (no group join, which
    takes seconds on the embedded broker) and waits for sentinel records."""

    def __init__(self, settings: Settings, topic: str, timeout: float = 120.0) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
        from confluent_kafka.admin import AdminClient

        admin = AdminClient(settings.confluent_config())
        deadline = time.monotonic() + timeout
        while topic not in (meta := admin.list_topics(timeout=5)).topics:  # the worker creates it at start
            if time.monotonic() > deadline:
                raise RuntimeError(f"{topic} was never created")
            time.sleep(0.2)
        partitions = len(meta.topics[topic].partitions)
        self.consumer = Consumer(
            {
                **settings.confluent_config(),
                "group.id": "bench-watch",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": settings.client_fetch_max_wait_ms,
            }
        )
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])

    def wait(self, wanted: dict[str, str], timeout: float) -> float | None:
        """Until, for every sentinel user, a record of that user holds its sentinel item;
        returns the time.monotonic() when the last one was read, None on timeout."""
        missing = dict(wanted)
        deadline = time.monotonic() + timeout
        while missing and time.monotonic() < deadline:
            for msg in self.consumer.consume(1000, timeout=0.05):
                key = msg.key()
                if msg.error() is not None or key is None:
                    continue
                user = key.decode(errors="replace").strip('"')
                if user in missing and missing[user].encode() in (msg.value() or b""):
                    del missing[user]
        return None if missing else time.monotonic()

    def close(self) -> None:
        self.consumer.close()


def bench_ingest(settings: Settings, dataset: Dataset, *, naive: bool, per_message: int, n_events: int) -> float:
    """Events/s through one stream worker process (ours or the naive agent), measured
    from the first event produced to the sentinel event of every partition applied."""
    import subprocess
    import sys
    import uuid

    from instructrec.kafka import create_topics, make_producer
    from instructrec.runner import child_env

    prefix = f"bench{uuid.uuid4().hex[:6]}."
    s = settings.model_copy(update={"topic_prefix": prefix, "web_port": _free_port()})
    s.__dict__.pop("topics", None)
    create_topics(s)
    env = child_env(s, s.require_bootstrap(), s.embedded)
    env.update(INSTRUCTREC_TOPIC_PREFIX=prefix, INSTRUCTREC_WEB_PORT=str(s.web_port), INSTRUCTREC_LOG_LEVEL="INFO")
    cmd = [sys.executable, "-m", "streams.naive"] if naive else [sys.executable, "-m", "instructrec", "stream-worker"]
    app_id = f"{prefix}{s.app_id}-naive" if naive else f"{prefix}{s.app_id}"
    changelog = f"{app_id}-{'naive-context' if naive else 'user-context'}-changelog"
    log_dir = s.data_dir / "bench" / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / f"{'naive' if naive else 'ours'}-{per_message}.log", "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    producer = make_producer(s, **{"linger.ms": 5, "queue.buffering.max.messages": 1_000_000})
    try:

        def sentinels(tag: str) -> dict[str, str]:
            marks = {}
            for p in range(s.partitions):
                user, item = f"sentinel-{tag}-{p}", f"mark-{tag}-{p}"
                value = orjson.dumps({"user_id": user, "item_id": item, "event_type": "view", "ts": 1.0})
                producer.produce(s.topics.events, key=user.encode(), value=value, partition=p)
                marks[user] = item
            producer.flush(30)
            return marks

        watch = ChangelogWatch(s, changelog)
        # Ready: a first sentinel per partition has been applied (join + recovery done).
        if watch.wait(sentinels("ready"), 180) is None:
            raise RuntimeError(f"stream worker not ready; see {log_dir}")
        messages = _event_messages(dataset, n_events, per_message)
        started = time.monotonic()
        for key, value in messages:
            while True:
                try:
                    producer.produce(s.topics.events, key=key, value=value)
                    break
                except BufferError:
                    producer.poll(0.01)
        done = watch.wait(sentinels("end"), 600)
        watch.close()
        if done is None:
            raise RuntimeError(f"stream worker did not finish; see {log_dir}")
        return n_events / (done - started)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _free_port() -> int:
    from instructrec.broker import free_port

    return free_port()


def write_report(
    scoring: dict[str, Any],
    out_dir: Path,
    ingest: dict[str, float] | None = None,
    triggers: dict[str, Any] | None = None,
    config: BenchConfig | None = None,
    int8: dict[str, Any] | None = None,
) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = scoring["rows"]
    lines = [
        f"# Benchmark — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        f"Scoring on {scoring['device']} (torch threads: {scoring['torch_threads']}), real ml-100k requests with "
        "100 recalled candidates each, item embeddings warm. Candidate scores per second, medians of rounds "
        "interleaved across the four modes. The encoder runs every text in its canonical shape (batch-invariant, "
        "the default); the last columns are the same micro-batching with texts padded to their batch instead.",
        "",
        "| concurrency | raw forward (limit) | one request at a time | micro-batched | batched / raw | batched / one "
        "| micro-batched, padded to the batch | invariant / padded |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['concurrency']} | {r['raw_forward_per_s']:.0f} | {r['one_at_a_time_per_s']:.0f} | "
            f"{r['batched_per_s']:.0f} | {r['batched_vs_raw']:.2f} | {r['batched_vs_one']:.2f} | "
            f"{r['batched_dynamic_padding_per_s']:.0f} | {r['invariant_vs_dynamic']:.2f} |"
        )
    lines += ["", "![scoring throughput](scoring.png)", ""]
    if int8:
        c32 = next((r for r in rows if r["concurrency"] == 32), None)
        lines += [
            "### int8 backend (CPU, `INSTRUCTREC_INT8=true`)",
            "",
            "| concurrency 32 | raw forward | micro-batched |",
            "|---|---:|---:|",
            f"| fp32 | {c32['raw_forward_per_s']:.0f} | {c32['batched_per_s']:.0f} |" if c32 else "| fp32 | - | - |",
            f"| int8 | {int8['int8_raw_forward_per_s']:.0f} | {int8['int8_batched_c32_per_s']:.0f} |",
            "",
            f"Ranking agreement with fp32 on 128 real requests of 100 candidates: top-10 overlap "
            f"{int8['int8_top10_overlap']:.2f}, same top-1 {int8['int8_top1_agreement']:.2f}.",
            "",
        ]
    if ingest and config:
        naive = ingest["naive_faust_events_per_s"]
        lines += [
            "## Stream ingestion (embedded broker, one stream-worker process)",
            "",
            f"Events/s from the first event produced to every partition's last event applied to the context "
            f"table; medians of {config.ingest_rounds} interleaved rounds.",
            "",
            "| path | events/s | vs naive |",
            "|---|---:|---:|",
            f"| naive Faust agent, one table write per event ({config.ingest_single_events} single-event messages) "
            f"| {naive:.0f} | 1.00 |",
            f"| ours, single-event messages ({config.ingest_single_events}) | {ingest['ingest_events_per_s']:.0f} | "
            f"{ingest['ingest_events_per_s'] / naive:.2f} |",
            f"| ours, arrays of {config.events_per_message} events per message ({config.ingest_batched_events}) | "
            f"{ingest['ingest_batched_events_per_s']:.0f} | {ingest['ingest_batched_events_per_s'] / naive:.2f} |",
            "",
            "![ingestion side by side](ingest.png)",
            "",
        ]
    if triggers:
        lines += [
            "## Trigger latency (whole system, 20 triggers/s, ~100 candidates each)",
            "",
            f"Trigger produced -> result consumed: p50 {triggers['trigger_p50_ms']} ms, p99 "
            f"{triggers['trigger_p99_ms']} ms over the {triggers['triggers_measured']} triggers sent after "
            f"{config.trigger_warmup_seconds if config else 0:.0f} s of warm-up ({triggers['triggers']} sent in all, "
            f"{triggers['triggers_unanswered']} unanswered). Stage medians (ms): stream worker (trigger -> score "
            f"request), pool queue, model, delivery: {triggers['trigger_stage_p50_ms']}.",
            "",
            "![trigger latency distribution](latency.png)",
            "",
        ]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines))
    plt = pyplot()
    if plt is None:
        return report
    conc = [r["concurrency"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in (
        ("raw_forward_per_s", "raw forward (limit)"),
        ("batched_per_s", "micro-batched"),
        ("one_at_a_time_per_s", "one at a time"),
    ):
        ax.plot(conc, [r[key] for r in rows], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent requests")
    ax.set_ylabel("candidate scores / s")
    ax.set_title(f"Scoring throughput ({scoring['device']})")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "scoring.png", dpi=120)
    plt.close(fig)
    if triggers and triggers.get("trigger_latencies_ms"):
        _plot_latency(plt, sorted(triggers["trigger_latencies_ms"]), out_dir / "latency.png")
    if ingest and config:
        _plot_ingest(plt, ingest, config, out_dir / "ingest.png")
    return report


def _plot_ingest(plt: Any, ingest: dict[str, float], config: BenchConfig, path: Path) -> None:
    """Ingestion events/s side by side: the naive Faust agent and ours (single events,
    arrays of events)."""
    bars = [
        ("naive Faust agent\n(one write per event)", ingest["naive_faust_events_per_s"]),
        ("ours, single-event\nmessages", ingest["ingest_events_per_s"]),
        (f"ours, {config.events_per_message} events\nper message", ingest["ingest_batched_events_per_s"]),
    ]
    fig, ax = plt.subplots(figsize=(7, 4))
    rects = ax.bar([b[0] for b in bars], [b[1] for b in bars], color=["#999999", "#4477aa", "#228833"])
    for rect, (_, value) in zip(rects, bars, strict=True):
        ax.annotate(f"{value:,.0f}", (rect.get_x() + rect.get_width() / 2, value), ha="center", va="bottom")
    ax.set_ylabel("events / s (median of rounds)")
    ax.set_title("Stream ingestion, one stream-worker process")
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_latency(plt: Any, latencies: list[float], path: Path) -> None:
    """Histogram (log-spaced bins) and CDF of trigger latencies, p50/p99 marked."""
    import numpy as np

    fig, (hist, cdf) = plt.subplots(1, 2, figsize=(10, 4))
    lo, hi = max(1.0, latencies[0]), max(latencies[-1], 2.0)
    hist.hist(latencies, bins=np.geomspace(lo, hi, 40))
    hist.set_xscale("log")
    hist.set_xlabel("trigger -> result (ms)")
    hist.set_ylabel("triggers")
    cdf.plot(latencies, np.arange(1, len(latencies) + 1) / len(latencies))
    cdf.set_xscale("log")
    cdf.set_xlabel("trigger -> result (ms)")
    cdf.set_ylabel("share of triggers")
    for q, style in ((50, "--"), (99, ":")):
        value = latencies[min(len(latencies) - 1, int(len(latencies) * q / 100))]
        for ax in (hist, cdf):
            ax.axvline(value, color="black", linestyle=style, linewidth=1, label=f"p{q} {value:.0f} ms")
    cdf.legend()
    for ax in (hist, cdf):
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"Trigger latency, whole system on the embedded broker ({len(latencies)} triggers)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def bench_ingest_all(settings: Settings, config: BenchConfig) -> dict[str, float]:
    """Ours (single events, arrays of events) and the naive agent, rounds interleaved."""
    from instructrec.broker import EmbeddedBroker

    dataset = load_ml100k(fetch_ml100k(settings.data_dir).parent)
    runs: dict[str, list[float]] = {
        "ingest_events_per_s": [],
        "naive_faust_events_per_s": [],
        "ingest_batched_events_per_s": [],
    }
    for _ in range(config.ingest_rounds):
        for key, naive, per, n in (
            ("ingest_events_per_s", False, 1, config.ingest_single_events),
            ("naive_faust_events_per_s", True, 1, config.ingest_single_events),
            ("ingest_batched_events_per_s", False, config.events_per_message, config.ingest_batched_events),
        ):
            # A fresh embedded broker per run: Tansu's memory storage slows as it fills, which
            # would penalise whichever run comes last (measured: naive 1,169 -> 240 events/s
            # in the third round on one shared broker).
            with EmbeddedBroker() if not settings.bootstrap_servers else nullcontext() as broker:
                s = settings
                if broker is not None:
                    s = settings.model_copy(
                        update={"bootstrap_servers": broker.bootstrap_servers, "broker_profile": "embedded"}
                    )
                rate = bench_ingest(s, dataset, naive=naive, per_message=per, n_events=n)
            runs[key].append(rate)
            print(f"ingest {key}: {rate:.0f} events/s", flush=True)
    return {key: round(statistics.median(values), 1) for key, values in runs.items()}


def bench_triggers(settings: Settings, config: BenchConfig) -> dict[str, Any]:
    """The whole system at 20 triggers/s (500 events/s, one trigger per 25 events), each
    with ~100 recalled candidates: trigger produced -> result consumed."""
    from instructrec.replay import ReplayConfig
    from instructrec.runner import RunOptions, run_all

    summary = run_all(
        settings,
        RunOptions(
            duration=config.trigger_seconds,
            rate=500.0,
            replay=ReplayConfig(trigger_every=25),
            quiet=True,
            warmup=config.trigger_warmup_seconds,
        ),
    )
    return {
        "trigger_p50_ms": summary["p50_ms"],
        "trigger_p99_ms": summary["p99_ms"],
        "trigger_stage_p50_ms": summary["stage_p50_ms"],
        "triggers": summary["triggers"],
        "triggers_measured": summary["measured_triggers"],
        "triggers_unanswered": summary["unanswered"],
        "trigger_latencies_ms": summary["latencies_ms"],
    }


def run_bench(settings: Settings, config: BenchConfig) -> dict[str, Any]:
    stages = progress(["scoring", "int8", "ingest", "triggers"], "bench", unit="stage")
    next(stages)
    scoring = bench_scoring(settings, config)
    next(stages)
    int8: dict[str, Any] = {}
    if scoring["device"].startswith("cpu"):
        int8_rows = bench_scoring(settings, BenchConfig(concurrencies=(32,), rounds=config.rounds), int8=True)
        row = int8_rows["rows"][0]
        int8 = {
            "int8_raw_forward_per_s": row["raw_forward_per_s"],
            "int8_batched_c32_per_s": row["batched_per_s"],
            **bench_int8_agreement(settings),
        }
        print(f"int8: {int8}", flush=True)
    next(stages)
    ingest = bench_ingest_all(settings, config)
    next(stages)
    triggers = bench_triggers(settings, config)
    next(stages, None)
    report = write_report(scoring, config.out_dir, ingest, triggers, config, int8)
    shown = {k: v for k, v in triggers.items() if k != "trigger_latencies_ms"}  # those go to the plot
    summary: dict[str, Any] = {"device": scoring["device"], "report": str(report), **ingest, **shown, **int8}
    for row in scoring["rows"]:
        c = row["concurrency"]
        summary[f"one_at_a_time_c{c}_per_s"] = row["one_at_a_time_per_s"]
        summary[f"batched_c{c}_per_s"] = row["batched_per_s"]
        if c == 32:
            summary["raw_forward_per_s"] = row["raw_forward_per_s"]
            summary["batched_vs_raw_c32"] = row["batched_vs_raw"]
            summary["batched_vs_one_c32"] = row["batched_vs_one"]
            summary["invariant_vs_dynamic_c32"] = row["invariant_vs_dynamic"]
    return summary


def print_bench(summary: dict[str, Any]) -> None:
    print("bench: " + orjson.dumps(summary).decode(), flush=True)
