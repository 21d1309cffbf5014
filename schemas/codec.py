"""JSON codec (orjson) that turns bytes into validated records and back.

Validation is strict by JSON type, so that the decoder and the exported JSON Schemas give
one verdict (``true`` is not a number, ``"5"`` is not an integer; see schemas/records.py).
What a schema cannot say is checked here too and published in the schemas: the byte limit,
strict JSON (orjson: no NaN or Infinity, numbers within a double, valid UTF-8 and Unicode),
the events topic's one-user arrays and its key (``check_key``).
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Iterable
from typing import Generic, TypeVar

import orjson
from pydantic import TypeAdapter, ValidationError

from schemas.exceptions import DecodeError
from schemas.records import DeadLetter, Event, Record

R = TypeVar("R", bound=Record)

DEFAULT_MAX_BYTES = 1_000_000


def _describe(error: ValidationError, limit: int = 3) -> str:
    parts = []
    for item in error.errors()[:limit]:
        where = ".".join(str(p) for p in item["loc"]) or "<root>"
        parts.append(f"{where}: {item['msg']}")
    more = len(error.errors()) - limit
    if more > 0:
        parts.append(f"(+{more} more)")
    return "; ".join(parts)


class JsonCodec(Generic[R]):
    """Encode/decode one record type as UTF-8 JSON objects (validated strictly by JSON type)."""

    def __init__(self, record_type: type[R], max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.record_type = record_type
        self.max_bytes = max_bytes

    def encode(self, record: R) -> bytes:
        return orjson.dumps(record.model_dump(mode="json"))

    def decode(self, data: bytes | None, max_bytes: int | None = None) -> R:
        """``max_bytes``: this call's size limit (default: the codec's)."""
        limit = self.max_bytes if max_bytes is None else max_bytes
        if data is None:
            raise DecodeError("empty-value", "the message has no value (tombstone)")
        if len(data) > limit:
            raise DecodeError("too-large", f"{len(data)} bytes > limit {limit}")
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise DecodeError("invalid-json", str(exc)[:200]) from None
        if not isinstance(obj, dict):
            raise DecodeError("not-an-object", f"expected a JSON object, got {type(obj).__name__}")
        try:
            return self.record_type.model_validate(obj, strict=True)
        except ValidationError as exc:
            raise DecodeError("invalid-record", _describe(exc)) from None


MAX_EVENTS_PER_MESSAGE = 10_000
_EVENT_LIST: TypeAdapter[list[Event]] = TypeAdapter(list[Event])


def check_not_future(timestamps: Iterable[float | None], now: float, max_skew_s: float | None) -> None:
    """Reject a record dated more than ``max_skew_s`` after ``now``: a far-future event
    would stay at the head of the user's context for good. ``None`` turns the check off."""
    if max_skew_s is None:
        return
    limit = now + max_skew_s
    for ts in timestamps:
        if ts is not None and ts > limit:
            raise DecodeError("future-timestamp", f"ts {ts:.0f} is more than {max_skew_s:.0f} s after now ({now:.0f})")


def decode_events(
    data: bytes | None, max_bytes: int = DEFAULT_MAX_BYTES, max_events: int = MAX_EVENTS_PER_MESSAGE
) -> list[Event]:
    """An events-topic value: one event object, or an array of events of one user, so
    producers can share the per-message cost across many events. That user must be the
    message key's: ``check_key``, after this and the clock check."""
    if data is None:
        raise DecodeError("empty-value", "the message has no value (tombstone)")
    if len(data) > max_bytes:
        raise DecodeError("too-large", f"{len(data)} bytes > limit {max_bytes}")
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DecodeError("invalid-json", str(exc)[:200]) from None
    try:
        if isinstance(obj, dict):
            return [Event.model_validate(obj, strict=True)]
        if not isinstance(obj, list):
            raise DecodeError("not-an-object", f"expected an event object or an array, got {type(obj).__name__}")
        if not obj:
            raise DecodeError("empty-batch", "an event array needs at least one event")
        if len(obj) > max_events:
            raise DecodeError("too-many-events", f"{len(obj)} events > limit {max_events}")
        events = _EVENT_LIST.validate_python(obj, strict=True)
    except ValidationError as exc:
        raise DecodeError("invalid-record", _describe(exc)) from None
    users = {e.user_id for e in events}
    if len(users) > 1:
        raise DecodeError("mixed-users", f"an event array must hold one user's events (the key); got {len(users)}")
    return events


def check_key(key: bytes | None, user_id: str) -> None:
    """Reject a message whose key is not the user_id its record(s) carry, or that has no
    key. The key picks the partition, the partition the stream worker that holds the user's
    context (its table partition is the user id's), so a record under another key would be
    applied by a worker that does not own that user, or not be the key's user's at all."""
    if key is None:
        raise DecodeError("key-mismatch", f"the message has no key; it must be keyed by its user_id {user_id!r:.140}")
    if key != user_id.encode():
        raise DecodeError(
            "key-mismatch", f"key {key!r:.140} is not the user_id {user_id!r:.140} of the message's record(s)"
        )


# A dead letter must itself fit in a Kafka message (base64 adds a third): a rejected value
# longer than this keeps its first DEAD_LETTER_VALUE_MAX bytes, its length and its digest.
DEAD_LETTER_VALUE_MAX = 256 * 1024


def dead_letter(
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    reason: str,
    detail: str,
    component: str,
    timestamp_ms: int | None = None,
) -> DeadLetter:
    """Wrap a rejected message with where it came from and why, keeping its bytes (the
    first ``DEAD_LETTER_VALUE_MAX`` of a longer value, with its length and SHA-256)."""
    raw = value or b""
    truncated = len(raw) > DEAD_LETTER_VALUE_MAX
    kept = raw[:DEAD_LETTER_VALUE_MAX] if truncated else raw
    return DeadLetter(
        source_topic=topic,
        source_partition=partition,
        source_offset=offset,
        source_timestamp_ms=timestamp_ms,
        key_b64=base64.b64encode(key[:DEAD_LETTER_VALUE_MAX]).decode("ascii") if key is not None else None,
        value_b64=base64.b64encode(kept).decode("ascii"),
        value_bytes=len(raw),
        value_truncated=truncated,
        value_sha256=hashlib.sha256(raw).hexdigest() if truncated else None,
        reason=reason,
        detail=detail[:1000],
        component=component,
        ts=time.time(),
    )
