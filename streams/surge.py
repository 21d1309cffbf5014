"""Negative-sentiment surge rule for the financial alerts (issue 6), pure logic.

A window's statistics per ticker (count, mean sentiment, share negative) are compared
with the ticker's trailing baseline: the negative share of the current window against the
pooled share of the baseline windows, as a one-sided binomial z-score. A surge needs
enough headlines, a large enough share and a large enough z. The baseline share is
floored so that a ticker with no negative headline in its past does not fire on one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class WindowStats:
    count: int = 0
    score_sum: float = 0.0  # sentiment scores in [-1, 1]
    negatives: int = 0

    def add(self, score: float, negative: bool) -> WindowStats:
        return WindowStats(self.count + 1, self.score_sum + score, self.negatives + int(negative))

    @property
    def mean(self) -> float:
        return self.score_sum / self.count if self.count else 0.0

    @property
    def negative_share(self) -> float:
        return self.negatives / self.count if self.count else 0.0

    def to_json(self) -> dict[str, float | int]:
        return {
            "count": self.count,
            "mean_sentiment": round(self.mean, 4),
            "negative_share": round(self.negative_share, 4),
        }


@dataclass(frozen=True)
class SurgeRule:
    min_count: int = 5  # headlines in the window
    min_negative_share: float = 0.5
    z_threshold: float = 3.0
    baseline_windows: int = 12  # trailing windows that make the baseline
    baseline_floor: float = 0.1  # the baseline share is taken as at least this

    def __post_init__(self) -> None:
        if self.min_count < 1 or self.baseline_windows < 1:
            raise ValueError("min_count and baseline_windows must be >= 1")
        if not 0 < self.baseline_floor < 1 or not 0 <= self.min_negative_share <= 1:
            raise ValueError("baseline_floor must be in (0, 1) and min_negative_share in [0, 1]")


@dataclass(frozen=True)
class SurgeVerdict:
    fired: bool
    z: float
    baseline_share: float
    reason: str


def judge_surge(current: WindowStats, baseline: Sequence[WindowStats], rule: SurgeRule) -> SurgeVerdict:
    """``baseline``: the ticker's previous windows, oldest first (only the last
    ``rule.baseline_windows`` count; empty windows add nothing)."""
    recent = list(baseline)[-rule.baseline_windows :]
    total = sum(w.count for w in recent)
    pooled = sum(w.negatives for w in recent) / total if total else 0.0
    p0 = max(pooled, rule.baseline_floor)
    if current.count < rule.min_count:
        return SurgeVerdict(False, 0.0, pooled, f"{current.count} headlines < {rule.min_count}")
    share = current.negative_share
    z = (share - p0) / math.sqrt(p0 * (1 - p0) / current.count)
    if share < rule.min_negative_share:
        return SurgeVerdict(False, z, pooled, f"negative share {share:.2f} < {rule.min_negative_share}")
    if z < rule.z_threshold:
        return SurgeVerdict(False, z, pooled, f"z {z:.2f} < {rule.z_threshold}")
    return SurgeVerdict(True, z, pooled, f"negative share {share:.2f} vs baseline {pooled:.2f}: z {z:.2f}")


# --- window values as the alerts worker's tables hold them (JSON) -----------------------------

WORST_KEPT = 5  # the most negative headlines a window keeps as evidence


def merge_headline(value: dict | None, headline: dict) -> dict:
    """Add one scored headline (``{news_id, text, label, score, news_ts}``) to a window's
    value ``{count, score_sum, negatives, worst}``; a pure function for Faust's
    windowed ``apply``."""
    value = value or {}
    worst = [*value.get("worst", []), headline]
    worst.sort(key=lambda h: (h["score"], h["news_id"]))
    return {
        "count": int(value.get("count", 0)) + 1,
        "score_sum": float(value.get("score_sum", 0.0)) + float(headline["score"]),
        "negatives": int(value.get("negatives", 0)) + int(headline["label"] == "negative"),
        "worst": worst[:WORST_KEPT],
    }


def stats_of(value: dict | None) -> WindowStats:
    value = value or {}
    return WindowStats(int(value.get("count", 0)), float(value.get("score_sum", 0.0)), int(value.get("negatives", 0)))


# --- per-user delivery -------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    deliver: list  # the alerts to send now, most severe first (their rank is their position + 1)
    suppressed: list  # over the user's budget: not sent
    sent_ts: list[float]  # the user's delivery times to keep


def plan_delivery(
    alerts: Sequence,
    severity: Callable[[Any], float],
    ident: Callable[[Any], str],
    sent_ts: Sequence[float],
    delivered_ids: Sequence[str],
    now: float,
    max_per_period: int,
    period_s: float,
) -> Delivery:
    """Rank the alerts gathered for one user (most severe first; already delivered ids
    dropped, duplicates once) and deliver as many as the user's budget allows: at most
    ``max_per_period`` in any ``period_s``."""
    recent = [t for t in sent_ts if t > now - period_s]
    seen = set(delivered_ids)
    fresh = []
    for alert in alerts:
        if ident(alert) not in seen:
            seen.add(ident(alert))
            fresh.append(alert)
    fresh.sort(key=lambda a: (-severity(a), ident(a)))
    budget = max(0, max_per_period - len(recent))
    deliver, suppressed = fresh[:budget], fresh[budget:]
    return Delivery(deliver, suppressed, recent + [now] * len(deliver))
