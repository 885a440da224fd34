"""Typed, frozen settings, read from the environment (prefix ``JOURNEYS_``) at the edge only.

The defaults are the embedded stack: a local Tansu broker on 127.0.0.1:9092 and
chDB (the ClickHouse engine in-process) under ``var/clickhouse``. Production sets
``JOURNEYS_KAFKA_BOOTSTRAP``, ``JOURNEYS_SCHEMA_REGISTRY_URL`` and
``JOURNEYS_CLICKHOUSE_URL`` and runs the very same code.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, SecretStr, field_serializer, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT

REPO_ROOT = Path(__file__).resolve().parent.parent

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
#: The SASL mechanisms that both librdkafka (confluent-kafka) and aiokafka (Faust) speak
#: with a user name and a password.
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
_MASK = "***"


class SettingsError(ValueError):
    """The settings are inconsistent, or a file they name cannot be used."""


def redact_url(url: str) -> str:
    """*url* with the password of its user info replaced by ``***``, for logs and errors.

    ``http://journeys:secret@clickhouse:8123/journeys`` becomes
    ``http://journeys:***@clickhouse:8123/journeys``; a URL without a password is
    returned as it is. Everything up to the last ``@`` counts as user info, so that a
    password with an unescaped ``@`` or ``/`` is masked whole too: a malformed URL is
    masked too much rather than too little.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    userinfo, _, hostpart = rest.rpartition("@")
    user, colon, _password = userinfo.partition(":")
    if not colon:
        return url
    return f"{scheme}://{user}:{_MASK}@{hostpart}"


