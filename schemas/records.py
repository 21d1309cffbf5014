"""Record types of every topic. One class per message kind, version 1.

Records are pydantic models so that validation errors name the field and so that the
JSON Schemas under ``schemas/json/`` are generated from the same definitions. The codecs
validate strictly by JSON type (``schemas.codec``), so a record and its exported schema
give one verdict: ``true`` is not a number, ``"5"`` is not an integer, ``5.0`` is the
integer 5 (as JSON Schema reads it); every bound is in the schema. A test holds the two to
it field by field (tests/unit/test_schema_agreement.py).
Unknown fields are ignored (newer producers may add fields); a newer ``schema_version``
than this code knows is rejected, so an old consumer never half-understands a message.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

SCHEMA_VERSION = 1


def _integral(value: object) -> object:
    """JSON has one number type: 5.0 is the integer 5 (JSON Schema's ``integer`` says so);
    5.5, ``true`` and ``"5"`` stay what they are, and strict validation refuses them."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# Every integer field: a JSON number with no fractional part.
Integer = Annotated[int, BeforeValidator(_integral)]

# Identifiers are opaque strings: producers with integer ids send them as strings.
Id = Annotated[str, Field(min_length=1, max_length=128, strict=True)]
# Seconds since the Unix epoch, as a float.
Timestamp = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]


class Record(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)

    schema_version: Integer = Field(
        default=SCHEMA_VERSION,
        ge=1,
        le=SCHEMA_VERSION,
        description=f"The record layout's version; this build reads 1..{SCHEMA_VERSION} and rejects newer ones.",
    )


class Event(Record):
    """A user interacted with an item. Topic ``events``, keyed by ``user_id``."""

    user_id: Id
    item_id: Id
    event_type: Literal["click", "view"]
    ts: Timestamp = Field(description="When the interaction happened (epoch seconds).")


class CatalogItem(Record):
    """An item's current description. Topic ``catalog``, keyed by ``item_id``.

    A later record for the same ``item_id`` replaces the earlier one.
    """

    item_id: Id
    title: Annotated[str, Field(min_length=1, max_length=512)]
    text: Annotated[str, Field(max_length=4096)] = Field(
        default="", description="Free description used for scoring, besides the title."
    )
    attributes: dict[str, str | float | list[str]] = Field(default_factory=dict, description="E.g. year, genres.")

    def scoring_text(self) -> str:
        """The one text the model reads for this item."""
        parts = [self.title]
        year = self.attributes.get("year")
        if year:
            parts[0] = f"{self.title} ({year if not isinstance(year, float) else int(year)})"
        genres = self.attributes.get("genres")
        if isinstance(genres, list) and genres:
            parts.append(", ".join(genres))
        if self.text:
            parts.append(self.text)
        return ". ".join(parts)


class Trigger(Record):
    """Ask for recommendations now. Topic ``triggers``, keyed by ``user_id``.

    With ``candidates`` the task is to re-rank exactly those items; without, the stream
    worker recalls candidates itself.
    """

    request_id: Id
    user_id: Id
    ts: Timestamp = Field(description="When the trigger was produced (epoch seconds).")
    k: Integer = Field(default=10, ge=1, le=100, description="How many items to return.")
    candidates: list[Id] | None = Field(default=None, max_length=1000)
    intention: str | None = Field(
        default=None,
        max_length=2000,
        description="Free-text short-term intention, e.g. 'something light for tonight'.",
    )
    after_ts: Timestamp | None = Field(
        default=None,
        description=(
            "Read-your-writes: the ts of the user's latest event the answer must reflect (e.g. the click "
            "that prompted this refresh). The worker waits for it, up to its trigger_wait_ms."
        ),
    )
    after_item_id: Id | None = Field(
        default=None,
        description="With after_ts: that event's item, to tell apart events that share a timestamp.",
    )


Source = Literal["trigger", "cooccurrence", "popular", "fresh"]


