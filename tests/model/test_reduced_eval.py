"""The reduced evaluation CI runs: fine-tune for a short while (150 steps instead of 400)
on every user's training history, evaluate 1+99 only, without SASRec and zero-shot; the
trained model must beat popularity and item co-occurrence -- fixed bars, measured in the
same run -- and a genre intention must move its top 10 towards that genre.

Real parts: ml-100k, the packaged MiniLM, the same code as `make eval`."""

from __future__ import annotations

import pytest

from instructrec.evaluate import OURS, EvalConfig, run_eval
from instructrec.settings import Settings
from model.registry import read_card
from model.scorer import load_scorer

STEPS = 150


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    config = EvalConfig(
        users=None,  # all 943: the bar is a small margin over co-occurrence, keep the noise down
        protocols=("1+99",),
        seed=0,
        with_model=False,
        with_sasrec=False,
        train_steps=STEPS,
        train_lr=3e-4,
        train_device="cpu",
        out_dir=out / "report",
        models_root=out / "models",
        intention_users=30,
        sentiment_epochs=0,  # tests/model/test_sentiment_model.py
        peers=(),  # RecBole's: tests/model/test_eval_pipeline.py
    )
    # One torch thread for the encoder's one-text passes (batch-invariant shapes): two
    # threads per tiny pass were many times slower on a busy 2-core machine.
    return run_eval(Settings(torch_threads=1, state_dir=out / "state"), config), config


def _row(result, method):
    (row,) = [r for r in result["rows"] if r["method"] == method and r["protocol"] == "1+99"]
    return row


def test_the_trained_model_beats_popularity_and_cooccurrence(result):
    res, _ = result
    ours = _row(res, OURS)
    assert ours["ours"] is True and ours["users"] == 943
    for baseline in ("popularity", "cooccurrence"):
        other = _row(res, baseline)
        assert ours["ndcg@10"] > other["ndcg@10"], (baseline, ours, other)
    assert ours["ndcg@10"] > 1.5 * _row(res, "popularity")["ndcg@10"]


def test_the_version_directory_is_complete_and_loadable(result):
    res, config = result
    model_dir = config.models_root / (config.models_root / "LATEST").read_text().strip()
    assert str(model_dir) == res["model_dir"]
    card = read_card(model_dir)
    assert card is not None and card["fusion_calibrated"] and card["fusion"]["text"] > 0
    assert card["train_config"]["steps"] == STEPS and len(card["templates"]) >= 20
    assert card["eval"]["rows"] == res["rows"]
    for name in ("report.md", "loss.png", "config.json", "tokenizer.json", "item_encoder/config.json"):
        assert (model_dir / name).exists(), name
    from model.device import choose_device

    scorer = load_scorer(model_dir, choose_device("cpu"))
    assert scorer.item_encoder is not scorer.encoder


def test_a_genre_intention_moves_the_top_ten_towards_that_genre(result):
    _, config = result
    model_dir = config.models_root / (config.models_root / "LATEST").read_text().strip()
    effects = read_card(model_dir)["eval"]["intention"]
    ours = [e for e in effects if e["method"] == OURS]
    assert {e["genre"] for e in ours} >= {"Horror", "Comedy", "Romance", "Sci-Fi"}
    for e in ours:
        if e["genre"] != "Documentary":  # rarely co-watched: its share stays small either way
            assert e["with"] >= e["without"] + 0.05, e
    assert sum(e["with"] for e in ours) >= 1.5 * sum(e["without"] for e in ours)
    # Users whose held-out item is of the genre: the intention helps find it.
    hits = {k: sum(e[f"hr10_{k}"] * e["matching_users"] for e in ours) for k in ("without", "with")}
    assert sum(e["matching_users"] for e in ours) >= 60
    assert hits["with"] > 1.2 * hits["without"], hits
