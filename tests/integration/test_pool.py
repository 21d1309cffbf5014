"""The scoring pool alone on a real broker with the real model: backpressure and a
graceful drain on SIGTERM (finish, publish, commit, exit 0), then a new member carries on
without re-scoring anything."""

from __future__ import annotations

import signal
import time

import pytest

from instructrec.bench import real_requests
from instructrec.kafka import create_topics, make_producer
from instructrec.results import ResultCollector
from instructrec.runner import Processes
from model.data import load_ml100k
from schemas.topics import SCORE_REQUESTS
from tests.integration.conftest import env_for, make_settings, tail_logs
from workers.ranking import recommendation_id

pytestmark = pytest.mark.integration

N = 200


def test_pool_pauses_under_load_and_drains_on_sigterm_without_loss_or_rescoring(broker, tmp_path):
    settings = make_settings(broker, tmp_path)
    create_topics(settings)
    env = env_for(settings)
    env.update(INSTRUCTREC_BATCH_QUEUE="8", INSTRUCTREC_BATCH_MAX_PAIRS="400")
    procs = Processes(env, tmp_path / "logs")
    collector = ResultCollector(settings).start()
    try:
        requests = real_requests(load_ml100k(settings.data_dir), N, 100)
        producer = make_producer(settings)
        for r in requests:
            producer.produce(
                settings.topics.score_requests, key=SCORE_REQUESTS.key_of(r), value=SCORE_REQUESTS.codec.encode(r)
            )
        producer.flush(30)
        ids = {r.request_id for r in requests}

        first = procs.start("pool-1", "pool")
        assert collector.wait_for(lambda: len(collector.results) >= 20, 180), tail_logs(procs)
        first.send_signal(signal.SIGTERM)
        assert first.wait(60) == 0, tail_logs(procs)
        done_before = set(collector.results)
        assert 20 <= len(done_before) < N  # stopped mid-way, not after everything

        procs.start("pool-2", "pool")
        assert collector.wait_for(ids, 180), tail_logs(procs)
        assert collector.duplicates == 0  # what the first member published, it committed
        log = (tmp_path / "logs" / "pool-1.log").read_text()
        assert "backpressure: partitions paused" in log
        for rid in ids:
            rec = collector.results[rid]
            assert len(rec.items) == 10 and rec.model.version
    finally:
        collector.close()
        procs.stop()


def _trained_version(path, dataset):
    """A real fine-tuned version directory (a few steps: the mechanics, not the quality)."""
    from model.evaluation import leave_one_out
    from model.scorer import default_model_dir
    from model.train import TrainConfig, finetune, new_card, save_model

    config = TrainConfig(steps=3, batch_size=4, warmup_steps=1, train_layers=1, lr=1e-3, device="cpu")
    tuned = finetune(default_model_dir(), dataset, leave_one_out(dataset)[:30], config, progress=False)
    save_model(
        tuned.encoder, default_model_dir(), path, new_card(path.name, default_model_dir(), config, {}, tuned.fusion)
    )
    return tuned.fusion


def test_a_new_model_version_is_picked_up_without_a_restart(broker, tmp_path):
    """v1 is the packaged MiniLM; v2, published while the pool runs, a fine-tuned version
    whose scores fuse the cosine with the candidates' collaborative features."""
    import math

    from model.device import choose_device
    from model.features import fuse
    from model.scorer import default_model_dir, load_scorer

    models = tmp_path / "models"
    models.mkdir()
    (models / "v1").symlink_to(default_model_dir(), target_is_directory=True)
    settings = make_settings(broker, tmp_path)
    create_topics(settings)
    env = env_for(settings)
    env.update(INSTRUCTREC_MODEL_DIR=str(models), INSTRUCTREC_MODEL_POLL_S="0.5")
    procs = Processes(env, tmp_path / "logs")
    collector = ResultCollector(settings).start()
    producer = make_producer(settings)
    dataset = load_ml100k(settings.data_dir)
    requests = real_requests(dataset, 40, 20)

    def send(batch):
        for r in batch:
            producer.produce(
                settings.topics.score_requests, key=SCORE_REQUESTS.key_of(r), value=SCORE_REQUESTS.codec.encode(r)
            )
        producer.flush(30)

    try:
        procs.start("pool", "pool")
        send(requests[:20])
        assert collector.wait_for({r.request_id for r in requests[:20]}, 180), tail_logs(procs)
        fusion = _trained_version(models / "v2", dataset)
        (models / "LATEST").write_text("v2\n")
        log = tmp_path / "logs" / "pool.log"
        assert wait_for_line(log, ("model loaded", "version=v2"), 60), tail_logs(procs)
        send(requests[20:])
        assert collector.wait_for({r.request_id for r in requests}, 180), tail_logs(procs)
        versions = [rec.model.version for rec in collector.results.values()]
        assert versions[:20] == ["v1"] * 20 and versions[20:] == ["v2"] * 20
        assert all(
            rec.recommendation_id == recommendation_id(rec.user_id, rec.request_id, rec.model.version)
            for rec in collector.results.values()
        )
        assert procs.procs["pool"].poll() is None  # no restart happened
        assert [rec.model.fusion for rec in collector.results.values()] == [None] * 20 + [fusion] * 20
        # The pool's v2 scores are the offline fused scores of the same version directory.
        scorer = load_scorer(models / "v2", choose_device("cpu"))
        for r in requests[20:25]:
            cos = scorer.score_many([r.instruction], [[(c.item_id, c.text) for c in r.candidates]], [[]])[0].scores
            collab = [(math.log1p(c.cooc), math.log1p(c.cooc_long), math.log1p(c.popularity)) for c in r.candidates]
            fused = fuse(fusion, cos, collab)
            best = sorted(zip(fused, (c.item_id for c in r.candidates), strict=True), key=lambda x: (-x[0], x[1]))
            rec = collector.results[r.request_id]
            assert [i.item_id for i in rec.items] == [item for _, item in best[: r.k]]
            assert [i.score for i in rec.items] == pytest.approx([s for s, _ in best[: r.k]], abs=1e-4)
        assert any(c.cooc > 0 for r in requests for c in r.candidates)  # the features were there
    finally:
        collector.close()
        procs.stop()


