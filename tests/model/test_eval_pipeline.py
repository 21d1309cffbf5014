"""``make eval`` end to end, reduced: ``instructrec eval`` in its own process with a few
users and a few steps of everything, through every kind of row it produces (the
baselines, SASRec, zero-shot, the trained model and its ablations, the sentiment model and
its baselines), the report, the plots and the last line ``eval: {json}``; then what
``make run`` loads from the models root it leaves.

The models root starts as ``make run`` and an earlier ``make eval`` leave it: a sentiment
version and a served model version, each named by LATEST (issue 13: with the sentiment
rows in, the report died at its last step and nothing was printed). Real parts: ml-100k,
the packaged MiniLM, the same command as ``make eval``; only the sizes are small."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from instructrec.evaluate import GENRE_FILTER, OURS
from instructrec.settings import REPO_ROOT, Settings
from model.registry import read_card, resolve_model, write_card, write_latest
from model.scorer import default_model_dir

PROTOCOLS = ("full", "1+99", "1+9", "1+9-hard")
INTENTION = ("intention-en", "intention-en:none")  # with the intention, then the same users without
FOLLOWERS = (OURS, "minilm-zero-shot", GENRE_FILTER)  # the methods that read an intention
RANKING = (
    "random",
    "popularity",
    "cooccurrence",
    "sasrec",
    "minilm-zero-shot",
    "collaborative features only (no text)",
    "instructrec text only",
    OURS,
    "recbole-pop",
    "recbole-bpr",
)
SENTIMENT = ("sentiment-zero-shot", "sentiment-frozen-head", "sentiment")
PNG = b"\x89PNG\r\n\x1a\n"
USERS = 3
TRAIN_STEPS = 2


def _earlier_runs(models: Path) -> None:
    """What ``make run`` (a sentiment version) and an earlier ``make eval`` (a served
    version) leave under the models root; untrained copies of the packaged MiniLM."""
    from model.scorer import TextEncoder
    from model.sentiment import SentimentHead, save_sentiment

    base = default_model_dir()
    shutil.copytree(base, models / "v-earlier")
    write_card(
        models / "v-earlier",
        {"version": "v-earlier", "fusion": {"text": 1.0, "cooc": 0.0, "cooc_long": 0.0, "pop": 0.0}},
    )
    write_latest(models, "v-earlier")
    encoder = TextEncoder(base, max_length=64)
    card = {"kind": "sentiment", "version": "sentiment-earlier", "dim": encoder.dim, "max_length": 64}
    save_sentiment(encoder, SentimentHead(encoder.dim), models / "sentiment" / "sentiment-earlier", card)
    write_latest(models / "sentiment", "sentiment-earlier")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("eval")
    models = root / "data" / "models"  # where make run looks, for a data dir of root/data
    models.mkdir(parents=True)
    _earlier_runs(models)
    report_dir = root / "report"
    command = [
        *(sys.executable, "-m", "instructrec", "eval"),
        *("--users", str(USERS), "--protocols", ",".join((*PROTOCOLS, "intention-en"))),
        *("--sasrec-epochs", "1", "--train-steps", str(TRAIN_STEPS), "--train-device", "cpu"),
        *("--calibration-users", "8", "--intention-users", "1", "--sentiment-epochs", "1"),
        *("--out", str(report_dir), "--models-root", str(models)),
        *("--peers", "Pop,BPR", "--peer-seeds", "2", "--peer-max-epochs", "1", "--peers-dir", str(root / "peers")),
    ]
    # One torch thread for the text models: the batch-invariant encoder runs one text per
    # forward pass on CPU, and two threads per tiny pass were 13x slower on a busy 2-core
    # machine (5 s against 69 s for 200 item texts).
    env = {**os.environ, "INSTRUCTREC_TORCH_THREADS": "1", "INSTRUCTREC_STATE_DIR": str(root / "state")}
    started = time.monotonic()
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=840, env=env)
    seconds = time.monotonic() - started
    print(f"instructrec eval, reduced: {seconds:.0f} s")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {"stdout": proc.stdout, "report_dir": report_dir, "models": models, "root": root, "peers": root / "peers"}


def _eval_line(run: dict[str, Any]) -> list[dict[str, Any]]:
    last = run["stdout"].strip().splitlines()[-1]
    assert last.startswith("eval: "), last
    rows: list[dict[str, Any]] = orjson.loads(last.removeprefix("eval: "))["rows"]
    return rows


def test_the_eval_line_carries_every_kind_of_row(run):
    rows = _eval_line(run)
    ranking = [(p, m) for p in PROTOCOLS for m in RANKING] + [(p, m) for m in FOLLOWERS for p in INTENTION]
    assert [(r["protocol"], r["method"]) for r in rows] == [*ranking, *(("finance-headlines", m) for m in SENTIMENT)]
    assert all(r["users"] == USERS for r in rows[: len(ranking)])  # every sampled item has a genre
    for r in rows[: len(ranking)]:
        assert all(0.0 <= r[k] <= 1.0 for k in ("hr@1", "hr@5", "hr@10", "ndcg@5", "ndcg@10", "mrr")), r
        assert r["ours"] is (r["method"] == OURS)
        seeds = {"recbole-pop": 1, "recbole-bpr": 2}.get(r["method"], 1)
        assert r["seeds"] == seeds, r
        assert (r["ndcg@10_std"] is None) is (not r["method"].startswith("recbole-")), r
    for r in rows[len(ranking) :]:
        assert 0.0 <= r["accuracy"] <= 1.0 and 0.0 <= r["macro_f1"] <= 1.0 and "ndcg@10" not in r, r
        assert r["ours"] is (r["method"] == "sentiment")
    # 90 held-out headlines over three labels: the zero-shot baseline does better than chance.
    assert rows[-3]["accuracy"] > 0.4


def test_the_report_has_every_row_and_names_its_plot(run):
    text = (run["report_dir"] / "report.md").read_text()
    for protocol in PROTOCOLS:
        for method in RANKING:
            (line,) = [x for x in text.splitlines() if x.startswith(f"| {protocol} | {method}")]
            cells = [c.strip().replace(".", "").split(" ± ") for c in line.split("|")]
            assert len([c for c in cells if all(part.isdigit() for part in c)]) == 7, line  # users + 6
            assert (" ± " in line) is (method == "recbole-bpr"), line  # NDCG@10 over its two seeds
    for method in SENTIMENT:
        (line,) = [x for x in text.splitlines() if x.startswith(f"| {method} |") or x.startswith(f"| {method} (ours)")]
        assert line.count("[") == 4, line  # the confusion matrix, 3 x 3
    assert "90 held-out headlines" in text
    assert f"fine-tuned {TRAIN_STEPS} steps" in text and "calibrated on the validation items of 8 users" in text
    assert "It is the version `make run` serves" in text and "validation items): NDCG@10 " in text
    for method in (OURS, "minilm-zero-shot"):
        assert sum(x.startswith(f"| {method} | ") for x in text.splitlines()) == 5  # the intention probe's genres
    assert "](eval.png)" in text
    # 1+9-hard: BPR, cut short, is not the retriever; Pop (closed form) is
    assert "`1+9-hard`: each user's nine negatives are the items recbole-pop (seed 0) ranks highest" in text
    # the peers: BPR stopped by the 1-epoch cap, so not converged; Pop is closed form
    (pop,) = [x for x in text.splitlines() if x.startswith("| recbole-pop | 1 | [1] | True |")]
    (bpr,) = [x for x in text.splitlines() if x.startswith("| recbole-bpr | 2 | [1, 1] | False |")]
    assert "| False |" in pop and bpr.count(" / ") == 2, (pop, bpr)  # not from the cache; two seeds' own figures
    png = (run["report_dir"] / "eval.png").read_bytes()
    assert png[:8] == PNG and len(png) > 10_000


def test_a_rerun_reads_the_peers_from_the_cache_with_the_split_checked_again(run):
    from instructrec.peers import DEFAULT_PEERS, PeerSpec, run_peer
    from model.data import load_ml100k
    from model.evaluation import leave_one_out

    dataset = load_ml100k(Settings().data_dir)
    splits = leave_one_out(dataset)
    bpr = next(p for p in DEFAULT_PEERS if p.model == "BPR")
    again = run_peer(PeerSpec(bpr.model, 1, bpr.stopping_step, bpr.params), 1, dataset, splits, run["peers"])
    assert again.cached and again.seconds < 10 and again.epochs == 1 and not again.converged
    assert again.scores.shape == (len(splits), len(again.result["items"]))


def test_make_run_then_serves_the_new_versions(run):
    """The order ``make eval`` then ``make run``: LATEST names the new, complete version
    (the Makefile's TRAINED), its card carries the calibrated weights and this run's rows,
    and the pool's and the alerts' loaders take both models; earlier versions stay."""
    from model.device import choose_device
    from model.scorer import load_scorer
    from model.sentiment import LABELS, load_sentiment

    models: Path = run["models"]
    choice = resolve_model(models, "unused")
    assert choice.version != "v-earlier" and (models / "v-earlier" / "config.json").exists()
    card = read_card(choice.path)
    assert card is not None and card["fusion_calibrated"] and card["calibration_users"] == 8
    # its validation figures, beside co-occurrence's, on the same 8 users' validation items
    assert card["validation"]["version"]["users"] == card["validation"]["cooccurrence"]["users"] == 8
    assert [(r["protocol"], r["method"]) for r in card["eval"]["rows"]] == [
        (r["protocol"], r["method"]) for r in _eval_line(run)
    ]
    for name in ("report.md", "eval.png", "loss.png", "item_encoder/config.json"):
        assert (choice.path / name).stat().st_size > 0, name
    scorer = load_scorer(choice.path, choose_device("cpu"))
    # the catalog's vectors wait where a pool serving it looks (one per distinct item text)
    from model.data import load_ml100k
    from model.train import item_texts

    texts = set(item_texts(load_ml100k(Settings().data_dir)).values())
    assert scorer.attach_store(run["root"] / "state" / "item-embeddings", choice.version) == len(texts) > 1600
    (scored,) = scorer.score_many(["The user recently watched Star Wars."], [[("50", "Star Wars (1977)")]], [[]])
    assert len(scored.scores) == 1

    from instructrec.runner import sentiment_model

    served = sentiment_model(Settings(data_dir=run["root"] / "data"))
    assert served is not None and served.parent == models / "sentiment" and served.name != "sentiment-earlier"
    assert json.loads((served / "sentiment.json").read_text())["training"]["history"][-1]["epoch"] == 1
    ((label, score, _),) = load_sentiment(served).predict(["Acme shares plunge after profit warning"])
    assert label in LABELS and -1.0 <= score <= 1.0


def test_make_run_finds_the_version_eval_trained_and_trains_no_other(run):
    """`make run`'s ``instructrec train`` with the recipe the eval used: LATEST already
    names a calibrated version of it, so nothing is trained and LATEST stays."""
    models: Path = run["models"]
    before = (models / "LATEST").read_text()
    command = [
        *(sys.executable, "-m", "instructrec", "train", "--out", str(models)),
        *("--steps", str(TRAIN_STEPS), "--device", "cpu", "--calibration-users", "8"),
    ]
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith(f"model present: {models / before.strip()}"), proc.stdout
    assert (models / "LATEST").read_text() == before
