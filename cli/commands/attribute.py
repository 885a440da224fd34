"""``journeys attribute``: run the attribution models over a path file.

The path file is the ChannelAttribution layout
(``path,total_conversions,total_conversion_value,total_null``, channels joined by
``" > "``). The output is every channel's attributed conversions and value per model: a
table (rows are channels, columns are models), or CSV / JSON in long format
(``model,channel,conversions,value``) for piping. A check line compares each model's
total with the file's total conversions; with ``--format csv|json`` it goes to stderr so
that stdout stays machine-readable.

Exit codes: 0 on success, 2 on bad input (unreadable or malformed file, bad option),
1 if a model's totals do not add up to the file's (a bug, never expected).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from cli.commands._help import HelpFormatter
from pipeline.core.attribution import (
    DEFAULT_HALF_LIFE_HOURS,
    DEFAULT_TOUCH_INTERVAL_HOURS,
    DIRECT_CHANNEL,
    MODELS,
    SHAPLEY_NEGATIVES,
    AttributionConfig,
    AttributionError,
    ChannelTotals,
    attribute_paths,
)
from pipeline.core.paths import PathFileError, PathStats, read_path_file

FORMATS = ("table", "csv", "json")
EXIT_OK = 0
EXIT_MISMATCH = 1
EXIT_BAD_INPUT = 2
_PROG = "journeys attribute"

DESCRIPTION = """\
Run attribution models over a path file and print every channel's attributed
conversions and value, per model.

The path file has the columns path,total_conversions,total_conversion_value,total_null
with ' > ' between channels (the ChannelAttribution layout; .csv or .csv.gz). Models:
first_touch, last_touch, last_non_direct, linear, time_decay, position_based (rule-based,
a row with N conversions gives N times one conversion's credit), markov (removal effects
of an absorbing Markov chain, solved exactly) and shapley (Shapley values over channel
sets; --shapley-negatives clip, the default, clips negative Shapley values to 0 before
normalising each set's shares, keep leaves them in and reproduces DP6
marketing-attribution-models). See docs/attribution.md for the definitions."""

EPILOG = """\
examples:
  journeys attribute --paths tests/fixtures/paths_small.csv
  journeys attribute --paths paths.csv --model markov,shapley --order 2
  journeys attribute --paths paths.csv --model shapley --shapley-negatives keep
  journeys attribute --paths paths.csv --model linear --model time_decay \\
      --half-life-hours 72 --format csv > credit.csv

exit status: 0 ok, 2 bad input (the error names the file and line), 1 totals mismatch."""


def _models(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown model {', '.join(unknown) or repr(text)}; choose from {', '.join(MODELS)}"
        )
    return names


def _position_weights(text: str) -> tuple[float, float, float]:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(
            f"expected three numbers first,middle,last (e.g. 40,20,40), got {text!r}"
        )
    try:
        first, middle, last = (float(p) for p in parts)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not numbers: {text!r}") from exc
    return first, middle, last


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``attribute`` sub-command to the ``journeys`` parser."""
    parser = sub.add_parser(
        "attribute",
        help="run every attribution model on a path file and print per-channel credit",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--paths",
        required=True,
        metavar="FILE.csv",
        help="path file: path,total_conversions,total_conversion_value,total_null",
    )
    parser.add_argument(
        "--model",
        action="append",
        type=_models,
        metavar="M",
        help="model(s) to run, repeatable or comma-separated (default: all 8)",
    )
    parser.add_argument(
        "--order",
        type=_positive_int,
        default=1,
        metavar="K",
        help="Markov chain order (default: 1)",
    )
    parser.add_argument(
        "--half-life-hours",
        type=float,
        default=DEFAULT_HALF_LIFE_HOURS,
        metavar="H",
        help=f"time_decay half-life in hours (default: {DEFAULT_HALF_LIFE_HOURS:g}, 7 days)",
    )
    parser.add_argument(
        "--touch-interval-hours",
        type=float,
        default=DEFAULT_TOUCH_INTERVAL_HOURS,
        metavar="H",
        help="time_decay on a path file: hours assumed between consecutive touches, "
        f"which path files do not record (default: {DEFAULT_TOUCH_INTERVAL_HOURS:g})",
    )
    parser.add_argument(
        "--position-weights",
        type=_position_weights,
        default=(40.0, 20.0, 40.0),
        metavar="F,M,L",
        help="position_based first,middle,last weights (default: 40,20,40)",
    )
    parser.add_argument(
        "--direct-channel",
        default=DIRECT_CHANNEL,
        metavar="NAME",
        help=f"channel that last_non_direct skips (default: {DIRECT_CHANNEL})",
    )
    parser.add_argument(
        "--shapley-negatives",
        choices=SHAPLEY_NEGATIVES,
        default="clip",
        help="shapley: clip negative Shapley values to 0 before normalising each channel "
        "set's shares (default), or keep them, negative shares included, as DP6 "
        "marketing-attribution-models does",
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="table",
        help="table (default), or csv / json in long format model,channel,conversions,value",
    )
    parser.set_defaults(func=run)


