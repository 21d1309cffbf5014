"""Financial alerts end to end through the broker (streams/alerts.py): news -> the pool's
sentiment scoring -> per-ticker windows -> surge -> alert -> followers.

A scripted replay in event time (60 s windows): six calm windows for every ticker, then a
planted negative surge on AAA (and on DDD and EEE, which compete for one user). Checked:
exactly one alert per surge window and ticker, none for the calm tickers (BBB, CCC); the
followers of AAA get it and nobody else does; a user over budget gets the most severe of
the competing alerts; a headline later than one window is dead-lettered ``too-late``, one
a little out of order is counted in its own window without firing anything.

Real parts: the broker, the pool and alerts processes, MiniLM fine-tuned for a few epochs
(tests/integration/conftest.py). The headlines are picked by what that model says (negative with high confidence,
or clearly not negative), so this test checks the pipeline, not the model's accuracy
(tests/model/test_sentiment_model.py does that)."""

from __future__ import annotations

import base64
import signal
import time
import urllib.request

import orjson
import pytest

from instructrec.broker import free_port
from instructrec.chaos import read_records, read_topic
from instructrec.kafka import create_topics, make_producer
from instructrec.runner import Processes
from instructrec.watchdog import RESTART_EXIT_CODE
from model.sentiment import (
    load_headlines,
    load_sentiment,
)
from schemas.records import Follow, NewsItem
from schemas.topics import ALERTS, DEAD_LETTERS, FOLLOWS, NEWS, USER_ALERTS
from tests.integration.conftest import env_for, make_settings, tail_logs

pytestmark = pytest.mark.integration

W = 60.0
T0 = 1_700_000_000.0 - 1_700_000_000.0 % W  # a window boundary


@pytest.fixture(scope="module")
def model_and_headlines(sentiment_model_dir):
    out = sentiment_model_dir
    model = load_sentiment(out)
    rows = load_headlines()
    predicted = model.predict([r.text for r in rows])
    negative = [r.text for r, (label, _, p) in zip(rows, predicted, strict=True) if label == "negative" and p[0] > 0.9]
    calm = [r.text for r, (label, _, p) in zip(rows, predicted, strict=True) if label != "negative" and p[0] < 0.05]
    assert len(negative) >= 60 and len(calm) >= 150, (len(negative), len(calm))
    return out, negative, calm


def _alerts_system(broker, tmp_path, model_dir, **alert_settings) -> tuple:
    """Settings and environment for a pool and an alerts worker on fresh topics: 60 s
    windows hopping by 30 s, at least 5 headlines, plus ``alert_settings``
    (``INSTRUCTREC_ALERT_<NAME>``)."""
    settings = make_settings(broker, tmp_path, partitions=2, alerts_web_port=free_port())
    create_topics(settings)
    values = {"window_s": W, "hop_s": W / 2, "min_count": 5, **alert_settings}
    env = {
        **env_for(settings),
        "INSTRUCTREC_SENTIMENT_MODEL_DIR": str(model_dir),
        "INSTRUCTREC_ALERTS_WEB_PORT": str(settings.alerts_web_port),
        **{f"INSTRUCTREC_ALERT_{name.upper()}": str(value) for name, value in values.items()},
    }
    return settings, env


