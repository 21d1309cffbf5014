"""One verdict: for every topic, its decoder and a JSON Schema validator (jsonschema,
draft 2020-12) over the exported schema accept and reject the same documents.

Documents are built from the exported schema itself: a minimal valid document, then, at
every location (each field of each record, nested objects, array items, map values, an
unknown field), values near each published bound and of every other JSON type: integers
and integral floats around ``minimum``/``maximum``, the neighbouring doubles, ``true``
and ``false``, numbers written as strings, strings of ``maxLength`` +- 1 characters made of
1-, 2-, 3- and 4-byte characters (a string's length is its Unicode code points, not its
bytes or UTF-16 units), enum near-misses, arrays of ``minItems``/``maxItems`` +- 1 items,
``null``, the field left out. One test walks every location with every such value; a
hypothesis test combines several at random.

Scope, and the only disagreement allowed: the decoder may reject a document the schema
accepts only with a reason that the schema itself publishes under
``x-rejected-beyond-schema`` (a rule over the bytes, the key, the clock or several fields
at once, which JSON Schema cannot say), and only when this test's own check of that rule
says it applies (``BEYOND_CHECKS``). The documents are JSON as orjson writes it: finite
doubles, integers within 64 bits, valid Unicode. What is not JSON (NaN, 1e400, unpaired
surrogates, more than 1,024 levels of nesting) is ``invalid-json`` before any schema applies;
the schemas say so under the same key.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from functools import cache
from typing import Any

import jsonschema
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.codec import JsonCodec, decode_events
from schemas.exceptions import DecodeError
from schemas.export import schema_documents
from schemas.records import Event
from schemas.topics import ALL_TOPICS, EVENTS

Schema = dict[str, Any]
Step = tuple[Any, ...]
Path = tuple[Step, ...]


class _Missing:
    def __repr__(self) -> str:
        return "<left out>"


MISSING = _Missing()  # as a value: the field is left out

# Every JSON type, for every location.
WRONG_TYPES: tuple[Any, ...] = (None, True, False, 0, 1, -1, 1.5, "", "1", "true", [], {}, [1], {"a": 1})
# Characters of 1, 2, 3 and 4 UTF-8 bytes (the last is 2 UTF-16 units), and a combining mark.
WIDTHS = ("a", "é", "€", "\U0001f600", "\u0301")
BIG_INTS = (2**31, 2**53 + 1, 2**63 - 1, -(2**63), 2**64 - 1)
MAX_DOUBLE = 1.7976931348623157e308


# ----------------------------------------------------------------------------- the schemas


class Walker:
    """Values and locations of one exported schema document."""

    def __init__(self, root: Schema) -> None:
        self.root = root

    def resolve(self, node: Schema) -> Schema:
        while "$ref" in node:
            ref = node["$ref"]
            assert ref.startswith("#/$defs/"), ref
            node = self.root["$defs"][ref.removeprefix("#/$defs/")]
        return node

    def minimal(self, node: Schema) -> Any:
        """A small document both sides accept."""
        node = self.resolve(node)
        if "const" in node:
            return node["const"]
        if "enum" in node:
            return node["enum"][0]
        if "anyOf" in node or "oneOf" in node:
            return self.minimal((node.get("anyOf") or node["oneOf"])[0])
        kind = node.get("type")
        if kind == "object":
            props = node.get("properties", {})
            return {name: self.minimal(props[name]) for name in node.get("required", ())}
        if kind == "array":
            return [self.minimal(node["items"])] * node.get("minItems", 0)
        if kind == "string":
            return ("A" if "pattern" in node else "a") * max(node.get("minLength", 0), 1 if "pattern" in node else 0)
        if kind in ("integer", "number"):
            low = node.get("minimum", 0)
            return int(low) if kind == "integer" else float(low)
        if kind == "boolean":
            return False
        if kind == "null":
            return None
        raise AssertionError(f"no minimal document for {node}")

    def locations(self, node: Schema | None = None, prefix: Path = ()) -> Iterator[tuple[Path, Schema]]:
        """Every place a value can go, with the schema that governs it: the document itself,
        then each field, map value and array item, nested ones too."""
        if node is None:
            yield (), self.root
        node = self.resolve(self.root if node is None else node)
        for n, branch in enumerate(node.get("anyOf") or node.get("oneOf") or ()):
            yield from self.locations(branch, (*prefix, ("branch", n)))
        if node.get("type") == "object":
            for name, prop in node.get("properties", {}).items():
                yield (*prefix, ("prop", name)), prop
                yield from self.locations(prop, (*prefix, ("prop", name)))
            extra = node.get("additionalProperties")
            if isinstance(extra, dict):
                yield (*prefix, ("key", "some key")), extra
                yield from self.locations(extra, (*prefix, ("key", "some key")))
            yield (*prefix, ("prop", "an_unknown_field")), {}
        elif node.get("type") == "array":
            yield (*prefix, ("item",)), node["items"]
            yield from self.locations(node["items"], (*prefix, ("item",)))

    def set_at(self, doc: Any, node: Schema, path: Path, value: Any) -> Any:
        """``doc`` with ``value`` at ``path`` (copies along the path; shares the rest)."""
        if not path:
            return value
        node = self.resolve(node)
        step, rest = path[0], path[1:]
        if step[0] == "branch":
            branch = (node.get("anyOf") or node["oneOf"])[step[1]]
            shape = self.resolve(branch).get("type")
            if (shape == "object" and not isinstance(doc, dict)) or (shape == "array" and not isinstance(doc, list)):
                doc = self.minimal(branch)
            return self.set_at(doc, branch, rest, value)
        if step[0] in ("prop", "key"):
            obj = dict(doc) if isinstance(doc, dict) else self.minimal(node)
            name = step[1]
            child = node.get("properties", {}).get(name) if step[0] == "prop" else node["additionalProperties"]
            child = child if child is not None else {}
            if not rest and value is MISSING:
                obj.pop(name, None)
                return obj
            current = obj[name] if name in obj else (self.minimal(child) if child else None)
            obj[name] = self.set_at(current, child, rest, value)
            return obj
        assert step[0] == "item"
        items = node["items"]
        # At least two items where allowed: the value goes into the first, beside a valid one.
        size = max(node.get("minItems", 0), min(2, node.get("maxItems", 2)))
        seq = list(doc) if isinstance(doc, list) else []
        seq += [self.minimal(items)] * (size - len(seq))
        seq[0] = self.set_at(seq[0], items, rest, value)
        return seq

    def boundary_values(self, node: Schema) -> list[Any]:
        """Values near each bound the schema publishes, and every other JSON type."""
        node = self.resolve(node)
        out: list[Any] = [*WRONG_TYPES, *BIG_INTS]
        for branch in node.get("anyOf") or node.get("oneOf") or ():
            out += self.boundary_values(branch)
        if "const" in node or "enum" in node:
            for word in node.get("enum", [node.get("const")]):
                out.append(word)
                if isinstance(word, str):
                    out += [word.upper(), word.title(), f"{word} ", f" {word}", word[:-1], f"{word}\n"]
        kind = node.get("type")
        if kind == "string":
            out += self._strings(node)
        elif kind in ("integer", "number"):
            out += self._numbers(node, kind == "integer")
        elif kind == "boolean":
            out += ["false", "0"]
        elif kind == "array":
            low, high = node.get("minItems", 0), node.get("maxItems")
            sizes = {0, 1, 2, max(low - 1, 0), low, low + 1}
            if high is not None:
                sizes |= {high - 1, high, high + 1}
            item = self.minimal(node["items"])
            out += [[item] * n for n in sorted(sizes)]
        elif kind == "object":
            out.append(self.minimal(node))
        return _distinct(out)

    def _strings(self, node: Schema) -> list[Any]:
        low, high = node.get("minLength", 0), node.get("maxLength")
        lengths = {0, 1, max(low - 1, 0), low, low + 1, 40}
        if high is not None:
            lengths |= {high - 1, high, high + 1}
        letters = ("A", "a", *WIDTHS[1:]) if "pattern" in node else WIDTHS
        out: list[Any] = [ch * n for n in sorted(lengths) for ch in letters]
        if "pattern" in node:  # ticker-like: the decoder's regex and the exported pattern
            out += ["NVE", "BRK.B", "A-1", "NVE\n", "\nNVE", "NV E", "nve", ".NVE", "-A", "ＮＶＥ", "１", "A\x00"]
        return out

    @staticmethod
    def _numbers(node: Schema, integer: bool) -> list[Any]:
        low, high = node.get("minimum"), node.get("maximum")
        anchors = [0, 1, -1, 2, 100, 10**6]
        anchors += [b for b in (low, high) if b is not None]
        out: list[Any] = []
        for a in anchors:
            out += [a, a - 1, a + 1, float(a), float(a) - 0.5, float(a) + 0.5, str(a)]
            out += [math.nextafter(float(a), -math.inf), math.nextafter(float(a), math.inf)]
        out += [-0.0, 5e-324, -5e-324, 1e30, -1e30, MAX_DOUBLE, -MAX_DOUBLE, 1e15 + 0.5, "1.5", "1e3"]
        if integer:
            out += [float(2**53), 2.0**63, 2.0**64]
        return out


def _distinct(values: list[Any]) -> list[Any]:
    """Without repeats, telling ``True`` from ``1`` and ``1`` from ``1.0``."""
    seen: set[tuple[str, bytes]] = set()
    out = []
    for v in values:
        tag = (type(v).__name__, orjson.dumps(v) if v is not MISSING else b"")
        if tag not in seen:
            seen.add(tag)
            out.append(v)
    return out


# ----------------------------------------------------------------------------- the two judges


# The rules the schema may publish as enforced beyond it, each with this test's own check of
# whether it applies to a document the schema accepts. A reason not here never excuses a
# disagreement, whatever the schema says.
BEYOND_CHECKS: dict[str, Callable[[bytes, Any, int], bool]] = {
    "too-large": lambda data, doc, limit: len(data) > limit,
    "mixed-users": lambda data, doc, limit: isinstance(doc, list) and len({e["user_id"] for e in doc}) > 1,
}


class Judges:
    """A topic's decoder, and a validator over its exported schema."""

    def __init__(self, name: str, doc: Schema, decode: Callable[[bytes], Any], max_bytes: int) -> None:
        self.name = name
        self.doc = doc
        self.walker = Walker(doc)
        self.validator = jsonschema.Draft202012Validator(doc)
        self.decode = decode
        self.max_bytes = max_bytes
        self.beyond: dict[str, str] = doc.get("x-rejected-beyond-schema", {})

    def disagreement(self, value: Any) -> str | None:
        """None when both judges give the same verdict (or the decoder applies a published
        rule beyond the schema that this test confirms applies); otherwise what differs."""
        data = orjson.dumps(value)
        try:
            self.decode(data)
            rejected: DecodeError | None = None
        except DecodeError as exc:
            rejected = exc
        document = orjson.loads(data)
        errors = sorted(self.validator.iter_errors(document), key=lambda e: list(e.absolute_path))
        if rejected is None:
            return None if not errors else f"decoder accepts, schema rejects: {errors[0].message[:160]}"
        if errors:
            return None
        check = BEYOND_CHECKS.get(rejected.reason)
        if rejected.reason in self.beyond and check is not None and check(data, document, self.max_bytes):
            return None
        return f"schema accepts, decoder rejects: {rejected.reason}: {rejected.detail[:160]}"


