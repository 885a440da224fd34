"""``journeys query``: run one SQL query against ClickHouse and print the result."""

from __future__ import annotations

import argparse
import atexit
import functools
import re
import sys
from typing import Any

from cli.commands._common import fail, settings
from cli.commands._help import HelpFormatter

EPILOG = """\
examples:
  journeys query "SELECT channel, count() AS n FROM journeys.touchpoints FINAL GROUP BY channel"
  journeys query "SELECT * FROM journeys.dead_letters LIMIT 5 FORMAT JSONEachRow" | jq .
  journeys query --file queries/01_channel_credit_by_model.sql --param since=2026-10-01
  journeys query "SELECT count() FROM journeys.journeys FINAL WHERE ended_at >= {since:Date}" \\
      --param since=2026-10-01

Parameters use ClickHouse's {name:Type} syntax. Each --param name=value is bound on the
client as a typed literal (CAST('value', 'Type')), so the same file also runs with
`clickhouse client --param_name=value`. A query file's header declares its parameters
and their defaults (see queries/README.md and docs/analysts.md).

Ending the SQL with a FORMAT clause (TSV, CSV, JSONEachRow...), or --format NAME, prints
the result exactly as ClickHouse writes it, for pipes. By default (--format auto) up to
{rows} rows print as a table and larger results as plain tab-separated text with a header
line (--format table forces the table). Queries are read-only and run with the analysts'
settings (sinks/clickhouse.py ANALYST_SETTINGS). While `journeys run` owns the embedded
ClickHouse data, the query is sent to it.
"""

_FORMAT = re.compile(r"\bFORMAT\s+\w+\s*;?\s*$", re.IGNORECASE)
_FORMAT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")

#: Above this many rows ``--format auto`` prints plain text: a rich table costs about
#: a millisecond per row.
TABLE_ROWS = 200


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "query",
        help="print the result of one SQL query",
        description="Run one read-only SQL query against JOURNEYS_CLICKHOUSE_URL.",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    p.epilog = EPILOG.replace("{rows}", str(TABLE_ROWS))
    p.add_argument("sql", nargs="?", help="the query (or use --file)")
    p.add_argument("--file", "-f", help="read the query from this .sql file")
    p.add_argument(
        "--param",
        "-p",
        action="append",
        metavar="NAME=VALUE",
        help="value of a {NAME:Type} placeholder (repeatable); a file's header gives defaults",
    )
    p.add_argument(
        "--format",
        default="auto",
        metavar="NAME",
        help=f"auto (a table up to {TABLE_ROWS} rows, else plain text), table, plain, or a "
        "ClickHouse output format (TSV, CSV, JSONEachRow, Markdown...)",
    )
    p.set_defaults(func=run)


@functools.cache
def _reader(url: str, database: str) -> tuple[Any, dict[str, Any]]:
    """One read-only client per process and URL (``journeys report`` sends several
    queries: the engine opens once), with the analysts' settings; closed at exit."""
    from sinks.clickhouse import connect_reader

    client = connect_reader(url, database)
    atexit.register(client.close)
    return client, client.analyst_settings()


def run_sql(sql: str) -> bytes:
    """The raw result of *sql* in the format its FORMAT clause names, read-only."""
    from sinks.query_server import find_owner, remote_query

    cfg = settings()
    port = find_owner(cfg.clickhouse_url)
    if port is not None:
        return remote_query(port, sql)
    client, analyst = _reader(cfg.clickhouse_url, cfg.clickhouse_database)
    data: bytes = client.raw_query(sql, settings=analyst)
    return data


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sinks.clickhouse import SinkError
    from sinks.report.sql import ParamError, bind, bind_sql, parse_assignments, parse_query_file

    try:
        values = parse_assignments(getattr(args, "param", None))
        if args.file:
            try:
                sql = bind(parse_query_file(Path(args.file)), values)
            except OSError as exc:
                return fail(f"{args.file}: {exc.strerror}", 2)
        elif args.sql:
            sql = bind_sql(args.sql, values)
        else:
            return fail("give the SQL as an argument or with --file", 2)
    except ParamError as exc:
        return fail(f"{args.file}: {exc}" if args.file else str(exc), 2)
    sql = sql.strip().rstrip(";").strip()
    choice = str(getattr(args, "format", "auto") or "auto")
    raw_format = bool(_FORMAT.search(sql))
    if not raw_format and choice.lower() not in ("auto", "table", "plain"):
        if not _FORMAT_NAME.match(choice):
            return fail(f"--format {choice!r}: give auto, table, plain or a ClickHouse format", 2)
        sql, raw_format = f"{sql}\nFORMAT {choice}", True
    try:
        body = run_sql(sql if raw_format else f"{sql}\nFORMAT TSVWithNamesAndTypes")
    except SinkError as exc:
        return fail(str(exc))
    except Exception as exc:  # noqa: BLE001 - engine errors: show them, do not trace back
        return fail(str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc))
    if raw_format:
        sys.stdout.buffer.write(body)
        sys.stdout.flush()
        return 0
    return _print(body, choice.lower())


def _print(body: bytes, choice: str) -> int:
    """Print a ``TSVWithNamesAndTypes`` result as a table, or as plain text when large."""
    from rich.console import Console
    from rich.table import Table

    from cli.commands._common import console

    lines = body.decode("utf-8", "replace").splitlines()
    if len(lines) < 2:
        return 0
    rows = len(lines) - 2
    if choice == "plain" or (choice == "auto" and rows > TABLE_ROWS):
        sys.stdout.write("\n".join([lines[0], *lines[2:]]) + "\n")
        sys.stdout.flush()
        console.print(f"{rows} row(s)", style="dim")
        return 0
    names, types = lines[0].split("\t"), lines[1].split("\t")
    table = Table(show_edge=False, header_style="bold")
    for name, type_ in zip(names, types, strict=False):
        numeric = re.match(r"^(Nullable\()?(U?Int|Float|Decimal)", type_) is not None
        table.add_column(name, justify="right" if numeric else "left")
    for line in lines[2:]:
        table.add_row(*(_unescape(c) for c in line.split("\t")))
    Console().print(table)
    console.print(f"{rows} row(s)", style="dim")
    return 0


def _unescape(cell: str) -> str:
    return cell.replace("\\t", "\t").replace("\\n", "\n").replace("\\\\", "\\")