def test_a_planted_surge_alerts_its_followers_once(broker, tmp_path, model_and_headlines):
    model_dir, negative, calm = model_and_headlines
    settings, env = _alerts_system(broker, tmp_path, model_dir, baseline_windows=6, user_max=1, gather_ms=5000)
    neg, ok = iter(negative * 3), iter(calm * 3)
    news: list[NewsItem] = []

    def headline(ticker: str, ts: float, bad: bool) -> NewsItem:
        item = NewsItem(
            news_id=f"{ticker}-{len(news)}", ts=ts, tickers=[ticker], headline=next(neg) if bad else next(ok)
        )
        news.append(item)
        return item

    # Six calm windows for every ticker: 6 headlines each, the 4th negative (share 1/6).
    for w in range(6):
        for ticker in ("AAA", "BBB", "CCC", "DDD", "EEE"):
            for j in range(6):
                headline(ticker, T0 + w * W + 2 + j * 8, j == 3)
    surge_start = T0 + 6 * W
    for j in range(12):  # AAA: 10 of 12 negative, then 4 more negatives in the same window
        headline("AAA", surge_start + 1 + j * 3, j not in (0, 6))
    for j in range(4):
        headline("AAA", surge_start + 40 + j, True)
    for j in range(10):
        headline("DDD", surge_start + 1 + j * 3, True)  # 10 of 10: the more severe
        headline("EEE", surge_start + 1 + j * 3, j >= 3)  # 7 of 10
    for ticker in ("BBB", "CCC"):
        for j in range(6):
            headline(ticker, surge_start + 2 + j * 8, j == 3)
    late = headline("BBB", T0 + 2 * W + 5, True)  # 4 windows behind BBB's newest: too late
    out_of_order = headline("AAA", surge_start - 5, True)  # 50 s behind AAA's newest: counted

    follows = [
        Follow(user_id=user, ticker=ticker, ts=T0)
        for user, ticker in [
            ("u1", "AAA"),
            ("u2", "BBB"),
            ("u3", "AAA"),
            ("u3", "BBB"),
            ("u4", "CCC"),
            ("u5", "DDD"),
            ("u5", "EEE"),
        ]
    ]
    bad_news = {
        b"<html>not news</html>": "invalid-json",
        b'\xff\xfe{"news_id": "x"}': "invalid-json",  # not UTF-8
        b'{"news_id": "x", "ts": NaN, "tickers": ["AAA"], "headline": "h"}': "invalid-json",
        b'["AAA", "fell"]': "not-an-object",
        b'{"news_id": "x", "ts": 1, "tickers": ["aaa"], "headline": "h"}': "invalid-record",  # lower case
        b'{"news_id": "x", "ts": 1, "tickers": [], "headline": "h"}': "invalid-record",
        b'{"news_id": "x", "ts": "yesterday", "tickers": ["AAA"], "headline": "h"}': "invalid-record",
        orjson.dumps({"news_id": "x", "ts": 1, "tickers": ["AAA"], "headline": "h" * 600}): "invalid-record",
        orjson.dumps({"news_id": "x", "ts": 1, "tickers": ["AAA"] * 21, "headline": "h"}): "invalid-record",
    }
    bad_follows = {
        b"follow AAA": "invalid-json",
        b'{"user_id": "u9", "ticker": "AAA", "action": "subscribe", "ts": 1}': "invalid-record",
        b'{"user_id": "u9", "ts": 1}': "invalid-record",
    }
    procs = Processes(env, tmp_path / "logs")
    try:
        procs.start("scoring-pool", "pool")
        procs.start("alerts-worker", "alerts-worker")
        producer = make_producer(settings)
        for f in follows:
            producer.produce(settings.topics.follows, key=FOLLOWS.key_of(f), value=FOLLOWS.codec.encode(f))
        producer.flush(30)
        for item in news:
            producer.produce(settings.topics.news, key=NEWS.key_of(item), value=NEWS.codec.encode(item))
        for value in bad_news:
            producer.produce(settings.topics.news, key=b"AAA", value=value)
        for value in bad_follows:
            producer.produce(settings.topics.follows, key=b"AAA", value=value)
        assert producer.flush(30) == 0
        deadline = time.monotonic() + 180
        delivered: list[dict] = []
        while time.monotonic() < deadline:
            delivered = [
                orjson.loads(m.value()) for ms in read_topic(settings, settings.topics.user_alerts).values() for m in ms
            ]
            if {d["user_id"] for d in delivered} >= {"u1", "u3", "u5"}:
                break
            time.sleep(2)
        time.sleep(8)  # anything that should not come has had time to
        alerts = read_records(settings, ALERTS)
        delivered = read_records(settings, USER_ALERTS)
        letters = read_records(settings, DEAD_LETTERS)
        with urllib.request.urlopen(f"http://127.0.0.1:{settings.alerts_web_port}/metrics/", timeout=10) as reply:
            exposition = reply.read().decode()
    finally:
        codes = procs.stop()
    assert codes == {"scoring-pool": 0, "alerts-worker": 0}, tail_logs(procs)
    logs = tail_logs(procs, 60)
    # The alerts worker's /metrics/ counts the same.
    assert "instructrec_alerts_alerts_total 3.0" in exposition, exposition
    assert 'instructrec_alerts_dead_letters_total{reason="too-late"} 1.0' in exposition, exposition
    assert f"instructrec_alerts_news_total {float(len(news))}" in exposition, exposition  # the bad ones apart
    # Exactly one alert per surge window and ticker; none for the calm tickers.
    assert sorted(a.ticker for a in alerts) == ["AAA", "DDD", "EEE"], (alerts, logs)
    by_ticker = {a.ticker: a for a in alerts}
    aaa = by_ticker["AAA"]
    assert aaa.alert_id == f"AAA:{int(surge_start)}" and aaa.window.start == surge_start
    assert aaa.negative_share >= 0.5 and aaa.count >= 5 and aaa.z >= 3.0
    assert aaa.headlines and all(h.label == "negative" for h in aaa.headlines)
    assert aaa.trend and all(t["count"] > 0 for t in aaa.trend)
    assert by_ticker["DDD"].z > by_ticker["EEE"].z
    # Followers get it, non-followers do not; u5 (budget 1) gets the more severe of two.
    got = sorted((d.user_id, d.alert_id, d.rank) for d in delivered)
    assert got == [
        ("u1", f"AAA:{int(surge_start)}", 1),
        ("u3", f"AAA:{int(surge_start)}", 1),
        ("u5", f"DDD:{int(surge_start)}", 1),
    ], (got, logs)
    # The late headline is dead-lettered with its bytes and reason; the out-of-order one is not.
    too_late = [d for d in letters if d.reason == "too-late"]
    assert len(too_late) == 1, letters
    assert orjson.loads(base64.b64decode(too_late[0].value_b64))["news_id"] == late.news_id
    assert too_late[0].source_topic == settings.topics.sentiment_results
    assert all(out_of_order.news_id.encode() not in base64.b64decode(d.value_b64) for d in letters)
    # Bad news and follows are dead-lettered with their bytes, where they came from and why.
    for topic, bad in ((settings.topics.news, bad_news), (settings.topics.follows, bad_follows)):
        got_back = {base64.b64decode(d.value_b64): d for d in letters if d.source_topic == topic}
        assert {v: got_back[v].reason for v in bad if v in got_back} == bad, (topic, letters)
    log = (tmp_path / "logs" / "alerts-worker.log").read_text()
    assert "alerts suppressed: user over budget" in log


