"""The RecBole peers' plumbing on hand-made data: the atomic file that carries our time
order, the split check that refuses a peer split otherwise, the cache key, the scorer over
a score matrix and a peer's row over seeds. RecBole itself runs in ``make eval``
(instructrec/peers.py); here nothing needs its environment."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from instructrec.evaluate import peer_row
from instructrec.peers import (
    DATASET,
    PeerRun,
    PeerSpec,
    SplitMismatch,
    cache_key,
    check_split,
    hard_negatives,
    pick_retriever,
    write_inter,
)
from model.evaluation import UserSplit, candidates_for, leave_one_out
from tests.unit.data import dataset_of

ROWS = [("1", "a", 1.0), ("1", "c", 3.0), ("1", "b", 3.0), ("1", "d", 2.0), ("2", "a", 5.0), ("2", "b", 4.0)]
ROWS += [("2", "e", 5.0)]


def test_the_atomic_file_numbers_interactions_in_our_time_order(tmp_path: Path):
    data = dataset_of(ROWS)
    digest = write_inter(data, tmp_path)
    lines = (tmp_path / DATASET / f"{DATASET}.inter").read_text().splitlines()
    assert lines[0] == "user_id:token\titem_id:token\ttimestamp:float"
    body = [line.split("\t") for line in lines[1:]]
    # ties (c and b at ts 3.0) keep file order; the timestamp is the position, so no two tie
    assert [(u, i) for u, i, _ in body] == [(x.user_id, x.item_id) for x in data.interactions]
    assert [t for _, _, t in body] == [str(n) for n in range(len(ROWS))]
    assert [(u, i) for u, i, _ in body if u == "1"] == [("1", "a"), ("1", "d"), ("1", "c"), ("1", "b")]
    assert write_inter(data, tmp_path) == digest
    assert write_inter(dataset_of([*ROWS, ("2", "f", 6.0)]), tmp_path) != digest


def test_a_peer_whose_split_differs_from_ours_is_refused():
    splits = leave_one_out(dataset_of(ROWS))
    same = {"valid": {s.user_id: s.valid for s in splits}, "test": {s.user_id: s.test for s in splits}}
    check_split(same, splits)
    swapped = {"valid": {**same["valid"], "1": "b"}, "test": {**same["test"], "1": "c"}}
    with pytest.raises(SplitMismatch, match="1 of 2 users"):
        check_split(swapped, splits)
    extra = {"valid": same["valid"], "test": {**same["test"], "9": "a"}}
    with pytest.raises(SplitMismatch, match="users only RecBole has"):
        check_split(extra, splits)


def test_the_cache_key_changes_with_everything_that_changes_the_result():
    spec = PeerSpec("SASRec")
    key = cache_key(spec, 0, "data")
    assert key == cache_key(PeerSpec("SASRec"), 0, "data")
    others = {
        cache_key(spec, 1, "data"),
        cache_key(spec, 0, "other data"),
        cache_key(PeerSpec("SASRec", epochs=5), 0, "data"),
        cache_key(PeerSpec("SASRec", params={"hidden_size": 32}), 0, "data"),
        cache_key(PeerSpec("BERT4Rec"), 0, "data"),
    }
    assert key not in others and len(others) == 5


def _run(spec: PeerSpec, seed: int, scores: list[list[float]], items: list[str], users: list[str]) -> PeerRun:
    result = {"users": users, "items": items, "epochs": 3, "converged": True, "train_seconds": 1.0}
    result["recbole_test"] = {"ndcg@10": 0.5, "hit@10": 0.7}
    return PeerRun(spec, seed, result, np.array(scores, dtype=np.float32), cached=False, seconds=0.0)


def test_a_peer_scores_candidates_from_its_matrix_and_never_ranks_an_unknown_item_up():
    run = _run(PeerSpec("BPR"), 0, [[0, 0.1, 0.9, 0.5], [0, 0.7, 0.2, 0.3]], ["[PAD]", "a", "b", "c"], ["2", "1"])
    score = run.scorer()
    split = UserSplit("1", ("x",), "y", "b")
    assert score(split, ["b", "c", "a", "zz"]) == pytest.approx([0.2, 0.3, 0.7, float("-inf")])


def test_a_peer_row_is_the_mean_over_seeds_with_the_spread_of_ndcg():
    splits = [UserSplit("1", ("a",), "b", "c"), UserSplit("2", ("a",), "c", "b")]
    items = ["[PAD]", "a", "b", "c", "d"]
    # full ranking masks a and the validation item: seed 0 ranks both test items first,
    # seed 1 puts d above them
    first = _run(PeerSpec("BPR"), 0, [[0, 0, 0, 0.9, 0.1], [0, 0, 0.9, 0, 0.1]], items, ["1", "2"])
    second = _run(PeerSpec("BPR"), 1, [[0, 0, 0, 0.5, 0.9], [0, 0, 0.5, 0, 0.9]], items, ["1", "2"])
    row = peer_row([first, second], splits, "full", items[1:], 0)
    assert row["method"] == "recbole-bpr" and row["seeds"] == 2 and row["ours"] is False
    ndcg_second = 1 / np.log2(3)
    assert row["ndcg@10"] == pytest.approx((1 + ndcg_second) / 2, abs=1e-4)
    assert row["ndcg@10_std"] == pytest.approx((1 - ndcg_second) / 2, abs=1e-4)
    assert row["hr@1"] == pytest.approx(0.5)
    assert row["peer"]["epochs"] == [3, 3] and row["peer"]["converged"] is True


def test_the_1_plus_9_protocol_draws_nine_unseen_negatives():
    catalog = [f"i{n}" for n in range(40)]
    split = UserSplit("7", tuple(catalog[:10]), "i10", "i11")
    got = candidates_for(split, "1+9", catalog, seed=0)
    assert got[0] == "i11" and len(got) == 10 and len(set(got)) == 10
    assert not set(got[1:]) & {*catalog[:12]}


def test_hard_negatives_are_the_retrievers_top_items_the_user_never_had():
    items = ["[PAD]", *(f"i{n}" for n in range(14))]
    scores = [[9.0, *(float(n) for n in range(14))]]  # i13 highest ... i0 lowest; PAD highest of all
    run = _run(PeerSpec("Pop", trained=False), 0, scores, items, ["5"])
    split = UserSplit("5", ("i13", "i12"), "i11", "i10")
    (hard,) = hard_negatives(run, [split]).values()
    assert hard == [f"i{n}" for n in range(9, 0, -1)]
    assert candidates_for(split, "1+9-hard", items[1:], 0, {"5": hard}) == ["i10", *hard]
    with pytest.raises(ValueError, match="never had"):
        candidates_for(split, "1+9-hard", items[1:], 0, {"5": ["i11", *hard[:8]]})
    with pytest.raises(ValueError, match="needs the hard negatives"):
        candidates_for(split, "1+9-hard", items[1:], 0)


def test_the_retriever_is_the_converged_peer_best_on_validation():
    items, users = ["[PAD]", "a"], ["1"]

    def runs(model: str, valid: float, converged: bool, trained: bool = True) -> list[PeerRun]:
        out = []
        for seed in (0, 1):
            run = _run(PeerSpec(model, trained=trained), seed, [[0, 1]], items, users)
            run.result.update({"best_valid_ndcg@10": valid, "converged": converged})
            out.append(run)
        return out

    peers = {"recbole-pop": runs("Pop", 0.02, False, trained=False), "recbole-bpr": runs("BPR", 0.05, True)}
    peers["recbole-sasrec"] = runs("SASRec", 0.09, False)  # best on validation, but cut short
    chosen = pick_retriever(peers)
    assert chosen is not None and chosen.spec.model == "BPR" and chosen.seed == 0
    assert pick_retriever({"recbole-sasrec": peers["recbole-sasrec"]}) is None
