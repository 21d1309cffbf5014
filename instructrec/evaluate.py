"""``make eval``: every method on the same leave-one-out splits and candidates, side by side.

Prints a markdown table, writes it with a PNG plot to ``.data/eval/``, and prints as its
last line ``eval: {json}`` with ``{"rows": [{"method", "protocol", "hr@1", "hr@10",
"ndcg@10", "mrr", "ours"}, ...]}``.

Methods now: random, popularity, item co-occurrence (the stream worker's recall graph), a
small SASRec trained in the run, and the shipped model -- MiniLM zero-shot, scoring the
same instruction the pools build against each candidate's text. Issue #4 adds the
fine-tuned model.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from instructrec.plots import pyplot
from instructrec.settings import Settings
from model.data import Dataset, fetch_ml100k, load_ml100k
from model.evaluation import (
    PROTOCOLS,
    Scorer,
    UserSplit,
    cooccurrence_scorer,
    evaluate,
    leave_one_out,
    popularity_scorer,
    random_scorer,
)


@dataclass(frozen=True)
class EvalConfig:
    users: int | None = None  # None: every user; else a seeded sample
    protocols: tuple[str, ...] = PROTOCOLS
    seed: int = 0
    with_model: bool = True
    with_sasrec: bool = True
    sasrec_epochs: int = 60
    history_in_instruction: int = 5
    out_dir: Path = Path(".data/eval")


def minilm_scorer(dataset: Dataset, settings: Settings, history: int = 5) -> Scorer:
    """The shipped bi-encoder: the instruction the stream worker would build from the
    user's latest items, against each candidate's catalog text (cosine similarity)."""
    from instructrec.replay import catalog_records
    from model.device import choose_device, set_cpu_threads
    from model.instructions import build_instruction
    from model.scorer import BiEncoderScorer, TextEncoder

    device = choose_device(settings.device)
    if device.device.type == "cpu":
        set_cpu_threads(settings.torch_threads)
    scorer = BiEncoderScorer(TextEncoder(settings.model_dir, device, settings.max_seq_length))
    texts = {c.item_id: c.scoring_text() for c in catalog_records(dataset)}
    titles = {i: item.title for i, item in dataset.items.items()}

    def score(split: UserSplit, candidates: Sequence[str]) -> list[float]:
        latest: list[str] = []
        for item in reversed(split.seen_before_test):
            if item not in latest:
                latest.append(item)
            if len(latest) == history:
                break
        instruction = build_instruction(
            request_id=f"eval-{split.user_id}",
            history_titles=[titles[i] for i in latest if i in titles],
            intention=None,
            task="recommend",
        )
        result = scorer.score_many([instruction.text], [[(i, texts[i]) for i in candidates]], [[]])[0]
        return result.scores

    return score


def sasrec_scorer(dataset: Dataset, splits: Sequence[UserSplit], epochs: int, seed: int) -> Scorer:
    """SASRec trained on every user's training history (never a validation or test item)."""
    from model.device import set_cpu_threads
    from model.sasrec import SASRecConfig, SASRecModel

    set_cpu_threads(None)
    model = SASRecModel(sorted(dataset.items), SASRecConfig(epochs=epochs, seed=seed))
    started = time.perf_counter()
    losses = model.fit([s.train for s in splits], progress=True)
    print(f"sasrec: {epochs} epochs in {time.perf_counter() - started:.0f} s, loss {losses[0]:.3f} -> {losses[-1]:.3f}")

    def score(split: UserSplit, candidates: Sequence[str]) -> list[float]:
        return model.score(split.seen_before_test, candidates)

    return score


def run_eval(settings: Settings, config: EvalConfig) -> dict[str, Any]:
    dataset = load_ml100k(fetch_ml100k(settings.data_dir).parent)
    splits = leave_one_out(dataset)
    everyone = splits
    if config.users is not None and config.users < len(splits):
        splits = sorted(random.Random(config.seed).sample(splits, config.users), key=lambda s: s.user_id)
    catalog = sorted(dataset.items)
    # Baselines learn from every user's training history, whichever users are evaluated.
    methods: dict[str, Scorer] = {
        "random": random_scorer(config.seed),
        "popularity": popularity_scorer(everyone),
        "cooccurrence": cooccurrence_scorer(everyone),
    }
    if config.with_sasrec:
        methods["sasrec"] = sasrec_scorer(dataset, everyone, config.sasrec_epochs, config.seed)
    if config.with_model:
        methods["minilm-zero-shot"] = minilm_scorer(dataset, settings, config.history_in_instruction)
    rows = []
    for protocol in config.protocols:
        for name, scorer in methods.items():
            started = time.perf_counter()
            m = evaluate(scorer, splits, protocol, catalog, config.seed)
            rows.append(
                {
                    "method": name,
                    "protocol": protocol,
                    **m.as_row(),
                    "ours": name == "minilm-zero-shot",
                    "seconds": round(time.perf_counter() - started, 1),
                }
            )
            print(f"eval {protocol:5s} {name:18s} {m.as_row()}", flush=True)
    report = write_report(rows, config, len(splits))
    return {"rows": rows, "users": len(splits), "report": str(report)}


def write_report(rows: list[dict[str, Any]], config: EvalConfig, users: int) -> Path:
    out = config.out_dir
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# Offline evaluation — ml-100k, leave-one-out, {users} users, seed {config.seed}",
        "",
        "Test item = each user's last interaction (ties by file order); candidates: the test item plus "
        "19 / 99 sampled unseen items, or every item with the user's history masked (full).",
        "",
        "| protocol | method | HR@1 | HR@5 | HR@10 | NDCG@5 | NDCG@10 | MRR |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['protocol']} | {r['method']}{' (ours)' if r['ours'] else ''} | {r['hr@1']:.3f} | "
            f"{r['hr@5']:.3f} | {r['hr@10']:.3f} | {r['ndcg@5']:.3f} | {r['ndcg@10']:.3f} | {r['mrr']:.3f} |"
        )
    lines += ["", "![NDCG@10 by method and protocol](eval.png)", ""]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    plt = pyplot()
    if plt is None:
        return report
    protocols = list(dict.fromkeys(r["protocol"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(1, len(methods))
    for n, method in enumerate(methods):
        values = [
            next((r["ndcg@10"] for r in rows if r["method"] == method and r["protocol"] == p), 0.0) for p in protocols
        ]
        ax.bar([x + n * width for x in range(len(protocols))], values, width, label=method)
    ax.set_xticks([x + width * (len(methods) - 1) / 2 for x in range(len(protocols))], protocols)
    ax.set_ylabel("NDCG@10")
    ax.set_title(f"ml-100k leave-one-out, {users} users")
    ax.legend()
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "eval.png", dpi=120)
    plt.close(fig)
    return report


def print_eval(result: dict[str, Any]) -> None:
    keep = ("method", "protocol", "hr@1", "hr@10", "ndcg@10", "mrr", "ours")
    rows = [{k: r[k] for k in keep} for r in result["rows"]]
    print("eval: " + orjson.dumps({"rows": rows}).decode(), flush=True)
