"""The rolling per-user context: pure functions over a bounded list of interactions.

A context is a list of ``[item_id, event_type, ts]`` triples, oldest first, at most
``limit`` long. It is what the stream worker stores per user (JSON-friendly on purpose:
it is the table's changelog value).
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Iterable, Sequence
from typing import Any

Entry = list[Any]  # [item_id: str, event_type: str, ts: float]


def apply_events(context: Sequence[Entry] | None, events: Iterable[tuple[str, str, float]], limit: int) -> list[Entry]:
    """Return the context after ``events``: ordered by ts, deduplicated, bounded.

    An event identical to one already held (same item, type and ts) is a redelivery and
    is ignored, so replaying a partition after a crash does not double-count. Late events
    are inserted at their place in time; the oldest entries fall off beyond ``limit``.
    """
    out: list[Entry] = [list(e) for e in context or ()]
    seen = {(e[0], e[1], e[2]) for e in out}
    for item_id, event_type, ts in events:
        key = (item_id, event_type, ts)
        if key in seen:
            continue
        seen.add(key)
        if not out or ts >= out[-1][2]:
            out.append([item_id, event_type, ts])
        else:
            insort(out, [item_id, event_type, ts], key=lambda e: e[2])
    if len(out) > limit:
        del out[: len(out) - limit]
    return out


def items_of(context: Sequence[Entry] | None) -> list[str]:
    """Item ids, oldest first (repeats kept: they are signal)."""
    return [e[0] for e in context or ()]


def recent_distinct(context: Sequence[Entry] | None, n: int) -> list[Entry]:
    """The ``n`` most recent entries with distinct items, most recent first."""
    out: list[Entry] = []
    seen: set[str] = set()
    for entry in reversed(context or ()):
        if entry[0] in seen:
            continue
        seen.add(entry[0])
        out.append(entry)
        if len(out) == n:
            break
    return out
