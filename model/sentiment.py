"""Financial headline sentiment on MiniLM: a small trained head over the frozen encoder.

No financial sentiment model exists offline here, so the head is trained on
``finance_headlines.jsonl`` (450 headlines written for this project, 150 per label). A
stable, stratified fifth of them is held out and never seen by training or by the choice
of the head's regularisation (picked by cross-validation on the training part). The
zero-shot alternative (cosine to a description of each label) is kept as the baseline.

A headline's score is P(positive) - P(negative), in [-1, 1]; its label the most probable.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from model.registry import write_latest

LABELS = ("negative", "neutral", "positive")
DATA_PATH = Path(__file__).with_name("finance_headlines.jsonl")
HEAD_FILE = "sentiment_head.pt"
CARD_FILE = "sentiment.json"

# The zero-shot baseline's label descriptions (encoded like the headlines).
LABEL_DESCRIPTIONS = {
    "negative": "bad news for the company and its shareholders: losses, missed forecasts, downgrades, "
    "lawsuits, recalls, guidance cuts, the share price falls",
    "neutral": "a routine factual announcement about the company with no clear good or bad impact: "
    "scheduled dates, appointments, filings, meetings",
    "positive": "good news for the company and its shareholders: profits, beaten forecasts, upgrades, "
    "new contracts, approvals, raised guidance, the share price rises",
}


@dataclass(frozen=True)
class Headline:
    id: str
    text: str
    label: str
    tickers: tuple[str, ...]


def load_headlines(path: Path = DATA_PATH) -> list[Headline]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        data = json.loads(line)
        if data.get("label") not in LABELS:
            raise ValueError(f"{path}:{n}: label {data.get('label')!r} is not one of {LABELS}")
        rows.append(Headline(str(data["id"]), str(data["text"]), data["label"], tuple(data.get("tickers") or ())))
    return rows


def split_headlines(
    rows: Sequence[Headline], held_out: float = 0.2, salt: str = "sentiment-v1"
) -> tuple[list[Headline], list[Headline]]:
    """(train, test): per label, the ``held_out`` share with the smallest salted hash of
    the id is the test set. Stable across runs and machines, balanced across labels."""
    train: list[Headline] = []
    test: list[Headline] = []
    for label in LABELS:
        mine = sorted(
            (r for r in rows if r.label == label),
            key=lambda r: hashlib.blake2b(f"{salt}:{r.id}".encode(), digest_size=8).digest(),
        )
        k = round(len(mine) * held_out)
        test.extend(mine[:k])
        train.extend(mine[k:])
    return train, test


def label_ids(rows: Sequence[Headline]) -> torch.Tensor:
    return torch.tensor([LABELS.index(r.label) for r in rows], dtype=torch.long)


# --- metrics (pure) ------------------------------------------------------------------------


def accuracy(truth: Sequence[int], predicted: Sequence[int]) -> float:
    if len(truth) != len(predicted) or not truth:
        raise ValueError("truth and predictions must be non-empty and of the same length")
    return sum(t == p for t, p in zip(truth, predicted, strict=True)) / len(truth)


def macro_f1(truth: Sequence[int], predicted: Sequence[int], classes: int = len(LABELS)) -> float:
    """Unweighted mean of the per-class F1 (a class never predicted nor present counts 0)."""
    if len(truth) != len(predicted) or not truth:
        raise ValueError("truth and predictions must be non-empty and of the same length")
    scores = []
    for c in range(classes):
        tp = sum(t == c and p == c for t, p in zip(truth, predicted, strict=True))
        fp = sum(t != c and p == c for t, p in zip(truth, predicted, strict=True))
        fn = sum(t == c and p != c for t, p in zip(truth, predicted, strict=True))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return sum(scores) / classes


def confusion(truth: Sequence[int], predicted: Sequence[int], classes: int = len(LABELS)) -> list[list[int]]:
    """rows: true label, columns: predicted label."""
    matrix = [[0] * classes for _ in range(classes)]
    for t, p in zip(truth, predicted, strict=True):
        matrix[t][p] += 1
    return matrix


# --- the head --------------------------------------------------------------------------------


class SentimentHead(torch.nn.Module):
    """A linear layer over the unit-length sentence embedding, scaled (unit vectors give
    logits too flat to train quickly otherwise)."""

    SCALE = 16.0

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(dim, len(LABELS))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.linear(embeddings * self.SCALE)


def fit_head(
    x: torch.Tensor, y: torch.Tensor, weight_decay: float, seed: int = 0, steps: int = 400, lr: float = 0.05
) -> SentimentHead:
    """Full-batch Adam on cross-entropy; deterministic for a seed."""
    generator = torch.Generator().manual_seed(seed)
    head = SentimentHead(x.shape[1])
    with torch.no_grad():
        head.linear.weight.copy_(torch.randn(head.linear.weight.shape, generator=generator) * 0.01)
        head.linear.bias.zero_()
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(x), y)
        loss.backward()
        optimizer.step()
    return head.eval()


def choose_weight_decay(
    x: torch.Tensor, y: torch.Tensor, candidates: Sequence[float] = (0.0, 0.01, 0.1, 1.0), folds: int = 5, seed: int = 0
) -> tuple[float, dict[float, float]]:
    """The candidate with the best mean macro-F1 over ``folds`` folds of the training
    rows (the held-out set plays no part)."""
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    parts = [order[i::folds] for i in range(folds)]
    results: dict[float, float] = {}
    for wd in candidates:
        f1s = []
        for i in range(folds):
            val = parts[i]
            fit = torch.cat([p for j, p in enumerate(parts) if j != i])
            head = fit_head(x[fit], y[fit], wd, seed)
            with torch.no_grad():
                predicted = head(x[val]).argmax(1).tolist()
            f1s.append(macro_f1(y[val].tolist(), predicted))
        results[wd] = sum(f1s) / len(f1s)
    best = max(candidates, key=lambda wd: (results[wd], -wd))
    return best, results


def zero_shot_predict(headlines: torch.Tensor, descriptions: torch.Tensor) -> list[int]:
    """Nearest label description by cosine (both unit vectors)."""
    return (headlines @ descriptions.T).argmax(1).tolist()


class SentimentModel:
    """The encoder (shared with the scoring pool) plus a trained head."""

    def __init__(self, encoder: Any, head: SentimentHead, version: str) -> None:
        self.encoder = encoder
        self.head = head
        self.version = version

    @torch.inference_mode()
    def predict(self, texts: Sequence[str]) -> list[tuple[str, float, list[float]]]:
        """Per text: (label, score = P(positive) - P(negative), [P(neg), P(neu), P(pos)])."""
        if not texts:
            return []
        probs = torch.softmax(self.head(self.encoder.encode(texts)), dim=1)
        out = []
        for row in probs.tolist():
            label = LABELS[max(range(len(LABELS)), key=row.__getitem__)]
            out.append((label, row[2] - row[0], row))
        return out


# --- fine-tuning the encoder with the head ---------------------------------------------------


@dataclass
class FinetuneConfig:
    epochs: int = 15  # the cap; validation picks the epoch (with 8 it picked the last in 2 of 3 seeds)
    batch: int = 16
    encoder_lr: float = 5e-5
    head_lr: float = 2e-3
    max_length: int = 64  # headlines are short; 20 words is ~30 tokens
    validation: float = 0.2  # of the training split, for choosing the epoch
    seed: int = 0


def finetune(
    train: Sequence[Headline], base_dir: Path, config: FinetuneConfig, log: Any = print
) -> tuple[Any, SentimentHead, dict[str, Any]]:
    """Fine-tune MiniLM and the head together on ``train`` (minus a validation part, which
    picks the epoch); returns (encoder, head, history). The held-out split is not used."""
    from model.train import _Encoder

    torch.manual_seed(config.seed)
    fit, val = split_headlines(train, config.validation, salt=f"sentiment-val-{config.seed}")
    encoder = _Encoder(base_dir, torch.device("cpu"))
    head = SentimentHead(int(encoder.model.config.hidden_size))
    optimizer = torch.optim.AdamW(
        [
            {"params": encoder.model.parameters(), "lr": config.encoder_lr},
            {"params": head.parameters(), "lr": config.head_lr},
        ],
        weight_decay=0.01,
    )
    y_fit, y_val = label_ids(fit), label_ids(val).tolist()
    generator = torch.Generator().manual_seed(config.seed)
    best: tuple[float, int, dict[str, Any], dict[str, Any]] | None = None
    history = []
    from instructrec.progress import progress

    for epoch in progress(range(1, config.epochs + 1), "sentiment fine-tuning", total=config.epochs, unit="epoch"):
        encoder.train()
        head.train()
        order = torch.randperm(len(fit), generator=generator).tolist()
        total = 0.0
        for n in range(0, len(order), config.batch):
            idx = order[n : n + config.batch]
            logits = head(encoder([fit[i].text for i in idx], config.max_length))
            loss = torch.nn.functional.cross_entropy(logits, y_fit[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        head.eval()
        with torch.no_grad():
            predicted = head(encoder.embed_all([r.text for r in val], config.max_length)).argmax(1).tolist()
        f1 = macro_f1(y_val, predicted)
        history.append({"epoch": epoch, "loss": round(total / len(fit), 4), "val_macro_f1": round(f1, 4)})
        log(f"sentiment epoch {epoch}: loss {total / len(fit):.4f}, validation macro-F1 {f1:.4f}")
        if best is None or f1 > best[0]:
            best = (f1, epoch, _copy_state(encoder.model), _copy_state(head))
    assert best is not None
    encoder.model.load_state_dict(best[2])
    head.load_state_dict(best[3])
    encoder.eval()
    head.eval()
    return encoder, head, {"history": history, "best_epoch": best[1], "fit": len(fit), "validation": len(val)}


def _copy_state(module: torch.nn.Module) -> dict[str, Any]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# --- saved versions and the measurement ------------------------------------------------------


def save_sentiment(encoder: Any, head: SentimentHead, out_dir: Path, card: dict[str, Any]) -> Path:
    """A complete version directory: the fine-tuned encoder (a Hugging Face model
    directory), the head, and the card last -- whoever finds the card finds a whole model."""
    out_dir.mkdir(parents=True, exist_ok=True)
    encoder.model.save_pretrained(str(out_dir))
    encoder.tokenizer.save_pretrained(str(out_dir))
    torch.save(head.state_dict(), out_dir / HEAD_FILE)
    tmp = out_dir / (CARD_FILE + ".tmp")
    tmp.write_text(json.dumps(card, indent=2, sort_keys=True))
    tmp.replace(out_dir / CARD_FILE)
    return out_dir


def sentiment_root(data_dir: Path) -> Path:
    """Where `make sentiment` (``instructrec train-sentiment``) keeps its versions and
    where `make run` looks for one."""
    return Path(data_dir) / "models" / "sentiment"


def resolve_sentiment(root: Path) -> Path:
    """A version directory (it has the card), or a root whose LATEST names one."""
    root = Path(root)
    if (root / CARD_FILE).exists():
        return root
    latest = root / "LATEST"
    if latest.exists() and (root / latest.read_text().strip() / CARD_FILE).exists():
        return root / latest.read_text().strip()
    from model.exceptions import ModelNotFound

    raise ModelNotFound(
        f"no sentiment model at {root} ({CARD_FILE} or LATEST missing); `make sentiment` or `make eval` trains one"
    )


def load_sentiment(model_dir: Path, device: Any = None) -> SentimentModel:
    from model.scorer import TextEncoder

    model_dir = resolve_sentiment(model_dir)
    card = json.loads((model_dir / CARD_FILE).read_text())
    encoder = TextEncoder(model_dir, device=device, max_length=int(card.get("max_length", 64)))
    head = SentimentHead(int(card["dim"]))
    head.load_state_dict(torch.load(model_dir / HEAD_FILE, weights_only=True))
    return SentimentModel(encoder, head.eval(), str(card["version"]))


def _scores(truth: list[int], predicted: list[int]) -> dict[str, Any]:
    return {
        "accuracy": round(accuracy(truth, predicted), 4),
        "macro_f1": round(macro_f1(truth, predicted), 4),
        "confusion": confusion(truth, predicted),
    }


def evaluate_sentiment(
    base_dir: Path, out_root: Path | None, config: FinetuneConfig, log: Any = print
) -> dict[str, dict[str, Any]]:
    """Held-out accuracy and macro-F1 of: the fine-tuned model (``sentiment``), a head on
    the frozen encoder (``sentiment-frozen-head``) and the zero-shot baseline
    (``sentiment-zero-shot``). The fine-tuned version is saved under ``out_root`` (LATEST
    moves to it) when given."""
    import time

    from model.scorer import TextEncoder

    rows = load_headlines()
    train, test = split_headlines(rows)
    truth = label_ids(test).tolist()
    frozen = TextEncoder(base_dir, max_length=config.max_length)
    x_train = frozen.encode([r.text for r in train]).clone()  # out of inference mode: trainable input
    x_test = frozen.encode([r.text for r in test]).clone()
    descriptions = frozen.encode([LABEL_DESCRIPTIONS[label] for label in LABELS])
    results: dict[str, dict[str, Any]] = {
        "sentiment-zero-shot": _scores(truth, zero_shot_predict(x_test, descriptions)),
    }
    wd, _ = choose_weight_decay(x_train, label_ids(train), seed=config.seed)
    frozen_head = fit_head(x_train, label_ids(train), wd, config.seed)
    with torch.no_grad():
        results["sentiment-frozen-head"] = _scores(truth, frozen_head(x_test).argmax(1).tolist())
    started = time.perf_counter()
    encoder, head, info = finetune(train, base_dir, config, log)
    seconds = round(time.perf_counter() - started, 1)
    with torch.no_grad():
        predicted = head(encoder.embed_all([r.text for r in test], config.max_length)).argmax(1).tolist()
    results["sentiment"] = {**_scores(truth, predicted), **info, "train_seconds": seconds}
    for row in results.values():
        row.update(train=len(train), test=len(test))
    if out_root is not None:
        version = time.strftime("sentiment-%Y%m%d-%H%M%S") + f"-s{config.seed}"
        card = {
            "kind": "sentiment",
            "version": version,
            "labels": list(LABELS),
            "dim": int(encoder.model.config.hidden_size),
            "max_length": config.max_length,
            "base": str(base_dir),
            "data": DATA_PATH.name,
            "config": config.__dict__,
            "held_out": {k: results["sentiment"][k] for k in ("accuracy", "macro_f1", "confusion", "test")},
            "training": info,
        }
        out = save_sentiment(encoder, head, Path(out_root) / version, card)
        write_latest(Path(out_root), version)
        results["sentiment"]["model_dir"] = str(out)
    return results
