"""One broker fixture for every integration test: the embedded Tansu broker, and Apache
Kafka via testcontainers when a Docker engine answers (skipped cleanly otherwise)."""

from __future__ import annotations

import os
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from instructrec.broker import EmbeddedBroker, free_port
from instructrec.runner import Processes
from instructrec.settings import Settings
from schemas.records import Event, Trigger

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class BrokerInfo:
    bootstrap_servers: str
    profile: str  # "embedded" | "kafka"


def docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session", params=["tansu", "apache-kafka"])
def broker(request: pytest.FixtureRequest) -> Iterator[BrokerInfo]:
    if request.param == "tansu":
        with EmbeddedBroker() as embedded:
            yield BrokerInfo(embedded.bootstrap_servers, "embedded")
        return
    if not docker_answers():
        pytest.skip("no Docker engine answers here: the Apache Kafka (testcontainers) variant is skipped")
    from testcontainers.kafka import KafkaContainer

    with KafkaContainer().with_kraft() as kafka:
        yield BrokerInfo(kafka.get_bootstrap_server(), "kafka")


def make_settings(broker: BrokerInfo, tmp: Path, **overrides: object) -> Settings:
    """Settings for one test: a random topic prefix so tests never share topics."""
    values: dict[str, object] = {
        "bootstrap_servers": broker.bootstrap_servers,
        "broker_profile": broker.profile,
        "topic_prefix": f"t{uuid.uuid4().hex[:10]}.",
        "web_port": free_port(),
        "pool_health_port": free_port(),
        "state_dir": tmp / "state",
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


def env_for(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=settings.bootstrap_servers or "",
        INSTRUCTREC_BROKER_PROFILE=settings.broker_profile,
        INSTRUCTREC_TOPIC_PREFIX=settings.topic_prefix,
        INSTRUCTREC_PARTITIONS=str(settings.partitions),  # the workers' tables match the topics
        INSTRUCTREC_WEB_PORT=str(settings.web_port),
        INSTRUCTREC_POOL_HEALTH_PORT=str(settings.pool_health_port),
        INSTRUCTREC_STATE_DIR=str(settings.state_dir),
        PYTHONUNBUFFERED="1",
        INSTRUCTREC_LOG_LEVEL="DEBUG",  # tests await some of the workers' log lines
        # a member left unfed (embedded broker) is fetched again / restarted sooner than 30 s
        INSTRUCTREC_FEED_STALL_S="10",
    )
    return env


def tail_logs(procs: Processes, lines: int = 40) -> str:
    out = []
    for name in procs.procs:
        path = procs.log_dir / f"{name}.log"
        if path.exists():
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {name} ---\n" + "\n".join(text))
    return "\n".join(out)


def user_traffic(dataset, tag: str, users: int = 10, per_user: int = 5):
    """The first ``per_user`` ml-100k events of the first ``users`` users, and one trigger
    per user (request id ``<tag>-<user>``)."""
    by_user: defaultdict[str, list] = defaultdict(list)
    for x in dataset.interactions:
        if len(by_user) < users or x.user_id in by_user:
            by_user[x.user_id].append(x)
    events = [
        Event(user_id=u, item_id=x.item_id, event_type="view", ts=x.ts)
        for u, xs in by_user.items()
        for x in xs[:per_user]
    ]
    return events, [Trigger(request_id=f"{tag}-{u}", user_id=u, ts=time.time(), k=5) for u in by_user]


@pytest.fixture(scope="session")
def sentiment_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A headline sentiment version for the pools in the integration tests: MiniLM
    fine-tuned for 4 epochs on the training headlines (its quality is measured in
    tests/model/test_sentiment_model.py, not here)."""
    from model.scorer import default_model_dir
    from model.sentiment import FinetuneConfig, finetune, load_headlines, save_sentiment, split_headlines

    train, _ = split_headlines(load_headlines())
    encoder, head, info = finetune(train, default_model_dir(), FinetuneConfig(epochs=4), log=lambda *_: None)
    out = tmp_path_factory.mktemp("sentiment") / "v-test"
    card = {"kind": "sentiment", "version": "v-test", "dim": 384, "max_length": 64, "training": info}
    return save_sentiment(encoder, head, out, card)
