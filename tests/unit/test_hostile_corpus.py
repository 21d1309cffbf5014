"""The hostile corpus (instructrec/hostile.py) checked against the pure decoders: every
entry it says is rejected is rejected, with one of the reasons it names, by the code that
decides it in the running system (the codecs; the future-timestamp check, the events key
check and the candidate limit the stream worker applies; the planner for no-candidates);
every entry it calls legitimate passes all of them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import orjson
import pytest

from instructrec.hostile import (
    AMPLIFY_ITEMS,
    CATEGORIES,
    DEFAULT_KNOWN_ITEMS,
    HANDLED,
    KINDS,
    HostileMessage,
    build_corpus,
    summary,
)
from model.instructions import TEMPLATES
from model.recall import ItemGraph
from model.scorer import ScoredRequest
from schemas.codec import DEFAULT_MAX_BYTES, check_key, check_not_future, decode_events
from schemas.exceptions import DecodeError
from schemas.records import CatalogItem, ModelInfo, ScoreRequest, Trigger
from schemas.topics import CATALOG, RECOMMENDATIONS, SCORE_REQUESTS, TRIGGERS
from streams.planner import NoCandidates, PlannerConfig, plan_score_request
from workers.ranking import rank

NOW = 1_800_000_000.0  # the worker's clock: after every past stamp, before every far-future one
MAX_SKEW_S = 86_400.0  # Settings.max_future_skew_s default
MAX_TRIGGER_CANDIDATES = 1000  # Settings.max_trigger_candidates default
MAX_MESSAGE_BYTES = 1_000_000  # Settings.max_message_bytes default


@pytest.fixture(scope="module")
def corpus() -> list[HostileMessage]:
    return build_corpus(seed=0, run_id="unit")


@pytest.fixture(scope="module")
def lookup(corpus) -> Callable[[str], CatalogItem | None]:
    """The catalog the running system holds when the corpus arrives: the known items,
    plus the corpus's own legitimate catalog records."""
    items = {i: CatalogItem(item_id=i, title=f"Film {i}") for i in DEFAULT_KNOWN_ITEMS}
    for entry in corpus:
        if entry.kind == "catalog" and entry.handled:
            item = CATALOG.codec.decode(entry.value)
            items[item.item_id] = item
    return items.get


def planned(trigger: Trigger, lookup) -> ScoreRequest:
    return plan_score_request(
        trigger,
        None,
        lookup,
        ItemGraph(),
        PlannerConfig(templates=TEMPLATES),
        fresh=iter(DEFAULT_KNOWN_ITEMS),
        now=lambda: NOW,
    )


def outcome(entry: HostileMessage, lookup) -> str:
    """What the decoders and checks of the running system make of one entry: a dead-letter
    reason, or HANDLED."""
    try:
        if entry.kind == "events":
            events = decode_events(entry.value)
            check_not_future((e.ts for e in events), NOW, MAX_SKEW_S)
            check_key(entry.key, events[0].user_id)  # the stream worker's order: value, clock, key
        elif entry.kind == "triggers":
            trigger: Trigger = TRIGGERS.codec.decode(entry.value)
            check_not_future((trigger.ts, trigger.after_ts), NOW, MAX_SKEW_S)
            if trigger.candidates is not None and len(trigger.candidates) > MAX_TRIGGER_CANDIDATES:
                raise DecodeError("too-many-candidates")
            check_key(entry.key, trigger.user_id)
            if len(SCORE_REQUESTS.codec.encode(planned(trigger, lookup))) > MAX_MESSAGE_BYTES:
                raise DecodeError("request-too-large")  # the stream worker checks the planned request
        elif entry.kind == "catalog":
            CATALOG.codec.decode(entry.value)
        else:
            SCORE_REQUESTS.codec.decode(entry.value)
    except (DecodeError, NoCandidates) as exc:
        return exc.reason
    return HANDLED


def test_the_corpus_is_large_and_covers_every_category_and_topic(corpus):
    assert len(corpus) >= 1000
    counts = Counter(e.category for e in corpus)
    assert set(counts) == set(CATEGORIES)
    assert {e.kind for e in corpus} == set(KINDS)
    rejected = [e for e in corpus if not e.handled]
    assert len(rejected) >= 1000
    assert sum(e.handled for e in corpus) >= 100
    # Each message is told apart by topic, key and value (dead letters carry both).
    assert len({(e.kind, e.key, e.value) for e in corpus}) == len(corpus)
    # A handful over the byte limit, the rest sane.
    assert 5 <= sum(len(e.value or b"") > DEFAULT_MAX_BYTES for e in corpus) <= 10
    assert summary(corpus)["bytes"] < 25_000_000


def test_the_corpus_is_deterministic():
    first, second = build_corpus(seed=0, run_id="a"), build_corpus(seed=0, run_id="a")
    assert first == second
    other = build_corpus(seed=1, run_id="a")
    assert [e.category for e in other] == [e.category for e in first]
    assert [e.value for e in other] != [e.value for e in first]


