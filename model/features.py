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


def raw_collaborative(
    graph: ItemGraph, latest: Sequence[str], candidates: Sequence[str]
) -> list[tuple[float, float, float]]:
    """Per candidate: (cooc, cooc_long, popularity) as counts; ``latest`` is the user's
    latest distinct items, most recent first (at least ``FEATURE_LONG`` of them when the
    user has that many)."""
    cooc = graph.cooccurrence(latest[:FEATURE_RECENT])
    neighbours = graph.neighbours
    rows = [neighbours[item] for item in latest[:FEATURE_LONG] if item in neighbours]
    popularity = graph.popularity
    return [(cooc.get(c, 0.0), float(sum(r.get(c, 0) for r in rows)), float(popularity.get(c, 0))) for c in candidates]


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
