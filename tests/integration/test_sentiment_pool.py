"""The scoring pool scores headlines too (issue 6): with a sentiment model configured it
consumes ``sentiment-requests`` beside ``score-requests``, in the same batches, and
publishes ``sentiment-results`` keyed by ticker; bad requests are dead-lettered.

Real parts: the broker, the pool process, MiniLM fine-tuned for a few epochs (tests/integration/conftest.py) (the
model's quality is measured in tests/model/test_sentiment_model.py, not here)."""

from __future__ import annotations

import time

import orjson
import pytest

from instructrec.chaos import read_topic
from instructrec.kafka import create_topics, make_producer
from instructrec.runner import Processes
from schemas.records import Candidate, DeadLetter, ScoreRequest, SentimentRequest, SentimentResult
from schemas.topics import DEAD_LETTERS, SCORE_REQUESTS, SENTIMENT_REQUESTS, SENTIMENT_RESULTS
from tests.integration.conftest import env_for, make_settings, tail_logs

pytestmark = pytest.mark.integration


def _headline(i: int, ticker: str) -> SentimentRequest:
    return SentimentRequest(
        request_id=f"n{i}:{ticker}",
        news_id=f"n{i}",
        ticker=ticker,
        text=f"{ticker} shares move after quarterly report number {i}",
        news_ts=1_700_000_000.0 + i,
        request_ts=time.time(),
    )


def test_the_pool_scores_headlines_beside_score_requests(broker, tmp_path, sentiment_model_dir):
    settings = make_settings(broker, tmp_path, partitions=2)
    create_topics(settings)
    procs = Processes(
        {**env_for(settings), "INSTRUCTREC_SENTIMENT_MODEL_DIR": str(sentiment_model_dir)}, tmp_path / "logs"
    )
    headlines = [_headline(i, ticker) for i, ticker in enumerate(["NVE", "VLR", "BRK.B", "QNTL"] * 5)]
    bad = {
        b"{not json": "invalid-json",
        orjson.dumps({"request_id": "x", "news_id": "x", "text": "no ticker", "news_ts": 1, "request_ts": 1}): (
            "invalid-record"
        ),
        SENTIMENT_REQUESTS.codec.encode(_headline(99, "NVE")).replace(b'"NVE"', b'"nve"'): "invalid-record",
    }
    score_request = ScoreRequest(
        request_id="rec-1",
        user_id="u1",
        k=2,
        instruction="Recommend a film",
        template="t",
        task="recommend",
        cold_start=True,
        history=[],
        trigger_ts=time.time(),
        request_ts=time.time(),
        candidates=[Candidate(item_id=str(n), title=f"Film {n}", text=f"Film {n}", source="popular") for n in range(3)],
    )
    try:
        procs.start("scoring-pool", "pool")
        producer = make_producer(settings)
        for h in headlines:
            producer.produce(
                settings.topics.sentiment_requests,
                key=SENTIMENT_REQUESTS.key_of(h),
                value=SENTIMENT_REQUESTS.codec.encode(h),
            )
        for value in bad:
            producer.produce(settings.topics.sentiment_requests, key=b"NVE", value=value)
        producer.produce(settings.topics.score_requests, key=b"u1", value=SCORE_REQUESTS.codec.encode(score_request))
        assert producer.flush(30) == 0
        deadline = time.monotonic() + 120
        results: dict[str, SentimentResult] = {}
        while len(results) < len(headlines) and time.monotonic() < deadline:
            for msgs in read_topic(settings, settings.topics.sentiment_results).values():
                for msg in msgs:
                    r = SENTIMENT_RESULTS.codec.decode(msg.value())
                    assert msg.key() == r.ticker.encode()  # keyed by ticker
                    results[r.request_id] = r
            time.sleep(1)
        assert set(results) == {h.request_id for h in headlines}, tail_logs(procs)
        letters: list[DeadLetter] = []
        while len(letters) < len(bad) and time.monotonic() < deadline:
            letters = [
                DEAD_LETTERS.codec.decode(m.value())
                for msgs in read_topic(settings, settings.topics.dead_letters).values()
                for m in msgs
            ]
            time.sleep(1)
        recommendations = read_topic(settings, settings.topics.recommendations)
    finally:
        codes = procs.stop()
    assert codes == {"scoring-pool": 0}, tail_logs(procs)
    for h in headlines:
        r = results[h.request_id]
        assert (r.news_id, r.ticker, r.news_ts, r.text) == (h.news_id, h.ticker, h.news_ts, h.text)
        assert r.label in ("negative", "neutral", "positive") and -1 <= r.score <= 1
        assert abs(sum(r.probabilities) - 1) < 1e-4 and r.model.version == "v-test"
    # Each bad request is dead-lettered once, with its bytes, origin and reason.
    import base64

    by_value = {base64.b64decode(d.value_b64): d for d in letters}
    assert {v: by_value[v].reason for v in bad} == bad
    assert all(by_value[v].source_topic == settings.topics.sentiment_requests for v in bad)
    # The score request shared the pool: answered as usual.
    (rec,) = [orjson.loads(m.value()) for msgs in recommendations.values() for m in msgs]
    assert rec["request_id"] == "rec-1" and len(rec["items"]) == 2
    log = (tmp_path / "logs" / "scoring-pool.log").read_text()
    assert "sentiment model loaded" in log and "sentiment-requests" in log
