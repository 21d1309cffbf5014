"""The version `make run` serves: trained once, calibrated, measured on validation, saved.

The packaged MiniLM alone ranks below popularity and ignores intentions, so `make run`
serves a trained version from its first result: ``instructrec train`` (the Makefile's
``model`` target) runs once on a fresh clone and the version is kept under
``.data/models``. `make eval` uses the same recipe (``served_config``) and evaluates the
version LATEST names when it was trained with it, so its report gives the figures of
exactly the version `make run` serves; it trains one only when none is there.

A version is made in four steps: fine-tune the instruction encoder with the fusion
weights (``model/train.py``, with a progress bar); save it whole; calibrate the four
fusion weights on every user's validation item (full ranking; neither the encoder nor the
graph saw those items); measure validation NDCG@10 of the version beside the co-occurrence
baseline. The card holds all of it, and LATEST moves to the version last.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from instructrec.plots import pyplot
from instructrec.settings import Settings
from model.data import Dataset
from model.evaluation import Scorer, UserSplit, cooccurrence_scorer, evaluate, metrics_from_ranks
from model.features import FEATURE_LONG, collaborative_features, fuse, latest_distinct
from model.recall import ItemGraph
from model.registry import read_card, write_card, write_latest
from model.train import (
    TrainConfig,
    finetune,
    fit_weights,
    fusion_rows,
    item_texts,
    new_card,
    ranks_under,
    save_model,
)

# Fine-tuning steps of the served recipe, picked on validation NDCG@10 (README, "A trained
# model from the first run"): 120 steps scored as well as 150 and cost 25 s less on 2
# cores; 400 score higher but take 6 minutes.
SERVED_STEPS = 120
HISTORY = 5  # titles in the instruction, as the stream worker builds it


def served_config(
    steps: int = SERVED_STEPS, train_layers: int | None = 2, seed: int = 0, device: str = "auto", lr: float = 3e-4
) -> TrainConfig:
    return TrainConfig(steps=steps, train_layers=train_layers, seed=seed, device=device, lr=lr)


class TextModel:
    """A bi-encoder model directory as the pools serve it: the instruction the stream
    worker builds (template chosen from the request id and seed) against each
    candidate's catalog text; cosine similarity."""

    def __init__(self, dataset: Dataset, settings: Settings, model_dir: Path | None, history: int, seed: int) -> None:
        from model.device import choose_device, set_cpu_threads
        from model.scorer import load_scorer

        device = choose_device(settings.device)
        if device.device.type == "cpu":
            set_cpu_threads(settings.torch_threads)
        self.scorer = load_scorer(model_dir, device, settings.max_seq_length)
        self.texts = item_texts(dataset)
        self.titles = {i: item.title for i, item in dataset.items.items()}
        self.history = history
        self.seed = seed

    def instruction(self, split: UserSplit, intention: str | None = None) -> str:
        from model.instructions import build_instruction

        latest = latest_distinct(split.seen_before_test, self.history)
        return build_instruction(
            request_id=f"eval-{split.user_id}",
            history_titles=[self.titles[i] for i in latest if i in self.titles],
            intention=intention,
            task="recommend",
            seed=self.seed,
        ).text

    def score(self, split: UserSplit, candidates: Sequence[str], intention: str | None = None) -> list[float]:
        pairs = [(i, self.texts[i]) for i in candidates]
        return self.scorer.score_many([self.instruction(split, intention)], [pairs], [[]])[0].scores

    def share_item_vectors(self, other: TextModel) -> bool:
        """Use ``other``'s cached item vectors when both embed items with the same weights
        and set-up (a trained version's frozen item side is a copy of the base model).
        The encoder is batch-invariant, so the vectors are the same bits either way; the
        catalog is embedded once per run instead of once per model."""
        import torch

        mine, theirs = self.scorer.item_encoder, other.scorer.item_encoder
        setup = ("device", "max_length", "int8", "batch_invariant", "rows")
        if not getattr(mine, "batch_invariant", False) or any(
            getattr(mine, name, None) != getattr(theirs, name, None) for name in setup
        ):
            return False
        a, b = mine.model.state_dict(), theirs.model.state_dict()
        if a.keys() != b.keys() or not all(torch.equal(a[k], b[k]) for k in a):
            return False
        self.scorer.cache = other.scorer.cache
        return True


def fused_scorer(text: TextModel | None, graph: ItemGraph, weights: dict[str, float]) -> Scorer:
    """What a pool serving a trained model directory computes: the fused score of the
    transformer's similarity and the candidates' collaborative features."""

    def score(split: UserSplit, candidates: Sequence[str], intention: str | None = None) -> list[float]:
        collab = collaborative_features(graph, latest_distinct(split.seen_before_test, FEATURE_LONG), candidates)
        sims = text.score(split, candidates, intention) if text is not None else [0.0] * len(candidates)
        return fuse(weights, sims, collab)

    return score


def sample_users(splits: list[UserSplit], n: int | None, seed: int | str) -> list[UserSplit]:
    """A seeded sample of ``n`` users, sorted by user id; all of them for None."""
    if n is None or n >= len(splits):
        return splits
    return sorted(random.Random(seed).sample(splits, n), key=lambda s: s.user_id)


