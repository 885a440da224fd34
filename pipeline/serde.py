"""Avro serde for Kafka values, on fastavro with a schema cache.

Two wire formats, and consumers accept either:

* **Single-object encoding** (the Avro spec's): ``C3 01`` + the 8-byte little-endian
  CRC-64-AVRO fingerprint of the writer schema + the Avro body. Writer schemas are
  resolved from ``schemas/`` (current and ``history/``), so no registry is needed.
  This is the embedded default.
* **Confluent wire format**: magic byte ``0`` + 4-byte big-endian schema id + body,
  with schemas registered in and fetched from a Schema Registry (``http(s)://`` or
  ``mock://`` for tests). Subjects use the record-name strategy
  (``io.journeys.Touchpoint``), so one schema serves every topic.

Records are always read into the *current* version of their schema (Avro schema
resolution), so old data stays readable after a backward-compatible change.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

SOM_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = 0


class SerdeError(ValueError):
    """Bytes that cannot be decoded, or a record that cannot be encoded."""


@dataclass(frozen=True, slots=True)
class _Writer:
    name: str
    parsed: Any
    header: bytes


def _crc64_fingerprint(schema: Any) -> bytes:
    hexdigest = fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO")
    # fastavro renders the 64-bit value big-endian in hex; the wire form is little-endian.
    return int(hexdigest, 16).to_bytes(8, "little")


class SchemaCatalog:
    """Every schema in ``schemas/`` (current and history), indexed by name and fingerprint."""

    def __init__(self, schemas_dir: Path) -> None:
        self.dir = schemas_dir
        self.current: dict[str, dict[str, Any]] = {}
        self.by_fingerprint: dict[bytes, tuple[str, Any]] = {}
        self._parsed_current: dict[str, Any] = {}
        # History first, so that a current schema equal to its last version wins the index.
        paths = sorted(schemas_dir.glob("history/*/*.avsc")) + sorted(schemas_dir.glob("*.avsc"))
        if not paths:
            raise SerdeError(f"{schemas_dir}: no .avsc schemas found")
        for path in paths:
            try:
                raw = json.loads(path.read_text())
                parsed = fastavro.parse_schema(raw)
            except (ValueError, fastavro.schema.SchemaParseException) as exc:
                raise SerdeError(f"{path}: invalid Avro schema: {exc}") from exc
            name = raw["name"]
            if path.parent == schemas_dir:
                self.current[name] = raw
                self._parsed_current[name] = parsed
            self.by_fingerprint[_crc64_fingerprint(parsed)] = (name, parsed)

    def parsed(self, name: str) -> Any:
        try:
            return self._parsed_current[name]
        except KeyError as exc:
            raise SerdeError(f"unknown schema {name!r}; known: {sorted(self.current)}") from exc


class AvroSerde:
    """Encode records of a named schema, decode bytes in either wire format."""

    def __init__(self, catalog: SchemaCatalog, registry_url: str | None = None) -> None:
        self.catalog = catalog
        self._registry: Any = None
        if registry_url:
            from confluent_kafka.schema_registry import SchemaRegistryClient

            self._registry = SchemaRegistryClient.new_client({"url": registry_url})
        self._writers: dict[str, _Writer] = {}
        self._by_id: dict[int, tuple[str, Any]] = {}

    @classmethod
    def from_dir(cls, schemas_dir: Path, registry_url: str | None = None) -> AvroSerde:
        return cls(SchemaCatalog(schemas_dir), registry_url)

    @property
    def wire_format(self) -> str:
        return "confluent" if self._registry is not None else "single-object"

    def _writer(self, name: str) -> _Writer:
        writer = self._writers.get(name)
        if writer is not None:
            return writer
        parsed = self.catalog.parsed(name)
        if self._registry is not None:
            from confluent_kafka.schema_registry import Schema

            raw = json.dumps(self.catalog.current[name])
            namespace = self.catalog.current[name].get("namespace", "")
            subject = f"{namespace}.{name}" if namespace else name
            schema_id = self._registry.register_schema(subject, Schema(raw, "AVRO"))
            header = bytes([CONFLUENT_MAGIC]) + struct.pack(">I", schema_id)
            self._by_id[schema_id] = (name, parsed)
        else:
            header = SOM_MAGIC + _crc64_fingerprint(parsed)
        writer = _Writer(name, parsed, header)
        self._writers[name] = writer
        return writer

    def encoder(self, name: str) -> Callable[[dict[str, Any]], bytes]:
        """A function that encodes records of schema *name* (header + Avro body)."""
        writer = self._writer(name)
        header, parsed = writer.header, writer.parsed

        def encode(record: dict[str, Any]) -> bytes:
            buf = io.BytesIO()
            buf.write(header)
            try:
                fastavro.schemaless_writer(buf, parsed, record)
            except (ValueError, TypeError, AttributeError, KeyError) as exc:
                raise SerdeError(f"cannot encode {name}: {exc}") from exc
            return buf.getvalue()

        return encode

    def encode(self, name: str, record: dict[str, Any]) -> bytes:
        return self.encoder(name)(record)

    def _writer_schema(self, data: bytes) -> tuple[str, Any, int]:
        """(schema name, writer schema, body offset) of an encoded value."""
        if len(data) >= 10 and data[:2] == SOM_MAGIC:
            found = self.catalog.by_fingerprint.get(bytes(data[2:10]))
            if found is None:
                raise SerdeError(
                    f"unknown schema fingerprint {bytes(data[2:10]).hex()} "
                    f"(not in {self.catalog.dir})"
                )
            return found[0], found[1], 10
        if len(data) >= 5 and data[0] == CONFLUENT_MAGIC:
            (schema_id,) = struct.unpack(">I", data[1:5])
            found = self._by_id.get(schema_id)
            if found is None:
                found = self._fetch(schema_id)
            return found[0], found[1], 5
        raise SerdeError(
            "not Avro: expected single-object (C3 01) or Confluent (00) header, "
            f"got {bytes(data[:2]).hex() or 'empty'}"
        )

    def _fetch(self, schema_id: int) -> tuple[str, Any]:
        if self._registry is None:
            raise SerdeError(
                f"Confluent-framed value with schema id {schema_id}, but no schema registry "
                "is configured (set JOURNEYS_SCHEMA_REGISTRY_URL)"
            )
        try:
            raw = json.loads(self._registry.get_schema(schema_id).schema_str)
        except Exception as exc:  # noqa: BLE001 - registry client raises many types
            raise SerdeError(f"unknown schema id {schema_id}: {exc}") from exc
        found = (raw["name"], fastavro.parse_schema(raw))
        self._by_id[schema_id] = found
        return found

    def decode(self, data: bytes, expect: str | None = None) -> dict[str, Any]:
        """Decode *data* into the current version of its schema.

        *expect* names the schema the caller wants; another one is an error.
        """
        name, writer, offset = self._writer_schema(data)
        if expect is not None and name != expect:
            raise SerdeError(f"expected a {expect} record, got {name}")
        reader = self.catalog.parsed(name)
        try:
            record: Any = fastavro.schemaless_reader(
                io.BytesIO(data[offset:]), writer, reader if reader is not writer else None
            )
        except (EOFError, ValueError, TypeError, IndexError, UnicodeDecodeError) as exc:
            raise SerdeError(f"corrupt {name} body: {type(exc).__name__}: {exc}") from exc
        if not isinstance(record, dict):
            raise SerdeError(f"{name} is not a record schema")
        return record
