"""Query files: their documented headers and the client-side binding of {name:Type}."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.main import main
from sinks.report.sql import (
    ParamError,
    bind,
    bind_sql,
    literal,
    load_query_files,
    parse_assignments,
    parse_query_file,
)
from tests.conftest import REPO

QUERIES = REPO / "queries"

HEADER = """\
-- Question: How many?
--   And where?
-- Parameters:
--   since  Date    = 1970-01-01  first day
--   limit  UInt32  = 20          rows
--   who    String  = -           required, no default
-- Grain: one row per channel.
-- FINAL: needed.
SELECT {who:String}, count() FROM t WHERE d >= {since:Date} LIMIT {limit:UInt32}
"""


def test_every_query_file_is_documented_and_declares_its_parameters() -> None:
    files = load_query_files(QUERIES)
    assert len(files) >= 12
    for qf in files:
        assert qf.question, f"{qf.path.name}: no '-- Question:' header"
        assert qf.grain, f"{qf.path.name}: no '-- Grain:' header"
        assert qf.final.split()[0].rstrip(".,:") in {"needed", "not"}, qf.path.name
        for name, type_ in qf.placeholders().items():
            assert name in qf.params, f"{qf.path.name}: {{{name}}} is not in its Parameters"
            assert qf.params[name].type == type_, f"{qf.path.name}: {name} type differs"
        assert set(qf.params) <= set(qf.placeholders()), f"{qf.path.name}: unused parameter"
        bind(qf, {})  # every parameter has a default
        assert "journeys.attribution " not in qf.sql, f"{qf.path.name}: use attribution_current"


def test_header_is_parsed() -> None:
    qf = parse_query_file(Path("x.sql"), HEADER)
    assert qf.question == "How many? And where?"
    assert qf.grain == "one row per channel."
    assert qf.final == "needed."
    assert qf.params["since"].default == "1970-01-01"
    assert qf.params["limit"].type == "UInt32"
    assert qf.params["who"].default is None


def test_binding_uses_values_then_defaults() -> None:
    qf = parse_query_file(Path("x.sql"), HEADER)
    sql = bind(qf, {"who": "email", "limit": "5"})
    assert "CAST('email', 'String')" in sql
    assert "CAST('1970-01-01', 'Date')" in sql
    assert "LIMIT CAST('5', 'UInt32')" in sql
    assert (
        bind_sql("-- {x:Date} in a comment\nSELECT 1", {}) == "-- {x:Date} in a comment\nSELECT 1"
    )
    with pytest.raises(ParamError, match="missing parameter who"):
        bind(qf, {})
    with pytest.raises(ParamError, match="unknown parameter nope"):
        bind(qf, {"who": "x", "nope": "1"})


def test_values_are_checked_and_quoted() -> None:
    assert literal("it's \\ here", "String") == "CAST('it\\'s \\\\ here', 'String')"
    assert literal("2026-10-01T10:00:00Z", "DateTime") == "CAST('2026-10-01 10:00:00', 'DateTime')"
    assert literal(" 42 ", "UInt32") == "CAST('42', 'UInt32')"
    for value, type_ in (("many", "UInt32"), ("1.5.2", "Float64"), ("01/10/2026", "Date")):
        with pytest.raises(ParamError, match="is not"):
            literal(value, type_, "p")
    with pytest.raises(ParamError, match="Identifier"):
        literal("t", "Identifier")
    injected = bind_sql("SELECT {s:String}", {"s": "x'); DROP TABLE t; --"})
    assert injected == "SELECT CAST('x\\'); DROP TABLE t; --', 'String')"


def test_assignments() -> None:
    assert parse_assignments(["a=1", "b=x=y", "c="]) == {"a": "1", "b": "x=y", "c": ""}
    assert parse_assignments(None) == {}
    with pytest.raises(ParamError, match="name=value"):
        parse_assignments(["novalue"])


def test_query_command_names_a_bad_parameter(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(QUERIES / "03_top_paths.sql")
    assert main(["query", "--file", path, "--param", "limit=lots"]) == 2
    err = capsys.readouterr().err
    assert "03_top_paths.sql" in err and "limit" in err
    assert main(["query", "SELECT {x:UInt8}"]) == 2
    assert "missing parameter x" in capsys.readouterr().err
