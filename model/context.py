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
    """Return the context after ``events``, applied one by one: ordered by ts,
    deduplicated, at most ``limit`` long (the oldest entry falls off).

    An event identical to one already held (same item, type and ts) is a redelivery and
    is ignored, and so is one no newer than the oldest entry of a full window (it fell
    off, or would at once; among equal timestamps it would push out another entry). So
    applying any suffix of the events again -- a partition replayed after a crash --
    leaves the context as it was. Late events are inserted at their place in time.
    """
    out: list[Entry] = list(context or ())  # entries are never mutated: a shallow copy will do
    if len(out) > limit:
        del out[: len(out) - limit]
    held: set[tuple[str, str, float]] | None = None  # built only when an event is not the newest
    for item_id, event_type, ts in events:
        key = (item_id, event_type, ts)
        if not out or ts > out[-1][2]:  # newer than everything held: cannot be a redelivery
            out.append([item_id, event_type, ts])
        else:
            if held is None:
                held = {(e[0], e[1], e[2]) for e in out}
            if key in held or (len(out) >= limit and ts <= out[0][2]):
                continue
            if ts >= out[-1][2]:
                out.append([item_id, event_type, ts])
            else:
                insort(out, [item_id, event_type, ts], key=lambda e: e[2])
        if held is not None:
            held.add(key)
        if len(out) > limit:
            oldest = out.pop(0)
            if held is not None:
                held.discard((oldest[0], oldest[1], oldest[2]))
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
    "answered": [request_id, ...], "outbox": {request_id: packed request},
    "waiting": {request_id: origin}}``.

    - ``answered``: the user's latest answered request ids, so a trigger redelivered
      after a restart is not answered twice.
    - ``outbox``: score requests planned and written here *before* they are sent, and
      removed once the broker has acknowledged them. A worker that dies in between finds
      them on recovery and sends the same bytes again, so a redelivered request is
      identical to the first, never re-planned against a newer context.
    - ``waiting``: triggers waiting for the event their ``after_ts`` names (their offsets
      may already be committed); a recovering worker takes them up again.
    """

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

    @staticmethod
    def outbox(value: Any) -> dict[str, str]:
        return dict(value.get("outbox") or {}) if value else {}

    @staticmethod
    def waiting(value: Any) -> dict[str, dict[str, Any]]:
        return dict(value.get("waiting") or {}) if value else {}

    @staticmethod
    def stage(value: Any, request_id: str, packed: str, keep: int = 32) -> dict[str, Any]:
        """Answered, with the request in the outbox (and no longer waiting)."""
        out = UserContext.mark_answered(value, request_id, keep)
        out["outbox"] = {**UserContext.outbox(value), request_id: packed}
        return _without(out, "waiting", request_id)

    @staticmethod
    def confirm(value: Any, request_ids: Iterable[str]) -> dict[str, Any]:
        """The broker acknowledged these requests: out of the outbox."""
        out = dict(value or {"events": [], "seen": []})
        for request_id in request_ids:
            out = _without(out, "outbox", request_id)
        return out

    @staticmethod
    def wait(value: Any, request_id: str, origin: dict[str, Any]) -> dict[str, Any]:
        out = dict(value or {"events": [], "seen": []})
        out["waiting"] = {**UserContext.waiting(value), request_id: origin}
        return out

    @staticmethod
    def unwait(value: Any, request_id: str) -> dict[str, Any]:
        return _without(dict(value or {"events": [], "seen": []}), "waiting", request_id)


def _without(value: dict[str, Any], part: str, request_id: str) -> dict[str, Any]:
    held = value.get(part)
    if not held or request_id not in held:
        return value
    rest = {k: v for k, v in held.items() if k != request_id}
    out = {k: v for k, v in value.items() if k != part}
    if rest:
        out[part] = rest
    return out
