import pytest
from hypothesis import given
from hypothesis import strategies as st

from model.exceptions import ScoringError
from model.scorer import ScoredRequest
from schemas.records import Candidate, HistoryItem, ModelInfo, ScoreRequest
from workers.ranking import by_score, hold_back, rank, recommendation_id, scoring_jobs, with_baselines

MODEL = ModelInfo(name="m", version="v1")


def request(n=5, k=3, history=True, intention=None, cold=False):
    return ScoreRequest(
        request_id="r1",
        user_id="u",
        k=k,
        instruction="ins",
        template="t",
        task="recommend",
        intention=intention,
        cold_start=cold,
        history=[HistoryItem(item_id="h1", title="Alien", text="Alien", event_type="click", ts=1.0)] if history else [],
        candidates=[Candidate(item_id=str(i), title=f"T{i}", text=f"T{i}", source="popular") for i in range(n)],
        trigger_ts=10.0,
        request_ts=10.1,
    )


def test_top_k_sorted_by_score_with_ids_breaking_ties():
    rec = rank(
        request(),
        ScoredRequest([0.1, 0.9, 0.5, 0.9, 0.2], [0] * 5),
        MODEL,
        started_ts=10.2,
        score_ms=5,
        now=lambda: 10.3,
    )
    assert [i.item_id for i in rec.items] == ["1", "3", "2"]
    assert [i.rank for i in rec.items] == [1, 2, 3]
    scores = [i.score for i in rec.items]
    assert scores == sorted(scores, reverse=True)
    assert rec.recommendation_id == recommendation_id("u", "r1", "v1") and rec.model == MODEL
    assert rec.timings.pipeline_ms == pytest.approx(300.0)
    assert rec.timings.queue_ms == pytest.approx(100.0)


def test_explanation_cites_history_and_intention():
    rec = rank(
        request(intention="a comedy"),
        ScoredRequest([0.3, 0.2, 0.1, 0.0, 0.0], [0] * 5),
        MODEL,
        started_ts=10.2,
        score_ms=1,
    )
    assert "“T0” is close to “Alien”" in rec.explanation
    assert "a comedy" in rec.explanation
    assert rec.items[0].because == "h1"


def test_cold_start_explanation_says_so():
    rec = rank(
        request(history=False, cold=True),
        ScoredRequest([0.3, 0.2, 0.1, 0.0, 0.0], [None] * 5),
        MODEL,
        started_ts=10.2,
        score_ms=1,
    )
    assert "no history" in rec.explanation and "popular" in rec.explanation
    assert rec.cold_start and all(i.because is None for i in rec.items)


def test_wrong_number_of_scores_is_an_error():
    with pytest.raises(ScoringError):
        rank(request(), ScoredRequest([0.1], [None]), MODEL, started_ts=0, score_ms=0)


def test_explanations_name_the_evidence_co_watched_first_then_embedding_neighbour():
    req = request(n=3, k=3, intention="something scary")
    history = [
        HistoryItem(item_id="h1", title="Alien", text="Alien", event_type="click", ts=1.0),
        HistoryItem(item_id="h2", title="Heat", text="Heat", event_type="view", ts=2.0),
    ]
    candidates = [
        Candidate(item_id="0", title="Aliens", text="Aliens", source="cooccurrence", cooc=3.0, cooc_with="h1"),
        Candidate(item_id="1", title="Ronin", text="Ronin", source="popular"),
        Candidate(
            item_id="2", title="Gone", text="Gone", source="cooccurrence", cooc=1.0, cooc_with="gone-from-history"
        ),
    ]
    req = req.model_copy(update={"history": history, "candidates": candidates})
    fused = ModelInfo(name="m", version="v2", fusion={"text": 5.0, "cooc": 1.0, "cooc_long": 0.8, "pop": -0.3})
    rec = rank(req, ScoredRequest([0.9, 0.8, 0.7], [1, 1, 0]), fused, started_ts=10.2, score_ms=1)
    assert [i.because for i in rec.items] == ["h1", "h2", "h1"]
    assert "viewers of “Alien” also watched “Aliens”" in rec.explanation
    assert "“Ronin” is close to “Heat”" in rec.explanation
    assert "“Gone” is close to “Alien”" in rec.explanation  # its co-watched item is not in the history shown
    assert "“something scary”" in rec.explanation

    # A cosine-only model's evidence is what its score saw: the nearest history item.
    plain = rank(req, ScoredRequest([0.9, 0.8, 0.7], [1, 1, 0]), MODEL, started_ts=10.2, score_ms=1)
    assert [i.because for i in plain.items] == ["h2", "h2", "h1"]
    assert "also watched" not in plain.explanation and "“Aliens” is close to “Heat”" in plain.explanation