class Candidate(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    item_id: Id
    text: Annotated[str, Field(max_length=8192)]
    title: Annotated[str, Field(max_length=512)]
    source: Source
    cooc: float = Field(
        default=0.0, ge=0, description="Co-occurrence with the user's latest items (recency-weighted count)."
    )
    cooc_long: float = Field(
        default=0.0, ge=0, description="Co-occurrence with the user's latest 20 items (unweighted)."
    )
    popularity: float = Field(default=0.0, ge=0, description="Context entries holding this item (worker-local).")
    cooc_with: Id | None = Field(
        default=None, description="The recent item this candidate co-occurs with most: the explanation's evidence."
    )


class HistoryItem(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    item_id: Id
    title: Annotated[str, Field(max_length=512)]
    text: Annotated[str, Field(max_length=8192)]
    event_type: Literal["click", "view"]
    ts: float


class ScoreRequest(Record):
    """Stream worker -> scoring pools. Topic ``score-requests``, keyed by ``user_id``."""

    request_id: Id
    user_id: Id
    k: Integer = Field(ge=1, le=100)
    instruction: Annotated[str, Field(max_length=20_000)]
    template: Annotated[str, Field(max_length=128)]
    task: Literal["recommend", "rerank"]
    intention: Annotated[str, Field(max_length=2000)] | None = None
    references: list[Id] = Field(
        default_factory=list,
        max_length=5000,
        description="Candidates the intention names by title: references ('more like this'), never targets. The pool "
        "ranks each no higher than baseline_instruction ranks it.",
    )
    baseline_instruction: Annotated[str, Field(max_length=20_000)] | None = Field(
        default=None, description="The same instruction without the intention; set when references is not empty."
    )
    cold_start: bool
    history: list[HistoryItem] = Field(description="Most recent first.", max_length=100)
    candidates: list[Candidate] = Field(min_length=1, max_length=5000)
    trigger_ts: Timestamp
    request_ts: Timestamp


class RankedItem(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)

    item_id: Id
    title: str
    rank: Integer = Field(ge=1)
    score: float
    because: str | None = Field(default=None, description="item_id of the history item that best supports this one.")


class ModelInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    version: str
    reranker: str | None = Field(
        default=None,
        description="The cross-encoder that re-ranked the top candidates (their scores are then P(relevant)); "
        "null when the bi-encoder's cosine similarity ranked alone.",
    )
    fusion: dict[str, float] | None = Field(
        default=None,
        description="A trained model's weights of (text cosine, log1p cooc, log1p cooc_long, log1p popularity) in the "
        "score; null: the score is the cosine alone.",
    )


class Timings(BaseModel):
    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    trigger_ts: float
    request_ts: float
    scored_ts: float
    queue_ms: float = Field(description="Score request produced -> scoring started.")
    score_ms: float = Field(description="Model time for this request's batch.")
    pipeline_ms: float = Field(description="Trigger produced -> result produced.")


class Recommendation(Record):
    """The output. Topic ``recommendations``, keyed by ``user_id``.

    ``recommendation_id`` is derived from (user_id, request_id, model version): unique per
    user even when producers reuse request ids, and the same for every redelivered copy,
    whose content is the same too; consumers drop duplicates by it.
    """

    recommendation_id: str
    request_id: Id
    user_id: Id
    kind: Literal["recommendation"] = "recommendation"
    items: list[RankedItem]
    instruction: str
    template: str
    explanation: str
    cold_start: bool
    model: ModelInfo
    timings: Timings


class DeadLetter(Record):
    """A message that could not be processed. Topic ``dead-letters``.

    Keyed by the original key. ``value_b64``/``key_b64`` hold the original bytes exactly
    (base64), so the message can be repaired and replayed.
    """

    source_topic: str
    source_partition: Integer
    source_offset: Integer
    source_timestamp_ms: Integer | None = None
    key_b64: str | None
    value_b64: str = Field(
        description="The original value (base64); only its first bytes when ``value_truncated`` (the whole message "
        "stays at source_topic/partition/offset)."
    )
    value_bytes: Integer | None = Field(default=None, description="Length of the original value in bytes.")
    value_truncated: bool = False
    value_sha256: str | None = Field(default=None, description="Hex SHA-256 of the whole original value.")
    reason: str = Field(description="Stable machine-readable reason, e.g. 'invalid-json'.")
    detail: str = Field(description="Human-readable explanation of what was wrong.")
    component: str = Field(description="Which process rejected it, e.g. 'stream-worker'.")
    ts: float = Field(description="When it was dead-lettered (epoch seconds).")


# --- financial sentiment (issue 6) -----------------------------------------------------------

# An exchange ticker symbol, upper case (e.g. "NVE", "BRK.B"). The decoder's regex reads "$"
# as the end of the text, as ECMA-262 (JSON Schema's dialect) does; Python's re, which Python
# validators use, also lets "$" match before a final newline, so the exported pattern ends
# in "(?![\s\S])", which means the end of the text in both.
_TICKER = r"[A-Z0-9][A-Z0-9.\-]*"
Ticker = Annotated[
    str,
    Field(
        min_length=1,
        max_length=16,
        pattern=f"^{_TICKER}$",
        strict=True,
        json_schema_extra={"pattern": rf"^{_TICKER}(?![\s\S])"},
    ),
]

SentimentLabel = Literal["negative", "neutral", "positive"]


class SentimentRequest(Record):
    """One headline to score for one ticker. Topic ``sentiment-requests``, keyed by ticker."""

    request_id: Id = Field(description="Unique per headline and ticker, e.g. '<news_id>:<ticker>'.")
    news_id: Id
    ticker: Ticker
    text: Annotated[str, Field(min_length=1, max_length=2048)] = Field(description="The headline (and a body prefix).")
    news_ts: Timestamp = Field(description="When the news was published (epoch seconds): the event time.")
    request_ts: Timestamp


class SentimentResult(Record):
    """A scored headline. Topic ``sentiment-results``, keyed by ticker."""

    request_id: Id
    news_id: Id
    ticker: Ticker
    label: SentimentLabel
    score: float = Field(ge=-1.0, le=1.0, description="P(positive) - P(negative).")
    probabilities: list[float] = Field(min_length=3, max_length=3, description="P(negative), P(neutral), P(positive).")
    text: Annotated[str, Field(max_length=512)] = Field(description="The headline, cut to 512 characters.")
    model: ModelInfo
    news_ts: Timestamp
    scored_ts: Timestamp


class NewsItem(Record):
    """A news headline. Topic ``news``; keyed by its first ticker (any key works: the
    alerts worker scores it once for each ticker it names)."""

    news_id: Id
    ts: Timestamp = Field(description="When it was published (epoch seconds): the event time of the windows.")
    tickers: list[Ticker] = Field(min_length=1, max_length=20)
    headline: Annotated[str, Field(min_length=1, max_length=512)]
    body: Annotated[str, Field(max_length=20_000)] | None = None
    source: Annotated[str, Field(max_length=128)] = ""

    @property
    def first_ticker(self) -> str:
        return self.tickers[0]


class Follow(Record):
    """A user follows (or stops following) a ticker. Topic ``follows``, keyed by ticker."""

    user_id: Id
    ticker: Ticker
    action: Literal["follow", "unfollow"] = "follow"
    ts: Timestamp


class AlertHeadline(BaseModel):
    news_id: str
    text: str
    label: SentimentLabel
    score: float
    news_ts: float


class WindowInfo(BaseModel):
    kind: Literal["tumbling", "hopping"]
    start: float
    end: float
    size_s: float


class Alert(Record):
    """A negative-sentiment surge on one ticker in one window. Topic ``alerts``, keyed by
    ticker. One per (ticker, window): ``alert_id`` is ``<ticker>:<window start>``."""

    alert_id: str
    ticker: Ticker
    window: WindowInfo
    count: Integer = Field(description="Headlines in the window.")
    mean_sentiment: float
    negative_share: float
    baseline_share: float = Field(description="Negative share of the trailing baseline windows.")
    z: float = Field(description="One-sided binomial z-score of the window's share against the baseline.")
    reason: str
    trend: list[dict[str, float]] = Field(
        default_factory=list, description="The hopping windows over the same span: start, count, mean, share."
    )
    headlines: list[AlertHeadline] = Field(
        description="The negative headlines that drove it, most negative first (at most 5)."
    )
    model: ModelInfo
    ts: Timestamp = Field(description="When the alert was raised.")


class UserAlert(Record):
    """An alert delivered to one follower of its ticker. Topic ``user-alerts``, keyed by
    user id. ``rank`` orders the alerts delivered to the user together (1: most severe)."""

    user_id: Id
    alert_id: str
    ticker: Ticker
    rank: Integer = Field(ge=1)
    severity: float = Field(description="The alert's z-score.")
    alert: Alert
    delivered_ts: Timestamp
