"""Optional second stage: a cross-encoder re-ranks the bi-encoder's top M.

A cross-encoder reads the instruction and one item's text together (one transformer pass
per pair), which ranks better than comparing two separately computed vectors but costs M
forward passes per request instead of one. So it runs only where a device can afford it:
the pool turns it on for CUDA devices and, on CPUs, only when asked to.

The model is a directory loadable with ``AutoModelForSequenceClassification`` with one
output (a relevance logit). No packaged cross-encoder exists for this project; issue #4's
training produces one. The stage reports scores as P(relevant) = sigmoid(logit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from model.device import DeviceChoice, choose_device
from model.exceptions import ModelNotFound, ScoringError
from model.scorer import ScoredRequest


class CrossEncoder:
    def __init__(self, model_dir: Path, device: DeviceChoice | None = None, max_length: int = 256) -> None:
        self.model_dir = Path(model_dir)
        if not (self.model_dir / "config.json").exists():
            raise ModelNotFound(f"no cross-encoder at {self.model_dir} (config.json missing)")
        self.device = device or choose_device("cpu")
        self.max_length = max_length
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir), local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(str(self.model_dir), local_files_only=True)
        if model.config.num_labels != 1:
            raise ModelNotFound(f"{self.model_dir}: a cross-encoder needs one output, not {model.config.num_labels}")
        self.model = model.to(device=self.device.device, dtype=self.device.dtype).eval()

    @torch.inference_mode()
    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """P(relevant) for each (instruction, item text) pair, in one forward pass."""
        if not pairs:
            return []
        batch = self.tokenizer(
            [q for q, _ in pairs],
            [t for _, t in pairs],
            padding=True,
            truncation="longest_first",
            max_length=self.max_length,
            return_tensors="pt",
        ).to(self.device.device)
        logits = self.model(**batch).logits.float().reshape(-1)
        if logits.shape[0] != len(pairs):
            raise ScoringError(f"cross-encoder returned {logits.shape[0]} scores for {len(pairs)} pairs")
        return [float(p) for p in torch.sigmoid(logits).cpu().tolist()]


def rerank_top(
    cross: CrossEncoder,
    instructions: Sequence[str],
    candidate_texts: Sequence[Sequence[str]],
    first: Sequence[ScoredRequest],
    top_m: int,
) -> list[ScoredRequest]:
    """Re-score each request's ``top_m`` candidates (by first-stage score, ties by position)
    with the cross-encoder, all requests' pairs in one forward pass. Those candidates get
    their P(relevant) in [0, 1] as score; the rest get their first-stage score minus 3, so
    they rank below every re-ranked one (bi-encoder cosines lie in [-1, 1]) in their old order.
    """
    if not (len(instructions) == len(candidate_texts) == len(first)):
        raise ScoringError("instructions, candidates and first-stage scores differ in length")
    chosen: list[list[int]] = []
    pairs: list[tuple[str, str]] = []
    for instruction, texts, scored in zip(instructions, candidate_texts, first, strict=True):
        if len(texts) != len(scored.scores):
            raise ScoringError(f"{len(scored.scores)} first-stage scores for {len(texts)} candidates")
        top = sorted(range(len(texts)), key=lambda n: (-scored.scores[n], n))[:top_m]
        chosen.append(top)
        pairs += [(instruction, texts[n]) for n in top]
    probabilities = cross.score_pairs(pairs)
    out: list[ScoredRequest] = []
    pos = 0
    for top, scored in zip(chosen, first, strict=True):
        scores = [s - 3.0 for s in scored.scores]
        for n in top:
            scores[n] = probabilities[pos]
            pos += 1
        out.append(replace(scored, scores=scores))
    return out
