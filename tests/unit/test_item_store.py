"""The on-disk item embedding store (model/item_store.py) and the scorer's use of it: a
second scorer of the same version loads what the first computed and computes nothing."""

from __future__ import annotations

import pytest
import torch

from model import item_store
from model.item_store import ItemVectorStore, encoder_fingerprint
from model.scorer import BiEncoderScorer, TextEncoder, text_digest


def vec(n: int) -> torch.Tensor:
    return torch.full((4,), float(n))


def test_segments_round_trip_and_merge(tmp_path):
    store = ItemVectorStore(tmp_path, "v1", "abc")
    assert store.load() == {} and store.save({}) is None
    store.save({b"a" * 16: vec(1), b"b" * 16: vec(2)})
    ItemVectorStore(tmp_path, "v1", "abc").save({b"c" * 16: vec(3)})  # another process
    loaded = store.load()
    assert sorted(loaded) == [b"a" * 16, b"b" * 16, b"c" * 16]
    assert torch.equal(loaded[b"c" * 16], vec(3))
    assert not list(store.dir.glob(".*"))  # no partial file left behind
    assert ItemVectorStore(tmp_path, "v2", "abc").load() == {}  # another version sees nothing


def test_many_segments_are_compacted_and_a_damaged_one_is_skipped(tmp_path, monkeypatch):
    monkeypatch.setattr(item_store, "COMPACT_AFTER", 3)
    store = ItemVectorStore(tmp_path, "v1", "abc")
    for n in range(5):
        store.save({bytes([n]) * 16: vec(n)})
    (store.dir / "seg-0-0.pt").write_bytes(b"not a tensor file")
    loaded = store.load()
    assert len(loaded) == 5
    assert len(list(store.dir.glob("seg-*.pt"))) == 2  # the merged one, and the damaged one
    assert len(store.load()) == 5


def test_the_fingerprint_follows_what_changes_a_vector(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    base = encoder_fingerprint(tmp_path, torch.float32, int8=False, max_length=128, layout="canonical-rows=1")
    assert base == encoder_fingerprint(tmp_path, torch.float32, int8=False, max_length=128, layout="canonical-rows=1")
    others = {
        encoder_fingerprint(tmp_path, torch.bfloat16, int8=False, max_length=128, layout="canonical-rows=1"),
        encoder_fingerprint(tmp_path, torch.float32, int8=True, max_length=128, layout="canonical-rows=1"),
        encoder_fingerprint(tmp_path, torch.float32, int8=False, max_length=64, layout="canonical-rows=1"),
        encoder_fingerprint(tmp_path, torch.float32, int8=False, max_length=128, layout="dynamic"),
    }
    (tmp_path / "model.safetensors").write_bytes(b"other weights")
    others.add(encoder_fingerprint(tmp_path, torch.float32, int8=False, max_length=128, layout="canonical-rows=1"))
    assert base not in others and len(others) == 5


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder(max_length=64)


def test_a_second_scorer_loads_the_vectors_the_first_computed(encoder, tmp_path):
    items = [("1", "Heat (1995). Action"), ("2", "Babe (1995). Comedy"), ("3", "Alien (1979). Horror")]
    first = BiEncoderScorer(encoder)
    assert first.attach_store(tmp_path, "v1") == 0
    assert first.missing(items) == items
    vectors = first.item_vectors(items)
    assert first.items_computed == 3 and first.missing(items) == []
    assert first.save_store() == 3 and first.save_store() == 0

    second = BiEncoderScorer(encoder)
    assert second.attach_store(tmp_path, "v1") == 3
    assert second.missing(items) == []
    assert torch.equal(second.item_vectors(items), vectors)
    assert second.items_computed == 0
    # Keyed by text: another id with a known text is known; a changed text is not.
    assert second.missing([("9", "Heat (1995). Action"), ("1", "Heat (1995). Crime")]) == [("1", "Heat (1995). Crime")]
    assert text_digest("Heat (1995). Action", 16) in second.stored