@cache
def judges() -> dict[str, Judges]:
    docs = schema_documents()
    out = {}
    for spec in ALL_TOPICS:
        doc = docs[f"{spec.suffix}.schema.json"]
        codec = spec.codec
        decode = decode_events if spec is EVENTS else codec.decode
        out[spec.suffix] = Judges(spec.suffix, doc, decode, codec.max_bytes)
    # The events topic's single-object codec against the object branch of the events schema.
    events = docs[f"{EVENTS.suffix}.schema.json"]
    single_doc = {**events, "oneOf": [events["oneOf"][0]]}
    single = JsonCodec(Event)
    out["events (one object)"] = Judges("events (one object)", single_doc, single.decode, single.max_bytes)
    return out


JUDGES = sorted(judges())


# ----------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("name", JUDGES)
def test_the_minimal_document_is_valid_for_both(name):
    judge = judges()[name]
    document = judge.walker.minimal(judge.doc)
    assert judge.validator.is_valid(document)
    judge.decode(orjson.dumps(document))


@pytest.mark.parametrize("name", JUDGES)
def test_every_location_and_every_boundary_value_gets_one_verdict(name):
    """Deterministic: each location of the schema, each value near its bounds or of another
    JSON type, and each field left out, one at a time in an otherwise minimal document."""
    judge = judges()[name]
    walker, base = judge.walker, judge.walker.minimal(judge.doc)
    wrong, checked = [], 0
    for path, node in walker.locations():
        values = walker.boundary_values(node)
        if path and path[-1][0] == "prop":
            values.append(MISSING)
        for value in values:
            document = walker.set_at(base, judge.doc, path, value)
            problem = judge.disagreement(document)
            checked += 1
            if problem:
                wrong.append((_where(path), _short(value), problem))
    assert checked > 50
    assert not wrong, f"{len(wrong)} disagreements, e.g.:\n" + "\n".join(map(str, wrong[:25]))


