"""Turn a trigger into a score request. Pure: no Faust, no Kafka, no model.

The stream worker calls this with the user's context and a catalog lookup; tests call it
with plain dicts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from model.context import UserContext, recent_distinct
from model.features import FEATURE_LONG, candidate_evidence
from model.guard import intention_prefix, named_items
from model.instructions import (
    TEMPLATES,
    Instruction,
    Template,
    build_instruction,
    choose_template,
    clean_intention,
)
from model.recall import ItemGraph
from schemas.records import Candidate, CatalogItem, HistoryItem, ScoreRequest, Source, Trigger


@dataclass(frozen=True)
class PlannerConfig:
    recall_size: int = 100
    history_in_instruction: int = 5
    history_for_explanation: int = 10
    recent_for_recall: int = 10
    intention_max_chars: int = 300
    noun: str = "movie"
    template_seed: int = 0
    templates: tuple[Template, ...] = TEMPLATES
    # The model reads at most max_seq_length (128) tokens of an item: longer catalog texts
    # are cut here, so a request of many long (or CJK) items stays a bounded message.
    text_max_chars: int = 512


class NoCandidates(Exception):
    """Nothing can be scored for this trigger (e.g. every given candidate is unknown)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.reason = "no-candidates"
        self.detail = detail


def plan_score_request(
    trigger: Trigger,
    context: Mapping[str, Any] | None,
    lookup: Callable[[str], CatalogItem | None],
    graph: ItemGraph,
    config: PlannerConfig,
    fresh: Iterable[str] = (),
    now: Callable[[], float] = time.time,
) -> ScoreRequest:
    events = UserContext.events(context)
    history_entries = recent_distinct(events, config.history_for_explanation)
    history: list[HistoryItem] = []
    for item_id, event_type, ts in history_entries:
        item = lookup(item_id)
        if item is not None:  # an item not (yet) in the catalog has no text to show
            history.append(
                HistoryItem(
                    item_id=item_id,
                    title=item.title,
                    text=item.scoring_text()[: config.text_max_chars],
                    event_type=event_type,
                    ts=ts,
                )
            )
    cold_start = not events

    picked: list[tuple[str, CatalogItem, Source]] = []
    if trigger.candidates is not None:
        task = "rerank"
        seen_ids: set[str] = set()
        for item_id in trigger.candidates:
            if item_id in seen_ids:
                continue
            seen_ids.add(item_id)
            item = lookup(item_id)
            if item is not None:
                picked.append((item_id, item, "trigger"))
        if not picked:
            raise NoCandidates(f"none of the {len(seen_ids)} given candidates is in the catalog")
    else:
        task = "recommend"
        exclude = set(UserContext.seen(context)) | {entry[0] for entry in events}
        recent = [entry[0] for entry in recent_distinct(events, config.recent_for_recall)]
        for hit in graph.recall(
            recent, exclude, config.recall_size, is_known=lambda i: lookup(i) is not None, fresh=fresh
        ):
            item = lookup(hit.item_id)
            assert item is not None  # is_known checked it
            picked.append((hit.item_id, item, hit.source))
        if not picked:
            raise NoCandidates("the catalog has no item this user has not seen yet")
    # Collaborative features for the fused model (model/features.py), from this worker's
    # graph, computed as in training and evaluation.
    latest = [entry[0] for entry in recent_distinct(events, FEATURE_LONG)]
    evidence = candidate_evidence(graph, latest, [item_id for item_id, _, _ in picked])
    candidates = [
        Candidate(
            item_id=item_id,
            title=item.title,
            text=item.scoring_text()[: config.text_max_chars],
            source=source,
            cooc=e.cooc,
            cooc_long=e.cooc_long,
            popularity=e.popularity,
            cooc_with=e.link,
        )
        for (item_id, item, source), e in zip(picked, evidence, strict=True)
    ]

    intention = clean_intention(trigger.intention, config.intention_max_chars)
    template = choose_template(trigger.request_id, config.templates, config.template_seed)
    history_titles = [h.title for h in history[: config.history_in_instruction]]

    def instruct(intention: str | None) -> Instruction:
        return build_instruction(
            request_id=trigger.request_id,
            history_titles=history_titles,
            intention=intention,
            task=task,
            noun=config.noun,
            template=template,
        )

    instruction = instruct(intention)
    # Candidates the intention names -- in what the user wrote or in what the guard left
    # of it -- are references, never targets: the pool ranks each no higher than the same
    # instruction without the intention does (model/guard.py, workers/ranking.py).
    references: list[str] = []
    if intention is not None and trigger.intention:
        raw = intention_prefix(trigger.intention, config.intention_max_chars)
        references = named_items([raw, intention], [(item_id, item.title, _year(item)) for item_id, item, _ in picked])
    baseline = instruct(None).text if references else None
    return ScoreRequest(
        request_id=trigger.request_id,
        user_id=trigger.user_id,
        k=min(trigger.k, len(candidates)),
        instruction=instruction.text,
        template=instruction.template,
        task=task,  # type: ignore[arg-type]
        intention=intention,
        references=references,
        baseline_instruction=baseline,
        cold_start=cold_start,
        history=history,
        candidates=candidates,
        trigger_ts=trigger.ts,
        request_ts=now(),
    )


def _year(item: CatalogItem) -> str | None:
    year = item.attributes.get("year")
    if isinstance(year, float):
        return str(int(year)) if year.is_integer() else None
    return year if isinstance(year, str) else None


def catalog_lookup(items: Mapping[str, object]) -> Callable[[str], CatalogItem | None]:
    """Adapt a table of item dicts (JSON values) to a typed lookup.

    Parsed items are memoised by the identity of the stored value, so a lookup costs a
    dict access unless the item changed since it was last parsed.
    """
    memo: dict[str, tuple[object, CatalogItem]] = {}

    def lookup(item_id: str) -> CatalogItem | None:
        raw = items.get(item_id)
        if raw is None:
            return None
        if isinstance(raw, CatalogItem):
            return raw
        hit = memo.get(item_id)
        if hit is not None and hit[0] is raw:
            return hit[1]
        item = CatalogItem.model_validate(raw)
        memo[item_id] = (raw, item)
        return item

    return lookup
