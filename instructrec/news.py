"""The sample news stream `make run` replays next to ml-100k: headlines from the project's
labelled set (model/finance_headlines.jsonl), placed in event time so that the alerts
worker's windows see a calm baseline for every sample ticker and then one negative surge
on one of them. Pure: the plan is a list of records; ``instructrec.runner`` sends it.

The layout follows the alert settings it is given (window, baseline windows, minimum
count), so the same plan fires with the defaults (1 h windows, 12 of baseline: 13 hours of
event time, sent in seconds) or with a test's short windows. Calm windows carry
``per_window`` headlines per ticker, one of them negative at most every other window (a
negative share of at most 1/per_window); the surge window carries ``surge`` headlines for
the surge ticker, all but two negative. Which of these the model calls negative is the
model's business: the plan uses the human labels.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from model.sentiment import Headline
from schemas.records import Follow, NewsItem


@dataclass(frozen=True)
class NewsPlan:
    news: list[NewsItem]
    follows: list[Follow]
    surge_ticker: str
    surge_window_start: float  # event time


def sample_news(
    headlines: Sequence[Headline],
    *,
    end_ts: float,
    window_s: float,
    baseline_windows: int,
    min_count: int,
    tickers: int = 8,
    users: Sequence[str] = (),
    follows_per_user: int = 2,
    seed: int = 0,
) -> NewsPlan:
    """Headlines of ``tickers`` sample tickers (those with the most labelled headlines,
    one ticker each), ``baseline_windows`` calm windows then one surge window ending at or
    before ``end_ts``; and for each of ``users`` a follow of ``follows_per_user`` of these
    tickers (the first user always follows the surge ticker)."""
    if tickers < 1 or baseline_windows < 1 or window_s <= 0:
        raise ValueError("need at least one ticker, one baseline window and a positive window")
    rng = random.Random(seed)
    by_ticker: dict[str, dict[str, list[Headline]]] = defaultdict(lambda: defaultdict(list))
    for h in headlines:
        if len(h.tickers) == 1:
            by_ticker[h.tickers[0]][h.label].append(h)
    usable = [t for t, labels in by_ticker.items() if labels["negative"] and (labels["neutral"] or labels["positive"])]
    usable.sort(key=lambda t: (-sum(len(v) for v in by_ticker[t].values()), t))
    chosen = usable[:tickers]
    if not chosen:
        raise ValueError("no ticker has both negative and other labelled headlines")
    surge_ticker = max(chosen, key=lambda t: (len(by_ticker[t]["negative"]), t))
    per_window = max(min_count, 5)
    surge = max(min_count, 10)
    surge_start = (end_ts // window_s) * window_s - window_s
    start = surge_start - baseline_windows * window_s
    news: list[NewsItem] = []

    def add(ticker: str, h: Headline, ts: float) -> None:
        news.append(NewsItem(news_id=f"sample-{len(news):05d}-{h.id}", ts=ts, tickers=[ticker], headline=h.text))

    for ticker in chosen:
        calm = by_ticker[ticker]["neutral"] + by_ticker[ticker]["positive"]
        negative = by_ticker[ticker]["negative"]
        rng.shuffle(calm)
        for w in range(baseline_windows):
            base = start + w * window_s
            for j in range(per_window):
                bad = j == per_window // 2 and w % 2 == 0
                h = negative[(w // 2) % len(negative)] if bad else calm[(w * per_window + j) % len(calm)]
                add(ticker, h, base + (j + 1) * window_s / (per_window + 1))
        n = surge if ticker == surge_ticker else per_window
        for j in range(n):
            if ticker == surge_ticker:
                h = calm[j % len(calm)] if j in (0, n // 2) else negative[j % len(negative)]
            else:
                h = calm[(baseline_windows * per_window + j) % len(calm)]
            add(ticker, h, surge_start + (j + 1) * window_s / (n + 1))
    news.sort(key=lambda n: n.ts)
    follows = []
    for i, user in enumerate(users):
        picked = rng.sample(chosen, min(follows_per_user, len(chosen)))
        if i == 0 and surge_ticker not in picked:
            picked[0] = surge_ticker
        follows += [Follow(user_id=user, ticker=t, ts=start) for t in picked]
    return NewsPlan(news=news, follows=follows, surge_ticker=surge_ticker, surge_window_start=surge_start)