@st.composite
def near_boundary_documents(draw: st.DrawFn, judge: Judges) -> Any:
    """A minimal document with one to four locations set to near-boundary or random values."""
    walker = judge.walker
    locations = _locations(judge.name)
    document = walker.minimal(judge.doc)
    for _ in range(draw(st.integers(1, 4))):
        path, node = draw(st.sampled_from(locations))
        pool = walker.boundary_values(node) + ([MISSING] if path and path[-1][0] == "prop" else [])
        value = draw(st.sampled_from(pool) | _randoms(walker.resolve(node)))
        document = walker.set_at(document, judge.doc, path, value)
    return document


@cache
def _locations(name: str) -> list[tuple[Path, Schema]]:
    return list(judges()[name].walker.locations())


def _randoms(node: Schema) -> st.SearchStrategy[Any]:
    kind = node.get("type")
    if kind == "string":
        low, high = node.get("minLength", 0), node.get("maxLength", 60)
        alphabet = st.sampled_from("AZ09.-az \n") if "pattern" in node else st.characters(exclude_categories=["Cs"])
        return st.text(alphabet, min_size=max(low - 2, 0), max_size=min(high + 2, low + 60))
    if kind == "integer":
        low, high = node.get("minimum", -(2**63)), node.get("maximum", 2**64 - 1)
        return st.integers(max(low - 3, -(2**63)), min(high + 3, 2**64 - 1)) | st.integers(low, high).map(float)
    if kind == "number":
        return st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**63), 2**64 - 1)
    if kind == "boolean":
        return st.booleans()
    if "enum" in node:
        return st.sampled_from(node["enum"]) | st.text(max_size=8)
    return st.sampled_from(WRONG_TYPES)


