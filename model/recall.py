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

    def _count(self, item: str, sign: int) -> None:
        popularity = self.popularity
        value = popularity.get(item, 0) + sign
        if value > 0:
            popularity[item] = value
        else:
            del popularity[item]

    def _pair(self, a: str, b: str, sign: int) -> None:
        # The hottest code of event ingestion: unrolled, and dict.get rather than
        # Counter's Python-level __missing__.
        neighbours = self.neighbours
        row = neighbours[a]
        value = row.get(b, 0) + sign
        if value > 0:
            row[b] = value
        else:
            del row[b]
            if not row:
                del neighbours[a]
        row = neighbours[b]
        value = row.get(a, 0) + sign
        if value > 0:
            row[a] = value
        else:
            del row[a]
            if not row:
                del neighbours[b]

    def _apply(self, items: Sequence[str], sign: int) -> None:
        for item in items:
            self._count(item, sign)
        for a, b in self._pairs(items):
            self._pair(a, b, sign)

    def replace_user(self, old_items: Sequence[str], new_items: Sequence[str], max_shift: int | None = None) -> None:
        """A user's context changed from ``old_items`` to ``new_items`` (oldest first).

        The common change -- ``d`` items dropped from the front, ``a`` appended at the
        end -- touches only the pairs at the two ends, so only those are updated; any
        other change (a late event inserted in the middle) swaps the whole context.
        ``max_shift`` bounds the front drops tried (the number of events just applied).
        """
        if old_items == new_items:
            return
        n_old, n_new = len(old_items), len(new_items)
        limit = n_old if max_shift is None else min(n_old, max_shift)
        for d in range(limit + 1):
            keep = n_old - d
            if keep <= n_new and old_items[d:] == new_items[:keep]:
                self._shift(old_items, new_items, d, n_new - keep)
                return
        self._apply(old_items, -1)
        self._apply(new_items, +1)

    def _shift(self, old: Sequence[str], new: Sequence[str], dropped: int, appended: int) -> None:
        w = self.window
        for i in range(dropped):  # pairs whose first item left the window
            a = old[i]
            self._count(a, -1)
            for b in old[i + 1 : i + 1 + w]:
                if a != b:
                    self._pair(a, b, -1)
        for j in range(len(new) - appended, len(new)):  # pairs whose second item is new
            b = new[j]
            self._count(b, +1)
            for a in new[max(0, j - w) : j]:
                if a != b:
                    self._pair(a, b, +1)

    def rebuild(self, contexts: Iterable[Sequence[str]]) -> None:
        self.neighbours = defaultdict(Counter)
        self.popularity = Counter()
        for items in contexts:
            self._apply(items, +1)

    def cooccurrence(self, recent: Sequence[str]) -> dict[str, float]:
        """Co-occurrence of every neighbour with ``recent`` (most recent first), each
        item's counts weighted 1/(1 + its rank) -- the recall score, for all items."""
        scores: defaultdict[str, float] = defaultdict(float)
        for rank, item in enumerate(recent):
            weight = 1.0 / (1 + rank)
            for other, count in self.neighbours.get(item, {}).items():
                scores[other] += weight * count
        return scores

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
        window = limit + len(exclude) + len(taken)
        looked = 0
        while len(out) < limit and looked < len(self.popularity):
            # Items not in the catalog do not count: widen the window until it is filled.
            popular = self.most_popular(window)
            for item, count in popular[looked:]:
                if len(out) >= limit:
                    break
                if item in exclude or item in taken or not is_known(item):
                    continue
                out.append(Recalled(item, "popular", float(count)))
                taken.add(item)
            looked = len(popular)
            window *= 2
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
