"""Broker outages: unreachable when the workers start, and gone for a while mid-stream.

The broker (embedded Tansu) sits behind a proxy that can cut every connection and refuse
new ones (instructrec/netproxy.py); the broker advertises the proxy, so every client goes
through it. Workers must report not-ready (``/ready`` -> 503), keep retrying, become
ready when the broker is back, and answer every trigger sent before, during and after.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import orjson
import pytest

from instructrec.broker import EmbeddedBroker
from instructrec.kafka import create_topics
from instructrec.netproxy import CuttableProxy
from instructrec.replay import Replayer, catalog_records
from instructrec.results import ResultCollector
from instructrec.runner import Processes, wait_until_ready
from model.data import load_ml100k
from tests.integration.conftest import BrokerInfo, env_for, make_settings, tail_logs, user_traffic

pytestmark = pytest.mark.integration
CUT_S = 5.0


def ready(port: int, path: str = "/ready") -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())
    except OSError:
        return 0, {}


def wait_status(port: int, path: str, status: int, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code, body = ready(port, path)
        if code == status:
            return body
        time.sleep(0.3)
    raise AssertionError(f"{path} on {port} never answered {status}; last: {ready(port, path)}")


def test_workers_wait_for_the_broker_report_not_ready_and_lose_nothing(tmp_path):
    proxy = CuttableProxy(("127.0.0.1", 0))
    proxy.reserve()
    with EmbeddedBroker(advertised_port=proxy.port) as broker:
        proxy.upstream = ("127.0.0.1", broker.port)
        settings = make_settings(BrokerInfo(broker.bootstrap_servers, "embedded"), tmp_path, partitions=2)
        # Probing every second, so a short outage is seen.
        procs = Processes({**env_for(settings), "INSTRUCTREC_BROKER_PROBE_S": "1"}, tmp_path / "logs")
        dataset = load_ml100k(settings.data_dir)
        collector = None
        try:
            # 1. The broker is unreachable when both workers start.
            procs.start("stream-worker", "stream-worker")
            procs.start("scoring-pool", "pool")
            body = wait_status(settings.pool_health_port, "/ready", 503, 120)
            time.sleep(8)  # well past the first connection attempts and their backoff
            procs.check()  # nobody gave up
            _, body = ready(settings.pool_health_port)
            assert body["checks"]["broker"]["ok"] is False and body["checks"]["model"]["ok"] is True, body
            # 2. The broker appears: both become ready and answer.
            proxy.start()
            create_topics(settings)
            replayer = Replayer(settings)
            replayer.send_catalog(catalog_records(dataset))
            collector = ResultCollector(settings).start()
            wait_until_ready(replayer, collector, procs, 180)
            wait_status(settings.pool_health_port, "/ready", 200, 30)
            wait_status(settings.web_port, "/ready/", 200, 60)
            sent: set[str] = set()
            events, triggers = user_traffic(dataset, "before")
            replayer.run(iter([*events, *triggers]), rate=0)
            sent |= {t.request_id for t in triggers}
            # 3. An outage mid-stream: records produced while it lasts wait in the
            # producer's queue and go out when the broker is back.
            proxy.cut()
            outage_started = time.monotonic()
            events, triggers = user_traffic(dataset, "during", users=20)
            replayer.run(iter([*events, *triggers]), rate=0, flush=False)
            sent |= {t.request_id for t in triggers}
            wait_status(settings.pool_health_port, "/ready", 503, 30)
            wait_status(settings.web_port, "/ready/", 503, 30)
            # Shorter than the 6 s session timeout: a longer cut makes every member rejoin, and
            # on the embedded broker that rebalance can hit the open unfed-member stall
            # (README; 1 suite run of a 12 s cut left the "after" triggers unanswered).
            time.sleep(max(0.0, CUT_S - (time.monotonic() - outage_started)))
            procs.check()
            proxy.restore()
            replayer.producer.flush(60)
            events, triggers = user_traffic(dataset, "after", users=30)
            replayer.run(iter([*events, *triggers]), rate=0)
            sent |= {t.request_id for t in triggers}
            assert collector.wait_for(sent, 180), (
                f"unanswered {sorted(sent - set(collector.results))}\n{tail_logs(procs)}"
            )
            wait_status(settings.pool_health_port, "/ready", 200, 30)
            wait_status(settings.web_port, "/ready/", 200, 60)
        finally:
            if collector is not None:
                collector.close()
            codes = procs.stop()
            proxy.close()
    assert codes == {"stream-worker": 0, "scoring-pool": 0}, tail_logs(procs)
    logs = "".join(p.read_text() for p in (tmp_path / "logs").glob("*.log"))
    assert "broker unreachable" in logs and "broker reachable again" in logs
