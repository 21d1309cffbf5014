"""The fused model's features and weights: the same numbers in training, evaluation,
the stream worker and the pools."""

import math

import pytest

from model.features import (
    FEATURE_LONG,
    FEATURES,
    check_weights,
    collaborative_features,
    fuse,
    latest_distinct,
    raw_collaborative,
)
from model.recall import ItemGraph


def test_latest_distinct_is_most_recent_first_without_repeats():
    assert latest_distinct(["a", "b", "a", "c", "c", "d"], 3) == ["d", "c", "a"]
    assert latest_distinct([], 5) == []


def test_cooccurrence_weights_each_recent_item_by_rank():
    graph = ItemGraph(window=1)
    graph.rebuild([["a", "x"], ["b", "x"], ["b", "y"], ["b", "x"]])
    # x: 1 with a (rank 0, weight 1) + 2 with b (rank 1, weight 1/2); y: 1 with b.
    assert graph.cooccurrence(["a", "b"]) == {"x": 2.0, "y": 0.5}
    feats = collaborative_features(graph, ["a", "b"], ["x", "y", "zzz"])
    # cooc_long counts every latest item alike: x 1 + 2, y 1.
    assert feats[0] == pytest.approx([math.log1p(2.0), math.log1p(3.0), math.log1p(3)])
    assert feats[1] == pytest.approx([math.log1p(0.5), math.log1p(1.0), math.log1p(1)])
    assert feats[2] == [0.0, 0.0, 0.0]


def test_cooc_long_reaches_further_back_than_cooc():
    graph = ItemGraph(window=1)
    graph.rebuild([["old", "x"], ["new", "y"]])
    latest = ["new", "n1", "n2", "n3", "n4", "old"]  # "old" is 6th: beyond FEATURE_RECENT
    (x, y) = raw_collaborative(graph, latest, ["x", "y"])
    assert x[0] == 0 and x[1] == 1  # only the long-term feature sees "old"
    assert y[0] == 1 and y[1] == 1
    assert raw_collaborative(graph, ["n"] * 0 + [f"z{i}" for i in range(FEATURE_LONG)] + ["old"], ["x"])[0][1] == 0


def test_cooccurrence_agrees_with_recall_scores():
    graph = ItemGraph(window=2)
    graph.rebuild([["a", "b", "c", "d"], ["c", "a", "e"], ["b", "e", "a"]])
    recent = ["a", "c"]
    scores = graph.cooccurrence(recent)
    for hit in graph.recall(recent, set(recent), 10, is_known=lambda _i: True):
        if hit.source == "cooccurrence":
            assert scores[hit.item_id] == pytest.approx(hit.score)


def test_fuse_is_the_weighted_sum():
    w = {"text": 10.0, "cooc": 1.0, "cooc_long": 2.0, "pop": 0.5}
    assert fuse(w, [0.1, 0.2], [(1.0, 1.0, 2.0), (0.0, 0.5, 4.0)]) == pytest.approx([5.0, 5.0])


def test_weights_are_checked():
    assert check_weights({"text": 1, "cooc": 2, "cooc_long": 0, "pop": 3}) == {
        "text": 1.0,
        "cooc": 2.0,
        "cooc_long": 0.0,
        "pop": 3.0,
    }
    with pytest.raises(ValueError, match="exactly"):
        check_weights({"text": 1.0, "cooc": 2.0, "pop": 1.0})
    with pytest.raises(ValueError, match="finite"):
        check_weights(dict.fromkeys(FEATURES, float("nan")))