def _error(message: str) -> int:
    print(f"{_PROG}: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def run(args: argparse.Namespace) -> int:
    """Run the sub-command; returns the exit code."""
    selected: list[str] = []
    for group in args.model or [list(MODELS)]:
        selected.extend(m for m in group if m not in selected)
    try:
        config = AttributionConfig(
            half_life_hours=args.half_life_hours,
            position_weights=tuple(args.position_weights),
            markov_order=args.order,
            direct_channel=args.direct_channel,
            touch_interval_hours=args.touch_interval_hours,
        )
    except AttributionError as exc:
        return _error(str(exc))
    try:
        stats = read_path_file(args.paths)
    except PathFileError as exc:
        return _error(str(exc))
    started = time.perf_counter()
    try:
        results = attribute_paths(stats, selected, config, args.shapley_negatives)
    except AttributionError as exc:
        return _error(f"{args.paths}: {exc}")
    elapsed = time.perf_counter() - started

    channels = _channel_order(stats, results, selected)
    if args.format == "csv":
        _write_csv(sys.stdout, results, channels)
    elif args.format == "json":
        json.dump(_long_rows(results, channels), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print_tables(args.paths, stats, results, channels)
    ok, check = _check(stats, results, elapsed)
    print(check, file=sys.stdout if args.format == "table" else sys.stderr)
    return EXIT_OK if ok else EXIT_MISMATCH


def _channel_order(
    stats: PathStats, results: dict[str, ChannelTotals], models: Sequence[str]
) -> list[str]:
    """Channels by the first model's conversions, largest first, then by name."""
    if not models:
        return sorted(stats.channels)
    lead = results[models[0]].as_dict()
    return sorted(stats.channels, key=lambda c: (-lead[c][0], c))


def _long_rows(results: dict[str, ChannelTotals], channels: Sequence[str]) -> list[dict[str, Any]]:
    rows = []
    for model, totals in results.items():
        by_channel = totals.as_dict()
        for channel in channels:
            conversions, value = by_channel[channel]
            rows.append(
                {"model": model, "channel": channel, "conversions": conversions, "value": value}
            )
    return rows


def _write_csv(out: TextIO, results: dict[str, ChannelTotals], channels: Sequence[str]) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("model", "channel", "conversions", "value"))
    for row in _long_rows(results, channels):
        writer.writerow(
            (row["model"], row["channel"], repr(row["conversions"]), repr(row["value"]))
        )


def _print_tables(
    source: str,
    stats: PathStats,
    results: dict[str, ChannelTotals],
    channels: Sequence[str],
) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    by_model = {m: t.as_dict() for m, t in results.items()}
    tables = [(0, "Attributed conversions")]
    if stats.total_value > 0:
        tables.append((1, "Attributed value"))
    channel_width = max(5, *map(len, channels))
    for index, title in tables:
        cells = {
            m: [f"{by_model[m][c][index]:,.2f}" for c in channels]
            + [f"{(t.total_conversions if index == 0 else t.total_value):,.2f}"]
            for m, t in results.items()
        }
        # "last_non_direct" is shown as "last/non/direct" on three header lines.
        headers = {m: m.replace("_", "\n") for m in cells}
        widths = {
            m: max(*map(len, column), *map(len, headers[m].splitlines()))
            for m, column in cells.items()
        }
        groups = _fit_columns(list(cells), widths, channel_width, console.width)
        for part, group in enumerate(groups, start=1):
            suffix = f" ({part}/{len(groups)})" if len(groups) > 1 else ""
            table = Table(title=f"{title} — {source}{suffix}", title_justify="left")
            table.add_column("channel", style="bold", no_wrap=True, min_width=channel_width)
            for model in group:
                table.add_column(
                    headers[model], justify="right", no_wrap=True, min_width=widths[model]
                )
            for row, channel in enumerate(channels):
                table.add_row(channel, *(cells[m][row] for m in group))
            table.add_section()
            table.add_row("total", *(cells[m][-1] for m in group), style="italic")
            console.print(table)


def _fit_columns(
    models: list[str], widths: dict[str, int], channel_width: int, available: int
) -> list[list[str]]:
    """Split the model columns into tables that each fit *available* characters."""
    groups: list[list[str]] = [[]]
    used = 1 + channel_width + 3
    for model in models:
        need = widths[model] + 3
        if groups[-1] and used + need > available:
            groups.append([])
            used = 1 + channel_width + 3
        groups[-1].append(model)
        used += need
    return groups


def _check(stats: PathStats, results: dict[str, ChannelTotals], elapsed: float) -> tuple[bool, str]:
    expected = stats.total_conversions
    off = [
        f"{m} ({t.total_conversions:.6f})"
        for m, t in results.items()
        if not math.isclose(t.total_conversions, expected, rel_tol=1e-9, abs_tol=1e-6)
    ]
    summary = (
        f"{len(stats)} paths, {len(stats.channels)} channels, {expected:g} conversions "
        f"(value {stats.total_value:,.2f}), {stats.total_nulls:g} nulls; "
        f"{len(results)} model(s) in {elapsed:.3f} s"
    )
    if off:
        return False, f"check FAILED: {summary}; totals differ: {', '.join(off)}"
    return True, f"check ok: {summary}; every model attributes {expected:g} conversions"
