"""The financial alerts worker: news -> sentiment (scored by the pools) -> per-ticker
windows -> surge -> alert -> the ticker's followers, rate-limited and ranked per user.

Three Faust agents, one app (``<prefix>instructrec-alerts``):

- ``news``: each headline becomes one ``sentiment-requests`` record per ticker it names
  (keyed by ticker), scored by the scoring pools in their usual batches;
- ``tickers`` reads ``sentiment-results`` and ``follows``, both keyed by ticker, so a
  ticker's windows and its followers live in the same partition. A scored headline goes
  into Faust windowed tables by its *publication* time: tumbling windows (the surge
  rule's) and hopping ones (the trend in the evidence). The headline's tumbling window is
  judged against the ticker's trailing windows (streams/surge.py); a window fires at most
  once. The alert goes to ``alerts`` and, once per follower, to ``alert-deliveries``
  (keyed by user);
- ``deliveries`` gathers a user's alerts for ``alert_gather_ms``, ranks them by severity
  and delivers as many as the user's budget allows (``alert_user_max`` per
  ``alert_user_period_s``) to ``user-alerts``; the rest are suppressed and counted.

Late headlines: one published more than ``alert_lateness_s`` (default: one window)
before the newest headline of its ticker is dead-lettered ``too-late`` (its window may
already have been judged and expired); a headline within that bound is counted in its own
window, which may fire then. A headline scored twice (redelivery) is counted once.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import faust
from faust.types import Message
from prometheus_client import generate_latest

from instructrec.logs import get_logger
from instructrec.metrics import counters_registry
from instructrec.settings import Settings
from schemas.exceptions import DecodeError
from schemas.records import (
    Alert,
    AlertHeadline,
    ModelInfo,
    SentimentRequest,
    UserAlert,
    WindowInfo,
)
from schemas.topics import (
    ALERT_DELIVERIES,
    ALERTS,
    FOLLOWS,
    NEWS,
    SENTIMENT_REQUESTS,
    SENTIMENT_RESULTS,
    USER_ALERTS,
)
from streams.agents import _RAW, send_dead_letter
from streams.feed import FaustFeed
from streams.surge import SurgeRule, judge_surge, merge_headline, plan_delivery, stats_of

log = get_logger(__name__)
COMPONENT = "alerts-worker"
TEXT_FOR_MODEL = 600  # headline plus the start of the body


@dataclass
class AlertCounters:
    news: int = 0
    sentiment_requests: int = 0
    scored: int = 0
    duplicates: int = 0
    follows: int = 0
    alerts: int = 0
    delivered: int = 0
    suppressed: int = 0
    feed_seeks: int = 0  # partitions the feed watchdog fetched again
    dead_letters: dict[str, int] = field(default_factory=dict)


class AlertsWorker:
    def __init__(self, app: faust.App, settings: Settings) -> None:
        self.app, self.settings = app, settings
        s, t = settings, settings.topics
        n = s.partitions
        self.window_s = s.alert_window_s
        self.lateness_s = s.alert_lateness_s if s.alert_lateness_s is not None else s.alert_window_s
        self.rule = SurgeRule(
            min_count=s.alert_min_count,
            min_negative_share=s.alert_min_negative_share,
            z_threshold=s.alert_z,
            baseline_windows=s.alert_baseline_windows,
            baseline_floor=s.alert_baseline_floor,
        )
        self.counters = AlertCounters()
        self.news_topic = app.topic(t.news, partitions=n, **_RAW)
        self.ticker_topic = app.topic(t.sentiment_results, t.follows, partitions=n, **_RAW)
        self.deliveries_topic = app.topic(t.alert_deliveries, partitions=n, **_RAW)
        self.requests_topic = app.topic(t.sentiment_requests, partitions=n, **_RAW)
        self.alerts_topic = app.topic(t.alerts, partitions=n, **_RAW)
        self.user_alerts_topic = app.topic(t.user_alerts, partitions=n, **_RAW)
        self.dead_topic = app.topic(t.dead_letters, partitions=n, **_RAW)
        # Windows are kept a baseline and a little more back (event time).
        expires = self.window_s * (s.alert_baseline_windows + 3)
        self._event_ts = 0.0  # the publication time of the headline being counted
        # (Faust's stubs lack relative_to; the wrapper has it.)
        self.tumbling_table: Any = cast(Any, app.Table("ticker-tumbling", default=dict, partitions=n))
        self.tumbling: Any = self.tumbling_table.tumbling(self.window_s, expires=expires).relative_to(self._ts)
        self.hopping_table: Any = cast(Any, app.Table("ticker-hopping", default=dict, partitions=n))
        self.hopping: Any = self.hopping_table.hopping(self.window_s, s.alert_hop_s, expires=expires)
        self.hopping = self.hopping.relative_to(self._ts)
        # ticker -> {followers: {user: ts}, seen: {request_id: news_ts}, alerted: [window start], newest: ts}
        self.tickers = app.Table("ticker-state", default=dict, partitions=n)
        # user id (bytes) -> {sent: [ts], ids: [alert ids]}; written per batch: keyed by partitioner
        self.users = app.Table(
            "user-alert-state",
            default=dict,
            partitions=n,
            use_partitioner=True,
            key_type=bytes,
            schema=faust.Schema(key_type=bytes, key_serializer="raw", value_serializer="json"),
        )
        app.agent(self.news_topic, name="news")(self._on_news)
        app.agent(self.ticker_topic, name="tickers")(self._on_ticker)
        app.agent(self.deliveries_topic, name="deliveries")(self._on_deliveries)
        app.on_before_shutdown.connect(self._log_counters)
        # A partition left unfed (README: the embedded broker's limits) is fetched again,
        # then the worker is restarted (streams/feed.py).
        feeds = (t.news, t.sentiment_results, t.follows, t.alert_deliveries)
        self.feed = FaustFeed(app, settings, feeds, on_seek=self._count_feed_seek)
        self.metrics = counters_registry(self.counters, "alerts", "Alerts worker")
        worker = self

        async def metrics(view: Any, request: Any) -> Any:  # GET /metrics/ (instructrec/metrics.py)
            return view.text(generate_latest(worker.metrics).decode(), content_type="text/plain")

        app.page("/metrics/")(metrics)

    def _count_feed_seek(self) -> None:
        self.counters.feed_seeks += 1

    def _ts(self, _event: Any = None) -> float:
        return self._event_ts

    # --- news -> sentiment requests -----------------------------------------------------

    async def _on_news(self, stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        codec = NEWS.codec
        async for event in stream.events():
            message = event.message
            try:
                news = codec.decode(message.value, self.settings.max_message_bytes)
            except DecodeError as exc:
                await self._dead_letter(message, exc.reason, exc.detail)
                continue
            self.counters.news += 1
            text = news.headline if not news.body else f"{news.headline}. {news.body}"[:TEXT_FOR_MODEL]
            now = time.time()
            for ticker in dict.fromkeys(news.tickers):  # once per ticker, in order
                request = SentimentRequest(
                    request_id=f"{news.news_id}:{ticker}",
                    news_id=news.news_id,
                    ticker=ticker,
                    text=text,
                    news_ts=news.ts,
                    request_ts=now,
                )
                await self.requests_topic.send(key=ticker.encode(), value=SENTIMENT_REQUESTS.codec.encode(request))
                self.counters.sentiment_requests += 1
            yield None

    # --- per ticker: follows, windows, surges ------------------------------------------------

    async def _on_ticker(self, stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        follows_topic = self.settings.topics.follows
        async for event in stream.events():
            message = event.message
            if message.topic == follows_topic:
                await self._follow(message)
            else:
                await self._scored(message)
            yield None

    async def _follow(self, message: Message) -> None:
        try:
            follow = FOLLOWS.codec.decode(message.value, self.settings.max_message_bytes)
        except DecodeError as exc:
            await self._dead_letter(message, exc.reason, exc.detail)
            return
        state = dict(self.tickers[follow.ticker])
        followers = dict(state.get("followers", {}))
        if follow.action == "follow":
            followers[follow.user_id] = follow.ts
        else:
            followers.pop(follow.user_id, None)
        state["followers"] = followers
        self.tickers[follow.ticker] = state
        self.counters.follows += 1

    async def _scored(self, message: Message) -> None:
        try:
            result = SENTIMENT_RESULTS.codec.decode(message.value, self.settings.max_message_bytes)
        except DecodeError as exc:
            await self._dead_letter(message, exc.reason, exc.detail)
            return
        ticker, W = result.ticker, self.window_s
        state = dict(self.tickers[ticker])
        seen = dict(state.get("seen", {}))
        if result.request_id in seen:
            self.counters.duplicates += 1
            return
        newest = float(state.get("newest", 0.0))
        if result.news_ts < newest - self.lateness_s:
            await self._dead_letter(
                message,
                "too-late",
                f"published {newest - result.news_ts:.0f}s before the newest headline of {ticker}; "
                f"at most {self.lateness_s:.0f}s late are counted",
            )
            return
        self.counters.scored += 1
        headline = {
            "news_id": result.news_id,
            "text": result.text[:200],
            "label": result.label,
            "score": round(result.score, 4),
            "news_ts": result.news_ts,
        }
        self._event_ts = result.news_ts
        self.tumbling[ticker].apply(merge_headline, headline)
        self.hopping[ticker].apply(merge_headline, headline)
        newest = max(newest, result.news_ts)
        horizon = newest - W * (self.settings.alert_baseline_windows + 3)
        seen[result.request_id] = result.news_ts
        state["seen"] = {k: v for k, v in seen.items() if v >= horizon}
        state["newest"] = newest
        window = self.tumbling_table.window
        current = window.current(result.news_ts)
        alerted = [w for w in state.get("alerted", []) if w >= horizon]
        if current[0] not in alerted:
            value = self.tumbling_table[ticker, current]
            baseline = [
                stats_of(self.tumbling_table[ticker, window.current(result.news_ts - W * i)])
                for i in range(self.rule.baseline_windows, 0, -1)
            ]
            verdict = judge_surge(stats_of(value), baseline, self.rule)
            if verdict.fired:
                alerted.append(current[0])
                await self._raise(ticker, current, value, verdict, result.model, state.get("followers", {}))
        state["alerted"] = alerted
        self.tickers[ticker] = state

    async def _raise(
        self, ticker: str, current: tuple[float, float], value: dict, verdict: Any, model: ModelInfo, followers: dict
    ) -> None:
        stats = stats_of(value)
        start, W = current[0], self.window_s
        trend = []
        for stored, h_value in list(self.hopping_table.data.items()):
            key, (h_start, _h_end) = stored  # (ticker, (start, end)); lists after a recovery
            if key == ticker and start - W < h_start <= start + W:
                h = stats_of(h_value)
                trend.append(
                    {"start": h_start, "count": h.count, "mean": round(h.mean, 4), "share": round(h.negative_share, 4)}
                )
        alert = Alert(
            alert_id=f"{ticker}:{int(start)}",
            ticker=ticker,
            window=WindowInfo(kind="tumbling", start=start, end=start + W, size_s=W),
            count=stats.count,
            mean_sentiment=round(stats.mean, 4),
            negative_share=round(stats.negative_share, 4),
            baseline_share=round(verdict.baseline_share, 4),
            z=round(verdict.z, 3),
            reason=verdict.reason,
            trend=sorted(trend, key=lambda t: t["start"]),
            headlines=[AlertHeadline(**h) for h in value.get("worst", []) if h["label"] == "negative"],
            model=model,
            ts=time.time(),
        )
        self.counters.alerts += 1
        log.info("alert raised", alert_id=alert.alert_id, z=alert.z, count=stats.count, followers=len(followers))
        await self.alerts_topic.send(key=ticker.encode(), value=ALERTS.codec.encode(alert))
        for user in sorted(followers):
            delivery = UserAlert(
                user_id=user,
                alert_id=alert.alert_id,
                ticker=ticker,
                rank=1,
                severity=alert.z,
                alert=alert,
                delivered_ts=alert.ts,
            )
            await self.deliveries_topic.send(key=user.encode(), value=ALERT_DELIVERIES.codec.encode(delivery))

    # --- per user: rank and rate-limit --------------------------------------------------------

    async def _on_deliveries(self, stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        s = self.settings
        take_events = stream.take_events  # type: ignore[attr-defined]
        async for batch in take_events(1000, within=max(0.001, s.alert_gather_ms / 1000)):
            by_user: defaultdict[str, list[UserAlert]] = defaultdict(list)
            for event in batch:
                try:
                    by_user_alert = ALERT_DELIVERIES.codec.decode(event.message.value, s.max_message_bytes)
                except DecodeError as exc:
                    await self._dead_letter(event.message, exc.reason, exc.detail)
                    continue
                by_user[by_user_alert.user_id].append(by_user_alert)
            now = time.time()
            for user, alerts in by_user.items():
                key = user.encode()
                state = dict(self.users[key])
                plan = plan_delivery(
                    alerts,
                    severity=lambda a: a.severity,
                    ident=lambda a: a.alert_id,
                    sent_ts=state.get("sent", []),
                    delivered_ids=state.get("ids", []),
                    now=now,
                    max_per_period=s.alert_user_max,
                    period_s=s.alert_user_period_s,
                )
                for rank, alert in enumerate(plan.deliver, 1):
                    out = alert.model_copy(update={"rank": rank, "delivered_ts": now})
                    await self.user_alerts_topic.send(key=key, value=USER_ALERTS.codec.encode(out))
                if plan.suppressed:
                    log.info(
                        "alerts suppressed: user over budget",
                        user_id=user,
                        alerts=[a.alert_id for a in plan.suppressed],
                        max=s.alert_user_max,
                        period_s=s.alert_user_period_s,
                    )
                self.counters.delivered += len(plan.deliver)
                self.counters.suppressed += len(plan.suppressed)
                ids = [*state.get("ids", []), *(a.alert_id for a in plan.deliver)]
                self.users[key] = {"sent": plan.sent_ts, "ids": ids[-200:]}
            yield None

    # --- shared ----------------------------------------------------------------------------------

    async def _dead_letter(self, message: Message, reason: str, detail: str) -> None:
        self.counters.dead_letters[reason] = self.counters.dead_letters.get(reason, 0) + 1
        await send_dead_letter(self.dead_topic, message, reason, detail, COMPONENT)

    async def _log_counters(self, *_args: Any, **_kwargs: Any) -> None:
        log.info("alerts worker stopping", **asdict(self.counters))


def build_alerts_worker(settings: Settings) -> AlertsWorker:
    from streams.app import create_app

    own = settings.model_copy(update={"app_id": settings.alerts_app_id, "web_port": settings.alerts_web_port})
    app = create_app(own)
    app.starve_topics = frozenset({own.topics.sentiment_results})  # tests only: the stream.starve failpoint
    return AlertsWorker(app, own)
