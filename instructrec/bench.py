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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from instructrec.settings import Settings
from model.context import UserContext
from model.data import Dataset, fetch_ml100k, load_ml100k
from model.recall import ItemGraph
from schemas.records import CatalogItem, ScoreRequest, Trigger
from streams.planner import PlannerConfig, plan_score_request
from workers.batcher import MicroBatcher


@dataclass(frozen=True)
class BenchConfig:
    concurrencies: tuple[int, ...] = (1, 8, 32, 128)
    rounds: int = 5
    candidates: int = 100
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


def bench_scoring(settings: Settings, config: BenchConfig) -> dict[str, Any]:
    from model.device import choose_device, set_cpu_threads
    from model.scorer import BiEncoderScorer, TextEncoder
    from workers.pool import ScoringWorker

    dataset = load_ml100k(fetch_ml100k(settings.data_dir).parent)
    device = choose_device(settings.device)
    threads = set_cpu_threads(settings.torch_threads) if device.device.type == "cpu" else None
    scorer = BiEncoderScorer(TextEncoder(settings.model_dir, device, settings.max_seq_length))
    worker = ScoringWorker(settings)
    worker.scorer = scorer
    lock = threading.Lock()
    results: dict[str, Any] = {"device": device.label, "torch_threads": threads, "rows": []}
    for conc in config.concurrencies:
        requests = real_requests(dataset, conc, config.candidates)
        scorer.score_many(*_args(requests))  # warm: item embeddings cached, as in steady state

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

        batcher: MicroBatcher[ScoreRequest, Any] = MicroBatcher(
            worker.score_batch,
            max_cost=settings.batch_max_pairs,
            max_wait_s=settings.batch_max_wait_ms / 1000,
            max_queue=max(settings.batch_queue, conc),
        )

        def batched(reqs: Sequence[ScoreRequest] = requests, b: MicroBatcher[ScoreRequest, Any] = batcher) -> int:
            with ThreadPoolExecutor(len(reqs)) as pool:
                list(pool.map(lambda r: b.submit(r, cost=1 + len(r.candidates)).result(), reqs))
            return _pairs(reqs)

        # Interleave the three so machine noise hits them alike.
        rates: dict[str, list[float]] = {"raw": [], "one": [], "batched": []}
        for _ in range(config.rounds):
            rates["raw"].append(_median_rate(raw, 1))
            rates["one"].append(_median_rate(one_at_a_time, 1))
            rates["batched"].append(_median_rate(batched, 1))
        batcher.close()
        row = {
            "concurrency": conc,
            "raw_forward_per_s": round(statistics.median(rates["raw"]), 1),
            "one_at_a_time_per_s": round(statistics.median(rates["one"]), 1),
            "batched_per_s": round(statistics.median(rates["batched"]), 1),
        }
        row["batched_vs_raw"] = round(row["batched_per_s"] / row["raw_forward_per_s"], 3)
        row["batched_vs_one"] = round(row["batched_per_s"] / row["one_at_a_time_per_s"], 3)
        results["rows"].append(row)
        print(f"scoring c={conc}: {row}", flush=True)
    return results


def write_report(scoring: dict[str, Any], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = scoring["rows"]
    lines = [
        f"# Benchmark — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        f"Scoring on {scoring['device']} (torch threads: {scoring['torch_threads']}), real ml-100k requests with "
        "100 recalled candidates each, item embeddings warm. Candidate scores per second, medians of rounds "
        "interleaved across the three modes.",
        "",
        "| concurrency | raw forward (limit) | one request at a time | micro-batched | batched / raw | batched / one |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['concurrency']} | {r['raw_forward_per_s']:.0f} | {r['one_at_a_time_per_s']:.0f} | "
            f"{r['batched_per_s']:.0f} | {r['batched_vs_raw']:.2f} | {r['batched_vs_one']:.2f} |"
        )
    report = out_dir / "report.md"
    lines += ["", "![scoring throughput](scoring.png)", ""]
    report.write_text("\n".join(lines))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

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
    except ImportError:  # matplotlib is a dev dependency; the report stands without the plot
        pass
    return report


def run_bench(settings: Settings, config: BenchConfig) -> dict[str, Any]:
    scoring = bench_scoring(settings, config)
    report = write_report(scoring, config.out_dir)
    summary: dict[str, Any] = {"device": scoring["device"], "report": str(report)}
    for row in scoring["rows"]:
        c = row["concurrency"]
        summary[f"one_at_a_time_c{c}_per_s"] = row["one_at_a_time_per_s"]
        summary[f"batched_c{c}_per_s"] = row["batched_per_s"]
        if c == 32:
            summary["raw_forward_per_s"] = row["raw_forward_per_s"]
            summary["batched_vs_raw_c32"] = row["batched_vs_raw"]
            summary["batched_vs_one_c32"] = row["batched_vs_one"]
    return summary


def print_bench(summary: dict[str, Any]) -> None:
    print("bench: " + orjson.dumps(summary).decode(), flush=True)
