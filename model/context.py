"""The rolling per-user context: pure functions over bounded lists.

The events part is a list of ``[item_id, event_type, ts]`` triples, oldest first, at
most ``limit`` long; the seen part lists distinct item ids. Both are JSON-friendly on
purpose: the pair is the stream worker's table value and its changelog record.
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
    out: list[Entry] = list(context or ())  # entries are never mutated: a shallow copy will do
    held: set[tuple[str, str, float]] | None = None  # built only when an event is not the newest
    for item_id, event_type, ts in events:
        key = (item_id, event_type, ts)
        if not out or ts > out[-1][2]:  # newer than everything held: cannot be a redelivery
            out.append([item_id, event_type, ts])
            if held is not None:
                held.add(key)
            continue
        if held is None:
            held = {(e[0], e[1], e[2]) for e in out}
        if key in held:
            continue
        held.add(key)
        if ts >= out[-1][2]:
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


def update_seen(seen: Sequence[str] | None, items: Iterable[str], limit: int) -> list[str]:
    """Distinct items the user has interacted with, oldest first, at most ``limit``.

    Kept beside the last-N events so that recall can exclude everything the user has
    seen, not only what is still in the window; beyond ``limit`` the oldest are forgotten.
    """
    out = list(seen or ())
    present = set(out)
    for item in items:
        if item in present:
            continue
        present.add(item)
        out.append(item)
    if len(out) > limit:
        del out[: len(out) - limit]
    return out


class UserContext:
    """The table value: ``{"events": [[item, type, ts], ...], "seen": [item, ...],
    "answered": [request_id, ...]}``. ``answered`` holds the user's latest answered
    request ids, so a trigger redelivered after a restart is not answered twice."""

    __slots__ = ()

    @staticmethod
    def events(value: Any) -> list[Entry]:
        return list(value.get("events", ())) if value else []

    @staticmethod
    def seen(value: Any) -> list[str]:
        return list(value.get("seen", ())) if value else []

    @staticmethod
    def reflects(value: Any, after_ts: float, after_item_id: str | None = None) -> bool:
        """Whether the context already holds the event a trigger asked to see: one newer
        than ``after_ts``, or at ``after_ts`` (for ``after_item_id`` when given, since
        several events can share a timestamp)."""
        events = value.get("events") if value else None
        if not events:
            return False
        if events[-1][2] > after_ts:
            return True
        if after_item_id is None:
            return bool(events[-1][2] >= after_ts)
        return any(e[0] == after_item_id and e[2] == after_ts for e in reversed(events))

    @staticmethod
    def apply(value: Any, events: Sequence[tuple[str, str, float]], limit: int, seen_limit: int) -> dict[str, Any]:
        return {
            **(value or {}),
            "events": apply_events(UserContext.events(value), events, limit),
            "seen": update_seen(UserContext.seen(value), (e[0] for e in events), seen_limit),
        }

    @staticmethod
    def was_answered(value: Any, request_id: str) -> bool:
        return bool(value) and request_id in value.get("answered", ())

    @staticmethod
    def mark_answered(value: Any, request_id: str, keep: int = 32) -> dict[str, Any]:
        answered = [*(value or {}).get("answered", ()), request_id][-keep:]
        return {**(value or {"events": [], "seen": []}), "answered": answered}
