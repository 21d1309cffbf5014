"""Run one stream worker process until SIGTERM/SIGINT (Faust handles both gracefully)."""

from __future__ import annotations

import logging

import faust

from instructrec.logs import DEFAULT_MAX_CHARS, TruncatingFilter, configure_logging, get_logger
from instructrec.settings import Settings
from instructrec.watchdog import RESTART_EXIT_CODE
from streams.agents import build_worker
from streams.feed import FaustFeed


class _Worker(faust.Worker):
    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        # Faust's terminal spinner sets the root logger to DEBUG, so every library
        # debug() call (aiokafka logs several per produced record) builds a LogRecord
        # that the handler then drops: ~6 % of a busy worker's CPU. No spinner here.
        logger.setLevel(level or logging.WARNING)
        for handler in logger.handlers:
            handler.addFilter(TruncatingFilter(DEFAULT_MAX_CHARS * 5))


def wait_for_broker_first(settings: Settings) -> None:
    """Faust gives up at once when it cannot bootstrap; wait here instead, serving
    ``/ready/`` (503) on the web port meanwhile (Faust's own server takes it over)."""
    from confluent_kafka.admin import AdminClient

    from instructrec.health import Readiness, serve_health, wait_for_broker

    admin = AdminClient(settings.confluent_config())
    readiness = Readiness("broker", "partitions", "catalog")
    server = serve_health(readiness, settings.web_host, settings.web_port, "stream-worker")
    try:
        wait_for_broker(readiness, lambda t: admin.list_topics(timeout=t), "stream-worker", settings.broker_wait_s)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()


def run_stream_worker(settings: Settings) -> int:
    configure_logging(settings.log_format, settings.log_level, component="stream-worker")
    wait_for_broker_first(settings)
    worker_state = build_worker(settings)
    get_logger(__name__).info(
        "stream worker starting",
        app_id=worker_state.app.conf.id,
        profile=settings.broker_profile,
        bootstrap=settings.bootstrap_servers,
        prefix=settings.topic_prefix,
    )
    return _execute(worker_state.app, settings, worker_state.feed)


def run_alerts_worker(settings: Settings) -> int:
    """The financial alerts worker (streams/alerts.py): its own Faust app and web port."""
    from streams.alerts import build_alerts_worker

    configure_logging(settings.log_format, settings.log_level, component="alerts-worker")
    wait_for_broker_first(settings.model_copy(update={"web_port": settings.alerts_web_port}))
    state = build_alerts_worker(settings)
    get_logger(__name__).info("alerts worker starting", app_id=state.app.conf.id, prefix=settings.topic_prefix)
    return _execute(state.app, settings, state.feed)


def _execute(app: faust.App, settings: Settings, feed: FaustFeed) -> int:
    """Run the Faust worker until it stops: 0, or 75 when its feed watchdog gave up."""
    # Faust's own DEBUG output is tens of MB per minute: our DEBUG stays ours.
    faust_level = "INFO" if settings.log_level.upper() == "DEBUG" else settings.log_level
    worker = _Worker(app, loglevel=faust_level, quiet=True, redirect_stdouts=False)
    try:
        worker.execute_from_commandline()  # returns via SystemExit when stopped
    except SystemExit:
        if not feed.restart_requested:
            raise
    if feed.restart_requested:  # ask the supervisor for a restart
        return RESTART_EXIT_CODE
    return 0
