"""The Faust application: settings mapping and the embedded-broker work-arounds.

Embedded profile only (Tansu): a short consumer session (Tansu answers JoinGroup after
half the session timeout), a short fetch wait (Tansu does not answer a long-poll fetch
early, so the wait *is* the latency), one record per produced batch and no recovery
consistency check (Tansu's high watermark counts batches, not records). Against a real
Kafka cluster none of these apply.
"""

from __future__ import annotations

import ssl
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from instructrec.settings import Settings


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # faust-streaming hard-codes fetch_max_wait_ms=1500; the fetcher reads this
        # attribute when the consumer starts.
        wait = getattr(self.app, "fetch_max_wait_ms", None)
        if wait is not None:
            consumer._fetch_max_wait_ms = wait
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class StreamApp(faust.App):
    fetch_max_wait_ms: int | None = None

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)


def _credentials(settings: Settings) -> Any:
    if settings.security_protocol == "PLAINTEXT":
        return None
    context = None
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=settings.ssl_cafile)
        if settings.ssl_certfile:
            context.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile)
    if settings.security_protocol.startswith("SASL"):
        password = settings.sasl_password.get_secret_value() if settings.sasl_password else ""
        return faust.SASLCredentials(
            username=settings.sasl_username or "",
            password=password,
            mechanism=settings.sasl_mechanism or "PLAIN",
            ssl_context=context,
        )
    return faust.SSLCredentials(context)


def create_app(settings: Settings) -> StreamApp:
    servers = settings.require_bootstrap().split(",")
    app_id = f"{settings.topic_prefix}{settings.app_id}"
    datadir = settings.state_dir / app_id
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = StreamApp(
        app_id,
        broker=[f"kafka://{s.strip()}" for s in servers],
        broker_credentials=_credentials(settings),
        store="memory://",
        autodiscover=False,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=max(0.5, settings.session_timeout / 6),
        consumer_auto_offset_reset="earliest",
        recovery_consistency_check=not settings.embedded,
        producer_acks=-1,
        producer_linger_ms=0,
        web_host=settings.web_host,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        datadir=str(datadir),
        table_cleanup_interval=30.0,
        # Tansu reports a partition's high watermark as the last *batch's* base offset + 1
        # (10 records in one batch -> end offset 1), and Faust recovers a table only up to
        # the high watermark. One record per batch keeps the changelog recoverable there.
        producer_max_batch_size=1 if settings.embedded else 16384,
    )
    app.fetch_max_wait_ms = settings.fetch_max_wait_ms
    return app
