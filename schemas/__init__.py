"""The wire contract: record types, their JSON codec, and the topics that carry them."""

from schemas.codec import JsonCodec
from schemas.exceptions import DecodeError, SchemaError
from schemas.records import (
    CatalogItem,
    DeadLetter,
    Event,
    RankedItem,
    Recommendation,
    ScoreRequest,
    Trigger,
)
from schemas.topics import ALL_TOPICS, Topics, TopicSpec

__all__ = [
    "ALL_TOPICS",
    "CatalogItem",
    "DeadLetter",
    "DecodeError",
    "Event",
    "JsonCodec",
    "RankedItem",
    "Recommendation",
    "SchemaError",
    "ScoreRequest",
    "TopicSpec",
    "Topics",
    "Trigger",
]
