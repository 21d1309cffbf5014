"""Offline evaluation: split, candidates and metrics on hand-made data; the baselines on
the real ml-100k with a bar they must clear; the report and the ``eval:`` line over every
kind of row ``make eval`` produces (tests/model/test_eval_pipeline.py runs the real thing)."""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import orjson
import pytest

from instructrec.evaluate import OURS, EvalConfig, print_eval, write_report
from model.data import load_ml100k
from model.evaluation import (
    UserSplit,
    candidates_for,
    cooccurrence_scorer,
    evaluate,
    leave_one_out,
    metrics_from_ranks,
    popularity_scorer,
    random_scorer,
    rank_of_first,
)
from tests.unit.data import dataset_of


def test_leave_one_out_holds_out_the_last_two_with_file_order_breaking_ties():
    data = dataset_of([("1", "a", 1.0), ("1", "c", 3.0), ("1", "b", 3.0), ("1", "d", 2.0), ("2", "a", 1.0)])
    (split,) = leave_one_out(data)  # user 2 has too few interactions
    assert split == UserSplit("1", ("a", "d"), "c", "b")  # c and b share ts 3.0: file order


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
    assert f"| full | {OURS} (ours) | 0.100 | 0.300 | 0.500 | 0.200 | 0.150 | 0.250 |" in text
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
