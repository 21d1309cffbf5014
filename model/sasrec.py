"""A small SASRec (self-attentive sequential recommendation, Kang & McAuley 2018): the ID
baseline the InstructRec model has to beat, trained in the same evaluation run.

Causal transformer over a user's last ``max_len`` item ids; trained with one sampled
negative per position and binary cross-entropy, as in the paper. Seeded; CPU by default.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class SASRecConfig:
    max_len: int = 50
    hidden: int = 64
    blocks: int = 2
    heads: int = 1
    dropout: float = 0.2
    epochs: int = 60
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0


class SASRec(nn.Module):
    def __init__(self, n_items: int, config: SASRecConfig) -> None:
        super().__init__()
        self.config = config
        self.items = nn.Embedding(n_items + 1, config.hidden, padding_idx=0)  # 0 = padding
        self.positions = nn.Embedding(config.max_len, config.hidden)
        layer = nn.TransformerEncoderLayer(
            config.hidden,
            config.heads,
            dim_feedforward=config.hidden,
            dropout=config.dropout,
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, config.blocks, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.hidden)
        self.drop = nn.Dropout(config.dropout)
        for embedding in (self.items, self.positions):
            nn.init.xavier_normal_(embedding.weight)  # N(0, 1) times sqrt(hidden) saturates the first logits
        mask = torch.triu(torch.ones(config.max_len, config.max_len, dtype=torch.bool), diagonal=1)
        self.register_buffer("causal", mask, persistent=False)

    def forward(self, seqs: torch.Tensor) -> torch.Tensor:
        """(batch, max_len) item indices, left-padded -> (batch, max_len, hidden)."""
        positions = torch.arange(seqs.shape[1], device=seqs.device)
        x = self.items(seqs) * self.config.hidden**0.5 + self.positions(positions)
        x = self.drop(x) * (seqs > 0).unsqueeze(-1)
        x = self.encoder(x, mask=self.causal, src_key_padding_mask=seqs == 0)
        return self.norm(x)


class SASRecModel:
    """Item-id vocabulary + trained network; ``score(history, candidates)``."""

    def __init__(self, item_ids: Sequence[str], config: SASRecConfig | None = None) -> None:
        self.config = config or SASRecConfig()
        self.index = {item: n + 1 for n, item in enumerate(item_ids)}
        torch.manual_seed(self.config.seed)
        self.net = SASRec(len(self.index), self.config)

    def _pad(self, items: Sequence[str]) -> list[int]:
        ids = [self.index[i] for i in items if i in self.index][-self.config.max_len :]
        return [0] * (self.config.max_len - len(ids)) + ids

    def fit(self, sequences: Sequence[Sequence[str]], progress: bool = False) -> list[float]:
        """Train on each sequence predicting every next item. Returns the loss per epoch."""
        cfg = self.config
        rng = random.Random(cfg.seed)
        torch.manual_seed(cfg.seed)
        n_items = len(self.index)
        data = []
        for seq in sequences:
            ids = self._pad(seq)
            if sum(1 for i in ids if i) < 2:
                continue
            data.append(ids)
        # Position t reads item t-1 and predicts item t.
        inputs = torch.tensor([[0, *ids[:-1]] for ids in data])
        targets = torch.tensor(data)
        seen = [set(ids) for ids in data]
        optimizer = torch.optim.Adam(self.net.parameters(), lr=cfg.lr, betas=(0.9, 0.98))
        losses = []
        epochs = range(cfg.epochs)
        if progress:
            from tqdm import tqdm

            epochs = tqdm(epochs, desc="SASRec", unit="epoch")
        self.net.train()
        for _ in epochs:
            order = list(range(len(data)))
            rng.shuffle(order)
            total = 0.0
            for start in range(0, len(order), cfg.batch_size):
                rows = order[start : start + cfg.batch_size]
                seqs, pos = inputs[rows], targets[rows]
                neg = torch.tensor(
                    [[_negative(rng, n_items, seen[r]) if p else 0 for p in targets[r].tolist()] for r in rows]
                )
                hidden = self.net(seqs)
                pos_logits = (hidden * self.net.items(pos)).sum(-1)
                neg_logits = (hidden * self.net.items(neg)).sum(-1)
                valid = (pos > 0) & (seqs > 0)
                loss = nn.functional.binary_cross_entropy_with_logits(
                    pos_logits[valid], torch.ones_like(pos_logits[valid])
                ) + nn.functional.binary_cross_entropy_with_logits(
                    neg_logits[valid], torch.zeros_like(neg_logits[valid])
                )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(rows)
            losses.append(total / max(1, len(data)))
        self.net.eval()
        return losses

    @torch.inference_mode()
    def score(self, history: Sequence[str], candidates: Sequence[str]) -> list[float]:
        """Scores of ``candidates`` after ``history`` (oldest first); unknown items score
        below every known one."""
        seqs = torch.tensor([self._pad(history)])
        last = self.net(seqs)[0, -1]
        ids = torch.tensor([self.index.get(c, 0) for c in candidates])
        scores = self.net.items(ids) @ last
        scores[ids == 0] = float("-inf")
        return [float(s) for s in scores.tolist()]


def _negative(rng: random.Random, n_items: int, seen: set[int]) -> int:
    while True:
        item = rng.randint(1, n_items)
        if item not in seen:
            return item
