"""Every schema parses, and every version can read the data of the one before it.

Evolution rule (schemas/README.md): changes are backward compatible only. A new
version is added as schemas/history/NAME/vN.avsc and copied to schemas/NAME.avsc.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path
from typing import Any

import avro.schema
import fastavro
import pytest

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
NAMES = sorted(p.stem for p in SCHEMAS.glob("*.avsc"))


def versions(name: str) -> list[Path]:
    return sorted(
        (SCHEMAS / "history" / name).glob("v*.avsc"), key=lambda p: int(p.stem.removeprefix("v"))
    )


def test_there_are_schemas() -> None:
    assert {"Touchpoint", "IdentityChange", "Journey", "AttributionCredit", "DeadLetter"} <= set(
        NAMES
    )


@pytest.mark.parametrize("path", sorted(SCHEMAS.glob("**/*.avsc")), ids=str)
def test_schema_parses_with_both_libraries(path: Path) -> None:
    text = path.read_text()
    fastavro.parse_schema(json.loads(text))
    avro.schema.parse(text)


@pytest.mark.parametrize("name", NAMES)
def test_current_schema_is_the_latest_published_version(name: str) -> None:
    history = versions(name)
    assert history, f"schemas/history/{name}/v1.avsc is missing"
    assert json.loads((SCHEMAS / f"{name}.avsc").read_text()) == json.loads(
        history[-1].read_text()
    ), f"schemas/{name}.avsc differs from {history[-1]}: publish the change as a new version"


def _random_value(schema: Any, rng: random.Random, named: dict[str, Any]) -> Any:
    if isinstance(schema, str):
        if schema in named:
            return _random_value(named[schema], rng, named)
        return {
            "string": lambda: rng.choice(["", "a", "ü", "x" * 20]),
            "long": lambda: rng.randrange(-(2**40), 2**40),
            "int": lambda: rng.randrange(-(2**20), 2**20),
            "double": lambda: rng.uniform(-1e6, 1e6),
            "float": lambda: 1.5,
            "boolean": lambda: rng.random() < 0.5,
            "bytes": lambda: bytes(rng.randrange(256) for _ in range(5)),
            "null": lambda: None,
        }[schema]()
    if isinstance(schema, list):
        return _random_value(rng.choice(schema), rng, named)
    kind = schema["type"]
    if kind == "record":
        named[schema["name"]] = schema
        return {f["name"]: _random_value(f["type"], rng, named) for f in schema["fields"]}
    if kind == "enum":
        named[schema["name"]] = schema
        return rng.choice(schema["symbols"])
    if kind == "array":
        return [_random_value(schema["items"], rng, named) for _ in range(rng.randrange(3))]
    if kind == "map":
        return {f"k{i}": _random_value(schema["values"], rng, named) for i in range(2)}
    return _random_value(kind, rng, named)


@pytest.mark.parametrize("name", NAMES)
def test_each_version_reads_the_data_of_the_previous_one(name: str) -> None:
    history = versions(name)
    rng = random.Random(1)
    for old_path, new_path in zip(history, history[1:], strict=False):
        old_raw = json.loads(old_path.read_text())
        old = fastavro.parse_schema(old_raw)
        new = fastavro.parse_schema(json.loads(new_path.read_text()))
        for _ in range(50):
            value = _random_value(old_raw, rng, {})
            buf = io.BytesIO()
            fastavro.schemaless_writer(buf, old, value)
            buf.seek(0)
            fastavro.schemaless_reader(buf, old, new)  # raises if not backward compatible


def test_the_compatibility_check_can_fail() -> None:
    old = fastavro.parse_schema(
        {"type": "record", "name": "R", "fields": [{"name": "a", "type": "string"}]}
    )
    new = fastavro.parse_schema(
        {
            "type": "record",
            "name": "R",
            "fields": [{"name": "a", "type": "string"}, {"name": "b", "type": "long"}],
        }
    )
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, old, {"a": "x"})
    buf.seek(0)
    with pytest.raises(fastavro.read.SchemaResolutionError):
        fastavro.schemaless_reader(buf, old, new)
