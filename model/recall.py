"""Candidate recall: an item co-occurrence graph plus popularity, derived from contexts.

The graph is a pure function of the per-user contexts the worker holds: pairs of items
at most ``window`` steps apart in a user's context co-occur; popularity counts an item
once per context entry. It is maintained incrementally (``replace_user``) and can be
rebuilt from the table at any time (``rebuild``), e.g. after changelog recovery; both
give the same graph (a unit test proves it).
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Recalled:
    item_id: str
    source: Literal["cooccurrence", "popular", "fresh"]
    score: float


class ItemGraph:
    def __init__(self, window: int = 3) -> None:
        self.window = window
        self.neighbours: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.popularity: Counter[str] = Counter()

    def _pairs(self, items: Sequence[str]) -> Iterable[tuple[str, str]]:
        for i, a in enumerate(items):
            for b in items[i + 1 : i + 1 + self.window]:
                if a != b:
                    yield a, b

    def _apply(self, items: Sequence[str], sign: int) -> None:
        for item in items:
            self.popularity[item] += sign
            if self.popularity[item] <= 0:
                del self.popularity[item]
        for a, b in self._pairs(items):
            for x, y in ((a, b), (b, a)):
                row = self.neighbours[x]
                row[y] += sign
                if row[y] <= 0:
                    del row[y]
                    if not row:
                        del self.neighbours[x]

    def replace_user(self, old_items: Sequence[str], new_items: Sequence[str]) -> None:
        """A user's context changed from ``old_items`` to ``new_items`` (oldest first)."""
        if old_items == new_items:
            return
        # Common case: appended at the end, maybe dropped from the front. Only the pairs
        # touching the changed ends differ, but a full swap is O(len * window) and exact.
        self._apply(old_items, -1)
        self._apply(new_items, +1)

    def rebuild(self, contexts: Iterable[Sequence[str]]) -> None:
        self.neighbours = defaultdict(Counter)
        self.popularity = Counter()
        for items in contexts:
            self._apply(items, +1)

    def recall(
        self,
        recent: Sequence[str],
        exclude: set[str],
        limit: int,
        is_known: Callable[[str], bool],
        popular_share: float = 0.2,
        fresh: Iterable[str] = (),
    ) -> list[Recalled]:
        """Neighbours of ``recent`` (most recent first, weighted by recency), then popular
        items, then ``fresh`` ones (newest catalog items, for a cold system), skipping
        ``exclude`` and items ``is_known`` rejects. Deterministic."""
        scores: defaultdict[str, float] = defaultdict(float)
        for rank, item in enumerate(recent):
            weight = 1.0 / (1 + rank)
            for other, count in self.neighbours.get(item, {}).items():
                if other not in exclude:
                    scores[other] += weight * count
        n_co = max(0, limit - int(limit * popular_share)) if scores else 0
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
        out: list[Recalled] = []
        taken: set[str] = set()
        for item, score in ranked:
            if len(out) >= n_co:
                break
            if is_known(item):
                out.append(Recalled(item, "cooccurrence", float(score)))
                taken.add(item)
        for item, count in self.most_popular(limit + len(exclude) + len(taken)):
            if len(out) >= limit:
                break
            if item in exclude or item in taken or not is_known(item):
                continue
            out.append(Recalled(item, "popular", float(count)))
            taken.add(item)
        for item in fresh:
            if len(out) >= limit:
                break
            if item in exclude or item in taken or not is_known(item):
                continue
            out.append(Recalled(item, "fresh", 0.0))
            taken.add(item)
        return out

    def most_popular(self, n: int) -> list[tuple[str, int]]:
        return heapq.nsmallest(n, self.popularity.items(), key=lambda kv: (-kv[1], kv[0]))
