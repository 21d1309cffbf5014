"""Ranking and result assembly. Pure: takes model scores, returns the output record."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

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


def rank(
    request: ScoreRequest,
    scored: ScoredRequest,
    model: ModelInfo,
    *,
    started_ts: float,
    score_ms: float,
    now: Callable[[], float] = time.time,
) -> Recommendation:
    """Top-k by score (ties by item id, so equal inputs give equal outputs)."""
    if len(scored.scores) != len(request.candidates):
        from model.exceptions import ScoringError

        raise ScoringError(f"{len(scored.scores)} scores for {len(request.candidates)} candidates")
    order = sorted(range(len(request.candidates)), key=lambda n: (-scored.scores[n], request.candidates[n].item_id))
    top = order[: request.k]
    items = []
    because_titles: list[str | None] = []
    because_kinds: list[str] = []
    history = {h.item_id: h for h in request.history}
    # Evidence for the score: with a fused model, the recent item the candidate co-occurs
    # with most (what the collaborative part saw); else, or without one, the history item
    # nearest to it in embedding space (what the cosine saw).
    fused = model.fusion is not None and (model.fusion.get("cooc", 0) > 0 or model.fusion.get("cooc_long", 0) > 0)
    for rank_no, n in enumerate(top, start=1):
        cand = request.candidates[n]
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
                score=round(float(scored.scores[n]), 6),
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
