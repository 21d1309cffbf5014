"""The sample news stream of `make run` (instructrec/news.py): with the human labels
standing in for a perfect model, the surge rule of the alerts worker fires exactly once,
on the planted ticker and window, whatever the alert settings; the plan is deterministic."""

from __future__ import annotations

from collections import defaultdict

import pytest

from instructrec.news import sample_news
from model.sentiment import load_headlines
from streams.surge import SurgeRule, WindowStats, judge_surge

HEADLINES = load_headlines()
LABEL = {h.text: h.label for h in HEADLINES}


def _fired(news, window_s: float, rule: SurgeRule) -> list[tuple[str, float]]:
    """What streams/alerts.py would raise, judging each headline's window as it arrives."""
    windows: dict[tuple[str, float], WindowStats] = defaultdict(WindowStats)
    fired: list[tuple[str, float]] = []
    for item in news:
        ticker, start = item.tickers[0], item.ts // window_s * window_s
        label = LABEL[item.headline]
        windows[ticker, start] = windows[ticker, start].add(-1.0 if label == "negative" else 1.0, label == "negative")
        if (ticker, start) in fired:
            continue
        baseline = [
            windows.get((ticker, start - i * window_s), WindowStats()) for i in range(rule.baseline_windows, 0, -1)
        ]
        if judge_surge(windows[ticker, start], baseline, rule).fired:
            fired.append((ticker, start))
    return fired


@pytest.mark.parametrize(("window_s", "baseline", "min_count"), [(3600.0, 12, 5), (60.0, 6, 5), (900.0, 3, 8)])
def test_the_planted_surge_is_the_only_one_the_rule_sees(window_s: float, baseline: int, min_count: int) -> None:
    end = 1_800_000_123.0
    plan = sample_news(
        HEADLINES, end_ts=end, window_s=window_s, baseline_windows=baseline, min_count=min_count, users=["1", "2", "3"]
    )
    rule = SurgeRule(min_count=min_count, baseline_windows=baseline)
    assert _fired(plan.news, window_s, rule) == [(plan.surge_ticker, plan.surge_window_start)]
    assert plan.surge_window_start + window_s <= end
    assert [n.ts for n in plan.news] == sorted(n.ts for n in plan.news)
    assert all(len(n.tickers) == 1 for n in plan.news)
    assert len({n.news_id for n in plan.news}) == len(plan.news)


def test_followers_and_determinism() -> None:
    users = [str(u) for u in range(1, 21)]
    kwargs = dict(end_ts=1_800_000_000.0, window_s=60.0, baseline_windows=6, min_count=5, users=users)
    plan = sample_news(HEADLINES, **kwargs)  # type: ignore[arg-type]
    assert plan == sample_news(HEADLINES, **kwargs)  # type: ignore[arg-type]
    assert plan != sample_news(HEADLINES, seed=1, **kwargs)  # type: ignore[arg-type]
    tickers = {n.tickers[0] for n in plan.news}
    assert len(tickers) == 8
    assert {f.ticker for f in plan.follows} <= tickers
    assert (users[0], plan.surge_ticker) in {(f.user_id, f.ticker) for f in plan.follows}
    assert all(sum(f.user_id == u for f in plan.follows) == 2 for u in users)


def test_a_plan_needs_a_window_and_a_baseline() -> None:
    with pytest.raises(ValueError):
        sample_news(HEADLINES, end_ts=0.0, window_s=0.0, baseline_windows=6, min_count=5)
    with pytest.raises(ValueError):
        sample_news(HEADLINES, end_ts=0.0, window_s=60.0, baseline_windows=0, min_count=5)
