"""Typed, frozen settings, read from the environment (prefix ``JOURNEYS_``) at the edge only.

The defaults are the embedded stack: a local Tansu broker on 127.0.0.1:9092 and
chDB (the ClickHouse engine in-process) under ``var/clickhouse``. Production sets
``JOURNEYS_KAFKA_BOOTSTRAP``, ``JOURNEYS_SCHEMA_REGISTRY_URL`` and
``JOURNEYS_CLICKHOUSE_URL`` and runs the very same code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JOURNEYS_", frozen=True, extra="ignore")

    kafka_bootstrap: str = Field(
        "127.0.0.1:9092",
        description="Kafka bootstrap servers. `journeys run`/`broker` start Tansu here if "
        "nothing answers.",
    )
    kafka_security_protocol: str = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."
    )
    kafka_sasl_mechanism: str | None = Field(None, description="e.g. SCRAM-SHA-512.")
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: str | None = None
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
    topic_prefix: str = Field("journeys", description="Prefix of every Kafka topic name.")
    partitions: int = Field(8, ge=1, description="Partitions of the keyed topics.")
    replication_factor: int = Field(1, ge=1)
    data_dir: Path = Field(Path("var/worker"), description="Faust table state (rocksdict).")
    worker_id: str = Field("journeys-worker", description="Faust app id (consumer group).")
    session_timeout_s: float = Field(
        6.0, description="Consumer session timeout; Tansu joins wait about half of it."
    )
    model_refit_every: int = Field(
        50, ge=1, description="Refit markov and shapley after this many new closed paths."
    )
    sink_batch_size: int = Field(5000, ge=1, description="Rows per ClickHouse insert at most.")
    sink_flush_ms: int = Field(250, ge=1, description="Flush a partial batch after this long.")
    schemas_dir: Path = Field(REPO_ROOT / "schemas")
    log_level: str = "INFO"

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
        return conf


def load_settings() -> Settings:
    """Read the settings from the environment. Call this at the edge (CLI), nowhere else."""
    return Settings()
