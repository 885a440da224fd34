"""Query files with documented headers and ``{name:Type}`` parameters.

The files in ``queries/`` use ClickHouse's server-side parameter syntax
(``{since:Date}``), so they run unchanged with ``clickhouse client --param_since=...``
or clickhouse-connect's ``client.query(sql, parameters=...)``. ``journeys query`` binds
them on the client instead (:func:`bind`): each placeholder becomes
``CAST('value' AS Type)`` with the value quoted as a ClickHouse string literal, so the
same SQL also goes through the read-only endpoint of the process that owns chDB.

A file declares its parameters, with defaults, in its header::

    -- Parameters:
    --   since  Date    = 1970-01-01   first conversion day included (UTC)
    --   limit  UInt32  = 20           rows to show
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*):([^{}]+)\}")
_PARAM_LINE = re.compile(r"^--\s+([A-Za-z_][A-Za-z0-9_]*)\s+(\S+)\s+=\s+(\S+)\s*(.*)$")
_HEADER = re.compile(r"^--\s*(Question|Grain|FINAL|Parameters)\s*:\s*(.*)$", re.IGNORECASE)
_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?Z?$")


class ParamError(ValueError):
    """A query parameter is missing, unknown or not of its declared type."""


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    type: str
    default: str | None = None
    doc: str = ""


@dataclass(frozen=True)
class QueryFile:
    """One documented ``.sql`` file: its header and its SQL."""

    path: Path
    sql: str
    question: str = ""
    grain: str = ""
    final: str = ""
    params: dict[str, Param] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.stem

    def placeholders(self) -> dict[str, str]:
        """``{name: Type}`` of every placeholder in the SQL (comments excluded)."""
        return {
            m.group(1): m.group(2).strip() for m in PLACEHOLDER.finditer(strip_comments(self.sql))
        }


def strip_comments(sql: str) -> str:
    """*sql* without its whole-line ``--`` comments."""
    return "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))


def parse_query_file(path: Path, text: str | None = None) -> QueryFile:
    """Read the header of a query file: Question, Parameters, Grain and FINAL."""
    text = path.read_text(encoding="utf-8") if text is None else text
    fields: dict[str, list[str]] = {"question": [], "grain": [], "final": []}
    params: dict[str, Param] = {}
    current: str | None = None
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line.lstrip().startswith("--"):
            if line.strip():
                break  # the header ends at the first line of SQL
            current = None
            continue
        header = _HEADER.match(line.strip())
        if header:
            current = header.group(1).lower()
            rest = header.group(2).strip()
            if current != "parameters" and rest:
                fields[current].append(rest)
            continue
        if current == "parameters":
            decl = _PARAM_LINE.match(line.strip())
            if decl:
                name, type_, default, doc = decl.groups()
                params[name] = Param(name, type_, None if default == "-" else default, doc)
            continue
        body = line.strip()[2:].strip()
        if current in fields and body:
            fields[current].append(body)
        elif not body:
            current = None
    return QueryFile(
        path=path,
        sql=text,
        question=" ".join(fields["question"]),
        grain=" ".join(fields["grain"]),
        final=" ".join(fields["final"]),
        params=params,
    )


def load_query_files(folder: Path) -> list[QueryFile]:
    return [parse_query_file(p) for p in sorted(folder.glob("*.sql"))]


def parse_assignments(items: list[str] | None) -> dict[str, str]:
    """``["since=2026-10-01", "limit=5"]`` -> a dict; a malformed item is a ParamError."""
    out: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
            raise ParamError(f"--param {item!r}: write name=value")
        out[name] = value
    return out


def literal(value: str, type_: str, name: str = "?") -> str:
    """*value* as a typed ClickHouse expression, checked against *type_* where it is simple."""
    base = re.sub(r"^(Nullable|LowCardinality)\((.*)\)$", r"\2", type_.strip())
    checks = (
        (r"^U?Int\d+$", _INT, "an integer"),
        (r"^(Float\d+|Decimal.*)$", _FLOAT, "a number"),
        (r"^Date(32)?$", _DATE, "a date YYYY-MM-DD"),
        (r"^DateTime(64)?(\(.*\))?$", _DATETIME, "a date-time YYYY-MM-DD hh:mm:ss"),
    )
    for type_pattern, value_pattern, what in checks:
        if re.match(type_pattern, base) and not value_pattern.match(value.strip()):
            raise ParamError(f"parameter {name} ({type_}): {value!r} is not {what}")
    if base.startswith("Identifier"):
        raise ParamError(f"parameter {name}: Identifier parameters are not supported")
    value = value.strip() if not base.startswith("String") else value
    if re.match(r"^DateTime", base):
        value = value.replace("T", " ").rstrip("Z")
    quoted = value.replace("\\", "\\\\").replace("'", "\\'")
    type_quoted = type_.replace("\\", "\\\\").replace("'", "\\'")
    return f"CAST('{quoted}', '{type_quoted}')"


def bind_sql(
    sql: str, values: Mapping[str, str], declared: Mapping[str, Param] | None = None
) -> str:
    """Replace each ``{name:Type}`` of *sql* by the typed literal of its value.

    The value comes from *values*, else from the declared default; a placeholder with
    neither, or a value given for no placeholder, is a :class:`ParamError`.
    """
    declared = declared or {}
    used = {m.group(1) for m in PLACEHOLDER.finditer(strip_comments(sql))}
    unknown = sorted(set(values) - used)
    if unknown:
        known = ", ".join(sorted(used)) or "none"
        raise ParamError(f"unknown parameter {', '.join(unknown)} (this query takes: {known})")

    def sub(match: re.Match[str]) -> str:
        name, type_ = match.group(1), match.group(2).strip()
        if name in values:
            value: str | None = values[name]
        else:
            value = declared[name].default if name in declared else None
        if value is None:
            raise ParamError(f"missing parameter {name} ({type_}): add --param {name}=VALUE")
        return literal(value, type_, name)

    lines = []
    for line in sql.splitlines():
        lines.append(line if line.lstrip().startswith("--") else PLACEHOLDER.sub(sub, line))
    return "\n".join(lines)


def bind(qf: QueryFile, values: Mapping[str, str]) -> str:
    """The SQL of *qf* with its parameters bound (defaults from its header)."""
    return bind_sql(qf.sql, values, qf.params)
