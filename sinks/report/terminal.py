"""The report in a terminal: rich tables, with bars and sparklines drawn in text."""

from __future__ import annotations

import math
from datetime import date, timedelta

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from sinks.report import charts
from sinks.report.data import ReportData

SPARKS = "▁▂▃▄▅▆▇█"
_SHORT = {
    "first_touch": "first",
    "last_touch": "last",
    "last_non_direct": "last non-dir",
    "linear": "linear",
    "time_decay": "decay",
    "position_based": "position",
    "markov": "markov",
    "shapley": "shapley",
}


def bar(value: float, peak: float, width: int = 24) -> str:
    """A horizontal bar of eighth-blocks, *width* cells for *peak*."""
    if peak <= 0 or value <= 0:
        return ""
    eighths = round(8 * width * value / peak)
    return "█" * (eighths // 8) + ("▏▎▍▌▋▊▉"[eighths % 8 - 1] if eighths % 8 else "")


def sparkline(values: list[float]) -> str:
    peak = max(values, default=0.0)
    if peak <= 0:
        return " " * len(values)
    return "".join(
        " " if v <= 0 else SPARKS[max(0, math.ceil(v / peak * len(SPARKS)) - 1)] for v in values
    )


def credit_table(data: ReportData) -> Table:
    models = data.models()
    table = Table(
        title=f"Conversions credited per channel, by model (sorted by {data.model})",
        header_style="bold",
    )
    table.add_column("channel", no_wrap=True)
    for m in models:
        style = "bold cyan" if m == data.model else None
        table.add_column(_SHORT.get(m, m), justify="right", style=style, no_wrap=True)
    values = data.credit_table()
    for ch in data.channels():
        table.add_row(ch, *(f"{values.get((ch, m), 0.0):.1f}" for m in models))
    table.add_section()
    table.add_row(
        "total", *(f"{sum(v for (_c, mm), v in values.items() if mm == m):.1f}" for m in models)
    )
    return table


def distribution_table(title: str, rows: list[tuple[str, float]], unit: str) -> Table:
    table = Table(title=title, header_style="bold")
    table.add_column(unit, no_wrap=True)
    table.add_column("conversions", justify="right")
    table.add_column("%", justify="right")
    table.add_column("", no_wrap=True)
    total = sum(v for _, v in rows) or 1.0
    peak = max((v for _, v in rows), default=0.0)
    for label, value in rows:
        table.add_row(label, f"{value:,.0f}", f"{100 * value / total:.1f}", bar(value, peak))
    return table


def transitions_table(data: ReportData, limit: int = 12) -> Table:
    """The most common channel-to-channel steps of converting paths (the Sankey's bands)."""
    counts: dict[tuple[str, str], int] = {}
    for p in data.paths:
        steps = [*p.tail, "conversion"]
        for a, b in zip(steps, steps[1:], strict=False):
            counts[(a, b)] = counts.get((a, b), 0) + p.conversions
    table = Table(title="Top transitions towards conversion", header_style="bold")
    table.add_column("from", no_wrap=True)
    table.add_column("to", no_wrap=True)
    table.add_column("conversions", justify="right")
    table.add_column("", no_wrap=True)
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
    peak = max((n for _, n in top), default=0)
    for (a, b), n in top:
        table.add_row(a, b, f"{n:,}", bar(n, peak, 16))
    return table


def daily_table(data: ReportData) -> Table:
    if data.daily:
        first = min(d.day for d in data.daily)
        last = max(d.day for d in data.daily)
    else:
        first = last = date.today()  # noqa: DTZ011 - only a label for an empty table
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    per: dict[str, dict[date, float]] = {}
    for d in data.daily:
        per.setdefault(d.channel, {})[d.day] = (
            per.get(d.channel, {}).get(d.day, 0.0) + d.conversions
        )
    table = Table(
        title=f"Daily conversions by channel ({data.model}), {first:%b %d} to {last:%b %d}",
        header_style="bold",
    )
    table.add_column("channel", no_wrap=True)
    table.add_column("conversions", justify="right")
    table.add_column("per day", no_wrap=True)
    for ch in [c for c in data.channels() if c in per]:
        series = [per[ch].get(d, 0.0) for d in days]
        table.add_row(ch, f"{sum(series):.1f}", sparkline(series))
    return table


def segments_table(data: ReportData) -> Table:
    table = Table(title="Segments (members now)", header_style="bold")
    table.add_column("segment", no_wrap=True)
    table.add_column("members", justify="right")
    table.add_column("entries ever", justify="right")
    table.add_column("", no_wrap=True)
    peak = max((s.members for s in data.segments), default=0)
    for s in data.segments:
        table.add_row(s.segment, f"{s.members:,}", f"{s.memberships:,}", bar(s.members, peak, 16))
    return table


def bots_table(data: ReportData) -> Table:
    table = Table(title="Bots by source (stored, kept out of journeys)", header_style="bold")
    table.add_column("source", no_wrap=True)
    table.add_column("touchpoints", justify="right")
    table.add_column("bots", justify="right")
    table.add_column("share", justify="right")
    for b in data.bots:
        table.add_row(b.source, f"{b.events:,}", f"{b.bots:,}", f"{100 * b.share:.1f}%")
    return table


def render_terminal(data: ReportData, console: Console) -> None:
    """Print the report to *console*."""
    head = Text.assemble(
        ("Journeys attribution report", "bold"),
        f"  {data.conversions:,} conversions, {data.revenue:,.2f} revenue, "
        f"{data.null_paths:,} null paths, {data.avg_touches:.2f} touches per conversion, "
        f"median {data.median_days:.1f} days to convert",
    )
    console.print(head)
    if not data.conversions:
        console.print("No converted journeys in ClickHouse for this period yet.", style="yellow")
        return
    lengths = charts.length_buckets(data.lengths())
    times = charts.time_buckets((float(h), float(n)) for h, n in data.hours)
    console.print(
        Group(
            credit_table(data),
            transitions_table(data),
            distribution_table("Path length of converting journeys", lengths, "touches"),
            distribution_table("Time to convert", times, "first touch to conversion"),
            daily_table(data),
            *([segments_table(data)] if data.segments else []),
            *([bots_table(data)] if data.bots else []),
        )
    )
