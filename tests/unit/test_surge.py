"""The negative-sentiment surge rule (streams/surge.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.surge import SurgeRule, WindowStats, judge_surge, merge_headline, plan_delivery, stats_of


def window(negatives: int, others: int, score: float = 0.0) -> WindowStats:
    w = WindowStats()
    for _ in range(negatives):
        w = w.add(-0.9, True)
    for _ in range(others):
        w = w.add(score, False)
    return w


CALM = [window(1, 9) for _ in range(12)]  # 10 % negative


def test_a_planted_surge_fires_and_its_numbers_are_the_evidence():
    verdict = judge_surge(window(8, 2), CALM, SurgeRule())
    assert verdict.fired
    assert verdict.baseline_share == pytest.approx(0.1)
    # (0.8 - 0.1) / sqrt(0.1 * 0.9 / 10)
    assert verdict.z == pytest.approx(0.7 / (0.09 / 10) ** 0.5)
    assert window(8, 2).to_json() == {"count": 10, "mean_sentiment": -0.72, "negative_share": 0.8}


def test_calm_thin_or_always_negative_tickers_do_not_fire():
    rule = SurgeRule()
    assert not judge_surge(window(1, 9), CALM, rule).fired  # as usual
    assert not judge_surge(window(4, 0), CALM, rule).fired  # too few headlines
    gloomy = [window(7, 3) for _ in range(12)]  # a ticker that is always 70 % negative
    assert not judge_surge(window(8, 2), gloomy, rule).fired
    assert not judge_surge(window(4, 6), CALM, rule).fired  # z is large, the share is not


def test_a_ticker_without_history_needs_more_than_one_bad_headline():
    rule = SurgeRule()
    assert not judge_surge(window(1, 4), [], rule).fired
    assert judge_surge(window(9, 1), [], rule).fired  # floor 0.1: z = 8.4


def test_only_the_trailing_baseline_windows_count():
    old_gloom = [window(9, 1)] * 20 + [window(0, 10)] * 12
    assert judge_surge(window(8, 2), old_gloom, SurgeRule(baseline_windows=12)).baseline_share == 0.0
    assert judge_surge(window(8, 2), old_gloom, SurgeRule(baseline_windows=32)).baseline_share > 0.5


def test_bad_rules_are_refused():
    with pytest.raises(ValueError):
        SurgeRule(min_count=0)
    with pytest.raises(ValueError):
        SurgeRule(baseline_floor=0)


@given(st.integers(0, 50), st.integers(0, 50), st.integers(0, 50))
def test_more_negative_headlines_never_make_a_surge_less_likely(negatives, others, extra):
    rule = SurgeRule()
    before = judge_surge(window(negatives, others), CALM, rule)
    after = judge_surge(window(negatives + extra, others), CALM, rule)
    assert after.z >= before.z - 1e-9 or before.reason.startswith(f"{negatives + others} headlines")
    assert after.fired or not before.fired


def _h(news_id: str, score: float, label: str = "neutral") -> dict:
    return {"news_id": news_id, "text": news_id, "label": label, "score": score, "news_ts": 1.0}


def test_a_window_value_counts_and_keeps_the_most_negative_headlines():
    value: dict | None = None
    for i, score in enumerate([0.5, -0.9, 0.1, -0.2, -0.95, 0.3, -0.5, 0.0]):
        value = merge_headline(value, _h(f"n{i}", score, "negative" if score < -0.4 else "neutral"))
    assert value is not None
    assert stats_of(value) == WindowStats(count=8, score_sum=pytest.approx(-1.65), negatives=3)
    assert [h["news_id"] for h in value["worst"]] == ["n4", "n1", "n6", "n3", "n7"]
    assert stats_of(None) == WindowStats()


def test_delivery_ranks_by_severity_and_keeps_the_budget():
    alerts = [("a", 3.5), ("b", 9.0), ("c", 5.0), ("b", 9.0)]  # b twice (redelivered)
    plan = plan_delivery(
        alerts,
        severity=lambda a: a[1],
        ident=lambda a: a[0],
        sent_ts=[],
        delivered_ids=[],
        now=100.0,
        max_per_period=2,
        period_s=60.0,
    )
    assert plan.deliver == [("b", 9.0), ("c", 5.0)] and plan.suppressed == [("a", 3.5)]
    assert plan.sent_ts == [100.0, 100.0]
    # One sent 30 s ago still counts, one 90 s ago does not; ids already delivered are dropped.
    later = plan_delivery(
        [("d", 1.0), ("b", 9.0), ("e", 2.0)],
        severity=lambda a: a[1],
        ident=lambda a: a[0],
        sent_ts=[10.0, 70.0],
        delivered_ids=["b"],
        now=100.0,
        max_per_period=2,
        period_s=60.0,
    )
    assert later.deliver == [("e", 2.0)] and later.suppressed == [("d", 1.0)]
    assert later.sent_ts == [70.0, 100.0]