def trained_graph(splits: Sequence[UserSplit]) -> ItemGraph:
    graph = ItemGraph()
    graph.rebuild(s.train for s in splits)
    return graph


def served_version(models_root: Path, config: TrainConfig) -> Path | None:
    """The version ``<models_root>/LATEST`` names, when it was trained with ``config`` and
    calibrated; None otherwise."""
    latest = Path(models_root) / "LATEST"
    if not latest.exists():
        return None
    path = Path(models_root) / latest.read_text().strip()
    card = read_card(path) if (path / "config.json").exists() else None
    if card is None or not card.get("fusion_calibrated") or card.get("train_config") != asdict(config):
        return None
    return path


def calibrate(
    ours: TextModel, card: dict[str, Any], graph: ItemGraph, splits: list[UserSplit], users: int | None, seed: int
) -> list[int]:
    """Fit the fusion weights on the validation items (the trained ones kept beside): a
    text side that learned little gets little weight. Returns each validation item's
    rank under the calibrated weights (the same features, scored once)."""
    catalog = sorted(ours.texts)
    calibration = sample_users(splits, users, f"{seed}:calibration")
    rows = fusion_rows(ours.score, graph, calibration, catalog)
    card["fusion_trained"] = card.get("fusion")
    card["fusion"] = fit_weights(rows)
    card["fusion_calibrated"] = True
    card["calibration_users"] = len(calibration)
    return ranks_under(rows, card["fusion"])


def validation_figures(
    methods: dict[str, Scorer], splits: Sequence[UserSplit], catalog: Sequence[str]
) -> dict[str, Any]:
    """Full-ranking figures on the validation items: each user's history is the training
    part, the target the validation item; the test items are never looked at."""
    shifted = [UserSplit(s.user_id, s.train[:-1], s.train[-1], s.valid) for s in splits if s.train]
    return {name: evaluate(scorer, shifted, "full", catalog).as_row() for name, scorer in methods.items()}


def keep_item_vectors(model: TextModel, root: Path, version: str) -> int:
    """Embed the catalog (or take the vectors shared with the zero-shot model) and write
    them where a pool serving ``version`` looks (``model/item_store.py``): it then starts
    warm instead of embedding the catalog first. Returns how many were written."""
    model.scorer.attach_store(root, version)
    return model.scorer.store_all([(i, model.texts[i]) for i in sorted(model.texts)])


def train_version(
    settings: Settings,
    dataset: Dataset,
    splits: list[UserSplit],
    config: TrainConfig,
    models_root: Path,
    calibration_users: int | None = None,
    zero_shot: TextModel | None = None,
) -> tuple[Path, dict[str, Any], TextModel]:
    """Train, save, calibrate and measure a version, then point LATEST at it."""
    from model.scorer import default_model_dir

    started = time.perf_counter()
    base = default_model_dir()
    tuned = finetune(base, dataset, splits, config)
    print(f"train: {tuned.summary}; fusion weights {tuned.fusion}", flush=True)
    version = time.strftime("v%Y%m%d-%H%M%S") + f"-s{config.seed}"
    card = new_card(version, base, config, tuned.summary, tuned.fusion)
    out = save_model(tuned.encoder, base, Path(models_root) / version, card)
    loss_plot(tuned.losses, out / "loss.png")
    del tuned
    ours = TextModel(dataset, settings, out, HISTORY, config.seed)
    if zero_shot is not None:
        ours.share_item_vectors(zero_shot)
    keep_item_vectors(ours, settings.state_dir / "item-embeddings", version)
    graph = trained_graph(splits)
    ranks = calibrate(ours, card, graph, splits, calibration_users, config.seed)
    print(f"train: fusion weights calibrated on {card['calibration_users']} validation items: {card['fusion']}")
    figures = {
        "version": metrics_from_ranks(ranks).as_row(),
        **validation_figures(
            {"cooccurrence": cooccurrence_scorer(splits)},
            sample_users(splits, calibration_users, f"{config.seed}:calibration"),
            sorted(dataset.items),
        ),
    }
    card["validation"] = {
        "protocol": "full",
        "note": "each validation item ranked against all items; the fusion weights were fitted on them",
        **figures,
    }
    card["built_seconds"] = round(time.perf_counter() - started, 1)
    write_card(out, card)
    write_latest(models_root, version)
    v, c = figures["version"], figures["cooccurrence"]
    print(
        f"train: {version} ready in {card['built_seconds']:.0f} s; validation NDCG@10 {v['ndcg@10']:.4f} "
        f"HR@10 {v['hr@10']:.4f} (co-occurrence {c['ndcg@10']:.4f} / {c['hr@10']:.4f}, {v['users']} users)",
        flush=True,
    )
    return out, card, ours


def loss_plot(losses: Sequence[float], path: Path) -> None:
    plt = pyplot()
    if plt is None or not losses:
        return
    fig, ax = plt.subplots(figsize=(6, 3))
    window = 10
    smooth = [sum(part) / len(part) for part in (losses[max(0, i - window + 1) : i + 1] for i in range(len(losses)))]
    ax.plot(losses, alpha=0.3, label="step")
    ax.plot(smooth, label=f"mean of {window}")
    ax.set_xlabel("step")
    ax.set_ylabel("full-catalog softmax loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
