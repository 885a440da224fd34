"""``journeys evaluate DIR``: score identity stitching against a generated ground truth.

Exit codes: 0 on success, 1 when ``--fail-under`` is given and precision or recall is
below it, 2 on bad input (no folder, no source file, bad ground truth or rules file).
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path
from typing import Any

from cli.commands._common import fail
from cli.commands._help import HelpFormatter

FORMATS = ("table", "json")
EXIT_OK = 0
EXIT_BELOW = 1
EXIT_BAD_INPUT = 2

DESCRIPTION = """\
Replay every source file of a folder written by `journeys generate` through the real
connectors (no broker), stitch the touchpoints' identifiers in event-time order with
the identity graph (pipeline/core/identity.py), and print the pairwise precision and
recall of the stitched persons against ground_truth.csv, per event too when
events_truth.csv is there, with the persons true vs stitched, the refusals by rule and
the resolver's links/s. docs/identity.md explains the figures."""

EPILOG = """\
examples:
  journeys generate --out var/sample && journeys evaluate var/sample
  journeys evaluate var/sample --format json
  journeys evaluate var/sample --rules identity.toml --fail-under 0.98

exit status: 0 ok, 1 below --fail-under, 2 bad input."""


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` sub-command to the ``journeys`` parser."""
    p = sub.add_parser(
        "evaluate",
        help="score identity stitching on generated data against its ground truth",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    p.add_argument("folder", type=Path, metavar="DIR", help="a folder from journeys generate")
    p.add_argument(
        "--rules",
        type=Path,
        metavar="FILE",
        help="identity rules, TOML or JSON (IdentityRules.from_mapping; default: built-in)",
    )
    p.add_argument("--format", choices=FORMATS, default="table", help="table (default) or json")
    p.add_argument(
        "--fail-under",
        type=_fraction,
        metavar="X",
        help="exit 1 when precision or recall is below X (e.g. 0.98)",
    )
    p.set_defaults(func=run)


def _load_rules(path: Path) -> Any:
    from pipeline.core.identity import IdentityError, IdentityRules

    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
        return IdentityRules.from_mapping(data)
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not valid TOML or JSON: {exc}") from exc
    except IdentityError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def run(args: argparse.Namespace) -> int:
    from connectors.evaluation import EvaluationError, evaluate

    try:
        rules = _load_rules(args.rules) if args.rules is not None else None
        result = evaluate(args.folder, rules)
    except (EvaluationError, ValueError) as exc:
        return fail(str(exc), EXIT_BAD_INPUT)
    if args.format == "json":
        json.dump(result.as_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print_table(result)
    if args.fail_under is not None and min(result.precision, result.recall) < args.fail_under:
        return fail(
            f"precision {result.precision:.4f} / recall {result.recall:.4f} "
            f"below {args.fail_under}",
            EXIT_BELOW,
        )
    return EXIT_OK


def _print_table(result: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    table = Table(title=f"Identity quality — {result.folder}", title_justify="left")
    table.add_column("measure", style="bold", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    rows: list[tuple[str, str]] = [
        ("pairwise precision (identifiers)", pct(result.precision)),
        ("pairwise recall (identifiers)", pct(result.recall)),
        ("recall ceiling (linked by some event)", pct(result.recall_ceiling)),
        ("pairwise precision (events)", pct(result.event_precision)),
        ("pairwise recall (events)", pct(result.event_recall)),
        ("persons true / stitched", f"{result.persons_true:,} / {result.persons_stitched:,}"),
        (
            "identifiers scored / in ground truth",
            f"{result.scored_identifiers:,} / {result.truth_identifiers:,}",
        ),
        ("events scored", f"{result.scored_events:,}"),
        (
            "records = touchpoints + dead letters",
            f"{result.records:,} = {result.touchpoints:,} + {result.dead_letters:,}",
        ),
        ("touchpoints without identifiers", f"{result.without_identifiers:,}"),
        ("fast path (lookup) / owner (resolve)", f"{result.fast_path:,} / {result.owner_calls:,}"),
        ("resolver links/s", f"{result.links_per_second:,.0f}"),
    ]
    rows.extend((f"refused: {rule}", f"{n:,}") for rule, n in result.refusals.items())
    for label, value in rows:
        table.add_row(label, value)
    Console().print(table)
