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
        self.dead_letters = Counter(
            "instructrec_dead_letters", "Messages sent to the dead-letter topic", ["reason"], registry=self.registry
        )
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


class StreamMetrics(_Metrics):
    """The stream worker: what it reads, plans and holds."""

    def __init__(self) -> None:
        super().__init__()
        r = self.registry
        self.events = Counter("instructrec_events", "Click/view events applied to user contexts", registry=r)
        self.triggers = Counter("instructrec_triggers", "Triggers planned into score requests", registry=r)
        self.score_requests = Counter(
            "instructrec_score_requests", "Score requests sent (re-sends included)", registry=r
        )
        self.resent = Counter(
            "instructrec_resent_requests", "Score requests re-sent from a recovered outbox", registry=r
        )
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
        self.results = Counter("instructrec_results", "Results published", ["kind"], registry=r)
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
    Prometheus counters, read at scrape time: ``instructrec_<prefix>_<field>_total``."""

    def __init__(self, counters: Any, prefix: str, help_text: str) -> None:
        self.counters, self.prefix, self.help_text = counters, prefix, help_text

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import CounterMetricFamily

        for name, value in vars(self.counters).items():
            metric = f"instructrec_{self.prefix}_{name}"
            if isinstance(value, dict):
                family = CounterMetricFamily(metric, f"{self.help_text}: {name}", labels=["reason"])
                for reason, n in value.items():
                    family.add_metric([reason], n)
                yield family
            elif isinstance(value, int | float):
                yield CounterMetricFamily(metric, f"{self.help_text}: {name}", value=value)


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
