"""The fused model's features, shared by training, evaluation, the stream worker (which
attaches them to every candidate) and the pools (which combine them). No torch here: the
stream worker imports it.

A trained model's score for a candidate is ``w_text * cosine(instruction, item) +
w_cooc * log1p(cooc) + w_cooc_long * log1p(cooc_long) + w_pop * log1p(popularity)``:
``cooc`` is the candidate's co-occurrence with the user's ``FEATURE_RECENT`` latest
distinct items, each weighted 1/(1 + rank) (the recall score: short-term intent);
``cooc_long`` its unweighted co-occurrence with the ``FEATURE_LONG`` latest (longer-term
taste); ``popularity`` the number of context entries holding it. All are log-scaled, so a
graph built from fewer contexts (a worker's partitions, a rolling window) shifts them by
roughly a constant, which a ranking ignores.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from model.recall import ItemGraph

FEATURES = ("text", "cooc", "cooc_long", "pop")
FEATURE_RECENT = 5  # latest distinct items behind ``cooc`` (recency-weighted)
FEATURE_LONG = 20  # latest distinct items behind ``cooc_long`` (unweighted: longer-term taste)


def latest_distinct(history: Sequence[str], n: int = FEATURE_RECENT) -> list[str]:
    """The ``n`` latest distinct items of an oldest-first history, most recent first."""
    out: list[str] = []
    for item in reversed(history):
        if item not in out:
            out.append(item)
            if len(out) == n:
                break
    return out


@dataclass(frozen=True)
class Evidence:
    """One candidate's collaborative features (counts) and the recent item it co-occurs
    with most (1/(1+rank)-weighted, the most recent winning ties; None without any)."""

    cooc: float
    cooc_long: float
    popularity: float
    link: str | None


def candidate_evidence(graph: ItemGraph, latest: Sequence[str], candidates: Sequence[str]) -> list[Evidence]:
    """Per candidate, from the neighbour rows of the user's latest distinct items (most
    recent first; ``FEATURE_LONG`` of them when the user has that many): one pass over
    those rows per candidate, never over all their neighbours."""
    neighbours = graph.neighbours
    rows = [(item, neighbours[item]) for item in latest[:FEATURE_LONG] if item in neighbours]
    recent = {item: 1.0 / (1 + rank) for rank, item in enumerate(latest[:FEATURE_RECENT])}
    popularity = graph.popularity
    out = []
    for c in candidates:
        cooc = cooc_long = best = 0.0
        link = None
        for item, row in rows:
            count = row.get(c, 0)
            if not count:
                continue
            cooc_long += count
            weight = recent.get(item)
            if weight is not None:
                value = weight * count
                cooc += value
                if value > best:
                    best, link = value, item
        out.append(Evidence(cooc, cooc_long, float(popularity.get(c, 0)), link))
    return out


def raw_collaborative(
    graph: ItemGraph, latest: Sequence[str], candidates: Sequence[str]
) -> list[tuple[float, float, float]]:
    """Per candidate: (cooc, cooc_long, popularity) as counts (see ``candidate_evidence``)."""
    return [(e.cooc, e.cooc_long, e.popularity) for e in candidate_evidence(graph, latest, candidates)]


def collaborative_features(graph: ItemGraph, latest: Sequence[str], candidates: Sequence[str]) -> list[list[float]]:
    """``raw_collaborative``, log1p-scaled: the model's inputs."""
    return [[math.log1p(x) for x in row] for row in raw_collaborative(graph, latest, candidates)]


def fuse(weights: Mapping[str, float], text: Sequence[float], collab: Sequence[Sequence[float]]) -> list[float]:
    """The fused score; ``collab`` rows are log1p-scaled (cooc, cooc_long, pop)."""
    wt, wc, wl, wp = (weights[name] for name in FEATURES)
    return [wt * t + wc * c + wl * cl + wp * p for t, (c, cl, p) in zip(text, collab, strict=True)]


def check_weights(weights: Mapping[str, float]) -> dict[str, float]:
    if set(weights) != set(FEATURES):
        raise ValueError(f"fusion weights must be exactly {FEATURES}, got {sorted(weights)}")
    out = {k: float(v) for k, v in weights.items()}
    if not all(math.isfinite(v) for v in out.values()):
        raise ValueError(f"fusion weights must be finite, got {out}")
    return out
