"""Ready means ready: a pool reports ready only once the catalog is embedded, so a burst of
triggers sent the moment every process is ready is answered about as fast as the same
burst later on; and a restarted pool loads the vectors from its item store instead of
computing them again."""

from __future__ import annotations

import re
import statistics
import time
import urllib.error
import urllib.request

import pytest

from instructrec.kafka import create_topics
from instructrec.replay import Replayer, catalog_records
from instructrec.results import ResultCollector
from instructrec.runner import Processes
from model.data import load_ml100k
from schemas.records import Trigger
from tests.integration.conftest import env_for, make_settings, tail_logs, user_traffic
from tests.integration.test_metrics import scrape

pytestmark = pytest.mark.integration

USERS = 300


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_ready(urls: list[str], procs: Processes, timeout: float = 300.0) -> float:
    started = time.monotonic()
    while not all(ready(u) for u in urls):
        procs.check()
        assert time.monotonic() - started < timeout, tail_logs(procs)
        time.sleep(0.1)
    return time.monotonic() - started


def burst(replayer: Replayer, collector: ResultCollector, users: list[str], tag: str, procs: Processes) -> float:
    """300 triggers at once; the median trigger -> result latency in ms."""
    triggers = [Trigger(request_id=f"{tag}-{u}", user_id=u, ts=time.time(), k=10) for u in users]
    replayer.run(iter(triggers), rate=0)
    wanted = {t.request_id for t in triggers}
    assert collector.wait_for(wanted, 240), tail_logs(procs)
    return statistics.median(collector.latencies_ms[r] for r in wanted)


def catalog_lines(log: str) -> list[dict[str, str]]:
    return [dict(re.findall(r"(\w+)=(\S+)", line)) for line in log.splitlines() if "catalog embedded" in line]


def test_first_burst_after_ready_is_answered_at_normal_speed(broker, tmp_path):
    settings = make_settings(broker, tmp_path, partitions=2)
    create_topics(settings)
    dataset = load_ml100k(settings.data_dir)
    replayer = Replayer(settings)
    catalog = catalog_records(dataset)
    replayer.send_catalog(catalog)
    events, _ = user_traffic(dataset, "cold", users=USERS, per_user=8)
    replayer.run(iter(events), rate=0)
    users = sorted({e.user_id for e in events})
    assert len(users) == USERS
    env = env_for(settings)
    env["INSTRUCTREC_LOG_LEVEL"] = "INFO"  # the pool's per-batch debug lines cost time of their own
    procs = Processes(env, tmp_path / "logs")
    collector = ResultCollector(settings).start()
    stream_url = f"http://127.0.0.1:{settings.web_port}/ready/"
    pool_url = f"http://127.0.0.1:{settings.pool_health_port}/ready"
    pool_metrics = f"http://127.0.0.1:{settings.pool_health_port}/metrics"
    pool_log = tmp_path / "logs" / "scoring-pool.log"
    try:
        procs.start("stream-worker", "stream-worker")
        procs.start("scoring-pool", "pool")
        wait_ready([stream_url, pool_url], procs)
        cold = burst(replayer, collector, users, "cold", procs)
        # Load-independent: no batch of the first burst had to embed an item.
        assert scrape(pool_metrics)[("instructrec_items_embedded_while_scoring_total", ())] == 0
        warm = burst(replayer, collector, users, "warm", procs)
        print(f"cold-start burst p50 {cold:.0f} ms, warm burst p50 {warm:.0f} ms, ratio {cold / warm:.2f}")
        assert cold <= 2 * warm, (cold, warm)

        # The first start computed the whole catalog; a restart loads it from the store.
        [first] = catalog_lines(pool_log.read_text())
        assert int(first["items"]) == len(catalog) and int(first["computed"]) == len(catalog), first
        pool = procs.procs["scoring-pool"]
        pool.terminate()
        assert pool.wait(30) == 0
        procs.start("scoring-pool", "pool")
        restart_s = wait_ready([pool_url], procs)
        [_, second] = catalog_lines(pool_log.read_text())
        assert int(second["computed"]) == 0 and int(second["loaded"]) == len(catalog), second
        print(f"restarted pool ready in {restart_s:.1f} s ({second['seconds']} s to load the catalog's vectors)")
    finally:
        collector.close()
        codes = procs.stop()
    assert codes == {"stream-worker": 0, "scoring-pool": 0}, tail_logs(procs)