class Settings(BaseSettings):
    """Every setting of the pipeline; ``repr``, ``str`` and JSON dumps never show a secret:
    passwords are :class:`SecretStr` and the passwords inside URLs are masked."""

    model_config = SettingsConfigDict(
        env_prefix="JOURNEYS_", frozen=True, extra="ignore", hide_input_in_errors=True
    )

    kafka_bootstrap: str = Field(
        "127.0.0.1:9092",
        description="Kafka bootstrap servers. `journeys run`/`broker` start Tansu here if "
        "nothing answers.",
    )
    kafka_security_protocol: SecurityProtocol = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."
    )
    kafka_sasl_mechanism: SaslMechanism | None = Field(
        None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (required with SASL_*)."
    )
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: str | None = Field(
        None, description="PEM file of the CA that signed the brokers' certificates."
    )
    kafka_ssl_certfile: str | None = Field(
        None, description="PEM client certificate, for brokers that require mutual TLS."
    )
    kafka_ssl_keyfile: str | None = Field(None, description="PEM private key of the certificate.")
    kafka_ssl_key_password: SecretStr | None = Field(
        None, description="Password of an encrypted private key."
    )
    kafka_ssl_check_hostname: bool = Field(
        True, description="Check that the broker's certificate names its host."
    )
    schema_registry_url: str | None = Field(
        None,
        description="Confluent-compatible Schema Registry URL (or mock://name). Unset: Avro "
        "single-object encoding with schemas from schemas/.",
    )
    clickhouse_url: str = Field(
        "chdb://var/clickhouse",
        description="chdb://PATH (embedded engine) or http(s)://user:pass@host:port/db.",
    )
    clickhouse_database: str = "journeys"
    clickhouse_cluster: str | None = Field(
        None,
        description="A ClickHouse cluster name (remote_servers): migrations run ON CLUSTER "
        "with Replicated engines, and the sink writes <table>_all Distributed tables.",
    )
    topic_prefix: str = Field("journeys", description="Prefix of every Kafka topic name.")
    partitions: int = Field(8, ge=1, description="Partitions of the keyed topics.")
    replication_factor: int = Field(1, ge=1)
    data_dir: Path = Field(
        Path("var/worker"),
        description="Worker state on disk: the batch engine's rocksdict stores.",
    )
    broker_storage: Literal["s3", "memory"] = Field(
        "s3",
        description="Storage of the embedded broker that `journeys run`/`broker`/`demo` "
        "start: s3 (files under JOURNEYS_BROKER_DIR, through a local rclone S3 endpoint; "
        "they survive restarts) or memory (gone when it stops; for fast tests).",
    )
    broker_dir: Path = Field(
        Path("var/broker"), description="Data of the embedded persistent broker."
    )
    log_dir: Path = Field(
        Path("var/log"), description="Logs of the embedded broker and its S3 endpoint."
    )
    retention_input_hours: float = Field(
        168.0,
        description="Retention of the input topics (touchpoints, identity-links, "
        "person-touchpoints, closed-paths, dead-letters); 0 or less: keep forever.",
    )
    retention_output_hours: float = Field(
        168.0,
        description="Retention of the output topics (journeys, attribution); 0 or less: "
        "keep forever. The sink has stored them in ClickHouse long before.",
    )
    snapshot_min_records: int = Field(
        50_000,
        description="A state partition (a batch-engine table's, or the audiences agent's "
        "Faust table's) is written whole again to its changelog once that changelog has "
        "grown by this many records and by twice its live keys since the last time, so "
        "that the persistent broker's janitor can delete what came before "
        "(docs/persistence.md); 0: never.",
    )
    worker_id: str = Field(
        "journeys-worker",
        description="Faust app id and consumer group; the batch engine's group is <id>-engine.",
    )
    session_timeout_s: float = Field(
        6.0, description="Consumer session timeout; Tansu joins wait about half of it."
    )
    audiences: bool = Field(
        True,
        description="Run the profiles and audiences agent (Faust) in the worker; false: the "
        "worker's Faust app opens no Kafka client unless JOURNEYS_AGENT_MODULES needs one.",
    )
    audience_grace_s: float = Field(
        3.0,
        ge=0,
        description="The segment clock also trails the newest signal by this much wall time, "
        "so merges still in flight through the identity stage arrive before their time is "
        "decided (a replay runs hours of event time per second).",
    )
    audience_idle_s: float = Field(
        5.0,
        gt=0,
        description="A person-signals partition without signals for this long (wall time) "
        "moves its segment clock up to the other partitions' newest signal time.",
    )
    agent_modules: str = Field(
        "",
        description="Comma-separated Python modules whose register(app, settings, serde, "
        "topics) adds the user's own Faust agents to the worker (docs/extending.md).",
    )
    model_refit_every: int = Field(
        50, ge=1, description="Refit markov and shapley after this many new closed paths."
    )
    sink_batch_size: int = Field(5000, ge=1, description="Rows per ClickHouse insert at most.")
    sink_flush_ms: int = Field(250, ge=1, description="Flush a partial batch after this long.")
    rules_file: Path | None = Field(
        None,
        description="TOML file of identity and journey rules ([identity], [journeys]); "
        "unset: the defaults. See docs/identity.md and docs/journeys.md.",
    )
    schemas_dir: Path = Field(REPO_ROOT / "schemas")
    log_level: str = "INFO"
    metrics_host: str = Field(
        "127.0.0.1",
        description="Address of the Prometheus /metrics endpoint; 0.0.0.0 to be scraped "
        "from other hosts (a container).",
    )
    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Port of the Prometheus /metrics endpoint (0: any free port); unset: none. "
        "`journeys run` serves the sink's on it, the worker's on +1, the collector's on +2. "
        "See docs/metrics.md.",
    )

    required_consent: str = Field(
        "",
        description="Consent categories, separated by commas, an event needs (granted in "
        "Segment's context.consent.categoryPreferences) to count for journeys, attribution "
        "and the learned models; empty (the default): none. Other events are stored, "
        "flagged and left out. See pipeline/core/eligibility.py.",
    )

    def required_consent_categories(self) -> frozenset[str]:
        """``JOURNEYS_REQUIRED_CONSENT`` as a set of category names."""
        return frozenset(c.strip() for c in self.required_consent.split(",") if c.strip())

    @field_validator("kafka_security_protocol", mode="before")
    @classmethod
    def _protocol_spelling(cls, value: Any) -> Any:
        return value.strip().upper().replace("-", "_") if isinstance(value, str) else value

    @field_validator("kafka_sasl_mechanism", mode="before")
    @classmethod
    def _mechanism_spelling(cls, value: Any) -> Any:
        if isinstance(value, str):
            return value.strip().upper().replace("_", "-") or None
        return value

    @model_validator(mode="after")
    def _security_is_complete(self) -> Settings:
        protocol = self.kafka_security_protocol
        if protocol.startswith("SASL_"):
            missing = [
                f"JOURNEYS_{name.upper()}"
                for name in ("kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password")
                if getattr(self, name) in (None, "")
            ]
            if missing:
                raise ValueError(
                    f"JOURNEYS_KAFKA_SECURITY_PROTOCOL={protocol} needs {', '.join(missing)}"
                )
        if bool(self.kafka_ssl_certfile) != bool(self.kafka_ssl_keyfile):
            raise ValueError(
                "set JOURNEYS_KAFKA_SSL_CERTFILE and JOURNEYS_KAFKA_SSL_KEYFILE together"
            )
        return self

    # -- secrets stay out of repr, str and JSON dumps ----------------------------------

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            if name in ("clickhouse_url", "schema_registry_url") and isinstance(value, str):
                yield name, redact_url(value)
            else:
                yield name, value

    @field_serializer("clickhouse_url", "schema_registry_url", when_used="json")
    def _redact_in_json(self, value: str | None) -> str | None:
        return None if value is None else redact_url(value)

    @property
    def clickhouse_url_redacted(self) -> str:
        """``clickhouse_url`` with its password masked: the form to print or log."""
        return redact_url(self.clickhouse_url)

    # -- Kafka clients -----------------------------------------------------------------

    @property
    def _uses_ssl(self) -> bool:
        return self.kafka_security_protocol in ("SSL", "SASL_SSL")

    def kafka_config(self) -> dict[str, Any]:
        """librdkafka (confluent-kafka) client settings, with security passed through."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.kafka_bootstrap,
            "security.protocol": self.kafka_security_protocol,
        }
        if self.kafka_sasl_mechanism:
            conf["sasl.mechanism"] = self.kafka_sasl_mechanism
        if self.kafka_sasl_username:
            conf["sasl.username"] = self.kafka_sasl_username
        if self.kafka_sasl_password is not None:
            conf["sasl.password"] = self.kafka_sasl_password.get_secret_value()
        if self.kafka_ssl_cafile:
            conf["ssl.ca.location"] = self.kafka_ssl_cafile
        if self.kafka_ssl_certfile:
            conf["ssl.certificate.location"] = self.kafka_ssl_certfile
        if self.kafka_ssl_keyfile:
            conf["ssl.key.location"] = self.kafka_ssl_keyfile
        if self.kafka_ssl_key_password is not None:
            conf["ssl.key.password"] = self.kafka_ssl_key_password.get_secret_value()
        if self._uses_ssl and not self.kafka_ssl_check_hostname:
            conf["ssl.endpoint.identification.algorithm"] = "none"
        return conf

    def kafka_ssl_context(self) -> ssl.SSLContext:
        """The TLS context of the Faust (aiokafka) clients, from the ``kafka_ssl_*`` settings."""
        try:
            context = ssl.create_default_context(
                ssl.Purpose.SERVER_AUTH, cafile=self.kafka_ssl_cafile or None
            )
            if self.kafka_ssl_certfile:
                key_password = (
                    self.kafka_ssl_key_password.get_secret_value()
                    if self.kafka_ssl_key_password is not None
                    else None
                )
                context.load_cert_chain(
                    self.kafka_ssl_certfile, self.kafka_ssl_keyfile or None, password=key_password
                )
        except (OSError, ssl.SSLError) as exc:
            # OSError covers a missing or unreadable file; the message names no secret.
            raise SettingsError(
                "cannot build the Kafka TLS context from "
                f"JOURNEYS_KAFKA_SSL_CAFILE={self.kafka_ssl_cafile!r}, "
                f"JOURNEYS_KAFKA_SSL_CERTFILE={self.kafka_ssl_certfile!r}, "
                f"JOURNEYS_KAFKA_SSL_KEYFILE={self.kafka_ssl_keyfile!r}: {exc}"
            ) from exc
        if not self.kafka_ssl_check_hostname:
            context.check_hostname = False
        return context

    def faust_credentials(self) -> CredentialsT | None:
        """The Faust/aiokafka credentials for ``faust.App(broker_credentials=...)``.

        None for PLAINTEXT; :class:`faust.SSLCredentials` for SSL;
        :class:`faust.SASLCredentials` (with a TLS context for SASL_SSL) for SASL_*.
        Raises :class:`SettingsError` when a certificate or key file cannot be loaded.
        """
        protocol = self.kafka_security_protocol
        if protocol == "PLAINTEXT":
            return None
        import faust

        if protocol == "SSL":
            return faust.SSLCredentials(self.kafka_ssl_context())
        password = self.kafka_sasl_password
        return faust.SASLCredentials(
            username=self.kafka_sasl_username,
            password=None if password is None else password.get_secret_value(),
            mechanism=self.kafka_sasl_mechanism,
            ssl_context=self.kafka_ssl_context() if protocol == "SASL_SSL" else None,
        )


def load_settings() -> Settings:
    """Read the settings from the environment. Call this at the edge (CLI), nowhere else."""
    return Settings()
