"""``journeys generate``: write synthetic logs in the sources' own formats."""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.commands._common import console
from cli.commands._help import HelpFormatter


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="write synthetic multi-channel logs with ground truth",
        description="Write deterministic synthetic logs of the same simulated people in every\n"
        "source's own format: Segment web/app traffic with every acquisition channel,\n"
        "SendGrid e-mail events, Twilio SMS callbacks and clicks, Shopify orders, POS\n"
        "transactions, ad clicks, chats and calls, with ~1% malformed records in each file.\n"
        "They hold what makes identity hard: family tablets, store kiosks, typed e-mail\n"
        "typos, junk identifiers and bots. Ground truth: the true owner of every identifier\n"
        "(ground_truth.csv) and of every source event (events_truth.csv), e-mails and\n"
        "phones hashed; plus manifest.json.",
        epilog="example:\n  journeys generate --people 500 --days 30 --seed 7 --out var/sample\n"
        "  journeys replay var/sample/segment.jsonl --source segment\n"
        "  journeys replay var/sample/pos.csv --source pos\n"
        "  journeys evaluate var/sample",
        formatter_class=HelpFormatter,
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
    for name, count in stats.files.items():
        if name == "segment.jsonl":
            continue
        source = name.split(".")[0]
        console.print(
            f"  {name}: {count:,} records ({stats.malformed_by_file.get(name, 0)} malformed); "
            f"replay with --source {source}"
        )
    if stats.identity:
        console.print(
            "  identity realism: "
            + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in stats.identity.items())
            + f"; score stitching with: journeys evaluate {args.out}"
        )
    return 0
