"""Settings: Kafka security for both client libraries, and secrets that never show."""

from __future__ import annotations

import logging
import os
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import faust
import pytest
from faust.types.auth import AuthProtocol, SASLMechanism
from pydantic import SecretStr, ValidationError

from pipeline.settings import Settings, SettingsError, redact_url
from sinks.clickhouse import LockedClient, SinkError, connect

SECRETS = ("kafka-pw-4f1c", "ch-pw-9a7e", "sr-pw-2b3d", "key-pw-77aa")


def secret_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": "SCRAM-SHA-512",
        "kafka_sasl_username": "journeys",
        "kafka_sasl_password": SECRETS[0],
        "clickhouse_url": f"https://journeys:{SECRETS[1]}@clickhouse.example:8443/journeys",
        "schema_registry_url": f"https://key:{SECRETS[2]}@registry.example",
        "kafka_ssl_key_password": SECRETS[3],
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret} leaked into: {text[:300]}"


# ---- secrets ------------------------------------------------------------------------


def test_repr_str_and_json_show_no_secret() -> None:
    cfg = secret_settings()
    for text in (repr(cfg), str(cfg), cfg.model_dump_json(), f"{cfg}", f"{cfg!r}"):
        assert_no_secret(text)
    assert "journeys:***@clickhouse.example:8443/journeys" in repr(cfg)
    assert "key:***@registry.example" in cfg.model_dump_json()


def test_the_values_are_still_there_for_the_clients() -> None:
    cfg = secret_settings()
    assert cfg.kafka_config()["sasl.password"] == SECRETS[0]
    assert cfg.kafka_config()["ssl.key.password"] == SECRETS[3]
    assert SECRETS[1] in cfg.clickhouse_url
    assert cfg.clickhouse_url_redacted == "https://journeys:***@clickhouse.example:8443/journeys"


def test_logging_the_settings_shows_no_secret(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        logging.getLogger("journeys.test").info("settings %s / %r", secret_settings(), 1)
    assert_no_secret(caplog.text)


def test_the_environment_is_read_and_still_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNEYS_KAFKA_SECURITY_PROTOCOL", "sasl_plaintext")
    monkeypatch.setenv("JOURNEYS_KAFKA_SASL_MECHANISM", "scram_sha_256")
    monkeypatch.setenv("JOURNEYS_KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("JOURNEYS_KAFKA_SASL_PASSWORD", SECRETS[0])
    monkeypatch.setenv("JOURNEYS_CLICKHOUSE_URL", f"http://w:{SECRETS[1]}@ch:8123/journeys")
    cfg = Settings()
    assert cfg.kafka_security_protocol == "SASL_PLAINTEXT"
    assert cfg.kafka_sasl_mechanism == "SCRAM-SHA-256"
    assert isinstance(cfg.kafka_sasl_password, SecretStr)
    assert_no_secret(repr(cfg) + cfg.model_dump_json())


def test_validation_errors_do_not_echo_the_input() -> None:
    with pytest.raises(ValidationError) as bad_number:
        secret_settings(partitions=0)
    assert_no_secret(str(bad_number.value))
    with pytest.raises(ValidationError) as incomplete:
        secret_settings(kafka_sasl_username=None)
    assert "JOURNEYS_KAFKA_SASL_USERNAME" in str(incomplete.value)
    assert_no_secret(str(incomplete.value))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://u:pw@host:8123/db", "http://u:***@host:8123/db"),
        ("https://u:p%40ss@host/db", "https://u:***@host/db"),
        ("http://u:p@ss/word@host:1/db", "http://u:***@host:1/db"),
        ("http://u@host/db", "http://u@host/db"),
        ("http://host:8123/db", "http://host:8123/db"),
        ("chdb://var/clickhouse", "chdb://var/clickhouse"),
        ("mock://registry", "mock://registry"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


# ---- ClickHouse URLs in errors --------------------------------------------------------


def test_a_bad_scheme_is_explained_without_the_password() -> None:
    with pytest.raises(SinkError, match="use chdb://PATH or http") as err:
        connect(f"ftp://journeys:{SECRETS[1]}@example/journeys")
    assert_no_secret(str(err.value))
    assert "journeys:***@example" in str(err.value)


def test_an_unreachable_server_is_named_without_the_password() -> None:
    with pytest.raises(SinkError, match="cannot open ClickHouse at") as err:
        connect(f"http://journeys:{SECRETS[1]}@127.0.0.1:1/journeys")
    assert_no_secret(str(err.value))


def test_a_client_repr_masks_its_url() -> None:
    client = LockedClient(object(), f"http://journeys:{SECRETS[1]}@ch:8123/journeys")
    assert_no_secret(repr(client))


# ---- Kafka security ------------------------------------------------------------------


def test_plaintext_is_the_default_and_needs_no_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in list(os.environ):
        if name.upper().startswith("JOURNEYS_"):
            monkeypatch.delenv(name)
    cfg = Settings()
    assert cfg.kafka_config() == {
        "bootstrap.servers": "127.0.0.1:9092",
        "security.protocol": "PLAINTEXT",
    }
    assert cfg.faust_credentials() is None


def test_kafka_config_passes_every_security_setting(tmp_path: Path) -> None:
    cert, key = write_client_certificate(tmp_path)
    cfg = secret_settings(
        kafka_ssl_cafile=str(cert),
        kafka_ssl_certfile=str(cert),
        kafka_ssl_keyfile=str(key),
        kafka_ssl_check_hostname=False,
    )
    assert cfg.kafka_config() == {
        "bootstrap.servers": "127.0.0.1:9092",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "journeys",
        "sasl.password": SECRETS[0],
        "ssl.ca.location": str(cert),
        "ssl.certificate.location": str(cert),
        "ssl.key.location": str(key),
        "ssl.key.password": SECRETS[3],
        "ssl.endpoint.identification.algorithm": "none",
    }


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"kafka_sasl_mechanism": "GSSAPI"}, "kafka_sasl_mechanism"),
        ({"kafka_security_protocol": "TLS"}, "kafka_security_protocol"),
        ({"kafka_sasl_password": None}, "JOURNEYS_KAFKA_SASL_PASSWORD"),
        ({"kafka_sasl_mechanism": None}, "JOURNEYS_KAFKA_SASL_MECHANISM"),
        ({"kafka_ssl_certfile": "client.pem"}, "JOURNEYS_KAFKA_SSL_KEYFILE"),
    ],
)
def test_incomplete_security_settings_are_refused(
    overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message) as err:
        secret_settings(**overrides)
    assert_no_secret(str(err.value))


