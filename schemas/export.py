"""Export each topic's JSON Schema to ``schemas/json/<suffix>.schema.json``.

``python -m schemas.export`` rewrites them; a unit test fails when they are stale.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from schemas.codec import MAX_EVENTS_PER_MESSAGE
from schemas.topics import ALL_TOPICS, EVENTS

JSON_DIR = Path(__file__).parent / "json"


def schema_documents() -> dict[str, dict[str, Any]]:
    """Each topic's schema: its record's (as the decoder validates it), and under
    ``x-rejected-beyond-schema`` the rules its consumer applies that a schema cannot say."""
    docs = {}
    for spec in ALL_TOPICS:
        schema = spec.record_type.model_json_schema(mode="validation")
        if spec is EVENTS:  # one event, or an array of one user's events
            schema = {
                "title": "EventMessage",
                "$defs": {"Event": schema},
                "oneOf": [
                    {"$ref": "#/$defs/Event"},
                    {
                        "type": "array",
                        "items": {"$ref": "#/$defs/Event"},
                        "minItems": 1,
                        "maxItems": MAX_EVENTS_PER_MESSAGE,
                    },
                ],
                "description": f"One event object, or an array of 1 to {MAX_EVENTS_PER_MESSAGE:,} events that all "
                "carry the message key's user_id.",
            }
        beyond = spec.rules_beyond_schema
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"instructrec-stream/{spec.suffix}.schema.json"
        schema["x-topic-suffix"] = spec.suffix
        schema["x-key"] = spec.key_field
        schema["x-rejected-beyond-schema"] = beyond
        rules = "\n".join(f"- {reason}: {rule}" for reason, rule in beyond.items())
        schema["description"] = "\n\n".join(
            (
                spec.description,
                schema.get("description") or "",
                "A consumer's decoder gives the verdict this schema gives; beyond it, the consumer also rejects "
                f"(dead-letter reason: rule):\n{rules}",
            )
        )
        docs[f"{spec.suffix}.schema.json"] = schema
    return docs


def render(doc: dict[str, Any]) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def main() -> None:
    JSON_DIR.mkdir(exist_ok=True)
    for name, doc in schema_documents().items():
        (JSON_DIR / name).write_bytes(render(doc))
        print(f"wrote {JSON_DIR / name}")


if __name__ == "__main__":
    main()
