"""Ranking and result assembly. Pure: takes model scores, returns the output record.

An item the intention names is a *reference*, never a target (``model/guard.py``): the pool
scores such a request a second time with its baseline instruction (the same one without
the intention) and ``hold_back`` places every reference no higher than it is placed
without the intention. So "never better than without the intention" holds by construction,
for any model and any intention text.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence

import orjson

from model.explain import explain
from model.scorer import ScoredRequest
from schemas.records import ModelInfo, RankedItem, Recommendation, ScoreRequest, Timings


def recommendation_id(user_id: str, request_id: str, model_version: str) -> str:
    """Unique per (user, request, model version) and the same for every copy of one result:
    producers reuse request ids across users (per-user counters, retries from elsewhere),
    so the request id alone does not name a result. The three parts are JSON-encoded
    before hashing, so no choice of separators in ids can make two triples collide."""
    key = orjson.dumps([user_id, request_id, model_version])
    return "rec-" + hashlib.blake2b(key, digest_size=16).hexdigest()


def baseline_of(request: ScoreRequest) -> str | None:
    """The instruction to score the request without its intention, when its intention names
    some of its candidates (the planner sets both together)."""
    return request.baseline_instruction if request.references else None


def scoring_jobs(requests: Sequence[ScoreRequest]) -> list[tuple[ScoreRequest, str]]:
    """What to score for a batch: every request with its instruction, then every request
    that has a baseline once more with it (the same candidates and history; the item side
    is cached, so it costs one more instruction)."""
    jobs = [(r, r.instruction) for r in requests]
    jobs += [(r, baseline) for r in requests if (baseline := baseline_of(r)) is not None]
    return jobs


def with_baselines(
    requests: Sequence[ScoreRequest], scored: Sequence[ScoredRequest]
) -> list[tuple[ScoredRequest, ScoredRequest | None]]:
    """Pair each request's scores with its baseline's (None without one), from the scores
    of ``scoring_jobs(requests)`` in that order."""
    jobs = len(scoring_jobs(requests))
    if len(scored) != jobs:
        from model.exceptions import ScoringError

        raise ScoringError(f"{len(scored)} results for {jobs} scoring jobs")
    baselines = iter(scored[len(requests) :])
    return [
        (s, next(baselines) if baseline_of(r) is not None else None)
        for r, s in zip(requests, scored[: len(requests)], strict=True)
    ]


def by_score(scores: Sequence[float], ids: Sequence[str]) -> list[int]:
    """Positions sorted best first (ties by item id, so equal inputs give equal outputs)."""
    return sorted(range(len(ids)), key=lambda n: (-scores[n], ids[n]))


def hold_back(order: Sequence[int], without: Sequence[int] | None, held: set[int]) -> list[int]:
    """``order`` (by the scores with the intention) with each ``held`` item placed no
    higher than its floor: the lower of its places in ``order`` and in ``without`` (the
    order without the intention).

    Position by position, the next item is the best by ``order`` among the next free item
    and the held items whose floor has been reached. Floors can collide (two held items
    both owed the last place); the held items still waiting when the free ones run out
    take the last places in their ``without`` order, so none of them is higher than
    without the intention either (of m distinct places in 0..n-1, the k-th smallest is at
    most n-m+k). With no ``without`` the held items go last, in ``order``.
    """
    if not held:
        return list(order)
    place = {n: p for p, n in enumerate(order)}
    before = {n: p for p, n in enumerate(without)} if without is not None else {n: len(order) for n in held}
    floor = {n: max(place[n], before[n]) for n in held}
    free = [n for n in order if n not in held]
    waiting = sorted(held, key=lambda n: place[n])
    out: list[int] = []
    f = 0
    while f < len(free):
        due = next((n for n in waiting if floor[n] <= len(out)), None)
        if due is not None and place[due] < place[free[f]]:
            waiting.remove(due)
            out.append(due)
        else:
            out.append(free[f])
            f += 1
    return out + sorted(waiting, key=lambda n: (before[n], place[n]))


def rank(
    request: ScoreRequest,
    scored: ScoredRequest,
    model: ModelInfo,
    *,
    baseline: ScoredRequest | None = None,
    started_ts: float,
    score_ms: float,
    now: Callable[[], float] = time.time,
) -> Recommendation:
    """Top-k by score (ties by item id), the request's references held back to no higher
    than ``baseline`` (its scores without the intention) places them. A held-back item's
    reported score is capped at the score above it, so a subscriber that re-sorts by score
    does not lift it again."""
    from model.exceptions import ScoringError

    if len(scored.scores) != len(request.candidates):
        raise ScoringError(f"{len(scored.scores)} scores for {len(request.candidates)} candidates")
    if baseline is not None and len(baseline.scores) != len(request.candidates):
        raise ScoringError(f"{len(baseline.scores)} baseline scores for {len(request.candidates)} candidates")
    ids = [c.item_id for c in request.candidates]
    named = set(request.references)
    held = {n for n, item_id in enumerate(ids) if item_id in named}
    order = hold_back(
        by_score(scored.scores, ids), by_score(baseline.scores, ids) if baseline is not None else None, held
    )
    top = order[: request.k]
    items = []
    because_titles: list[str | None] = []
    because_kinds: list[str] = []
    history = {h.item_id: h for h in request.history}
    # Evidence for the score: with a fused model, the recent item the candidate co-occurs
    # with most (what the collaborative part saw); else, or without one, the history item
    # nearest to it in embedding space (what the cosine saw).
    fused = model.fusion is not None and (model.fusion.get("cooc", 0) > 0 or model.fusion.get("cooc_long", 0) > 0)
    shown = float("inf")
    for rank_no, n in enumerate(top, start=1):
        cand = request.candidates[n]
        shown = min(float(scored.scores[n]), shown) if n in held else float(scored.scores[n])
        because = history.get(cand.cooc_with) if fused and cand.cooc_with else None
        because_kinds.append("co-watched" if because else "similar")
        b = scored.because[n]
        if because is None and b is not None and b < len(request.history):
            because = request.history[b]
        items.append(
            RankedItem(
                item_id=cand.item_id,
                title=cand.title,
                rank=rank_no,
                score=round(shown, 6),
                because=because.item_id if because else None,
            )
        )
        because_titles.append(because.title if because else None)
    text = explain(
        top_titles=[i.title for i in items],
        because_titles=because_titles,
        because_kinds=because_kinds,
        intention=request.intention,
        cold_start=request.cold_start,
        sources=sorted({request.candidates[n].source for n in top}),
    )
    done = now()
    return Recommendation(
        recommendation_id=recommendation_id(request.user_id, request.request_id, model.version),
        request_id=request.request_id,
        user_id=request.user_id,
        items=items,
        instruction=request.instruction,
        template=request.template,
        explanation=text,
        cold_start=request.cold_start,
        model=model,
        timings=Timings(
            trigger_ts=request.trigger_ts,
            request_ts=request.request_ts,
            scored_ts=done,
            queue_ms=round(max(0.0, started_ts - request.request_ts) * 1000, 3),
            score_ms=round(score_ms, 3),
            pipeline_ms=round(max(0.0, done - request.trigger_ts) * 1000, 3),
        ),
    )
