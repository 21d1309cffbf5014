"""Headline sentiment: the data set, its split, the metrics and the head (no encoder)."""

from __future__ import annotations

import re
from collections import Counter

import pytest
import torch

from model.sentiment import (
    LABELS,
    accuracy,
    choose_weight_decay,
    confusion,
    fit_head,
    load_headlines,
    macro_f1,
    split_headlines,
    zero_shot_predict,
)


def test_the_headline_set_is_balanced_unique_and_well_formed():
    rows = load_headlines()
    assert len(rows) == 450
    assert Counter(r.label for r in rows) == {label: 150 for label in LABELS}
    assert len({r.id for r in rows}) == len(rows)
    assert len({r.text.casefold() for r in rows}) == len(rows)
    assert all(r.tickers and all(re.fullmatch(r"[A-Z]{1,5}", t) for t in r.tickers) for r in rows)
    # A ticker must not give the label away: none appears under a single label only.
    by_ticker: dict[str, set[str]] = {}
    for r in rows:
        by_ticker.setdefault(r.tickers[0], set()).add(r.label)
    assert all(len(labels) >= 2 for labels in by_ticker.values())


def test_the_split_is_stable_disjoint_and_stratified():
    rows = load_headlines()
    train, test = split_headlines(rows)
    _, again_test = split_headlines(list(reversed(rows)))
    assert {r.id for r in test} == {r.id for r in again_test}  # order of the file does not matter
    assert {r.id for r in train}.isdisjoint({r.id for r in test})
    assert len(train) + len(test) == len(rows)
    assert Counter(r.label for r in test) == {label: 30 for label in LABELS}
    _, other_test = split_headlines(rows, salt="another")
    assert {r.id for r in other_test} != {r.id for r in test}


def test_metrics_on_a_worked_example():
    truth = [0, 0, 1, 1, 2, 2]
    predicted = [0, 1, 1, 1, 2, 0]
    assert accuracy(truth, predicted) == pytest.approx(4 / 6)
    # per class F1: neg 2*1/(2+1+1)=0.5, neu 2*2/(4+1+0)=0.8, pos 2*1/(2+0+1)=2/3
    assert macro_f1(truth, predicted) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert confusion(truth, predicted) == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert macro_f1(truth, truth) == 1.0
    assert macro_f1(truth, [1] * 6) == pytest.approx((2 * 2 / (4 + 4)) / 3)  # one class only
    with pytest.raises(ValueError):
        macro_f1([0, 1], [0])
    with pytest.raises(ValueError):
        accuracy([], [])


def _clusters(seed: int, n: int = 60, dim: int = 16):
    g = torch.Generator().manual_seed(seed)
    centers = torch.nn.functional.normalize(torch.randn(3, dim, generator=g), dim=1)
    y = torch.arange(n) % 3
    x = torch.nn.functional.normalize(centers[y] + 0.1 * torch.randn(n, dim, generator=g), dim=1)
    return x, y, centers


def test_the_head_learns_separable_classes_and_is_deterministic():
    x, y, _ = _clusters(0)
    head = fit_head(x, y, weight_decay=0.01, seed=3)
    with torch.no_grad():
        assert head(x).argmax(1).tolist() == y.tolist()
    again = fit_head(x, y, weight_decay=0.01, seed=3)
    assert torch.equal(head.linear.weight, again.linear.weight)
    wd, results = choose_weight_decay(x, y, candidates=(0.0, 0.1), folds=3)
    assert wd in (0.0, 0.1) and set(results) == {0.0, 0.1}
    assert all(0.9 <= f1 <= 1.0 for f1 in results.values())


def test_zero_shot_takes_the_nearest_description():
    x, y, centers = _clusters(1)
    assert zero_shot_predict(x, centers) == y.tolist()
