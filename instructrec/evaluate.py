"""``make eval``: every method on the same leave-one-out splits and candidates, side by side.

Prints a markdown table, writes it with a PNG plot to ``.data/eval/``, and prints as its
last line ``eval: {json}`` with ``{"rows": [...]}``: ranking rows carry ``method``,
``protocol``, ``hr@1``, ``hr@5``, ``hr@10``, ``ndcg@5``, ``ndcg@10``, ``mrr``, ``seeds``,
``ndcg@10_std`` and ``ours``; the sentiment rows (protocol ``finance-headlines``,
``model/sentiment.py``) ``accuracy`` and ``macro_f1`` instead, and are left out of the
NDCG plot.

Methods: random, popularity, item co-occurrence (the stream worker's recall graph), a
small SASRec trained in the run, MiniLM zero-shot (the instruction the pools build
against each candidate's text), and ours: MiniLM fine-tuned in the run (``model/train.py``)
fused with the co-occurrence and popularity features, its weights calibrated on the
validation items. Two ablations show what each half brings: the fine-tuned text score
alone, and the calibrated fusion without the text. RecBole's own models are the peers
(``instructrec/peers.py``: trained by RecBole on this split, over seeds, cached). The
trained model is saved as a version directory under ``--models-root`` (LATEST points at
it) with the report, plot and card; the intention probe measures how a genre intention
moves the top 10.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from instructrec.peers import (
    DEFAULT_PEERS,
    PeerRun,
    PeerSpec,
    hard_negatives,
    peer_summary,
    pick_retriever,
    run_peer,
)
from instructrec.plots import pyplot
from instructrec.progress import progress
from instructrec.served import (
    SERVED_STEPS,
    TextModel,
    calibrate,
    fused_scorer,
    sample_users,
    served_config,
    served_version,
    train_version,
    trained_graph,
)
from instructrec.settings import Settings
from model.data import Dataset, fetch_ml100k, load_ml100k
from model.evaluation import (
    HARD,
    LONG_TAIL,
    PROTOCOLS,
    Scorer,
    UserSplit,
    candidates_for,
    cooccurrence_scorer,
    evaluate,
    genre_filter_scorer,
    leave_one_out,
    long_tail_items,
    metrics_from_ranks,
    popularity_scorer,
    random_scorer,
    rank_of_first,
)
from model.intention_probes import probe_intention
from model.registry import read_card, write_card
from model.train import fit_fusion

OURS = "instructrec (fine-tuned + co-occurrence)"
GENRE_FILTER = "keyword genre filter + co-occurrence"
# Full ranking with an intention derived from the held-out item (model/intention_probes.py)
# and, as "<protocol>:none", the same users without it.
INTENTION_PROTOCOLS = ("intention-en", "intention-zh")
DEFAULT_PROTOCOLS = (*PROTOCOLS, *INTENTION_PROTOCOLS)


@dataclass(frozen=True)
class EvalConfig:
    users: int | None = None  # None: every user; else a seeded sample
    protocols: tuple[str, ...] = DEFAULT_PROTOCOLS
    seed: int = 0
    with_model: bool = True
    with_sasrec: bool = True
    sasrec_epochs: int = 60
    history_in_instruction: int = 5
    out_dir: Path = Path(".data/eval")
    train_steps: int = SERVED_STEPS  # 0: no training (evaluate model_dir if given)
    train_layers: int | None = 2
    train_device: str = "auto"
    train_lr: float = 3e-4
    model_dir: Path | None = None  # evaluate this trained model instead of training one
    models_root: Path = Path(".data/models")
    intention_users: int = 100
    calibration_users: int | None = None  # fusion weights fitted on these users' validation items; None: all
    sentiment_epochs: int = 15  # 0: no sentiment rows (model/sentiment.py)
    peers: tuple[str, ...] = tuple(p.model for p in DEFAULT_PEERS)  # RecBole models (instructrec/peers.py)
    peer_seeds: int = 3  # seeds per trained peer (closed-form ones run once)
    peer_max_epochs: int | None = None  # cap on a peer's epochs (None: its CPU cap without CUDA, else early stopping)
    peer_gpu: bool | None = None  # train the peers on cuda:0 (None: when torch sees CUDA)
    peers_dir: Path = Path(".data/peers")


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
    everyone = leave_one_out(dataset)
    splits = sample_users(everyone, config.users, config.seed)
    catalog = sorted(dataset.items)
    graph = trained_graph(everyone)
    # Baselines learn from every user's training history, whichever users are evaluated.
    methods: dict[str, Scorer] = {
        "random": random_scorer(config.seed),
        "popularity": popularity_scorer(everyone),
        "cooccurrence": cooccurrence_scorer(everyone),
    }
    if config.with_sasrec:
        methods["sasrec"] = sasrec_scorer(dataset, everyone, config.sasrec_epochs, config.seed)
    hist = config.history_in_instruction
    zero_shot = TextModel(dataset, settings, None, hist, config.seed) if config.with_model else None
    if zero_shot is not None:
        methods["minilm-zero-shot"] = zero_shot.score
    ours: TextModel | None = None
    card: dict[str, Any] | None = None
    model_dir = config.model_dir
    if config.train_steps > 0 and model_dir is None:
        recipe = served_config(
            config.train_steps, config.train_layers, config.seed, config.train_device, config.train_lr
        )
        model_dir = served_version(config.models_root, recipe)
        if model_dir is not None:
            print(f"evaluating the version `make run` serves: {model_dir} (trained with this recipe)", flush=True)
        else:
            model_dir, card, ours = train_version(
                settings, dataset, everyone, recipe, config.models_root, config.calibration_users, zero_shot
            )
    # A directory without a card (a plain Hugging Face model, such as the packaged MiniLM)
    # is evaluated but never written to: a card there would give it fusion weights
    # wherever it is served.
    versioned = False
    if model_dir is not None:
        card = card or read_card(model_dir)
        versioned = card is not None
        card = card or {}
        if ours is None:
            ours = TextModel(dataset, settings, model_dir, hist, config.seed)
            if zero_shot is not None and ours.share_item_vectors(zero_shot):
                print("item vectors: the version's item encoder is the base model's; embedded once", flush=True)
        if not card.get("fusion_calibrated"):
            calibrate(ours, card, graph, everyone, config.calibration_users, config.seed)
            if versioned:
                write_card(model_dir, card)
        print(f"fusion weights: trained {card.get('fusion_trained')}, calibrated {card['fusion']}", flush=True)
        calibration = sample_users(everyone, config.calibration_users, f"{config.seed}:calibration")
        no_text = fit_fusion(lambda _s, c: [0.0] * len(c), graph, calibration, catalog)
        methods["collaborative features only (no text)"] = fused_scorer(None, graph, no_text)
        methods["instructrec text only"] = ours.score
        methods[OURS] = fused_scorer(ours, graph, card["fusion"])
    peers = run_peers(dataset, everyone, config)
    tail = long_tail_items(everyone, catalog) if LONG_TAIL in config.protocols else None
    hard, retriever = None, None
    if HARD in config.protocols:
        retriever = pick_retriever(peers)
        if retriever is None:
            raise ValueError(f"{HARD} needs a converged RecBole peer as its retriever (--peers)")
        hard = hard_negatives(retriever, everyone)
        print(f"{HARD}: negatives from {retriever.spec.name} seed {retriever.seed}", flush=True)
    protocols = [p for p in config.protocols if p not in INTENTION_PROTOCOLS]
    if tail is not None and not any(s.test in tail for s in splits):
        print(f"{LONG_TAIL}: none of the {len(splits)} users evaluated has a long-tail test item; no rows", flush=True)
        protocols.remove(LONG_TAIL)
    rows = []
    every: list[tuple[str, Scorer | list[PeerRun]]] = [*methods.items(), *peers.items()]
    runs = [(protocol, name, scorer) for protocol in protocols for name, scorer in every]
    for protocol, name, scorer in progress(runs, "eval", unit="method"):
        started = time.perf_counter()
        if isinstance(scorer, list):  # a peer's runs, one per seed
            rows.append(peer_row(scorer, splits, protocol, catalog, config.seed, hard, tail))
        else:
            m = evaluate(scorer, splits, protocol, catalog, config.seed, hard, tail)
            rows.append(
                {
                    "method": name,
                    "protocol": protocol,
                    **m.as_row(),
                    "seeds": 1,
                    "ndcg@10_std": None,
                    "ours": name == OURS,
                    "seconds": round(time.perf_counter() - started, 1),
                }
            )
        shown = {k: v for k, v in rows[-1].items() if k not in ("method", "protocol", "peer")}
        print(f"eval {protocol:5s} {name:26s} {shown}", flush=True)
    followers: dict[str, Callable[..., Sequence[float]]] = {}
    if ours is not None and card is not None:
        followers[OURS] = fused_scorer(ours, graph, card["fusion"])
    if zero_shot is not None:
        followers["minilm-zero-shot"] = zero_shot.score
    followers[GENRE_FILTER] = genre_filter_scorer(dataset, everyone)
    for language in (p.removeprefix("intention-") for p in INTENTION_PROTOCOLS if p in config.protocols):
        rows += intention_rows(followers, dataset, splits, catalog, language, config.seed)
    if config.sentiment_epochs > 0:
        rows += sentiment_rows(config)
    effects = []
    if config.intention_users > 0:
        probe = splits[: config.intention_users]
        if ours is not None and card is not None:
            scorer = fused_scorer(ours, graph, card["fusion"])
            effects += intention_effect(OURS, scorer, dataset, probe, catalog, splits)
        if zero_shot is not None:
            effects += intention_effect("minilm-zero-shot", zero_shot.score, dataset, probe, catalog, splits)
    source = f"{retriever.spec.name} (seed {retriever.seed})" if retriever else None
    ties = tie_order_rows(dataset, catalog, config)
    latest = config.models_root / "LATEST"
    served = card is not None and latest.exists() and latest.read_text().strip() == card.get("version")
    report = write_report(rows, effects, config, len(splits), card, source, ties, served)
    if model_dir is not None and card is not None and versioned:
        card["eval"] = {"users": len(splits), "seed": config.seed, "rows": rows, "intention": effects}
        write_card(model_dir, card)
        for name in ("report.md", "eval.png"):
            if (config.out_dir / name).exists():
                shutil.copy(config.out_dir / name, model_dir / name)
    return {
        "rows": rows,
        "users": len(splits),
        "report": str(report),
        "model_dir": str(model_dir or ""),
        "tie_order": ties,
    }


def intention_rows(
    methods: Mapping[str, Callable[..., Sequence[float]]],
    dataset: Dataset,
    splits: Sequence[UserSplit],
    catalog: Sequence[str],
    language: str,
    seed: int,
) -> list[dict[str, Any]]:
    """``intention-<language>``: full ranking for every user whose held-out item has a
    genre, with an intention for one of its genres in one of eight phrasings that name
    neither the genre nor a title (model/intention_probes.py); ``intention-<language>:none``:
    the same users and candidates without it. Only methods that read an intention."""
    probes = {s.user_id: probe_intention(dataset, s, language, seed) for s in splits}
    users = [s for s in splits if probes[s.user_id] is not None]
    protocol = f"intention-{language}"
    rows = []
    for name, scorer in methods.items():
        for with_intention in (True, False):
            started = time.perf_counter()
            ranks = []
            for split in users:
                probe = probes[split.user_id]
                intention = probe[1] if probe is not None and with_intention else None
                ranks.append(rank_of_first(scorer(split, candidates_for(split, "full", catalog, seed), intention)))
            row = {
                "method": name,
                "protocol": protocol if with_intention else f"{protocol}:none",
                **metrics_from_ranks(ranks).as_row(),
                "seeds": 1,
                "ndcg@10_std": None,
                "ours": name == OURS,
                "seconds": round(time.perf_counter() - started, 1),
            }
            rows.append(row)
            shown = {k: v for k, v in row.items() if k not in ("method", "protocol")}
            print(f"eval {row['protocol']:5s} {name:26s} {shown}", flush=True)
    return rows


TIE_ORDER_PROTOCOLS = ("full", "1+99")


def tie_order_rows(dataset: Dataset, catalog: Sequence[str], config: EvalConfig) -> list[dict[str, Any]]:
    """The sensitivity bound of the split's tie order: the untrained baselines on the split
    with same-timestamp interactions in file order (the protocol) and in item-id order,
    which holds out the tied item with the highest id (low ids are the popular films).
    Trained methods would have to be trained again per order and are not run."""
    by_ties = {ties: leave_one_out(dataset, ties=ties) for ties in ("file", "item-id")}
    moved = sum(a.test != b.test for a, b in zip(by_ties["file"], by_ties["item-id"], strict=True))
    rows = []
    for ties, everyone in by_ties.items():
        splits = sample_users(everyone, config.users, config.seed)
        methods = {"popularity": popularity_scorer(everyone), "cooccurrence": cooccurrence_scorer(everyone)}
        for protocol in (p for p in TIE_ORDER_PROTOCOLS if p in config.protocols):
            for name, scorer in methods.items():
                m = evaluate(scorer, splits, protocol, catalog, config.seed).as_row()
                rows.append({"ties": ties, "method": name, "protocol": protocol, **m, "test_items_moved": moved})
                print(f"tie order {ties:7s} {protocol:5s} {name:14s} ndcg@10 {m['ndcg@10']}", flush=True)
    return rows


def run_peers(dataset: Dataset, splits: Sequence[UserSplit], config: EvalConfig) -> dict[str, list[PeerRun]]:
    """Each RecBole peer over its seeds (read from the cache where it ran before), trained
    on every user; a split unlike ours raises (instructrec/peers.py ``check_split``)."""
    specs = [spec for name in config.peers for spec in DEFAULT_PEERS if spec.model.lower() == name.lower()]
    unknown = {n.lower() for n in config.peers} - {s.model.lower() for s in specs}
    if unknown:
        raise ValueError(f"unknown peers {sorted(unknown)}; known: {[p.model for p in DEFAULT_PEERS]}")
    out: dict[str, list[PeerRun]] = {}
    jobs: list[tuple[PeerSpec, int]] = []
    gpu = config.peer_gpu if config.peer_gpu is not None else _cuda_available()
    for spec in specs:
        cap = config.peer_max_epochs if config.peer_max_epochs is not None else (None if gpu else spec.cpu_epochs)
        if cap is not None and spec.trained:
            spec = dataclasses.replace(spec, epochs=min(spec.epochs, cap))
        jobs += [(spec, config.seed + n) for n in range(config.peer_seeds if spec.trained else 1)]
    for spec, seed in progress(jobs, "peers", unit="run"):
        run = run_peer(spec, seed, dataset, splits, config.peers_dir, gpu=gpu)
        out.setdefault(spec.name, []).append(run)
        state = "cached" if run.cached else f"{run.result['train_seconds']} s"
        print(
            f"peer {spec.name} seed {seed}: {run.epochs} epochs, converged {run.converged}, {state}, "
            f"RecBole's own test NDCG@10 {run.result['recbole_test'].get('ndcg@10')}",
            flush=True,
        )
    return out


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def peer_row(
    runs: Sequence[PeerRun],
    splits: Sequence[UserSplit],
    protocol: str,
    catalog: Sequence[str],
    seed: int,
    hard: Mapping[str, Sequence[str]] | None = None,
    tail: frozenset[str] | None = None,
) -> dict[str, Any]:
    """One row for a peer: each metric's mean over its seeds, and NDCG@10's standard
    deviation (population: the seeds are all there is)."""
    started = time.perf_counter()
    per_seed = [evaluate(run.scorer(), splits, protocol, catalog, seed, hard, tail).as_row() for run in runs]
    keys = ("hr@1", "hr@5", "hr@10", "ndcg@5", "ndcg@10", "mrr")
    ndcgs = [m["ndcg@10"] for m in per_seed]
    mean = sum(ndcgs) / len(ndcgs)
    summary = peer_summary(runs)
    return {
        "method": summary["method"],
        "protocol": protocol,
        **{k: round(sum(m[k] for m in per_seed) / len(per_seed), 4) for k in keys},
        "users": per_seed[0]["users"],
        "seeds": len(runs),
        "ndcg@10_std": round((sum((x - mean) ** 2 for x in ndcgs) / len(ndcgs)) ** 0.5, 4),
        "ours": False,
        "peer": summary,
        "seconds": round(time.perf_counter() - started, 1),
    }


def sentiment_rows(config: EvalConfig) -> list[dict[str, Any]]:
    """Financial headline sentiment on the held-out headlines: the fine-tuned model (ours,
    saved under ``<models_root>/sentiment``) and its two baselines."""
    from model.scorer import default_model_dir
    from model.sentiment import FinetuneConfig, evaluate_sentiment

    started = time.perf_counter()
    results = evaluate_sentiment(
        default_model_dir(),
        config.models_root / "sentiment",
        FinetuneConfig(epochs=config.sentiment_epochs, seed=config.seed),
    )
    rows = []
    for name, r in results.items():
        row = {
            "method": name,
            "protocol": "finance-headlines",
            "accuracy": r["accuracy"],
            "macro_f1": r["macro_f1"],
            "confusion": r["confusion"],
            "train": r["train"],
            "test": r["test"],
            "ours": name == "sentiment",
            "seconds": round(time.perf_counter() - started, 1),
        }
        rows.append(row)
        print(f"eval sentiment {name:26s} accuracy {r['accuracy']:.4f} macro_f1 {r['macro_f1']:.4f}", flush=True)
    return rows


PROBE_GENRES = ("Horror", "Comedy", "Romance", "Sci-Fi", "Documentary")


def intention_effect(
    name: str,
    scorer: Callable[..., Sequence[float]],
    dataset: Dataset,
    splits: Sequence[UserSplit],
    catalog: Sequence[str],
    matching_pool: Sequence[UserSplit] = (),
) -> list[dict[str, Any]]:
    """Share of a genre in the full-ranking top 10 (seen items masked), without and with
    the intention "I feel like a <genre> film" -- a phrasing training never used -- over
    ``splits``; and, for up to ``len(splits)`` users of ``matching_pool`` whose held-out
    item *is* of that genre, its full-ranking HR@10 without and with the intention (does
    following the intention find what the user went on to watch?)."""
    out = []
    for genre in PROBE_GENRES:
        phrase = f"I feel like a {genre.lower()} film"
        matching = [s for s in matching_pool if genre in dataset.items[s.test].genres][: len(splits)]
        hits = {"without": 0, "with": 0}
        for split in matching:
            candidates = candidates_for(split, "full", catalog, 0)  # the held-out item first
            for key, intention in (("without", None), ("with", phrase)):
                hits[key] += rank_of_first(scorer(split, candidates, intention)) < 10
        has = {i for i, item in dataset.items.items() if genre in item.genres}
        shares = {"without": 0.0, "with": 0.0}
        for split in splits:
            candidates = [*candidates_for(split, "full", catalog, 0)[1:], split.test]
            for key, intention in (("without", None), ("with", phrase)):
                scores = scorer(split, candidates, intention)
                top = sorted(range(len(candidates)), key=lambda n: -scores[n])[:10]
                shares[key] += sum(1 for n in top if candidates[n] in has) / 10
        out.append(
            {
                "method": name,
                "genre": genre,
                "catalog_share": round(len(has) / len(catalog), 3),
                "without": round(shares["without"] / len(splits), 3),
                "with": round(shares["with"] / len(splits), 3),
                "users": len(splits),
                "matching_users": len(matching),
                "hr10_without": round(hits["without"] / max(1, len(matching)), 3),
                "hr10_with": round(hits["with"] / max(1, len(matching)), 3),
            }
        )
        print(f"intention {name:20s} {out[-1]}", flush=True)
    return out


def is_ranking_row(row: dict[str, Any]) -> bool:
    """A ml-100k ranking row (HR/NDCG/MRR); the other kind is a sentiment row (accuracy,
    macro-F1), which has no NDCG to plot."""
    return "ndcg@10" in row


def write_report(
    rows: list[dict[str, Any]],
    effects: list[dict[str, Any]],
    config: EvalConfig,
    users: int,
    card: dict[str, Any] | None,
    retriever: str | None = None,
    ties: list[dict[str, Any]] | None = None,
    served: bool = False,
) -> Path:
    out = config.out_dir
    out.mkdir(parents=True, exist_ok=True)
    ranking = [r for r in rows if is_ranking_row(r)]
    sentiment = [r for r in rows if not is_ranking_row(r)]
    lines = [
        f"# Offline evaluation — ml-100k, leave-one-out, {users} users, seed {config.seed}",
        "",
        "Test item = each user's last interaction (ties by file order); candidates: every item with the "
        "user's history masked (full), or the test item plus 99 / 19 / 9 sampled unseen items; "
        f"{LONG_TAIL}: full ranking for the users whose test item is in the less popular half of the catalog "
        "(at most the median number of training interactions). Users: the users each row ranks for.",
        "",
        "| protocol | method | users | HR@1 | HR@5 | HR@10 | NDCG@5 | NDCG@10 | MRR |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in ranking:
        ndcg = f"{r['ndcg@10']:.3f}" + (f" ± {r['ndcg@10_std']:.3f}" if r.get("seeds", 1) > 1 else "")
        lines.append(
            f"| {r['protocol']} | {r['method']}{' (ours)' if r['ours'] else ''} | {r['users']} | {r['hr@1']:.3f} | "
            f"{r['hr@5']:.3f} | {r['hr@10']:.3f} | {r['ndcg@5']:.3f} | {ndcg} | {r['mrr']:.3f} |"
        )
    peers = {r["method"]: r["peer"] for r in ranking if "peer" in r}
    if peers:
        lines += [
            "",
            "RecBole peers (`recbole-*`): RecBole 1.2.1's own models, trained by RecBole on this split "
            "(every user's validation and test items checked against ours), early stopping on validation "
            "NDCG@10; the rows above score RecBole's outputs with our protocols, NDCG@10 as mean ± standard "
            "deviation over the seeds. RecBole's own test figures (its evaluator, unchanged: sequential "
            "models there do not mask the user's history) are beside them.",
            "",
            "| peer | seeds | epochs | converged | train s | from cache | RecBole's own test NDCG@10 / HR@10 |",
            "|---|---:|---|---|---|---|---|",
        ]
        for name, p in peers.items():
            own = ", ".join(
                f"{n} / {h}" for n, h in zip(p["recbole_test_ndcg@10"], p["recbole_test_hit@10"], strict=True)
            )
            lines.append(
                f"| {name} | {p['seeds']} | {p['epochs']} | {p['converged']} | {p['train_seconds']} | "
                f"{p['cached']} | {own} |"
            )
    if retriever:
        lines += [
            "",
            f"`{HARD}`: each user's nine negatives are the items {retriever} ranks highest among those "
            "the user never had (the converged peer best on validation NDCG@10), shared by every method.",
        ]
    if ties:
        lines += [
            "",
            f"Tie order, a sensitivity bound (not a protocol): ordering same-timestamp interactions by item id "
            f"instead of file order gives {ties[0]['test_items_moved']} users another held-out item, the tied "
            "one with the highest id (low ids are the popular films, so held-out items get less popular). "
            "The untrained baselines on both splits:",
            "",
            "| method | protocol | NDCG@10, file order | NDCG@10, item-id order |",
            "|---|---|---:|---:|",
        ]
        by_key = {(r["ties"], r["method"], r["protocol"]): r for r in ties}
        for (order, method, protocol), r in by_key.items():
            other = by_key.get(("item-id", method, protocol))
            if order == "file" and other is not None:
                lines.append(f"| {method} | {protocol} | {r['ndcg@10']:.3f} | {other['ndcg@10']:.3f} |")
    if card:
        t = card.get("training", {})
        steps = card.get("train_config", {}).get("steps")
        calibrated = card.get("calibration_users")
        lines += [
            "",
            f"Ours: model version `{card.get('version')}`; fine-tuned {steps} steps ({t.get('seen_examples')} of "
            f"{t.get('examples')} training pairs, {t.get('seconds')} s on {t.get('device')}, loss "
            f"{t.get('loss_first20')} -> {t.get('loss_last20')}); fusion weights {card.get('fusion')}"
            + (f", calibrated on the validation items of {calibrated} users." if calibrated else "."),
        ]
        if served:
            lines.append(f"It is the version `make run` serves ({config.models_root}/LATEST names it).")
        validation = card.get("validation")
        if validation:
            v, c = validation["version"], validation["cooccurrence"]
            lines.append(
                f"Its validation figures (full ranking of {v['users']} users' validation items): NDCG@10 "
                f"{v['ndcg@10']:.4f}, HR@10 {v['hr@10']:.4f}; co-occurrence {c['ndcg@10']:.4f}, {c['hr@10']:.4f}."
            )
    if sentiment:
        lines += [
            "",
            f"Financial headline sentiment: {sentiment[0]['test']} held-out headlines of model/finance_headlines.jsonl "
            f"(trained on the other {sentiment[0]['train']}); confusion rows = true negative/neutral/positive.",
            "",
            "| method | accuracy | macro-F1 | confusion |",
            "|---|---:|---:|---|",
        ]
        for r in sentiment:
            lines.append(
                f"| {r['method']}{' (ours)' if r['ours'] else ''} | {r['accuracy']:.3f} | {r['macro_f1']:.3f} "
                f"| {r['confusion']} |"
            )
    if effects:
        lines += [
            "",
            "Intention effect: share of the genre in the full-ranking top 10, without and with the intention "
            '"I feel like a <genre> film" (a phrasing not used in training); and for users whose held-out item '
            "is of that genre, its full-ranking HR@10 without and with the same intention.",
            "",
            "| method | genre | catalog share | top-10 share without | with | matching users | HR@10 without | with |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for e in effects:
            lines.append(
                f"| {e['method']} | {e['genre']} | {e['catalog_share']:.3f} | {e['without']:.3f} | {e['with']:.3f} "
                f"| {e.get('matching_users', 0)} | {e.get('hr10_without', 0):.3f} | {e.get('hr10_with', 0):.3f} |"
            )
    if _ranking_plot(ranking, users, out / "eval.png"):
        lines += ["", "![NDCG@10 by method and protocol](eval.png)"]
    report = out / "report.md"
    report.write_text("\n".join([*lines, ""]))
    return report


def _ranking_plot(rows: list[dict[str, Any]], users: int, path: Path) -> bool:
    """NDCG@10 of every ranking method, grouped by protocol; False (and no stale file
    left behind) when there is nothing to plot or no matplotlib."""
    path.unlink(missing_ok=True)
    plt = pyplot()
    if plt is None or not rows:
        return False
    protocols = list(dict.fromkeys(r["protocol"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    fig, ax = plt.subplots(figsize=(max(11, 1.2 * len(protocols)), 4))
    width = 0.8 / len(methods)
    for n, method in enumerate(methods):
        values = [
            # a method without a row on a protocol (peers on the intention ones) gets no bar
            next((r["ndcg@10"] for r in rows if r["method"] == method and r["protocol"] == p), float("nan"))
            for p in protocols
        ]
        ax.bar([x + n * width for x in range(len(protocols))], values, width, label=method)
    ax.set_xticks([x + width * (len(methods) - 1) / 2 for x in range(len(protocols))], protocols)
    ax.set_ylabel("NDCG@10")
    ax.set_title(f"ml-100k leave-one-out, {users} users")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def print_eval(result: dict[str, Any]) -> None:
    keep = (
        "method",
        "protocol",
        "hr@1",
        "hr@5",
        "hr@10",
        "ndcg@5",
        "ndcg@10",
        "mrr",
        "users",
        "seeds",
        "ndcg@10_std",
        "accuracy",
        "macro_f1",
        "ours",
    )
    rows = [{k: r[k] for k in keep if k in r} for r in result["rows"]]
    print("eval: " + orjson.dumps({"rows": rows}).decode(), flush=True)
