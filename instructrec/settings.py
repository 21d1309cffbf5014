"""Typed settings, read from the environment in one place.

Every field is an environment variable ``INSTRUCTREC_<NAME>``, except the Kafka
connection fields, which use the conventional ``KAFKA_*`` names. Secrets are
``SecretStr`` and never logged.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.topics import Topics

REPO_ROOT = Path(__file__).resolve().parent.parent


def _kafka(name: str) -> Any:
    return Field(default=None, validation_alias=AliasChoices(f"KAFKA_{name}", f"INSTRUCTREC_KAFKA_{name}"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INSTRUCTREC_", extra="ignore", frozen=True, populate_by_name=True)

    # --- Kafka connection ------------------------------------------------------------
    bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "INSTRUCTREC_BOOTSTRAP_SERVERS"),
        description="host:port[,host:port]. Unset: the CLI starts the embedded broker.",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT",
        validation_alias=AliasChoices("KAFKA_SECURITY_PROTOCOL", "INSTRUCTREC_SECURITY_PROTOCOL"),
    )
    sasl_mechanism: str | None = _kafka("SASL_MECHANISM")
    sasl_username: str | None = _kafka("SASL_USERNAME")
    sasl_password: SecretStr | None = _kafka("SASL_PASSWORD")
    ssl_cafile: str | None = _kafka("SSL_CAFILE")
    ssl_certfile: str | None = _kafka("SSL_CERTFILE")
    ssl_keyfile: str | None = _kafka("SSL_KEYFILE")
    ssl_key_password: SecretStr | None = _kafka("SSL_KEY_PASSWORD")
    broker_profile: Literal["kafka", "embedded"] = Field(
        default="kafka",
        description="'embedded' applies the Tansu work-arounds; set by the CLI when it starts Tansu.",
    )

    # --- Topics ----------------------------------------------------------------------
    topic_prefix: str = "instructrec."
    partitions: int = Field(default=4, ge=1)
    replication_factor: int = Field(default=1, ge=1)

    # --- Stream worker ---------------------------------------------------------------
    app_id: str = "instructrec-stream"
    context_length: int = Field(default=50, ge=1, le=1000)
    seen_limit: int = Field(default=1000, ge=1, description="Distinct seen items kept per user for exclusion.")
    history_in_instruction: int = Field(default=5, ge=1, le=50)
    recall_size: int = Field(default=100, ge=1, le=5000)
    max_trigger_candidates: int = Field(default=1000, ge=1, description="Explicit candidates per trigger, at most.")
    max_message_bytes: int = Field(
        default=1_000_000, ge=1024, description="Larger messages are dead-lettered (too-large) without parsing."
    )
    max_events_per_message: int = Field(default=10_000, ge=1, description="Events in one event-array message.")
    intention_max_chars: int = Field(default=300, ge=0)
    max_future_skew_s: float = Field(
        default=86_400.0, ge=0, description="Events/triggers dated further ahead are dead-lettered (0: no check)."
    )
    template_seed: int = Field(default=0, description="Seeds the per-trigger choice of instruction template.")
    template_languages: str = Field(
        default="en,zh", description="Comma-separated template languages the stream worker chooses from."
    )
    trigger_wait_ms: int = Field(
        default=3000, ge=0, description="Longest a trigger with after_ts waits for that event to be applied."
    )
    max_pending_triggers: int = Field(default=10_000, ge=0, description="Triggers waiting for after_ts, at most.")
    outbox_flush_every: int = Field(
        default=32, ge=1, description="Score requests planned before the stream worker flushes and sends them."
    )
    stream_batch_max: int = Field(default=1000, ge=1, description="Most messages the user agent takes at once.")
    stream_batch_within_ms: float = Field(default=5.0, gt=0, description="Longest it waits to fill a batch.")
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    state_dir: Path = REPO_ROOT / ".data" / "state"
    session_timeout_s: float | None = None
    fetch_wait_ms: int | None = Field(
        default=None, ge=1, description="Stream worker (Faust) fetch max wait; default by profile."
    )
    client_fetch_wait_ms: int | None = Field(
        default=None, ge=1, description="Fetch max wait of the pools and tools (confluent-kafka); default by profile."
    )

    # --- Scoring pool ----------------------------------------------------------------
    model_dir: Path | None = Field(
        default=None, description="A model directory, or a root of version directories. Default: packaged MiniLM."
    )
    model_name: str = "all-MiniLM-L6-v2"
    model_poll_s: float = Field(
        default=5.0, ge=0, description="How often pools look for a new model version (0: never)."
    )
    model_version: str = Field(default="pretrained-1", description="Named in every result.")
    sentiment_model_dir: Path | None = Field(
        default=None,
        description="A headline sentiment version (or a root with LATEST, model/sentiment.py): pools then also "
        "score the sentiment-requests topic. Unset: they do not consume it.",
    )
    device: str = Field(default="auto", description="auto | cpu | cuda | cuda:N")
    torch_threads: int | None = Field(default=None, ge=1)
    int8: bool = Field(default=False, description="CPU only: dynamic int8 quantization of the model's linear layers.")
    pool_workers: int | None = Field(default=None, ge=1, description="Default: one per GPU, else 1.")
    pool_group: str | None = Field(default=None, description="The pool's consumer group; default <prefix>scoring.")
    pool_poll_batch: int = Field(default=64, ge=1, description="Score requests taken per poll.")
    batch_max_pairs: int = Field(
        default=3300, ge=1, description="Micro-batch budget in candidate pairs (about 32 requests of 100)."
    )
    batch_max_wait_ms: float = Field(default=5.0, ge=0, description="Longest a request waits for its batch to fill.")
    batch_queue: int = Field(default=256, ge=1, description="Requests taken but not published, at most (backpressure).")
    pool_drain_timeout_s: float = Field(
        default=10.0, gt=0, description="On SIGTERM, longest wait for unacknowledged results before exiting."
    )
    pool_warm_catalog: bool = Field(
        default=True,
        description="Embed the whole catalog (loading what the item store under state_dir holds) before taking "
        "score requests, and new catalog items as they arrive; off: items are embedded when first scored.",
    )
    batch_invariant: bool = Field(
        default=True,
        description="Run every text in a shape that depends on the text alone, so a request scored again (a "
        "redelivery) gets bitwise the same result in any batch; off: pad to the batch (faster, last bits vary).",
    )
    item_cache_size: int = Field(default=100_000, ge=1)
    max_seq_length: int = Field(default=128, ge=16, le=512)
    rerank_model_dir: Path | None = Field(
        default=None,
        description="A cross-encoder (one-logit sequence classifier) that re-ranks the top M; off if unset.",
    )
    rerank_top_m: int = Field(default=20, ge=1, le=1000, description="Candidates per request the cross-encoder reads.")
    rerank_on_cpu: bool = Field(
        default=False, description="Run the re-rank stage on CPU pools too (M forward passes per request)."
    )

    # --- Health -----------------------------------------------------------------------
    health_host: str = Field(default="127.0.0.1", description="Where pools serve /ready and /health.")
    pool_health_port: int = Field(
        default=6067, ge=0, description="Pool member i serves /ready on this port + i (0: not served)."
    )
    broker_wait_s: float = Field(
        default=0.0, ge=0, description="At start, longest wait for the broker (0: for ever, not ready meanwhile)."
    )
    broker_probe_s: float = Field(
        default=5.0, gt=0, description="How often stream workers (pools: only after a client error) ask the broker."
    )
    feed_stall_s: float = Field(
        default=30.0,
        ge=0,
        description="A partition with records waiting that has not moved for this long is re-fetched; "
        "still not fed after as long again, the worker exits 75 to be restarted (0: not watched). "
        "Also the longest the stream worker waits for acknowledgements of its sends and table writes.",
    )

    # --- Financial alerts (streams/alerts.py) ------------------------------------------
    alerts_app_id: str = "instructrec-alerts"
    alerts_web_port: int = 6068
    alert_window_s: float = Field(
        default=3600.0, gt=0, description="Tumbling window (event time) the surge rule reads."
    )
    alert_hop_s: float = Field(default=900.0, gt=0, description="Step of the hopping windows (size: alert_window_s).")
    alert_baseline_windows: int = Field(default=12, ge=1, description="Trailing windows that make the baseline.")
    alert_min_count: int = Field(default=5, ge=1, description="Headlines a window needs before it can fire.")
    alert_min_negative_share: float = Field(default=0.5, ge=0, le=1)
    alert_z: float = Field(default=3.0, description="Binomial z-score of the negative share against the baseline.")
    alert_baseline_floor: float = Field(default=0.1, gt=0, lt=1, description="The baseline share is at least this.")
    alert_lateness_s: float | None = Field(
        default=None, ge=0, description="How late (event time) a headline may come; default one window."
    )
    alert_user_max: int = Field(default=3, ge=1, description="Alerts a user receives per alert_user_period_s at most.")
    alert_user_period_s: float = Field(default=3600.0, gt=0)
    alert_gather_ms: float = Field(default=200.0, ge=0, description="Alerts for a user gathered and ranked together.")

    # --- Data / logging --------------------------------------------------------------
    data_dir: Path = REPO_ROOT / ".data"
    log_format: Literal["console", "json"] = "console"
    log_level: str = "INFO"

    @cached_property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)

    @property
    def scoring_group(self) -> str:
        return self.pool_group or f"{self.topic_prefix}scoring"

    @property
    def embedded(self) -> bool:
        return self.broker_profile == "embedded"

    @property
    def session_timeout(self) -> float:
        """Consumer-group session timeout. Tansu answers JoinGroup only after half of it."""
        if self.session_timeout_s is not None:
            return self.session_timeout_s
        return 6.0 if self.embedded else 30.0

    @property
    def rebalance_timeout_s(self) -> float:
        """How long a rebalance waits for the group's members to rejoin. Tansu does not
        expire a SIGKILLed member's session during a rebalance: it waits this long for it
        (measured: a new member got its partitions after 11 s with 12 s, never within 60 s
        with librdkafka's 300 s default). A real broker removes the dead member at session
        expiry, so there the clients' defaults stay."""
        return 3 * self.session_timeout if self.embedded else 300.0

    @property
    def fetch_max_wait_ms(self) -> int:
        """Tansu does not answer a long-poll fetch early, so the wait is the latency."""
        if self.fetch_wait_ms is not None:
            return self.fetch_wait_ms
        return 100 if self.embedded else 500

    @property
    def client_fetch_max_wait_ms(self) -> int:
        """The scoring pools' and tools' consumers. On Tansu librdkafka runs well with a
        10 ms wait (measured: result delivery median 22 -> 7 ms, pool queue 38 -> 27 ms at
        20 triggers/s), while Faust's aiokafka consumer at 10 ms stalls table recovery and
        loads the broker, so the two are set apart."""
        if self.client_fetch_wait_ms is not None:
            return self.client_fetch_wait_ms
        return 10 if self.embedded else 500

    def require_bootstrap(self) -> str:
        from instructrec.errors import ConfigurationError

        if not self.bootstrap_servers:
            raise ConfigurationError(
                "KAFKA_BOOTSTRAP_SERVERS is not set; run through `instructrec run` "
                "(which starts the embedded broker) or point it at a cluster"
            )
        return self.bootstrap_servers

    def confluent_config(self) -> dict[str, Any]:
        """librdkafka settings shared by every confluent-kafka client."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.require_bootstrap(),
            "security.protocol": self.security_protocol.lower(),
            "log.connection.close": False,  # idle/broker-side closes are routine, not news
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        if self.ssl_cafile:
            conf["ssl.ca.location"] = self.ssl_cafile
        if self.ssl_certfile:
            conf["ssl.certificate.location"] = self.ssl_certfile
        if self.ssl_keyfile:
            conf["ssl.key.location"] = self.ssl_keyfile
        if self.ssl_key_password is not None:
            conf["ssl.key.password"] = self.ssl_key_password.get_secret_value()
        return conf

    def safe_summary(self) -> dict[str, Any]:
        """What may be logged: everything but secrets."""
        return self.model_dump(mode="json", exclude={"sasl_password", "ssl_key_password"})
