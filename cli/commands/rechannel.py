"""``journeys rechannel``: re-derive the channel of stored touchpoints with today's rules."""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Mapping
from typing import Any

from cli.commands._common import console, fail, settings
from cli.commands._help import HelpFormatter
from pipeline.core.channels import ChannelRules, web_channel
from pipeline.core.model import Campaign
from pipeline.core.source_channels import source_channel

EPILOG = """examples:
  journeys rechannel --dry-run          # what would change, old -> new, with counts
  journeys rechannel                    # write the new channels
  JOURNEYS_RULES_FILE=rules.toml journeys rechannel   # with [channels] overrides

Run it after an upgrade that changes the channel grouping (for example a new copy of
Google's source-category list) or after editing [channels] in the rules file. It reads
every web, Shopify online-store and ad-click touchpoint (FINAL), derives its channel
again from what the table stores (UTM source/medium/campaign, click id, referrer, the
page or landing URL, the ad platform) and writes a new version of each row whose
channel changed (same event_id, newer ingested_at), so `FINAL` reads see the new
channel. E-mail, SMS, push, store, chat and call touchpoints keep theirs: their channel
does not depend on the grouping. Stop `journeys run` first; the embedded ClickHouse data
has one owner.

The journeys and attribution tables keep the paths they were built with. To rebuild
them with the new channels, replay the source logs into a fresh database (see
docs/journeys.md, "Re-deriving stored channels").
"""

#: The touchpoint columns the channel is derived from.
COLUMNS = (
    "event_id",
    "source",
    "event_type",
    "channel",
    "campaign_source",
    "campaign_medium",
    "campaign_name",
    "campaign_content",
    "campaign_term",
    "click_id",
    "referrer",
    "properties",
)

#: Sources whose channel comes from the grouping (the others' never does).
SOURCES = ("segment", "shopify", "ads")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rechannel",
        help="re-derive the channels of stored touchpoints with the current rules",
        description="Re-derive the channel of stored web, Shopify and ad-click touchpoints.",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--dry-run", action="store_true", help="show the changes, write nothing")
    p.add_argument("--batch", type=int, default=10_000, help="touchpoints read per query (10000)")
    p.set_defaults(func=run)


def rederive(row: Mapping[str, Any], rules: ChannelRules) -> str:
    """The channel of a stored touchpoint *row* under *rules*, derived as its connector did.

    Rows of other sources, and Shopify orders outside the online store, keep their
    stored channel.
    """
    props = row.get("properties") or {}
    campaign = Campaign(
        source=row.get("campaign_source") or None,
        medium=row.get("campaign_medium") or None,
        name=row.get("campaign_name") or None,
        content=row.get("campaign_content") or None,
        term=row.get("campaign_term") or None,
        click_id=row.get("click_id") or None,
    )
    referrer = row.get("referrer") or None
    source = row["source"]
    if source == "segment":
        return web_channel(campaign, referrer, props.get("page_url"), rules)
    if source == "shopify" and props.get("sales_channel") == "online":
        page = props.get("landing_site")
        return source_channel(
            source, row["event_type"], campaign=campaign, referrer=referrer, page_url=page,
            rules=rules,
        )  # fmt: skip
    if source == "ads":
        platform = row.get("campaign_source") or None
        return source_channel(
            source, row["event_type"], campaign=campaign, platform=platform, rules=rules
        )
    return str(row["channel"])


def rechannel(
    client: Any,
    database: str,
    rules: ChannelRules,
    *,
    table: str = "touchpoints",
    dry_run: bool = False,
    batch: int = 10_000,
) -> Counter[tuple[str, str]]:
    """Re-derive the channels of *table*; returns how many rows moved, by (old, new)."""
    from sinks.report.sql import literal

    def strings(values: list[str]) -> str:
        return "[" + ",".join(literal(v, "String") for v in values) + "]"

    moved: Counter[tuple[str, str]] = Counter()
    sources = strings(list(SOURCES))
    last = ""
    while True:
        names, rows = client.query_rows(
            f"SELECT {', '.join(COLUMNS)} FROM {database}.{table} FINAL "
            f"WHERE has({sources}, source) AND event_id > {literal(last, 'String')} "
            f"ORDER BY event_id LIMIT {int(batch)}"
        )
        if not rows:
            return moved
        changed: dict[str, str] = {}
        for values in rows:
            row = dict(zip(names, values, strict=True))
            new = rederive(row, rules)
            if new != row["channel"]:
                changed[row["event_id"]] = new
                moved[(row["channel"], new)] += 1
        last = str(rows[-1][0])
        if changed and not dry_run:
            ids, channels = strings(list(changed)), strings(list(changed.values()))
            client.command(
                f"INSERT INTO {database}.{table} SELECT * REPLACE ("
                f"transform(event_id, {ids}, {channels}, channel) AS channel, "
                f"now64(3) AS ingested_at) FROM {database}.{table} FINAL "
                f"WHERE has({ids}, event_id)"
            )


def run(args: argparse.Namespace) -> int:
    from rich.markup import escape
    from rich.table import Table

    from pipeline.rules import RulesFileError, load_rules
    from sinks.clickhouse import SinkError, connect
    from sinks.query_server import find_owner

    cfg = settings()
    if find_owner(cfg.clickhouse_url) is not None:
        return fail("a running pipeline owns the ClickHouse data: stop `journeys run` first")
    try:
        rules = load_rules(cfg.rules_file).channels
    except RulesFileError as exc:
        return fail(escape(str(exc)))  # "[channels]" is not rich markup
    table = "touchpoints_all" if cfg.clickhouse_cluster else "touchpoints"
    try:
        client = connect(cfg.clickhouse_url, cfg.clickhouse_database)
        try:
            moved = rechannel(
                client, cfg.clickhouse_database, rules, table=table, dry_run=args.dry_run,
                batch=args.batch,
            )  # fmt: skip
        finally:
            client.close()
    except SinkError as exc:
        return fail(escape(str(exc)))
    except Exception as exc:  # noqa: BLE001 - the ClickHouse drivers raise many types
        return fail(escape(f"rechannel stopped: {exc}"))
    out = Table("old channel", "new channel", "touchpoints", title="Channels re-derived")
    for (old, new), count in sorted(moved.items(), key=lambda kv: -kv[1]):
        out.add_row(old, new, str(count))
    console.print(out)
    verb = "would change" if args.dry_run else "changed"
    console.print(f"{sum(moved.values())} touchpoints {verb}")
    return 0