def _ticker_state(settings, ticker: str) -> dict:
    """The newest value of ``ticker`` in the alerts worker's ticker-state changelog."""
    topic = f"{settings.topic_prefix}{settings.alerts_app_id}-ticker-state-changelog"
    state: dict = {}
    for msgs in read_topic(settings, topic).values():
        for m in msgs:
            if m.key() == orjson.dumps(ticker) and m.value() is not None:
                state = orjson.loads(m.value())
    return state


def _wait_state(settings, ticker: str, done, what: str, procs, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = _ticker_state(settings, ticker)
        if done(state):
            return state
        time.sleep(1.0)
    raise AssertionError(f"{what} not in the changelog after {timeout:.0f}s\n{tail_logs(procs)}")


def test_windows_and_fired_alerts_survive_restarts(broker, tmp_path, model_and_headlines):
    """The surge window is half counted before a SIGTERM restart and fires after it only
    because its first headlines were recovered (the count and the baseline say so); after
    a SIGKILL the recovered state keeps it from firing twice."""
    model_dir, negative, calm = model_and_headlines
    settings, env = _alerts_system(broker, tmp_path, model_dir, baseline_windows=3)
    neg, ok = iter(negative), iter(calm)
    count = iter(range(10**6))

    def headline(ts: float, bad: bool) -> NewsItem:
        return NewsItem(news_id=f"AAA-{next(count)}", ts=ts, tickers=["AAA"], headline=next(neg) if bad else next(ok))

    surge_start = T0 + 3 * W
    before = [headline(T0 + w * W + 2 + j * 8, j == 3) for w in range(3) for j in range(6)]  # share 1/6
    before += [headline(surge_start + 1 + j, True) for j in range(4)]  # 4 < min count: no alert yet
    after = [headline(surge_start + 10 + j, True) for j in range(2)]  # the 5th fires it
    last = headline(surge_start + 20, True)
    procs = Processes(env, tmp_path / "logs")
    producer = make_producer(settings)

    def send(items) -> None:
        for item in items:
            producer.produce(settings.topics.news, key=NEWS.key_of(item), value=NEWS.codec.encode(item))
        assert producer.flush(30) == 0

    def alerts() -> list:
        return read_records(settings, ALERTS)

    try:
        procs.start("scoring-pool", "pool")
        procs.start("alerts-worker", "alerts-worker")
        follow = Follow(user_id="u1", ticker="AAA", ts=T0)
        producer.produce(settings.topics.follows, key=FOLLOWS.key_of(follow), value=FOLLOWS.codec.encode(follow))
        send(before)
        _wait_state(settings, "AAA", lambda s: len(s.get("seen", {})) == len(before), "the first headlines", procs)
        procs.procs["alerts-worker"].send_signal(signal.SIGTERM)
        assert procs.procs["alerts-worker"].wait(30) == 0, tail_logs(procs)
        assert alerts() == []
        procs.start("alerts-worker", "alerts-worker")
        send(after)
        state = _wait_state(settings, "AAA", lambda s: s.get("alerted"), "the alert", procs)
        assert state["alerted"] == [surge_start]
        procs.procs["alerts-worker"].kill()  # SIGKILL: no goodbye
        procs.procs["alerts-worker"].wait()
        procs.start("alerts-worker", "alerts-worker")
        send([last])
        _wait_state(settings, "AAA", lambda s: f"{last.news_id}:AAA" in s.get("seen", {}), "the last headline", procs)
        time.sleep(5)  # an alert it would raise comes right after the state write
        fired = alerts()
        delivered = read_records(settings, USER_ALERTS)
    finally:
        codes = procs.stop()
    assert codes == {"scoring-pool": 0, "alerts-worker": 0}, tail_logs(procs)
    assert [a.alert_id for a in fired] == [f"AAA:{int(surge_start)}"], (fired, tail_logs(procs, 60))
    # It fired at the 5th headline of its window: 4 counted before the restart + the first
    # after it (without them the window would hold 2 and never fire); the baseline is the
    # recovered 1/6, not the floor.
    assert fired[0].count == 5 and fired[0].negative_share == 1.0, fired[0]
    assert fired[0].baseline_share == pytest.approx(1 / 6, abs=1e-3), fired[0]  # rounded to 4 places
    assert [(d.user_id, d.alert_id) for d in delivered] == [("u1", f"AAA:{int(surge_start)}")]
    log = (tmp_path / "logs" / "alerts-worker.log").read_text()
    assert log.count("alerts worker stopping") >= 2  # the SIGTERM and the final stop


def test_a_starved_alerts_worker_is_fetched_again_and_restarted(broker, tmp_path, model_and_headlines):
    """The stream.starve failpoint drops every sentiment result after the first three, the
    way a member left unfed by the broker looks from outside: the feed watchdog notices
    within its stall time, fetches the partition again, then has the worker restarted, and
    every headline is counted."""
    model_dir, _negative, calm = model_and_headlines
    settings, env = _alerts_system(broker, tmp_path, model_dir)
    procs = Processes({**env, "INSTRUCTREC_FEED_STALL_S": "3"}, tmp_path / "logs")
    producer = make_producer(settings)
    news = [NewsItem(news_id=f"BBB-{i}", ts=T0 + i, tickers=["BBB"], headline=calm[i]) for i in range(8)]
    try:
        procs.start("scoring-pool", "pool")
        procs.start("alerts-worker", "alerts-worker", env={"INSTRUCTREC_FAILPOINTS": "stream.starve:3"})
        for item in news:
            producer.produce(settings.topics.news, key=NEWS.key_of(item), value=NEWS.codec.encode(item))
        assert producer.flush(30) == 0
        state = _wait_state(settings, "BBB", lambda s: len(s.get("seen", {})) == len(news), "every headline", procs)
    finally:
        codes = procs.stop()
    assert codes == {"scoring-pool": 0, "alerts-worker": 0}, tail_logs(procs)
    assert sorted(state["seen"]) == sorted(f"{n.news_id}:BBB" for n in news)
    assert procs.restarts == {"alerts-worker": 1}, (procs.restarts, tail_logs(procs))
    log = (tmp_path / "logs" / "alerts-worker.log").read_text()
    assert "failpoint hit: starving from now on" in log
    assert "partition not fed: fetching it again" in log and "fresh_client_gets_it=True" in log
    assert "stopping to be restarted" in log and f"exit_code={RESTART_EXIT_CODE}" in log
