"""The headline sentiment model as `make eval` trains and reports it: the packaged MiniLM
fine-tuned on the training headlines, measured on the held-out ones, against a head on the
frozen encoder and the zero-shot baseline measured in the same run."""

from __future__ import annotations

import pytest

from instructrec.evaluate import EvalConfig, sentiment_rows
from model.sentiment import LABELS, load_sentiment


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    rows = sentiment_rows(EvalConfig(models_root=root, seed=0))
    return {r["method"]: r for r in rows}, root


def test_the_eval_rows_report_held_out_accuracy_and_macro_f1(trained):
    rows, _ = trained
    assert set(rows) == {"sentiment", "sentiment-frozen-head", "sentiment-zero-shot"}
    ours = rows["sentiment"]
    assert ours["ours"] is True and ours["test"] == 90 and ours["train"] == 360
    assert sum(map(sum, ours["confusion"])) == 90
    # Aim 0.8 (measured 0.824 / 0.836 / 0.845 over seeds 0-2); the bar leaves room for noise.
    assert ours["macro_f1"] >= 0.78, ours
    assert ours["macro_f1"] >= rows["sentiment-frozen-head"]["macro_f1"] + 0.1, rows
    assert ours["macro_f1"] >= rows["sentiment-zero-shot"]["macro_f1"] + 0.15, rows


def test_the_saved_version_loads_and_reads_plain_headlines(trained):
    _, root = trained
    model = load_sentiment(root / "sentiment")  # through LATEST
    texts = [
        "Orlanth Mining swings to a loss and suspends its dividend after a mine flood",
        "Pemberly Foods raises full-year outlook as quarterly profit beats forecasts",
        "Kestrel Systems to present at an investor conference on March 4",
    ]
    out = model.predict(texts)
    assert [label for label, _, _ in out] == ["negative", "positive", "neutral"]
    assert out[0][1] < 0 < out[1][1]
    for _, score, probs in out:
        assert -1 <= score <= 1 and len(probs) == len(LABELS) and abs(sum(probs) - 1) < 1e-5
