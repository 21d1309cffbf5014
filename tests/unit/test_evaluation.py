"""Offline evaluation: split, candidates and metrics on hand-made data; the baselines on
the real ml-100k with a bar they must clear; the report and the ``eval:`` line over every
kind of row ``make eval`` produces (tests/model/test_eval_pipeline.py runs the real thing)."""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import orjson
import pytest

from instructrec.evaluate import (
    GENRE_FILTER,
    OURS,
    EvalConfig,
    intention_rows,
    print_eval,
    tie_order_rows,
    write_report,
)
from model.data import load_ml100k
from model.evaluation import (
    LONG_TAIL,
    UserSplit,
    candidates_for,
    cooccurrence_scorer,
    evaluate,
    genre_filter_scorer,
    genres_named,
    leave_one_out,
    long_tail_items,
    metrics_from_ranks,
    popularity_scorer,
    random_scorer,
    rank_of_first,
)
from model.intention_probes import probe_intention
from tests.unit.data import dataset_of


def test_leave_one_out_holds_out_the_last_two_with_file_order_breaking_ties():
    data = dataset_of([("1", "a", 1.0), ("1", "c", 3.0), ("1", "b", 3.0), ("1", "d", 2.0), ("2", "a", 1.0)])
    (split,) = leave_one_out(data)  # user 2 has too few interactions
    assert split == UserSplit("1", ("a", "d"), "c", "b")  # c and b share ts 3.0: file order


def test_the_item_id_tie_order_holds_out_the_tied_item_with_the_highest_id():
    data = dataset_of([("1", "10", 1.0), ("1", "30", 3.0), ("1", "2", 3.0), ("1", "4", 2.0)])
    assert leave_one_out(data) == [UserSplit("1", ("10", "4"), "30", "2")]  # file order
    assert leave_one_out(data, ties="item-id") == [UserSplit("1", ("10", "4"), "2", "30")]
    with pytest.raises(ValueError, match="ties"):
        leave_one_out(data, ties="random")


def test_the_tie_order_bound_runs_the_baselines_on_both_splits_and_the_report_shows_them(tmp_path: Path):
    # Users 1 and 2 have ties that do not reach the held-out item; user 3's last two (6, 5)
    # share a timestamp: file order holds out 5, item-id order 6.
    rows = [("1", "5", 1.0), ("1", "6", 2.0), ("1", "1", 3.0), ("1", "2", 3.0)]
    rows += [("2", "5", 1.0), ("2", "1", 2.0), ("2", "3", 3.0), ("2", "4", 3.0), ("2", "2", 4.0)]
    rows += [("3", "1", 1.0), ("3", "2", 2.0), ("3", "6", 3.0), ("3", "5", 3.0)]
    data = dataset_of(rows)
    ties = tie_order_rows(data, sorted(data.items), EvalConfig(protocols=("full",)))
    assert [(r["ties"], r["method"], r["protocol"]) for r in ties] == [
        ("file", "popularity", "full"),
        ("file", "cooccurrence", "full"),
        ("item-id", "popularity", "full"),
        ("item-id", "cooccurrence", "full"),
    ]
    assert {r["test_items_moved"] for r in ties} == {1}  # user 3: 5 by file order, 6 by id
    report = write_report([], [], EvalConfig(out_dir=tmp_path), 3, None, ties=ties).read_text()
    assert "gives 1 users another held-out item" in report
    pop = [r for r in ties if r["method"] == "popularity"]
    assert f"| popularity | full | {pop[0]['ndcg@10']:.3f} | {pop[1]['ndcg@10']:.3f} |" in report


def test_sampled_candidates_are_the_test_item_then_unseen_items_fixed_by_seed():
    split = UserSplit("7", ("a", "b"), "c", "d")
    catalog = [chr(ord("a") + n) for n in range(26)]
    got = candidates_for(split, "1+19", catalog, seed=3)
    assert got[0] == "d" and len(got) == 20 and len(set(got)) == 20
    assert not set(got[1:]) & {"a", "b", "c", "d"}
    assert got == candidates_for(split, "1+19", catalog, seed=3)
    assert got != candidates_for(split, "1+19", catalog, seed=4)
    full = candidates_for(split, "full", catalog, seed=3)
    assert full[0] == "d" and sorted(full[1:]) == sorted(set(catalog) - {"a", "b", "c", "d"})


