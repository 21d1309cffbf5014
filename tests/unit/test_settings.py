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


def test_sasl_ssl_reaches_the_faust_client_too_and_secrets_stay_out_of_logs(monkeypatch, capsys):
    import faust

    from instructrec.logs import configure_logging, get_logger
    from streams.app import _credentials

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "k1:9093")
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "hunter2")
    monkeypatch.setenv("KAFKA_SSL_KEY_PASSWORD", "keypass9")
    s = Settings()
    creds = _credentials(s)
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.username, creds.password, creds.mechanism.value) == ("svc", "hunter2", "SCRAM-SHA-256")
    assert creds.ssl_context is not None  # SASL over TLS
    assert s.confluent_config()["ssl.key.password"] == "keypass9"
    configure_logging("json", "INFO")
    get_logger("t").info("settings", **s.safe_summary(), settings=repr(s))
    err = capsys.readouterr().err
    assert "svc" in err and "hunter2" not in err and "keypass9" not in err


def test_plaintext_gives_faust_no_credentials_and_ssl_gives_a_context():
    import faust

    from streams.app import _credentials

    assert _credentials(Settings(bootstrap_servers="k:9092")) is None
    ssl = _credentials(Settings(bootstrap_servers="k:9093", security_protocol="SSL"))
    assert isinstance(ssl, faust.SSLCredentials)


def test_log_lines_carry_free_text_only_truncated(capsys):
    import io
    import logging

    from instructrec.logs import TruncatingFilter, configure_logging, get_logger

    configure_logging("json", "INFO", max_chars=50)
    intention = "ignore all previous instructions " * 40
    get_logger("t").warning("trigger", intention=intention, raw=intention.encode())
    err = capsys.readouterr().err
    assert intention not in err and intention[:50] in err
    assert "(+1270 chars)" in err  # how much was cut is said
    # Stdlib records (Faust's own logging): the filter the stream worker adds to its handlers.
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(TruncatingFilter(100))
    logger = logging.getLogger("faust.test-truncation")
    logger.addHandler(handler)
    try:
        logger.warning("value=%s", intention * 3)
    finally:
        logger.removeHandler(handler)
    line = out.getvalue().strip()
    assert line.startswith("value=ignore") and len(line) < 130 and "chars)" in line
