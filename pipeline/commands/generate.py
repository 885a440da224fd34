"""``journeys generate``: write synthetic logs in the sources' own formats."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.commands._common import console


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="write synthetic multi-channel logs with ground truth",
        description="Write deterministic synthetic logs (Segment web/app traffic with every "
        "acquisition channel, logins, purchases and ~1%% malformed lines) and the true "
        "person of every identifier (ground_truth.csv).",
        epilog="example:\n  journeys generate --people 500 --days 30 --seed 7 --out var/sample\n"
        "  journeys replay var/sample/segment.jsonl --source segment",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--people", type=int, default=200, help="customers to simulate (200)")
    p.add_argument("--days", type=int, default=30, help="days of event time (30)")
    p.add_argument("--seed", type=int, default=7, help="random seed (7)")
    p.add_argument("--out", type=Path, default=Path("var/sample"), help="folder (var/sample)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from connectors.generate import generate

    stats = generate(args.out, people=args.people, days=args.days, seed=args.seed)
    console.print(
        f"wrote {stats.messages:,} Segment messages ({stats.malformed} malformed on purpose, "
        f"{stats.purchases} purchases) for {stats.people} people to {args.out}/"
    )
    return 0
