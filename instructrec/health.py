"""Readiness: named checks a process sets as it goes, a broker probe, and a small HTTP
endpoint (``GET /ready`` -> 200 or 503 with the checks as JSON; ``GET /health`` -> 200
while the process runs).

A worker is ready when the broker answers, and -- by component -- its model is loaded
(pools) or its partitions are assigned and its table recovered and the catalog read
(stream workers). While the broker is unreachable the clients keep retrying with
exponential backoff (librdkafka ``reconnect.backoff.ms`` .. ``reconnect.backoff.max.ms``;
aiokafka ``retry_backoff_ms``), nothing is committed that was not delivered, and the
probe logs each transition once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from instructrec.logs import get_logger
from instructrec.metrics import CONTENT_TYPE_LATEST

log = get_logger(__name__)


class Readiness:
    def __init__(self, *checks: str) -> None:
        self._lock = threading.Lock()
        self._checks: dict[str, tuple[bool, str]] = {name: (False, "not yet") for name in checks}

    def set(self, name: str, ok: bool, detail: str = "") -> None:
        with self._lock:
            self._checks[name] = (ok, detail)

    def ok(self, name: str) -> bool:
        with self._lock:
            return self._checks.get(name, (False, ""))[0]

    @property
    def ready(self) -> bool:
        with self._lock:
            return all(ok for ok, _ in self._checks.values())

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            checks = {name: {"ok": ok, "detail": detail} for name, (ok, detail) in self._checks.items()}
        return {"ready": all(c["ok"] for c in checks.values()), "checks": checks}


class BrokerProbe:
    """Asks the broker for metadata (``list_topics``) every ``interval`` s; sets the
    ``broker`` check and logs when the broker goes away and when it comes back.

    ``passive``: probe only after ``suspect()`` (a client's error callback saw the broker
    go), until it answers again -- no extra requests while all is well. (On the embedded
    broker, a metadata request for every topic every 2 s from each worker, during
    restarts, was followed by Tansu no longer answering produce requests; passive
    probing avoids the load altogether.)"""

    def __init__(
        self,
        readiness: Readiness,
        list_topics: Callable[[float], Any],
        interval: float = 2.0,
        component: str = "",
        passive: bool = False,
    ) -> None:
        self.readiness = readiness
        self.list_topics = list_topics
        self.interval = interval
        self.component = component
        self.passive = passive
        self.stop = threading.Event()
        self.down_since: float | None = None
        self._suspect = threading.Event()

    def suspect(self, reason: str = "") -> None:
        """A client reported a broker-level error: mark not ready and probe until it answers."""
        if self.down_since is None:
            self.down_since = time.monotonic()
            log.warning(
                "broker unreachable; not ready, clients retry with backoff",
                component=self.component,
                error=reason[:200],
            )
        self.readiness.set("broker", False, "unreachable")
        self._suspect.set()

    def start(self) -> BrokerProbe:
        threading.Thread(target=self._run, name="broker-probe", daemon=True).start()
        return self

    def check(self) -> bool:
        try:
            self.list_topics(min(5.0, max(1.0, self.interval)))
        except Exception as exc:
            if self.down_since is None:
                self.down_since = time.monotonic()
                log.warning(
                    "broker unreachable; not ready, clients retry with backoff",
                    component=self.component,
                    error=str(exc)[:200],
                )
            self.readiness.set("broker", False, f"unreachable for {time.monotonic() - self.down_since:.0f}s")
            return False
        if self.down_since is not None:
            log.warning(
                "broker reachable again", component=self.component, down_s=round(time.monotonic() - self.down_since, 1)
            )
            self.down_since = None
        self.readiness.set("broker", True, "reachable")
        return True

    def _run(self) -> None:
        while not self.stop.is_set():
            if self.passive and not self._suspect.is_set():
                self._suspect.wait(self.interval)
                continue
            if self.check():
                self._suspect.clear()
            if self.stop.wait(self.interval):
                return


def wait_for_broker(
    readiness: Readiness,
    list_topics: Callable[[float], Any],
    component: str,
    limit_s: float = 0.0,
    first_backoff_s: float = 0.5,
    max_backoff_s: float = 10.0,
) -> float:
    """Block until the broker answers a metadata request, retrying with exponential
    backoff (``first_backoff_s`` doubling to ``max_backoff_s``); not ready meanwhile.
    ``limit_s`` > 0: give up after that long (TimeoutError). Returns the seconds waited."""
    probe = BrokerProbe(readiness, list_topics, component=component)
    started = time.monotonic()
    backoff = first_backoff_s
    while not probe.check():
        waited = time.monotonic() - started
        if limit_s and waited > limit_s:
            raise TimeoutError(f"the broker did not answer within {limit_s:.0f}s")
        time.sleep(backoff)
        backoff = min(max_backoff_s, backoff * 2)
    return time.monotonic() - started


def serve_health(
    readiness: Readiness, host: str, port: int, component: str, metrics: Callable[[], bytes] | None = None
) -> ThreadingHTTPServer | None:
    """Serve ``/ready``, ``/health`` and (given ``metrics``) ``/metrics`` on a daemon
    thread; None (and a warning) when the port is taken: health is an aid, never a reason
    not to run."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/metrics" and metrics is not None:
                body = metrics()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE_LATEST)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            elif self.path.rstrip("/") == "/ready":
                snap = readiness.snapshot()
                self._reply(200 if snap["ready"] else 503, snap)
            elif self.path.rstrip("/") == "/health":
                self._reply(200, {"alive": True, "component": component})
            else:
                self._reply(404, {"error": "not found"})

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = orjson.dumps(body)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_args: Any) -> None:  # no access log on stderr
            return

    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as exc:
        log.warning("health endpoint not served", component=component, port=port, error=str(exc))
        return None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    base = f"http://{host}:{server.server_address[1]}"
    log.info(
        "health endpoint", component=component, url=f"{base}/ready", metrics=f"{base}/metrics" if metrics else None
    )
    return server