def test_sasl_plaintext_gives_faust_sasl_credentials() -> None:
    cfg = secret_settings(kafka_security_protocol="SASL_PLAINTEXT")
    creds = cfg.faust_credentials()
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.protocol is AuthProtocol.SASL_PLAINTEXT
    assert creds.mechanism is SASLMechanism.SCRAM_SHA_512
    assert (creds.username, creds.password) == ("journeys", SECRETS[0])
    assert creds.ssl_context is None
    assert_no_secret(repr(creds))


def test_sasl_ssl_gives_faust_sasl_credentials_over_tls(tmp_path: Path) -> None:
    cert, _ = write_client_certificate(tmp_path)
    cfg = secret_settings(kafka_sasl_mechanism="PLAIN", kafka_ssl_cafile=str(cert))
    creds = cfg.faust_credentials()
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.protocol is AuthProtocol.SASL_SSL
    assert creds.mechanism is SASLMechanism.PLAIN
    assert isinstance(creds.ssl_context, ssl.SSLContext)
    assert creds.ssl_context.verify_mode is ssl.CERT_REQUIRED
    assert creds.ssl_context.check_hostname


def test_ssl_with_a_client_certificate_gives_faust_ssl_credentials(tmp_path: Path) -> None:
    cert, key = write_client_certificate(tmp_path)
    cfg = Settings(
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=str(cert),
        kafka_ssl_certfile=str(cert),
        kafka_ssl_keyfile=str(key),
        kafka_ssl_key_password=SecretStr(SECRETS[3]),
        kafka_ssl_check_hostname=False,
    )
    creds = cfg.faust_credentials()
    assert isinstance(creds, faust.SSLCredentials)
    assert creds.protocol is AuthProtocol.SSL
    assert not creds.context.check_hostname
    assert_no_secret(repr(creds))


def test_a_missing_certificate_is_a_settings_error_naming_the_variable(tmp_path: Path) -> None:
    cfg = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=str(tmp_path / "none.pem"))
    with pytest.raises(SettingsError, match="JOURNEYS_KAFKA_SSL_CAFILE") as err:
        cfg.faust_credentials()
    assert isinstance(err.value.__cause__, OSError)


def test_a_wrong_key_password_is_a_settings_error_without_the_password(tmp_path: Path) -> None:
    cert, key = write_client_certificate(tmp_path)
    cfg = Settings(
        kafka_security_protocol="SSL",
        kafka_ssl_certfile=str(cert),
        kafka_ssl_keyfile=str(key),
        kafka_ssl_key_password=SecretStr("not-" + SECRETS[3]),
    )
    with pytest.raises(SettingsError) as err:
        cfg.kafka_ssl_context()
    assert "not-" + SECRETS[3] not in str(err.value)


def write_client_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate and its private key, encrypted with SECRETS[3]."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "journeys-test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "client.pem", folder / "client.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(SECRETS[3].encode()),
        )
    )
    return cert_path, key_path