def test_the_long_tail_is_the_less_popular_half_and_ranks_only_its_users_over_every_item():
    # training counts: a 4, b 3, c 2, d 1, e 1, f 0 -> median of (0,1,1,2,3,4) is 1
    splits = [
        UserSplit("1", ("a", "b", "c"), "x", "d"),
        UserSplit("2", ("a", "b", "d"), "x", "a"),
        UserSplit("3", ("a", "b", "c", "e"), "x", "f"),
        UserSplit("4", ("a",), "x", "e"),
    ]
    catalog = ["a", "b", "c", "d", "e", "f", "x"]
    tail = long_tail_items(splits, catalog)
    assert tail == {"d", "e", "f", "x"}  # x: 0 training interactions (validation only)
    assert candidates_for(splits[0], LONG_TAIL, catalog, seed=0) == candidates_for(splits[0], "full", catalog, seed=0)
    seen_users = []

    def scorer(split: UserSplit, candidates: list[str]) -> list[float]:
        seen_users.append(split.user_id)
        return [1.0] + [0.0] * (len(candidates) - 1)  # the held-out item always first

    m = evaluate(scorer, splits, LONG_TAIL, catalog, tail=tail)
    assert seen_users == ["1", "3", "4"] and m.users == 3 and m.hr1 == 1.0  # user 2's "a" is popular
    with pytest.raises(ValueError, match="long-tail items"):
        evaluate(scorer, splits, LONG_TAIL, catalog)


def test_ties_count_against_the_held_out_item():
    assert rank_of_first([1.0, 1.0, 1.0]) == 2
    assert rank_of_first([3.0, 1.0, 2.0]) == 0
    assert rank_of_first([2.0, 1.0, 3.0]) == 1


def test_metrics_match_hand_computation():
    m = metrics_from_ranks([0, 1, 4, 9, 20])
    assert m.hr1 == pytest.approx(1 / 5)
    assert m.hr5 == pytest.approx(3 / 5)
    assert m.hr10 == pytest.approx(4 / 5)
    assert m.ndcg10 == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(6) + 1 / math.log2(11)) / 5)
    assert m.mrr == pytest.approx((1 + 1 / 2 + 1 / 5 + 1 / 10 + 1 / 21) / 5)


@pytest.fixture(scope="module")
def ml100k():
    from instructrec.settings import Settings

    dataset = load_ml100k(Settings().data_dir)
    return dataset, leave_one_out(dataset), sorted(dataset.items)


def test_the_split_covers_every_ml100k_user(ml100k):
    dataset, splits, _ = ml100k
    assert len(splits) == 943 == len(dataset.users)
    assert sum(len(s.train) + 2 for s in splits) == 100_000


def test_baselines_on_ml100k_order_as_expected_and_beat_random_by_a_margin(ml100k):
    _, splits, catalog = ml100k
    rows = {
        name: evaluate(scorer, splits, "1+99", catalog, seed=0)
        for name, scorer in (
            ("random", random_scorer(0)),
            ("popularity", popularity_scorer(splits)),
            ("cooccurrence", cooccurrence_scorer(splits)),
        )
    }
    # Random is what chance says: HR@10 of 1+99 is 10 %.
    assert rows["random"].hr10 == pytest.approx(0.10, abs=0.03)
    assert rows["popularity"].ndcg10 > 3 * rows["random"].ndcg10
    assert rows["cooccurrence"].ndcg10 > rows["popularity"].ndcg10 + 0.05


def test_a_scorer_that_knows_nothing_about_the_user_cannot_find_the_test_item(ml100k):
    """Leakage check: a 'method' that scores candidates by a hash of the item id (no
    user data at all) must land at chance on every protocol."""
    _, splits, catalog = ml100k

    def blind(_split, candidates):
        return [zlib.crc32(f"blind:{c}".encode()) % 1000 for c in candidates]

    m = evaluate(blind, splits, "1+99", catalog, seed=0)
    assert m.hr10 == pytest.approx(0.10, abs=0.04)


PNG = b"\x89PNG\r\n\x1a\n"


def _ranking_row(protocol: str, method: str, ndcg10: float) -> dict[str, object]:
    metrics = {"hr@1": 0.1, "hr@5": 0.3, "hr@10": 0.5, "ndcg@5": 0.2, "ndcg@10": ndcg10, "mrr": 0.25}
    return {"method": method, "protocol": protocol, **metrics, "users": 4, "ours": method == OURS, "seconds": 0.1}


def _sentiment_row(method: str, macro_f1: float) -> dict[str, object]:
    return {
        "method": method,
        "protocol": "finance-headlines",
        "accuracy": 0.5,
        "macro_f1": macro_f1,
        "confusion": [[10, 5, 15], [3, 27, 0], [1, 2, 27]],
        "train": 360,
        "test": 90,
        "ours": method == "sentiment",
        "seconds": 3.0,
    }


