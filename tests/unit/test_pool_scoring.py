"""The pool's batch function with a fake scorer: no broker, no model."""

import time
from collections import deque
from concurrent.futures import Future

import pytest
from confluent_kafka import KafkaError, KafkaException

from instructrec.settings import Settings
from model.scorer import ScoredRequest
from schemas.records import Candidate, ModelInfo, Recommendation, ScoreRequest, SentimentRequest, SentimentResult
from workers.pool import Rejected, ScoringWorker

MODEL = ModelInfo(name="fake", version="v0")


class FakeScorer:
    """Scores candidates by position; raises CUDA-style OOM above ``limit`` requests, and
    always for instructions containing 'huge'."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.calls: list[int] = []
        self.items_computed = 0

    def score_many(self, instructions, candidates, histories):
        self.calls.append(len(instructions))
        if len(instructions) > self.limit or any("huge" in i for i in instructions):
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [ScoredRequest([1.0 / (n + 1) for n in range(len(c))], [None] * len(c)) for c in candidates]


def request(i: int, instruction: str = "ins") -> ScoreRequest:
    return ScoreRequest(
        request_id=f"r{i}",
        user_id="u",
        k=2,
        instruction=instruction,
        template="t",
        task="recommend",
        cold_start=True,
        history=[],
        trigger_ts=1.0,
        request_ts=1.0,
        candidates=[Candidate(item_id=str(n), title=f"T{n}", text=f"T{n}", source="popular") for n in range(3)],
    )


@pytest.fixture
def worker():
    return ScoringWorker(Settings(bootstrap_servers="unused:9092"))


def test_out_of_memory_splits_the_batch_until_it_fits(worker):
    worker.active = (FakeScorer(limit=2), MODEL, None)
    out = worker.score_batch([request(i) for i in range(8)])
    assert [o.request_id for o in out] == [f"r{i}" for i in range(8)]
    assert all(isinstance(o, Recommendation) and [i.item_id for i in o.items] == ["0", "1"] for o in out)
    assert worker.active[0].calls == [8, 4, 2, 2, 4, 2, 2]


def test_a_request_that_fails_alone_is_rejected_by_itself(worker):
    worker.active = (FakeScorer(limit=8), MODEL, None)
    out = worker.score_batch([request(0), request(1, "huge"), request(2)])
    assert isinstance(out[1], Rejected) and out[1].reason == "out-of-memory"
    assert isinstance(out[0], Recommendation) and isinstance(out[2], Recommendation)


def test_a_poison_request_is_isolated_and_rejected_alone_the_rest_are_scored(worker):
    class Poisoned(FakeScorer):
        def score_many(self, instructions, candidates, histories):
            if any("poison" in i for i in instructions):
                raise ValueError("tokenizer choked")
            return super().score_many(instructions, candidates, histories)

    worker.active = (Poisoned(limit=8), MODEL, None)
    out = worker.score_batch([request(i, "poison" if i == 5 else "ins") for i in range(8)])
    assert [o.request_id for o in out if isinstance(o, Recommendation)] == [f"r{i}" for i in range(8) if i != 5]
    assert isinstance(out[5], Rejected) and out[5].reason == "scoring-failed" and "tokenizer choked" in out[5].detail


def test_a_broken_model_rejects_every_request_explicitly(worker):
    class Broken(FakeScorer):
        def score_many(self, *args):
            raise ValueError("bad weights")

    worker.active = (Broken(limit=8), MODEL, None)
    out = worker.score_batch([request(0), request(1), request(2)])
    assert [o.reason for o in out] == ["scoring-failed"] * 3  # dead letters, never silence


def test_a_trained_model_fuses_its_cosine_with_the_candidates_collaborative_features(worker):
    import math

    fusion = {"text": 10.0, "cooc": 1.0, "cooc_long": 0.25, "pop": 0.5}
    req = request(0).model_copy(
        update={
            "candidates": [
                Candidate(item_id="0", title="T0", text="T0", source="popular", cooc=0.0, popularity=1.0),
                Candidate(
                    item_id="1", title="T1", text="T1", source="cooccurrence", cooc=200.0, cooc_long=7.0, popularity=3.0
                ),
                Candidate(item_id="2", title="T2", text="T2", source="cooccurrence", cooc=2.0, popularity=50.0),
            ]
        }
    )
    worker.active = (FakeScorer(limit=8), ModelInfo(name="fake", version="v1", fusion=fusion), None)
    (out,) = worker.score_batch([req])
    expected = {
        str(n): 10.0 / (n + 1) + math.log1p(c.cooc) + 0.25 * math.log1p(c.cooc_long) + 0.5 * math.log1p(c.popularity)
        for n, c in enumerate(req.candidates)
    }
    assert out.model.fusion == fusion
    assert out.items[0].item_id == "1"  # its co-occurrence outweighs candidate 0's higher cosine
    assert [i.item_id for i in out.items] == sorted(expected, key=lambda i: -expected[i])[:2]
    assert [i.score for i in out.items] == pytest.approx(sorted(expected.values(), reverse=True)[:2])
    # Without fusion the cosine alone ranks: candidate 0 first.
    worker.active = (FakeScorer(limit=8), MODEL, None)
    (plain,) = worker.score_batch([req])
    assert plain.items[0].item_id == "0"


class FakeSentiment:
    """'loss' reads negative, 'beat' positive, else neutral; 'poison' fails the batch."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def predict(self, texts):
        self.calls.append(len(texts))
        if any("poison" in t for t in texts):
            raise ValueError("cannot read this")
        out = []
        for t in texts:
            label = "negative" if "loss" in t else "positive" if "beat" in t else "neutral"
            probs = {"negative": [0.8, 0.1, 0.1], "positive": [0.1, 0.1, 0.8], "neutral": [0.1, 0.8, 0.1]}[label]
            out.append((label, probs[2] - probs[0], probs))
        return out


