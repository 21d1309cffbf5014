"""Prometheus metrics (prometheus-client) of the stream worker, the scoring pools and the
alerts worker, each process with its own registry, served as text at ``/metrics``: the
stream workers on their Faust web port, each pool member on its health port.

Rates (events/s, results/s) are ``rate()`` of the ``_total`` counters. Consumer lag is the
broker's high watermark minus the position, per partition, refreshed every few seconds;
on the embedded broker the high watermark can be reported short (README, its limits), so
the lag there is a lower bound.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Seconds: from a few ms (one forward pass) to the stall bound.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.consumer_lag = Gauge(
            "instructrec_consumer_lag", "High watermark minus position", ["topic", "partition"], registry=self.registry
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def set_lag(self, lags: Mapping[tuple[str, int], int]) -> None:
        """Replace the per-partition lag (partitions no longer assigned disappear)."""
        self.consumer_lag.clear()
        for (topic, partition), lag in lags.items():
            self.consumer_lag.labels(topic=topic, partition=str(partition)).set(max(0, lag))


# The stream worker's counters (streams.agents.StreamCounters) as Prometheus counters.
STREAM_COUNTERS = {
    "events": ("instructrec_events", "Click/view events applied to user contexts"),
    "triggers": ("instructrec_triggers", "Triggers planned into score requests"),
    "score_requests": ("instructrec_score_requests", "Score requests sent (re-sends included)"),
    "resent": ("instructrec_resent_requests", "Score requests re-sent from a recovered outbox"),
    "dead_letters": ("instructrec_dead_letters", "Messages sent to the dead-letter topic"),
}


class StreamMetrics(_Metrics):
    """The stream worker: what it reads, plans and holds. Its counts are the worker's own
    counters (the ones it logs at shutdown), read at scrape time."""

    def __init__(self, counters: Any) -> None:
        super().__init__()
        r = self.registry
        r.register(CountersCollector(counters, names=STREAM_COUNTERS))  # type: ignore[arg-type]
        self.stream_seconds = Histogram(
            "instructrec_stream_stage_seconds",
            "Trigger produced -> its score request acknowledged by the broker",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.table_keys = Gauge(
            "instructrec_table_keys", "Keys in a state table (this worker's partitions)", ["table"], registry=r
        )
        self.waiting = Gauge("instructrec_waiting_triggers", "Triggers waiting for their after_ts event", registry=r)


class PoolMetrics(_Metrics):
    """A scoring pool member: batches, queue, model time and end-to-end latency."""

    def __init__(self) -> None:
        super().__init__()
        r = self.registry
        self.dead_letters = Counter(
            "instructrec_dead_letters", "Messages sent to the dead-letter topic", ["reason"], registry=r
        )
        self.results = Counter("instructrec_results", "Results published", ["kind"], registry=r)
        self.items_embedded_while_scoring = Counter(
            "instructrec_items_embedded_while_scoring",
            "Item texts a batch had to run through the model (not embedded beforehand by the catalog warmer)",
            registry=r,
        )
        self.commits_refused = Counter(
            "instructrec_commits_refused",
            "Offset commits the group refused (it moved on); those requests are scored again",
            registry=r,
        )
        self.batch_requests = Histogram(
            "instructrec_batch_requests", "Requests per scored batch", buckets=SIZE_BUCKETS, registry=r
        )
        self.batch_texts = Histogram(
            "instructrec_batch_texts",
            "Texts the model read per batch (candidates + instructions + headlines)",
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        self.scoring_seconds = Histogram(
            "instructrec_scoring_seconds", "Model time per batch", buckets=LATENCY_BUCKETS, registry=r
        )
        self.queue_seconds = Histogram(
            "instructrec_queue_seconds",
            "Score request produced -> scoring started",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.end_to_end_seconds = Histogram(
            "instructrec_end_to_end_seconds",
            "Trigger produced -> recommendation produced",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge("instructrec_queue_depth", "Requests taken and not yet published", registry=r)
        self.model_info = Gauge(
            "instructrec_model_info", "The model version served (value 1)", ["version", "device"], registry=r
        )

    def serving(self, version: str, device: str) -> None:
        self.model_info.clear()
        self.model_info.labels(version=version, device=device).set(1)


class CountersCollector:
    """Exposes a dataclass of plain counters (ints, and one dict of ints by reason) as
    Prometheus counters, read at scrape time: the fields ``names`` maps to (metric name,
    help), or every field as ``instructrec_<prefix>_<field>_total``."""

    def __init__(
        self, counters: Any, prefix: str = "", help_text: str = "", names: Mapping[str, tuple[str, str]] | None = None
    ) -> None:
        self.counters, self.prefix, self.help_text, self.names = counters, prefix, help_text, names

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import CounterMetricFamily

        for name, value in vars(self.counters).items():
            if self.names is not None and name not in self.names:
                continue
            metric, help_text = self.names[name] if self.names else (f"instructrec_{self.prefix}_{name}", "")
            help_text = help_text or f"{self.help_text}: {name}"
            if isinstance(value, dict):
                family = CounterMetricFamily(metric, help_text, labels=["reason"])
                for reason, n in value.items():
                    family.add_metric([reason], n)
                yield family
            elif isinstance(value, int | float):
                yield CounterMetricFamily(metric, help_text, value=value)


def counters_registry(counters: Any, prefix: str, help_text: str) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(CountersCollector(counters, prefix, help_text))  # type: ignore[arg-type]
    return registry


def lag_of(
    positions: Mapping[tuple[str, int], int | None], ends: Mapping[tuple[str, int], int | None]
) -> dict[tuple[str, int], int]:
    """Per partition, high watermark minus position, where both are known."""
    return {
        key: int(end) - int(pos)
        for key, pos in positions.items()
        if pos is not None and pos >= 0 and (end := ends.get(key)) is not None and end >= 0
    }


def families(text: bytes | str) -> Iterable[str]:
    """Metric family names in an exposition (for tests and `make run`'s check)."""
    from prometheus_client.parser import text_string_to_metric_families

    body = text.decode() if isinstance(text, bytes) else text
    return [f.name for f in text_string_to_metric_families(body)]


__all__ = ["CONTENT_TYPE_LATEST", "PoolMetrics", "StreamMetrics", "counters_registry", "families", "lag_of"]