@pytest.mark.parametrize("name", JUDGES)
@given(data=st.data())
def test_documents_near_the_boundaries_get_one_verdict(name, data):
    judge = judges()[name]
    document = data.draw(near_boundary_documents(judge))
    problem = judge.disagreement(document)
    assert problem is None, (problem, _short(document, 400))


def test_rules_beyond_the_schema_are_published_in_it_with_their_reason():
    """What the differential tests may excuse is said in the schema a producer reads."""
    docs = schema_documents()
    for spec in ALL_TOPICS:
        doc = docs[f"{spec.suffix}.schema.json"]
        beyond = doc["x-rejected-beyond-schema"]
        assert {"too-large", "invalid-json"} <= set(beyond), spec.suffix
        for reason, rule in beyond.items():
            assert f"{reason}: {rule}" in doc["description"], (spec.suffix, reason)
    events = docs["events.schema.json"]["x-rejected-beyond-schema"]
    assert {"mixed-users", "key-mismatch", "future-timestamp"} <= set(events)
    assert "future-timestamp" in docs["triggers.schema.json"]["x-rejected-beyond-schema"]


def test_a_string_is_as_long_as_its_code_points():
    """maxLength counts characters (code points): 128 emoji (512 UTF-8 bytes, 256 UTF-16
    units) are a valid id, 129 are not, for both judges."""
    judge = judges()["triggers"]
    base = {"request_id": "r", "user_id": "u", "ts": 1.0}
    for n, ok in ((128, True), (129, False)):
        document = {**base, "user_id": "\U0001f600" * n}
        assert judge.disagreement(document) is None
        assert judge.validator.is_valid(document) is ok


def _where(path: Path) -> str:
    return ".".join({"prop": str(s[-1]), "key": "{key}", "item": "[0]", "branch": f"<{s[-1]}>"}[s[0]] for s in path)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}...({len(text)} chars)"