def headline(i: int, text: str) -> SentimentRequest:
    return SentimentRequest(
        request_id=f"n{i}:ABC", news_id=f"n{i}", ticker="ABC", text=text, news_ts=1.0, request_ts=2.0
    )


def test_headlines_and_score_requests_share_a_batch_and_keep_their_order(worker):
    worker.active = (FakeScorer(limit=8), MODEL, None)
    worker.sentiment = FakeSentiment()
    worker.sentiment_info = ModelInfo(name="fake-sentiment", version="s0")
    batch = [request(0), headline(1, "Q3 loss widens"), request(1), headline(2, "ABC beats estimates")]
    out = worker.score_batch(batch)
    assert [type(o) for o in out] == [Recommendation, SentimentResult, Recommendation, SentimentResult]
    assert [o.request_id for o in out] == ["r0", "n1:ABC", "r1", "n2:ABC"]
    assert (out[1].label, out[3].label) == ("negative", "positive")
    assert out[1].score == pytest.approx(-0.7) and out[1].model.version == "s0"
    assert worker.active[0].calls == [2] and worker.sentiment.calls == [2]  # one pass per kind


def test_a_headline_the_model_cannot_read_is_rejected_alone(worker):
    worker.sentiment = FakeSentiment()
    worker.sentiment_info = ModelInfo(name="fake-sentiment", version="s0")
    out = worker.score_batch([headline(i, "poison" if i == 2 else "plain news") for i in range(4)])
    assert [type(o) for o in out] == [SentimentResult, SentimentResult, Rejected, SentimentResult]
    assert out[2].reason == "scoring-failed"


class FakeMessage:
    def __init__(self, offset: int, topic: str = "req", partition: int = 0) -> None:
        self._offset, self._topic, self._partition = offset, topic, partition

    def topic(self):
        return self._topic

    def partition(self):
        return self._partition

    def offset(self):
        return self._offset

    def key(self):
        return b"u"

    def value(self):
        return b"{}"

    def timestamp(self):
        return (0, 0)

    def error(self):
        return None


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def produce(self, topic, key=None, value=None, on_delivery=None):
        self.sent.append((topic, value))

    def flush(self, timeout=None):
        return 0


class RefusingConsumer:
    """A consumer whose group has moved on: every commit is refused."""

    def __init__(self, code: int) -> None:
        self.code = code
        self.commits: list[list] = []

    def commit(self, offsets=None, asynchronous=True):
        self.commits.append(offsets)
        if self.code:
            raise KafkaException(KafkaError(self.code, "Commit failed: Broker: Unknown member"))


@pytest.mark.parametrize(
    "code", [KafkaError.UNKNOWN_MEMBER_ID, KafkaError.ILLEGAL_GENERATION, KafkaError.REBALANCE_IN_PROGRESS]
)
def test_a_commit_the_group_refuses_is_counted_not_raised(worker, code):
    worker.consumer, worker.producer = RefusingConsumer(code), FakeProducer()
    worker._commit_after_ack({("req", 0): 5})  # the requests are scored again by the next owner
    assert worker.commits_refused == 1 and len(worker.consumer.commits) == 1


def test_settling_publishes_the_finished_prefix_and_gives_back_the_rest_uncommitted(worker):
    """At SIGTERM or revocation: what is scored is published and committed, the request
    being scored gets until the deadline, the ones not started are cancelled; nothing
    after the first unfinished one is committed."""
    worker.active = (FakeScorer(limit=8), MODEL, None)
    worker.consumer, worker.producer = RefusingConsumer(0), FakeProducer()
    [done] = worker.score_batch([request(0)])
    finished: Future = Future()
    finished.set_result(done)
    running: Future = Future()
    running.set_running_or_notify_cancel()  # the batch in progress: cannot be cancelled
    queued: Future = Future()
    worker.inflight = deque([(FakeMessage(10), finished), (FakeMessage(11), running), (FakeMessage(12), queued)])
    started = time.monotonic()
    worker._settle(time.monotonic() + 0.3, poll=False)
    assert 0.3 <= time.monotonic() - started < 2
    assert queued.cancelled() and not worker.inflight
    assert len(worker.producer.sent) == 1
    [[committed]] = worker.consumer.commits
    assert (committed.topic, committed.partition, committed.offset) == ("req", 0, 11)
