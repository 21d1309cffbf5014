"""Fine-tune MiniLM to follow recommendation instructions, on top of the collaborative
signal.

The model is an asymmetric bi-encoder. The *item* side is the pretrained MiniLM, frozen:
every catalog item is embedded once, so each training step scores the instruction against
the **whole catalog** exactly (a full softmax; the user's already-seen items masked). The
*instruction* side is a copy of MiniLM that is fine-tuned (its top ``train_layers``
layers, or all).

Training pairs come from the interaction log: for each position of a user's *training*
history (never a validation or test item) the instruction is built from the items before
it -- a template drawn from the whole EN/ZH set, a quarter of the time with a genre
intention taken from the item that follows -- and the target is that next item.

The logits the softmax sees are the fused score the pools serve::

    scale * cosine(instruction, item) + w_cooc * log1p(cooc)
        + w_cooc_long * log1p(cooc_long) + w_pop * log1p(popularity)

(``model/features.py``) with ``scale`` and the three weights learned with the encoder. So the transformer is
trained on what co-occurrence and popularity miss: the co-occurring-but-not-chosen items
are the hardest negatives of every step, and the in-batch examples' targets are among the
catalog negatives of the others. The collaborative features of a training example are
computed leave-one-user-out (the graph minus the user's own sequence), as at test time the
held-out transition is not in the graph. Seeded; CUDA when present; a progress bar.

A trained model is a directory: the instruction encoder (Hugging Face weights and
tokenizer), ``item_encoder/`` (the frozen item side), and ``instructrec.json`` (version,
base model, the template set, training config and summary, fusion weights, evaluation
results), which the scoring pools read.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from model.data import Dataset
from model.evaluation import UserSplit
from model.features import (
    FEATURE_LONG,
    FEATURE_RECENT,
    FEATURES,
    check_weights,
    collaborative_features,
    latest_distinct,
)
from model.instructions import TEMPLATES, build_instruction
from model.recall import ItemGraph
from model.registry import write_card
from model.scorer import ITEM_ENCODER_DIR as ITEM_ENCODER

# Intention phrasings used in training. The evaluation's intention probe uses another
# ("I feel like a ... film"), so the measured effect is not a memorised sentence.
TRAIN_INTENTIONS_EN = ("a {g} movie", "something {g}", "{g}, please", "in the mood for {g}", "a good {g} one")
TRAIN_INTENTIONS_ZH = ("一部{g}电影", "想看{g}片", "来点{g}的")
GENRES_ZH = {
    "Action": "动作", "Adventure": "冒险", "Animation": "动画", "Children's": "儿童", "Comedy": "喜剧",
    "Crime": "犯罪", "Documentary": "纪录", "Drama": "剧情", "Fantasy": "奇幻", "Film-Noir": "黑色",
    "Horror": "恐怖", "Musical": "歌舞", "Mystery": "悬疑", "Romance": "爱情", "Sci-Fi": "科幻",
    "Thriller": "惊悚", "War": "战争", "Western": "西部",
}  # fmt: skip


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 400
    batch_size: int = 32
    lr: float = 3e-4
    fusion_lr: float = 0.02  # for scale, w_cooc, w_pop
    warmup_steps: int = 20
    max_length: int = 64  # instruction tokens
    item_max_length: int = 32
    history: int = 5  # titles in the instruction
    intention_share: float = 0.25  # examples that also carry a genre intention
    train_layers: int | None = 2  # None: every layer; n: the top n (about 2x faster on CPU)
    seed: int = 0
    device: str = "auto"


@dataclass(frozen=True)
class Example:
    user: int  # index into the splits
    t: int  # the target is train[t]; the history is train[:t]
    intention: str | None


def intention_for(genres: Sequence[str], zh: bool, rng: random.Random) -> str | None:
    if not genres:
        return None
    genre = rng.choice(list(genres))
    if zh:
        return rng.choice(TRAIN_INTENTIONS_ZH).format(g=GENRES_ZH.get(genre, genre))
    return rng.choice(TRAIN_INTENTIONS_EN).format(g=genre.lower())


def make_examples(dataset: Dataset, splits: Sequence[UserSplit], config: TrainConfig) -> list[Example]:
    """One example per position of every training history (position 0 has no history)."""
    rng = random.Random(f"{config.seed}:examples")
    out = []
    for user, split in enumerate(splits):
        for t in range(1, len(split.train)):
            intention = None
            if rng.random() < config.intention_share:
                intention = intention_for(dataset.items[split.train[t]].genres, rng.random() < 0.3, rng)
            out.append(Example(user, t, intention))
    return out


class LeaveUserOut:
    """Collaborative features of a training example without the user's own sequence (the
    global training graph's counts minus the user's), as dense rows over the catalog --
    the same numbers ``model.features.raw_collaborative`` gives from a graph that never
    saw the user."""

    def __init__(self, splits: Sequence[UserSplit], catalog: Sequence[str], window: int = 3) -> None:
        self.splits = splits
        self.window = window
        self.graph = ItemGraph(window)
        self.graph.rebuild(s.train for s in splits)
        self.index = {item: n for n, item in enumerate(catalog)}
        n = len(catalog)
        self.adjacency = torch.zeros(n, n)
        for a, row in self.graph.neighbours.items():
            for b, count in row.items():
                self.adjacency[self.index[a], self.index[b]] = count
        self.popularity = torch.tensor([float(self.graph.popularity.get(i, 0)) for i in catalog])
        self._own: dict[int, ItemGraph] = {}

    def rows(self, user: int, latest: Sequence[str]) -> torch.Tensor:
        """(3, catalog) raw (cooc, cooc_long, popularity); ``latest`` most recent first."""
        own = self._own.get(user)
        if own is None:
            own = self._own[user] = ItemGraph(self.window)
            own.rebuild([self.splits[user].train])
        index = self.index
        recent, long = list(latest[:FEATURE_RECENT]), list(latest[:FEATURE_LONG])
        weights = torch.tensor([1.0 / (1 + r) for r in range(len(recent))])
        cooc = (self.adjacency[[index[i] for i in recent]] * weights[:, None]).sum(0)
        cooc_long = self.adjacency[[index[i] for i in long]].sum(0)
        for rank, item in enumerate(recent):
            for other, count in own.neighbours.get(item, {}).items():
                cooc[index[other]] -= count / (1 + rank)
        for item in long:
            for other, count in own.neighbours.get(item, {}).items():
                cooc_long[index[other]] -= count
        popularity = self.popularity.clone()
        for item, count in own.popularity.items():
            popularity[index[item]] -= count
        return torch.stack([cooc, cooc_long, popularity]).clamp(min=0)


def instruction_for(
    split: UserSplit, t: int, titles: dict[str, str], history: int, intention: str | None, seed: int
) -> str:
    recent = latest_distinct(split.train[:t], history)
    return build_instruction(
        request_id=f"train-{split.user_id}-{t}",
        history_titles=[titles[i] for i in recent],
        intention=intention,
        task="recommend",
        seed=seed,
    ).text


class _Encoder(torch.nn.Module):
    """Mean-pooled, L2-normalised MiniLM, as ``model.scorer.TextEncoder`` serves it."""

    def __init__(self, model_dir: Path, device: torch.device) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(model_dir), local_files_only=True).to(device)
        self.device = device

    def forward(self, texts: Sequence[str], max_length: int) -> torch.Tensor:
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        ).to(self.device)
        hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-6)
        return torch.nn.functional.normalize(pooled, dim=-1)

    def freeze_below(self, train_layers: int | None) -> None:
        if train_layers is None:
            return
        layers = self.model.encoder.layer
        keep = max(0, min(train_layers, len(layers)))
        for p in self.model.embeddings.parameters():
            p.requires_grad_(False)
        for layer in layers[: len(layers) - keep]:
            for p in layer.parameters():
                p.requires_grad_(False)

    @torch.no_grad()
    def embed_all(self, texts: Sequence[str], max_length: int, batch: int = 128) -> torch.Tensor:
        was_training = self.training
        self.eval()
        out = torch.cat([self(texts[n : n + batch], max_length) for n in range(0, len(texts), batch)])
        self.train(was_training)
        return out


def _progress(step: int, total: int, loss: float, started: float) -> None:
    bar = "#" * int(step / total * 30)
    rate = step / max(1e-9, time.perf_counter() - started)
    eta = (total - step) / max(rate, 1e-9)
    sys.stderr.write(f"\rtrain [{bar:<30}] {step}/{total} loss {loss:.3f} {rate:.2f} steps/s eta {eta:.0f} s")
    if step == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


@dataclass
class Finetuned:
    encoder: _Encoder
    fusion: dict[str, float]
    losses: list[float]
    summary: dict[str, Any]


def finetune(
    base_dir: Path,
    dataset: Dataset,
    splits: Sequence[UserSplit],
    config: TrainConfig,
    progress: bool = True,
) -> Finetuned:
    """Fine-tune the instruction encoder and the fusion weights on training histories."""
    from model.device import choose_device, set_cpu_threads

    random.seed(config.seed)
    torch.manual_seed(config.seed)
    choice = choose_device(config.device)
    if choice.device.type == "cpu":
        set_cpu_threads(None)
    device = choice.device
    encoder = _Encoder(base_dir, device)
    titles = {i: item.title for i, item in dataset.items.items()}
    texts = item_texts(dataset)
    catalog = sorted(dataset.items)
    index = {item: n for n, item in enumerate(catalog)}
    started = time.perf_counter()
    items = encoder.embed_all([texts[i] for i in catalog], config.item_max_length).to(device)  # frozen item side
    bank_seconds = time.perf_counter() - started
    encoder.freeze_below(config.train_layers)
    encoder.train()
    collab = LeaveUserOut(splits, catalog)
    examples = make_examples(dataset, splits, config)
    rng = random.Random(f"{config.seed}:batches")
    # scale starts at 1/0.05, the usual contrastive temperature; the collaborative weights
    # start small and positive.
    fusion = torch.nn.Parameter(torch.tensor([math.log(20.0), 0.5, 0.5, 0.1], device=device))
    params = [p for p in encoder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [{"params": params, "lr": config.lr, "weight_decay": 0.01}, {"params": [fusion], "lr": config.fusion_lr}]
    )

    def lr_at(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        return max(0.0, (config.steps - step) / max(1, config.steps - config.warmup_steps))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    losses: list[float] = []
    started = time.perf_counter()
    n_items = len(catalog)
    for step in range(config.steps):
        batch = rng.sample(examples, config.batch_size)
        collab_rows = []
        blocked = torch.zeros(len(batch), n_items, dtype=torch.bool)
        queries, target = [], []
        for row, ex in enumerate(batch):
            split = splits[ex.user]
            before = split.train[: ex.t]
            queries.append(instruction_for(split, ex.t, titles, config.history, ex.intention, config.seed))
            target.append(index[split.train[ex.t]])
            collab_rows.append(collab.rows(ex.user, latest_distinct(before, FEATURE_LONG)))
            blocked[row, [index[i] for i in set(before) if i != split.train[ex.t]]] = True
        features = torch.stack(collab_rows).log1p().transpose(1, 2).to(device)  # (batch, items, 3)
        q = encoder(queries, config.max_length)
        logits = fusion[0].exp() * (q @ items.T) + features @ fusion[1:]
        logits = logits.masked_fill(blocked.to(device), float("-inf"))
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor(target, device=device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        if progress and (step + 1 == config.steps or (step + 1) % 5 == 0):
            _progress(step + 1, config.steps, sum(losses[-20:]) / len(losses[-20:]), started)
    encoder.eval()
    weights = fusion.detach().cpu()
    fused = check_weights(
        {"text": math.exp(float(weights[0]))} | dict(zip(FEATURES[1:], weights[1:].tolist(), strict=True))
    )
    summary = {
        "examples": len(examples),
        "seen_examples": config.steps * config.batch_size,
        "seconds": round(time.perf_counter() - started, 1),
        "item_bank_seconds": round(bank_seconds, 1),
        "device": str(device),
        "loss_first20": round(sum(losses[:20]) / max(1, len(losses[:20])), 4),
        "loss_last20": round(sum(losses[-20:]) / max(1, len(losses[-20:])), 4),
    }
    return Finetuned(encoder, {k: round(v, 4) for k, v in fused.items()}, losses, summary)


def item_texts(dataset: Dataset) -> dict[str, str]:
    from instructrec.replay import catalog_records

    return {c.item_id: c.scoring_text() for c in catalog_records(dataset)}


# ----------------------------------------------------------------------------- fusion


@dataclass
class FusionRows:
    """Each validation user's features over the full ranking: row 0 the validation item,
    then every item outside the training history (``valid`` marks the real entries)."""

    feats: torch.Tensor  # (users, width, len(FEATURES))
    valid: torch.Tensor  # (users, width) bool


def fusion_rows(
    text_score: Callable[[UserSplit, Sequence[str]], Sequence[float]],
    graph: ItemGraph,
    splits: Sequence[UserSplit],
    catalog: Sequence[str],
) -> FusionRows:
    """Score as if the validation item were the one to predict: the history is the
    training part, features come from the training-only graph, and the candidates are the
    ``full`` protocol's (``model.evaluation.candidates_for``), the validation item first."""
    from model.evaluation import candidates_for

    rows: list[torch.Tensor] = []
    for split in splits:
        if not split.train:
            continue
        as_valid = UserSplit(split.user_id, split.train[:-1], split.train[-1], split.valid)
        candidates = candidates_for(as_valid, "full", catalog, 0)
        text = text_score(as_valid, candidates)
        collab = collaborative_features(graph, latest_distinct(split.train, FEATURE_LONG), candidates)
        rows.append(torch.tensor([[t, *c] for t, c in zip(text, collab, strict=True)], dtype=torch.float32))
    width = max(r.shape[0] for r in rows)
    feats = torch.zeros(len(rows), width, len(FEATURES))
    valid = torch.zeros(len(rows), width, dtype=torch.bool)
    for n, r in enumerate(rows):
        feats[n, : r.shape[0]] = r
        valid[n, : r.shape[0]] = True
    return FusionRows(feats, valid)