def test_the_report_takes_ranking_and_sentiment_rows_together(tmp_path: Path, capsys) -> None:
    """Sentiment rows have accuracy and macro-F1, no NDCG: the ranking plot left them out
    or the report died on them (issue 13: ``KeyError: 'ndcg@10'`` at the last step)."""
    methods = ("random", "popularity", "cooccurrence", "sasrec", "minilm-zero-shot", OURS)
    rows = [_ranking_row(p, m, 0.1 + n / 100) for p in ("1+19", "full") for n, m in enumerate(methods)]
    rows += [_sentiment_row(m, f1) for m, f1 in (("sentiment-zero-shot", 0.5), ("sentiment", 0.8))]
    effects = [{"method": OURS, "genre": "Horror", "catalog_share": 0.055, "without": 0.05, "with": 0.3, "users": 4}]
    card = {"version": "v-test", "train_config": {"steps": 2}, "training": {}, "fusion": {"text": 1.0}}
    report = write_report(rows, effects, EvalConfig(out_dir=tmp_path), 4, card)

    text = report.read_text()
    assert f"| full | {OURS} (ours) | 4 | 0.100 | 0.300 | 0.500 | 0.200 | 0.150 | 0.250 |" in text
    assert "| sentiment (ours) | 0.500 | 0.800 | [[10, 5, 15], [3, 27, 0], [1, 2, 27]] |" in text
    assert "| sentiment-zero-shot | 0.500 | 0.500 |" in text
    assert "90 held-out headlines" in text and "model version `v-test`" in text and "| Horror |" in text
    assert "finance-headlines |" not in text  # no sentiment row in the ranking table
    assert "](eval.png)" in text
    png = (tmp_path / "eval.png").read_bytes()
    assert png[:8] == PNG and len(png) > 1000

    print_eval({"rows": rows})
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("eval: ")
    printed = orjson.loads(line.removeprefix("eval: "))["rows"]
    assert [(r["method"], r["protocol"]) for r in printed] == [(r["method"], r["protocol"]) for r in rows]
    assert printed[-1] == {
        "method": "sentiment",
        "protocol": "finance-headlines",
        "accuracy": 0.5,
        "macro_f1": 0.8,
        "ours": True,
    }


def test_a_report_without_ranking_rows_links_no_plot(tmp_path: Path) -> None:
    (tmp_path / "eval.png").write_bytes(PNG)  # from an earlier run: not this run's figure
    report = write_report([_sentiment_row("sentiment", 0.8)], [], EvalConfig(out_dir=tmp_path), 4, None)
    assert "| sentiment (ours) |" in report.read_text() and "eval.png" not in report.read_text()
    assert not (tmp_path / "eval.png").exists()


def test_the_keyword_filter_finds_genres_by_word_and_lifts_them_over_co_occurrence(ml100k):
    assert genres_named("something scary with ghosts") == {"Horror"}
    assert genres_named("a warm story") == set()  # "war" is a whole word
    assert genres_named("两部爱情片") == {"Romance"} and genres_named("fights and chases") == {"Action"}
    dataset, splits, catalog = ml100k
    scorer, cooc = genre_filter_scorer(dataset, splits), cooccurrence_scorer(splits)
    split, candidates = splits[0], catalog[:300]
    assert scorer(split, candidates) == cooc(split, candidates) == scorer(split, candidates, "tell me a tale")
    lifted = scorer(split, candidates, "something scary with ghosts")
    top = sorted(range(len(candidates)), key=lambda n: -lifted[n])
    horror = [n for n in top if "Horror" in dataset.items[candidates[n]].genres]
    assert horror and top[: len(horror)] == horror  # every horror film ahead of the rest


def test_intention_rows_pair_each_method_with_and_without_the_intention(ml100k):
    dataset, splits, catalog = ml100k
    users = splits[:40]
    methods = {GENRE_FILTER: genre_filter_scorer(dataset, splits)}
    rows = intention_rows(methods, dataset, users, catalog, "en", seed=0)
    assert [(r["method"], r["protocol"]) for r in rows] == [
        (GENRE_FILTER, "intention-en"),
        (GENRE_FILTER, "intention-en:none"),
    ]
    probed = [s for s in users if probe_intention(dataset, s, "en", 0) is not None]
    assert rows[0]["users"] == rows[1]["users"] == len(probed) >= 38
    # without the intention the filter is the co-occurrence ranking, over every item
    assert rows[1]["ndcg@10"] == evaluate(cooccurrence_scorer(splits), probed, "full", catalog).as_row()["ndcg@10"]
    assert rows[0]["ndcg@10"] != rows[1]["ndcg@10"]
