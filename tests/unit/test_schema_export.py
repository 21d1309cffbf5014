import jsonschema
import orjson

from schemas.export import JSON_DIR, render, schema_documents
from schemas.records import Event, Trigger
from schemas.topics import ALL_TOPICS, EVENTS, TRIGGERS


def test_exported_json_schemas_are_current():
    docs = schema_documents()
    assert set(docs) == {f"{t.suffix}.schema.json" for t in ALL_TOPICS}
    for name, doc in docs.items():
        path = JSON_DIR / name
        assert path.exists(), f"{path} missing: run `make schemas`"
        assert path.read_bytes() == render(doc), f"{path} is stale: run `make schemas`"


def test_encoded_records_validate_against_their_exported_schema():
    docs = schema_documents()
    samples = {
        EVENTS: Event(user_id="1", item_id="2", event_type="view", ts=3.0),
        TRIGGERS: Trigger(request_id="r", user_id="1", ts=3.0, intention="a comedy", candidates=["1", "2"]),
    }
    for spec, record in samples.items():
        jsonschema.validate(orjson.loads(spec.codec.encode(record)), docs[f"{spec.suffix}.schema.json"])


def test_schema_rejects_what_the_decoder_rejects():
    doc = schema_documents()["events.schema.json"]
    validator = jsonschema.Draft202012Validator(doc)
    assert not validator.is_valid({"user_id": "1", "item_id": "2", "event_type": "purchase", "ts": 1.0})
    assert not validator.is_valid({"item_id": "2", "event_type": "click", "ts": 1.0})


def test_the_events_schema_accepts_one_event_or_an_array():
    validator = jsonschema.Draft202012Validator(schema_documents()["events.schema.json"])
    event = {"user_id": "1", "item_id": "2", "event_type": "view", "ts": 1.0}
    assert validator.is_valid(event) and validator.is_valid([event, event])
    assert not validator.is_valid([]) and not validator.is_valid([{"user_id": "1"}])


def test_every_exported_schema_is_a_valid_draft_2020_12_schema():
    for name, doc in schema_documents().items():
        jsonschema.Draft202012Validator.check_schema(doc)  # patterns included (format "regex")
        assert doc["x-rejected-beyond-schema"], name