def fit_weights(rows: FusionRows, steps: int = 300) -> dict[str, float]:
    """The weights of ``FEATURES`` by softmax cross-entropy of each validation item
    against every candidate (the full-ranking objective)."""
    w = torch.tensor([10.0, 1.0, 0.5, 0.1], requires_grad=True)
    optimizer = torch.optim.Adam([w], lr=0.05)
    target = torch.zeros(rows.feats.shape[0], dtype=torch.long)
    for _ in range(steps):
        logits = (rows.feats @ w).masked_fill(~rows.valid, float("-inf"))
        loss = torch.nn.functional.cross_entropy(logits, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {name: round(float(v), 4) for name, v in zip(FEATURES, w.detach(), strict=True)}


def ranks_under(rows: FusionRows, weights: dict[str, float]) -> list[int]:
    """Each validation item's 0-based rank under the fused score ``weights`` give (ties
    count against it, as ``model.evaluation.rank_of_first``); the weights are rounded as
    a card stores them, so this is the served score."""
    w = torch.tensor([weights[name] for name in FEATURES], dtype=torch.float32)
    scores = rows.feats @ w
    above = (scores[:, 1:] >= scores[:, :1]) & rows.valid[:, 1:]
    return [int(n) for n in above.sum(dim=1)]


def fit_fusion(
    text_score: Callable[[UserSplit, Sequence[str]], Sequence[float]],
    graph: ItemGraph,
    splits: Sequence[UserSplit],
    catalog: Sequence[str],
    steps: int = 300,
) -> dict[str, float]:
    """Fit the weights of ``FEATURES`` on the users' *validation* items (``fusion_rows``,
    ``fit_weights``)."""
    return fit_weights(fusion_rows(text_score, graph, splits, catalog), steps)


# ----------------------------------------------------------------------------- saving


def save_model(encoder: _Encoder, base_dir: Path, out_dir: Path, card: dict[str, Any]) -> Path:
    """Write a complete version directory: instruction encoder, the frozen item encoder
    (a copy of the base model's files) and the card, under a hidden name, then rename it
    into place: a pool watching the root never loads half a version (it once served a
    version whose card was not written yet, without its fusion weights)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    encoder.model.save_pretrained(str(staging))
    encoder.tokenizer.save_pretrained(str(staging))
    shutil.copytree(base_dir, staging / ITEM_ENCODER, dirs_exist_ok=True)
    write_card(staging, card)
    if out_dir.exists():  # saved again under the same version
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
    return out_dir


def new_card(
    version: str, base_dir: Path, config: TrainConfig, summary: dict[str, Any], fusion: dict[str, float]
) -> dict[str, Any]:
    return {
        "version": version,
        "base_model": str(base_dir),
        "item_encoder": ITEM_ENCODER,
        "fusion": fusion,
        "templates": [asdict(t) for t in TEMPLATES],  # the whole set it was trained on, not just names
        "train_config": asdict(config),
        "training": summary,
        "features": {"names": list(FEATURES), "recent": FEATURE_RECENT, "long": FEATURE_LONG},
    }
