import json
import math

import jsonschema
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.codec import JsonCodec, check_key, dead_letter, decode_events
from schemas.exceptions import DecodeError
from schemas.export import schema_documents
from schemas.records import CatalogItem, DeadLetter, Event, Trigger
from schemas.topics import ALL_TOPICS, EVENTS, TRIGGERS, Topics

EVENT = {"user_id": "196", "item_id": "242", "event_type": "click", "ts": 881250949.0}
TRIGGER = {"request_id": "r1", "user_id": "196", "ts": 881250949.0}


def schema_accepts(spec, payload: bytes) -> bool:
    return jsonschema.Draft202012Validator(schema_documents()[f"{spec.suffix}.schema.json"]).is_valid(
        orjson.loads(payload)
    )


def test_event_roundtrip_keeps_every_field_and_version():
    record = EVENTS.codec.decode(orjson.dumps(EVENT))
    assert record == Event(**EVENT)
    assert record.schema_version == 1
    again = orjson.loads(EVENTS.codec.encode(record))
    assert again == {**EVENT, "schema_version": 1}


@pytest.mark.parametrize(
    ("payload", "reason", "fragment"),
    [
        (b"not json", "invalid-json", ""),
        (b"[1, 2]", "not-an-object", "list"),
        (orjson.dumps({"item_id": "1", "event_type": "click", "ts": 1.0}), "invalid-record", "user_id"),
        (orjson.dumps({**EVENT, "user_id": 196}), "invalid-record", "user_id"),
        (orjson.dumps({**EVENT, "event_type": "purchase"}), "invalid-record", "event_type"),
        (orjson.dumps({**EVENT, "ts": -5}), "invalid-record", "ts"),
        (orjson.dumps({**EVENT, "ts": "yesterday"}), "invalid-record", "ts"),
        (orjson.dumps({**EVENT, "schema_version": 99}), "invalid-record", "schema_version"),
        (b'{"user_id": "1", "item_id": "2", "event_type": "click", "ts": NaN}', "invalid-json", ""),
        (b"\xff\xfe{}", "invalid-json", ""),
    ],
)
def test_bad_events_are_rejected_with_a_reason_that_names_the_field(payload, reason, fragment):
    with pytest.raises(DecodeError) as info:
        EVENTS.codec.decode(payload)
    assert info.value.reason == reason
    assert fragment in info.value.detail


def test_none_and_oversized_values_are_rejected():
    with pytest.raises(DecodeError, match="empty-value"):
        EVENTS.codec.decode(None)
    small = JsonCodec(Event, max_bytes=50)
    with pytest.raises(DecodeError, match="too-large"):
        small.decode(orjson.dumps({**EVENT, "pad": "x" * 100}))


def test_unknown_fields_are_ignored_for_forward_compatibility():
    assert EVENTS.codec.decode(orjson.dumps({**EVENT, "device": "tv"})) == Event(**EVENT)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_either_decode_or_raise_decode_error(data):
    for spec in ALL_TOPICS:
        try:
            spec.codec.decode(data)
        except DecodeError as exc:
            assert exc.reason


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.sampled_from(["user_id", "item_id", "event_type", "ts", "schema_version", "x"]), json_values))
def test_arbitrary_json_objects_decode_to_valid_events_or_raise(obj):
    try:
        event = EVENTS.codec.decode(json.dumps(obj).encode())
    except DecodeError:
        return
    assert event.event_type in ("click", "view")
    assert math.isfinite(event.ts) and event.ts >= 0
    assert isinstance(event.user_id, str) and event.user_id


@given(
    st.text(min_size=1, max_size=40),
    st.text(min_size=1, max_size=40),
    st.sampled_from(["click", "view"]),
    st.floats(min_value=0, max_value=4e9, allow_nan=False),
)
def test_event_roundtrip_property(user, item, kind, ts):
    event = Event(user_id=user, item_id=item, event_type=kind, ts=ts)
    assert EVENTS.codec.decode(EVENTS.codec.encode(event)) == event


def test_trigger_limits_are_enforced_by_the_contract():
    base = {"request_id": "r", "user_id": "u", "ts": 1.0}
    assert TRIGGERS.codec.decode(orjson.dumps(base)).k == 10
    for bad in ({"k": 0}, {"k": 1000}, {"candidates": [str(i) for i in range(1001)]}, {"intention": "x" * 3000}):
        with pytest.raises(DecodeError):
            TRIGGERS.codec.decode(orjson.dumps({**base, **bad}))


def test_dead_letter_keeps_original_bytes_and_origin():
    record = dead_letter(
        topic="p.events",
        partition=3,
        offset=17,
        key=b"u1",
        value=b"\xffbad",
        reason="invalid-json",
        detail="boom",
        component="test",
    )
    decoded = JsonCodec(DeadLetter).decode(JsonCodec(DeadLetter).encode(record))
    import base64

    assert base64.b64decode(decoded.value_b64) == b"\xffbad"
    assert base64.b64decode(decoded.key_b64) == b"u1"
    assert (decoded.source_topic, decoded.source_partition, decoded.source_offset) == ("p.events", 3, 17)
    assert decoded.reason == "invalid-json"


def test_topics_are_named_once_with_prefix_and_keyed_by_user():
    topics = Topics("acme.")
    assert topics.events == "acme.events" and topics.triggers == "acme.triggers"
    assert set(topics.all()) == {f"acme.{t.suffix}" for t in ALL_TOPICS}
    assert EVENTS.key_field == TRIGGERS.key_field == "user_id"
    trigger = Trigger(request_id="r", user_id="42", ts=1.0)
    assert TRIGGERS.key_of(trigger) == EVENTS.key_of(Event(user_id="42", item_id="1", event_type="view", ts=1)) == b"42"


