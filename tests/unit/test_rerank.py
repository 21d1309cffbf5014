"""The cross-encoder re-rank stage, with a real transformer: the packaged MiniLM weights
under a seeded one-logit head. The head is untrained (training is issue #4), so these
tests check the stage's mechanics -- which candidates it reads, that packing pairs from
many requests into one pass changes nothing, how the pool turns it on and reports it --
not ranking quality."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from instructrec.settings import Settings
from model.cross import CrossEncoder, rerank_top
from model.exceptions import ModelNotFound
from model.scorer import ScoredRequest, default_model_dir
from schemas.records import Candidate, Recommendation, ScoreRequest
from workers.pool import ScoringWorker


@pytest.fixture(scope="module")
def cross_dir(tmp_path_factory):
    torch.manual_seed(7)
    src = default_model_dir()
    model = AutoModelForSequenceClassification.from_pretrained(str(src), num_labels=1, local_files_only=True)
    out = tmp_path_factory.mktemp("cross-encoder-v1")
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(src), local_files_only=True).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def cross(cross_dir):
    torch.set_num_threads(2)
    return CrossEncoder(cross_dir)


TITLES = [f"Movie {n} ({1980 + n}), Drama" for n in range(12)]


def test_packing_pairs_from_many_requests_gives_the_scores_of_one_pair_at_a_time(cross):
    pairs = [("something light for tonight", TITLES[0]), ("a 90s comedy after Toy Story", TITLES[5] + " and more")]
    together = cross.score_pairs(pairs)
    alone = [cross.score_pairs([p])[0] for p in pairs]
    assert together == pytest.approx(alone, abs=1e-5)
    assert all(0.0 <= p <= 1.0 for p in together)


def test_only_the_first_stage_top_m_is_rescored_and_it_ranks_above_the_rest(cross):
    first = [ScoredRequest([0.1 * n for n in range(12)], [None] * 12), ScoredRequest([0.5] * 4, [None] * 4)]
    texts = [TITLES, TITLES[:4]]
    out = rerank_top(cross, ["ins a", "ins b"], texts, first, top_m=5)
    # Request 0: the five best first-stage candidates are 11..7; they now carry P(relevant).
    top = {11, 10, 9, 8, 7}
    expected = cross.score_pairs([("ins a", TITLES[n]) for n in sorted(top, reverse=True)])
    assert [out[0].scores[n] for n in sorted(top, reverse=True)] == pytest.approx(expected, abs=1e-5)
    assert min(out[0].scores[n] for n in top) > max(out[0].scores[n] for n in range(12) if n not in top)
    # The rest keep their relative order below them.
    rest = [n for n in range(12) if n not in top]
    assert sorted(rest, key=lambda n: -out[0].scores[n]) == sorted(rest, key=lambda n: -first[0].scores[n])
    # Request 1 has fewer candidates than M: all of them are re-scored.
    assert all(0.0 <= s <= 1.0 for s in out[1].scores)


def test_a_directory_without_a_one_logit_head_is_refused(tmp_path):
    with pytest.raises(ModelNotFound):
        CrossEncoder(tmp_path)


def _request(i: int, n: int = 8) -> ScoreRequest:
    return ScoreRequest(
        request_id=f"r{i}",
        user_id="u",
        k=3,
        instruction=f"Viewing history: Movie {i}. Which movie next?",
        template="t",
        task="recommend",
        cold_start=False,
        history=[],
        trigger_ts=1.0,
        request_ts=1.0,
        candidates=[Candidate(item_id=str(c), title=TITLES[c], text=TITLES[c], source="popular") for c in range(n)],
    )


def test_pool_reranks_on_cpu_only_when_asked_and_names_the_reranker(cross_dir, cross):
    base = {"bootstrap_servers": "unused:9092", "rerank_model_dir": cross_dir, "rerank_top_m": 4, "torch_threads": 2}
    off = ScoringWorker(Settings(**base))
    off.load_model()
    assert off.active[2] is None and off.active[1].reranker is None  # CPU: not unless asked

    on = ScoringWorker(Settings(**base, rerank_on_cpu=True))
    on.load_model()
    assert on.active[1].reranker == cross_dir.name
    requests = [_request(0), _request(1)]
    results = on.score_batch(requests)
    plain = off.score_batch(requests)
    for req, rec, base_rec in zip(requests, results, plain, strict=True):
        assert isinstance(rec, Recommendation) and isinstance(base_rec, Recommendation)
        assert rec.model.reranker == cross_dir.name
        # The re-ranked list is the bi-encoder's top 4, ordered by the cross-encoder.
        bi_order = [i.item_id for i in base_rec.items]
        first = off.active[0].score_many([req.instruction], [[(c.item_id, c.text) for c in req.candidates]], [[]])[0]
        top4 = sorted(range(len(req.candidates)), key=lambda n: (-first.scores[n], n))[:4]
        probs = cross.score_pairs([(req.instruction, req.candidates[n].text) for n in top4])
        want = [req.candidates[n].item_id for _, n in sorted(zip(probs, top4, strict=True), key=lambda x: -x[0])][:3]
        assert [i.item_id for i in rec.items] == want
        assert {i.item_id for i in rec.items} <= {req.candidates[n].item_id for n in top4}
        assert bi_order[0] in {req.candidates[n].item_id for n in top4}