def test_recommendation_ids_are_unique_per_user_request_and_version():
    ids = {recommendation_id(u, r, v) for u in ("1", "2", "1:2") for r in ("r", "2:r", "x") for v in ("v1", "v2")}
    assert len(ids) == 18  # separators inside ids cannot make two triples collide
    assert recommendation_id("u", "r", "v") == recommendation_id("u", "r", "v")


# ----------------------------------------------------------------------------- references


@given(st.data())
def test_a_held_item_is_never_placed_higher_than_without_the_intention(data):
    n = data.draw(st.integers(1, 25))
    ids = [f"i{k}" for k in range(n)]
    scores = data.draw(st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0]) | st.floats(-1, 1), min_size=n, max_size=n))
    order = by_score(scores, ids)
    without = data.draw(st.permutations(range(n)))
    held = data.draw(st.sets(st.integers(0, n - 1)))
    out = hold_back(order, without, held)
    assert sorted(out) == list(range(n))
    for item in held:
        assert out.index(item) >= without.index(item)
    # The others keep the intention's order.
    assert [x for x in out if x not in held] == [x for x in order if x not in held]
    if len(held) == 1:  # nothing competes for its place: exactly max(with, without)
        (item,) = held
        assert out.index(item) == max(order.index(item), without.index(item))


def test_held_items_owed_the_same_places_are_still_never_higher_than_without():
    # Three held items, each ranked last by one of the two orders: not every floor can be
    # met, the one without the intention always is.
    out = hold_back([1, 2, 0], [0, 1, 2], {0, 1, 2})
    assert out == [0, 1, 2]
    assert hold_back([0, 1, 2], None, {0}) == [1, 2, 0]  # no baseline: held items last


def named_request(references, baseline="ins without"):
    req = request(n=4, k=4, intention="more like T0")
    return req.model_copy(update={"references": references, "baseline_instruction": baseline})


def test_a_reference_is_ranked_where_the_baseline_puts_it_with_its_score_capped():
    req = named_request(["0"])
    # The intention lifts item 0 to the top; without it, it is third.
    rec = rank(
        req,
        ScoredRequest([0.99, 0.5, 0.4, 0.3], [0] * 4),
        MODEL,
        baseline=ScoredRequest([0.2, 0.9, 0.8, 0.1], [0] * 4),
        started_ts=10.2,
        score_ms=1,
    )
    assert [i.item_id for i in rec.items] == ["1", "2", "0", "3"]
    scores = [i.score for i in rec.items]
    assert scores == [0.5, 0.4, 0.4, 0.3]  # re-sorting by score does not lift it again
    # An intention that pushes it down keeps it down.
    down = rank(
        req,
        ScoredRequest([0.1, 0.5, 0.4, 0.3], [0] * 4),
        MODEL,
        baseline=ScoredRequest([0.9, 0.2, 0.1, 0.0], [0] * 4),
        started_ts=10.2,
        score_ms=1,
    )
    assert [i.item_id for i in down.items] == ["1", "2", "3", "0"]


def test_scoring_jobs_add_one_baseline_per_request_that_holds_back():
    plain, named, no_baseline = request(), named_request(["1"]), named_request(["1"], baseline=None)
    jobs = scoring_jobs([plain, named, no_baseline])
    assert [(r is named, text) for r, text in jobs] == [
        (False, "ins"),
        (True, "ins"),
        (False, "ins"),
        (True, "ins without"),
    ]
    scored = [ScoredRequest([float(n)] * 4, [None] * 4) for n in range(4)]
    paired = with_baselines([plain, named, no_baseline], scored)
    assert [(s.scores[0], b.scores[0] if b else None) for s, b in paired] == [(0.0, None), (1.0, 3.0), (2.0, None)]
    with pytest.raises(ScoringError):
        with_baselines([plain, named], scored[:2])