def test_catalog_scoring_text_uses_title_year_genres():
    item = CatalogItem(item_id="1", title="Toy Story", attributes={"year": "1995", "genres": ["Animation", "Comedy"]})
    assert item.scoring_text() == "Toy Story (1995). Animation, Comedy"


def test_an_events_message_may_hold_an_array_of_one_users_events():
    from schemas.codec import decode_events

    batch = [{**EVENT, "item_id": str(i), "ts": 100.0 + i} for i in range(5)]
    events = decode_events(orjson.dumps(batch))
    assert [e.item_id for e in events] == ["0", "1", "2", "3", "4"]
    assert decode_events(orjson.dumps(EVENT)) == [Event(**EVENT)]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ([], "empty-batch"),
        ([EVENT, {**EVENT, "user_id": "other"}], "mixed-users"),
        ([EVENT, {**EVENT, "event_type": "buy"}], "invalid-record"),
        ([EVENT] * 10_001, "too-many-events"),
        ("just a string", "not-an-object"),
    ],
)
def test_bad_event_arrays_are_rejected_whole(payload, reason):
    from schemas.codec import decode_events

    with pytest.raises(DecodeError) as info:
        decode_events(orjson.dumps(payload))
    assert info.value.reason == reason


@given(st.lists(st.sampled_from(["click", "view"]), min_size=1, max_size=20))
def test_event_array_roundtrip_property(kinds):
    from schemas.codec import decode_events

    batch = [Event(user_id="u", item_id=str(i), event_type=k, ts=float(i)) for i, k in enumerate(kinds)]
    assert decode_events(orjson.dumps([e.model_dump(mode="json") for e in batch])) == batch


def test_far_future_timestamps_are_rejected_within_a_configurable_skew():
    from schemas.codec import check_not_future

    now = 1_800_000_000.0
    check_not_future([now - 1e9, now, now + 3600, None], now, 86_400)  # the past, the present, an hour of skew
    with pytest.raises(DecodeError) as exc:
        check_not_future([now, now + 86_401], now, 86_400)
    assert exc.value.reason == "future-timestamp" and "86400" in exc.value.detail
    check_not_future([1e12], now, None)  # off


@pytest.mark.parametrize(
    ("spec", "base", "field", "value"),
    [
        (TRIGGERS, TRIGGER, "ts", True),  # was planned as a trigger from 1970
        (TRIGGERS, TRIGGER, "ts", False),
        (TRIGGERS, TRIGGER, "after_ts", True),
        (TRIGGERS, TRIGGER, "k", True),
        (TRIGGERS, TRIGGER, "k", "5"),
        (TRIGGERS, TRIGGER, "schema_version", True),
        (EVENTS, EVENT, "ts", True),
        (EVENTS, EVENT, "ts", "881250949"),
        (EVENTS, EVENT, "schema_version", "1"),
    ],
)
def test_booleans_and_strings_are_not_numbers_for_the_decoder_or_the_schema(spec, base, field, value):
    payload = orjson.dumps({**base, field: value})
    decoders = [spec.codec.decode] + ([decode_events] if spec is EVENTS else [])
    for decode in decoders:
        with pytest.raises(DecodeError) as info:
            decode(payload)
        assert info.value.reason == "invalid-record" and field in info.value.detail
    assert not schema_accepts(spec, payload)


def test_an_integral_float_is_the_integer_it_names_for_both():
    payload = orjson.dumps({**TRIGGER, "k": 5.0, "schema_version": 1.0})
    trigger = TRIGGERS.codec.decode(payload)
    assert (trigger.k, trigger.schema_version) == (5, 1) and schema_accepts(TRIGGERS, payload)
    half = orjson.dumps({**TRIGGER, "k": 5.5})
    with pytest.raises(DecodeError):
        TRIGGERS.codec.decode(half)
    assert not schema_accepts(TRIGGERS, half)


@pytest.mark.parametrize("version", [-1, 0, 2, 2**63 - 1, 1.5])
def test_a_schema_version_other_than_1_is_refused_by_the_decoder_and_the_schema(version):
    for spec, base in ((EVENTS, EVENT), (TRIGGERS, TRIGGER)):
        payload = orjson.dumps({**base, "schema_version": version})
        with pytest.raises(DecodeError) as info:
            spec.codec.decode(payload)
        assert "schema_version" in info.value.detail
        assert not schema_accepts(spec, payload)


def test_an_events_message_is_keyed_by_its_user():
    check_key(b"196", "196")
    check_key("caf\u00e9".encode(), "caf\u00e9")
    for key in (b"not-this-user", b"196 ", b"", "196".encode("utf-16-le"), None):
        with pytest.raises(DecodeError) as info:
            check_key(key, "196")
        assert info.value.reason == "key-mismatch"
        assert ("no key" if key is None else "is not the user_id '196'") in info.value.detail


def test_an_array_of_another_users_events_is_refused_whole_by_its_key():
    """What the stream worker does with an events message: the value, then the key."""
    victim = [{**EVENT, "user_id": "victim", "item_id": str(i)} for i in range(3)]
    events = decode_events(orjson.dumps(victim))
    with pytest.raises(DecodeError) as info:
        check_key(b"not-this-user", events[0].user_id)
    assert info.value.reason == "key-mismatch" and "'victim'" in info.value.detail