def wait_for_line(path, needles: tuple[str, ...], timeout: float) -> bool:
    """Until one line of the log holds every needle (the log is the event to await)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and any(
            all(n in line for n in needles) for line in path.read_text(errors="replace").splitlines()
        ):
            return True
        time.sleep(0.1)
    return False


def test_the_pool_warms_item_embeddings_from_the_catalog(broker, tmp_path):
    from instructrec.replay import Replayer, catalog_records

    settings = make_settings(broker, tmp_path)
    create_topics(settings)
    dataset = load_ml100k(settings.data_dir)
    Replayer(settings).send_catalog(catalog_records(dataset)[:300])
    env = env_for(settings)
    env["INSTRUCTREC_POOL_WARM_CATALOG"] = "true"
    procs = Processes(env, tmp_path / "logs")
    try:
        procs.start("pool", "pool")
        log = tmp_path / "logs" / "pool.log"
        assert wait_for_line(log, ("catalog embedded", "items=300", "computed=300"), 180), tail_logs(procs)
    finally:
        procs.stop()


def test_a_member_keeps_its_group_through_long_batches_and_drains_within_the_bound(broker, tmp_path):
    """Batches longer than the group's poll interval (a loaded machine): the member keeps
    polling while it scores, so it is not thrown out of its group and nothing is scored
    twice; SIGTERM during such a batch exits 0 within 30 s, handing back what it had not
    scored, uncommitted, to the next member."""
    settings = make_settings(broker, tmp_path)
    create_topics(settings)
    slow_s = int(settings.rebalance_timeout_s) + 6  # each batch outlasts max.poll.interval.ms
    env = env_for(settings)
    env.update(INSTRUCTREC_FAILPOINTS=f"pool.slow-batch:{slow_s}", INSTRUCTREC_BATCH_MAX_PAIRS="250")
    procs = Processes(env, tmp_path / "logs")
    collector = ResultCollector(settings).start()
    try:
        requests = real_requests(load_ml100k(settings.data_dir), 12, 100)
        producer = make_producer(settings)
        for r in requests:
            producer.produce(
                settings.topics.score_requests, key=SCORE_REQUESTS.key_of(r), value=SCORE_REQUESTS.codec.encode(r)
            )
        producer.flush(30)
        slow = procs.start("pool-slow", "pool")
        # Two batches of two requests take 2 x slow_s: the member must still be in its group.
        assert collector.wait_for(lambda: len(collector.results) >= 4, 4 * slow_s + 60), tail_logs(procs)
        slow.send_signal(signal.SIGTERM)  # during the third batch
        started = time.monotonic()
        assert slow.wait(60) == 0, tail_logs(procs)
        stopped_s = time.monotonic() - started
        assert stopped_s <= 30, stopped_s
        log = (tmp_path / "logs" / "pool-slow.log").read_text()
        assert "maximum poll interval" not in log and "leaving group" not in log.lower(), log[-3000:]
        assert "offsets not committed" not in log

        procs.start("pool-fast", "pool", env={**env, "INSTRUCTREC_FAILPOINTS": ""})
        assert collector.wait_for({r.request_id for r in requests}, 180), tail_logs(procs)
        assert collector.duplicates == 0  # what the slow member published, it committed
    finally:
        collector.close()
        codes = procs.stop()
    assert codes["pool-fast"] == 0, tail_logs(procs)