def test_required_hostilities_are_there(corpus):
    def has(kind: str, predicate: Callable[[HostileMessage], bool]) -> bool:
        return any(e.kind == kind and predicate(e) for e in corpus)

    for kind in KINDS:
        assert has(kind, lambda e: e.value is None)
        assert has(kind, lambda e: e.value is not None and len(e.value) > DEFAULT_MAX_BYTES)
        assert has(kind, lambda e: e.value is not None and e.value.startswith(b"[" * 10_000))
        assert has(kind, lambda e: e.value is not None and b"NaN" in e.value)
        assert has(kind, lambda e: e.value is not None and b"Infinity" in e.value)
        assert has(kind, lambda e: e.value is not None and not _is_utf8(e.value))
    assert has("triggers", lambda e: e.value is not None and e.value.count(b'"c') >= 100_000)
    assert has("triggers", lambda e: e.value is not None and len(e.value) > 900_000 and b"intention" in e.value)
    assert has("events", lambda e: e.value is not None and b'"ts":-' in e.value)
    assert has("events", lambda e: e.category == "event-arrays" and "mixed-users" in e.expect)
    # Issue 13: events under another user's key (arrays and single events, and no key at all),
    # and true or a string where a number belongs.
    mismatched = [e for e in corpus if e.kind == "events" and "key-mismatch" in e.expect]
    assert any(e.value and e.value.startswith(b"[") for e in mismatched) and any(e.key is None for e in mismatched)
    assert any(e.value and e.value.startswith(b"{") for e in mismatched)
    assert has("triggers", lambda e: e.value is not None and b'"ts":true' in e.value and not e.handled)
    assert has("events", lambda e: e.value is not None and b'"ts":true' in e.value and not e.handled)
    assert has("triggers", lambda e: e.category == "injected-instructions" and bool(e.forbidden))


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_every_rejected_entry_is_rejected_with_one_of_its_reasons(corpus, lookup):
    wrong = []
    for n, entry in enumerate(corpus):
        if entry.handled:
            continue
        got = outcome(entry, lookup)
        if got not in entry.reasons:
            wrong.append((n, entry.category, entry.kind, entry.note, sorted(entry.reasons), got))
    assert not wrong, wrong[:20]


def test_every_legitimate_entry_passes_the_decoders(corpus, lookup):
    wrong = []
    for n, entry in enumerate(corpus):
        if entry.handled and outcome(entry, lookup) not in entry.expect:
            wrong.append((n, entry.category, entry.kind, entry.note, outcome(entry, lookup)))
    assert not wrong, wrong[:20]


def test_injected_instructions_are_removed_from_the_planned_instruction(corpus, lookup):
    checked = 0
    for entry in corpus:
        if entry.kind != "triggers" or not entry.forbidden:
            continue
        request = planned(TRIGGERS.codec.decode(entry.value), lookup)
        for phrase in entry.forbidden:
            assert phrase not in request.instruction, (phrase, request.instruction)
        checked += 1
    assert checked >= 30


def test_reasons_are_the_ones_the_system_produces(corpus):
    known = {
        HANDLED,
        "empty-value",
        "too-large",
        "invalid-json",
        "not-an-object",
        "invalid-record",
        "empty-batch",
        "too-many-events",
        "mixed-users",
        "key-mismatch",
        "future-timestamp",
        "too-many-candidates",
        "no-candidates",
        # Amplification outcomes the system does not produce yet: an answer is also right.
        "request-too-large",
        "result-too-large",
    }
    assert set().union(*(e.expect for e in corpus)) <= known


def test_amplification_really_amplifies(corpus, lookup):
    """The legitimate re-rank of the big catalog items plans a score request over the byte
    limit (and over aiokafka's max_request_size); a score request whose history title would
    make a result over the limit is refused by the codec, and the longest legal title is
    quoted cut."""
    trigger_entry = next(e for e in corpus if e.category == "amplification" and e.kind == "triggers")
    trigger = TRIGGERS.codec.decode(trigger_entry.value)
    assert len(trigger.candidates or ()) == AMPLIFY_ITEMS
    assert len(SCORE_REQUESTS.codec.encode(planned(trigger, lookup))) > 1_048_576  # aiokafka's max_request_size
    request_entry = next(e for e in corpus if e.category == "amplification" and e.kind == "score-requests")
    assert len(request_entry.value or b"") < DEFAULT_MAX_BYTES / 2
    with pytest.raises(DecodeError) as caught:
        SCORE_REQUESTS.codec.decode(request_entry.value)
    assert caught.value.reason == "invalid-record"
    raw = orjson.loads(request_entry.value)
    raw["history"][0]["title"] = "H" * 512  # the longest title the contract allows
    request = SCORE_REQUESTS.codec.decode(orjson.dumps(raw))
    n = len(request.candidates)
    result = rank(
        request, ScoredRequest([0.5] * n, [0] * n), ModelInfo(name="m", version="v"), started_ts=NOW, score_ms=1
    )
    assert len(RECOMMENDATIONS.codec.encode(result)) < 20_000


def test_legitimate_entries_have_unique_request_ids(corpus):
    ids = [
        orjson.loads(e.value)["request_id"]
        for e in corpus
        if e.handled and e.kind in ("triggers", "score-requests") and e.value
    ]
    assert len(ids) == len(set(ids))
