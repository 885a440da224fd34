"""``journeys report``: the attribution report, in the terminal and as one HTML file."""

from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from cli.commands._common import console, fail, settings
from cli.commands._help import HelpFormatter
from sinks.report.data import MODELS

if TYPE_CHECKING:
    from sinks.report.data import ReportData

EPILOG = """\
examples:
  journeys report
  journeys report --since 2026-10-01 --model markov
  journeys report --html var/report.html

The report reads ClickHouse the way `journeys query` does: while `journeys run` owns the
embedded chDB data it asks that process, read-only. Credit comes from
attribution_current (the latest version of every conversion), journeys with FINAL.
--html writes one self-contained file (inline SVG and CSS, no script, nothing fetched):
channel credit by model, a Sankey of channel transitions towards conversion, path length
and time-to-convert distributions, and daily conversions by channel.
"""


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date YYYY-MM-DD") from exc


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="the attribution report (terminal, or one HTML file)",
        description="Print the attribution report of the conversions in ClickHouse, and "
        "optionally write it as one self-contained HTML file.",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--since", type=_day, metavar="DATE", help="first conversion day (UTC)")
    p.add_argument("--until", type=_day, metavar="DATE", help="first day left out (UTC)")
    p.add_argument(
        "--model",
        default="linear",
        choices=MODELS,
        metavar="MODEL",
        help="model for the daily chart and the sort order (linear); one of: " + ", ".join(MODELS),
    )
    p.add_argument("--html", type=Path, metavar="FILE", help="also write the report here")
    p.add_argument("--quiet", "-q", action="store_true", help="no terminal report")
    p.set_defaults(func=run)


def write_html(data: ReportData, path: Path) -> Path:
    """Write the HTML report of *data* to *path* (folders created) and return it."""
    from sinks.report.html import render_html

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(data), encoding="utf-8")
    return path


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from cli.commands.query import run_sql
    from sinks.clickhouse import SinkError
    from sinks.report.data import ReportError, fetch_report
    from sinks.report.terminal import render_terminal

    if args.since and args.until and args.until <= args.since:
        return fail("--until must be after --since", 2)
    cfg = settings()
    try:
        data = fetch_report(
            run_sql, cfg.clickhouse_database, since=args.since, until=args.until, model=args.model
        )
    except (SinkError, ReportError) as exc:
        return fail(str(exc))
    except Exception as exc:  # noqa: BLE001 - engine errors: show them, do not trace back
        text = str(exc).strip()
        return fail(text.splitlines()[0] if text else repr(exc))
    if not args.quiet:
        render_terminal(data, Console())
    if args.html:
        try:
            path = write_html(data, args.html)
        except OSError as exc:
            return fail(f"{args.html}: {exc.strerror}", 2)
        console.print(f"wrote {path.resolve()}", highlight=False)
    return 0
