"""Every topic is defined here once, with its record type, codec and key.

Names are ``<prefix><suffix>``; the prefix comes from settings, so several deployments
(or test runs) can share a cluster. Nothing else in the code base spells a topic name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schemas.codec import JsonCodec
from schemas.records import (
    Alert,
    CatalogItem,
    DeadLetter,
    Event,
    Follow,
    NewsItem,
    Recommendation,
    Record,
    ScoreRequest,
    SentimentRequest,
    SentimentResult,
    Trigger,
    UserAlert,
)

# What every consumer rejects beyond any JSON Schema: rules over the bytes, before a document
# exists. Dead-letter reason -> rule.
BEYOND_EVERY_SCHEMA: tuple[tuple[str, str], ...] = (
    ("too-large", "a value over the consumer's byte limit (INSTRUCTREC_MAX_MESSAGE_BYTES, 1,000,000 by default)"),
    (
        "invalid-json",
        "a value that is not strict JSON in UTF-8: NaN or Infinity, a number beyond the range of a double (1e400), "
        "an unpaired surrogate (\\ud800), more than 1,024 levels of nesting",
    ),
)
_SKEW = "INSTRUCTREC_MAX_FUTURE_SKEW_S (86,400 s by default) after the consumer's clock"


@dataclass(frozen=True)
class TopicSpec:
    suffix: str
    record_type: type[Record]
    key_field: str
    description: str
    compacted: bool = False
    # Rules this topic's consumer applies beyond what its JSON Schema can say (over the key,
    # the clock, several records at once, or a setting): dead-letter reason -> rule.
    # Published in the exported schema; nothing else may differ from it.
    beyond_schema: tuple[tuple[str, str], ...] = ()

    @property
    def rules_beyond_schema(self) -> dict[str, str]:
        return dict(BEYOND_EVERY_SCHEMA + self.beyond_schema)

    @property
    def codec(self) -> JsonCodec[Any]:
        return _CODECS[self.suffix]

    def key_of(self, record: Record) -> bytes:
        return str(getattr(record, self.key_field)).encode()


EVENTS = TopicSpec(
    "events",
    Event,
    "user_id",
    "Click/view events, keyed by user id.",
    beyond_schema=(
        ("mixed-users", "an array whose events are not all of one user_id"),
        (
            "key-mismatch",
            "a message whose key is not the user_id of its event(s), or that has no key (the key picks the "
            "partition, and so the worker that holds the user's context)",
        ),
        ("future-timestamp", f"an event whose ts is more than {_SKEW}"),
    ),
)
CATALOG = TopicSpec("catalog", CatalogItem, "item_id", "Item catalog, keyed by item id (latest wins).", compacted=True)
TRIGGERS = TopicSpec(
    "triggers",
    Trigger,
    "user_id",
    "Recommendation triggers, keyed by user id.",
    beyond_schema=(
        ("future-timestamp", f"a ts or after_ts more than {_SKEW}"),
        (
            "too-many-candidates",
            "more candidates than INSTRUCTREC_MAX_TRIGGER_CANDIDATES, where that is set below the schema's 1,000",
        ),
        (
            "key-mismatch",
            "a trigger whose key is not its user_id, or that has no key (the key picks the partition, and so the "
            "worker that holds the user's context)",
        ),
    ),
)
SCORE_REQUESTS = TopicSpec(
    "score-requests", ScoreRequest, "user_id", "Stream worker -> scoring pools, keyed by user id."
)
RECOMMENDATIONS = TopicSpec(
    "recommendations", Recommendation, "user_id", "Ranked results (the output), keyed by user id."
)
DEAD_LETTERS = TopicSpec(
    "dead-letters", DeadLetter, "source_topic", "Rejected messages with original bytes and reason."
)

SENTIMENT_REQUESTS = TopicSpec(
    "sentiment-requests", SentimentRequest, "ticker", "Headlines to score -> scoring pools, keyed by ticker."
)
SENTIMENT_RESULTS = TopicSpec(
    "sentiment-results", SentimentResult, "ticker", "Scored headlines from the scoring pools, keyed by ticker."
)

NEWS = TopicSpec("news", NewsItem, "first_ticker", "Financial news headlines, keyed by their first ticker.")
FOLLOWS = TopicSpec("follows", Follow, "ticker", "Users following or unfollowing tickers, keyed by ticker.")
ALERTS = TopicSpec("alerts", Alert, "ticker", "Negative-sentiment surges, one per ticker and window, keyed by ticker.")
ALERT_DELIVERIES = TopicSpec(
    "alert-deliveries", UserAlert, "user_id", "Internal: an alert for each follower, keyed by user (rate limits)."
)
USER_ALERTS = TopicSpec("user-alerts", UserAlert, "user_id", "Alerts delivered to followers, keyed by user id.")

ALL_TOPICS: tuple[TopicSpec, ...] = (
    EVENTS,
    CATALOG,
    TRIGGERS,
    SCORE_REQUESTS,
    RECOMMENDATIONS,
    DEAD_LETTERS,
    SENTIMENT_REQUESTS,
    SENTIMENT_RESULTS,
    NEWS,
    FOLLOWS,
    ALERTS,
    ALERT_DELIVERIES,
    USER_ALERTS,
)
_CODECS: dict[str, JsonCodec[Any]] = {t.suffix: JsonCodec(t.record_type) for t in ALL_TOPICS}


class Topics:
    """Topic names for one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def name(self, spec: TopicSpec) -> str:
        return f"{self.prefix}{spec.suffix}"

    @property
    def events(self) -> str:
        return self.name(EVENTS)

    @property
    def catalog(self) -> str:
        return self.name(CATALOG)

    @property
    def triggers(self) -> str:
        return self.name(TRIGGERS)

    @property
    def score_requests(self) -> str:
        return self.name(SCORE_REQUESTS)

    @property
    def recommendations(self) -> str:
        return self.name(RECOMMENDATIONS)

    @property
    def dead_letters(self) -> str:
        return self.name(DEAD_LETTERS)

    @property
    def sentiment_requests(self) -> str:
        return self.name(SENTIMENT_REQUESTS)

    @property
    def sentiment_results(self) -> str:
        return self.name(SENTIMENT_RESULTS)

    @property
    def news(self) -> str:
        return self.name(NEWS)

    @property
    def follows(self) -> str:
        return self.name(FOLLOWS)

    @property
    def alerts(self) -> str:
        return self.name(ALERTS)

    @property
    def alert_deliveries(self) -> str:
        return self.name(ALERT_DELIVERIES)

    @property
    def user_alerts(self) -> str:
        return self.name(USER_ALERTS)

    def all(self) -> dict[str, TopicSpec]:
        return {self.name(t): t for t in ALL_TOPICS}
