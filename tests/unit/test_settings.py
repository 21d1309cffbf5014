from instructrec.settings import Settings


def test_kafka_variables_and_prefix_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "hunter2")
    monkeypatch.setenv("INSTRUCTREC_TOPIC_PREFIX", "prod.")
    s = Settings()
    conf = s.confluent_config()
    assert conf["bootstrap.servers"] == "k1:9092,k2:9092"
    assert conf["security.protocol"] == "sasl_ssl"
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512" and conf["sasl.password"] == "hunter2"
    assert s.topics.events == "prod.events"
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.safe_summary())


def test_embedded_profile_work_arounds_apply_only_to_the_embedded_broker():
    real = Settings(bootstrap_servers="k:9092")
    embedded = Settings(bootstrap_servers="k:9092", broker_profile="embedded")
    assert real.session_timeout == 30.0 and embedded.session_timeout == 6.0
    assert real.fetch_max_wait_ms == 500 and embedded.fetch_max_wait_ms == 100
    assert real.client_fetch_max_wait_ms == 500 and embedded.client_fetch_max_wait_ms == 10


def test_missing_bootstrap_is_a_clear_error():
    import pytest

    from instructrec.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="KAFKA_BOOTSTRAP_SERVERS"):
        Settings(bootstrap_servers=None).confluent_config()
