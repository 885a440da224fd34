"""The report as one self-contained HTML file: inline CSS and SVG, no script, no links out."""

from __future__ import annotations

from datetime import date
from xml.sax.saxutils import escape

from sinks.report import charts
from sinks.report.data import SANKEY_STEPS, ReportData, sankey_paths

CSS = """
:root { --ink: #1d2330; --muted: #5b6474; --line: #dde1e7; --bg: #f6f7f9; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
       font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "Liberation Sans", Arial, sans-serif; }
main { max-width: 1000px; margin: 0 auto; padding: 28px 20px 48px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 0 0 4px; }
p.sub, p.note { color: var(--muted); margin: 0 0 12px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px;
          padding: 18px 20px; margin: 18px 0; overflow-x: auto; }
.kpis { display: grid; grid-template-columns: repeat(auto-fit, minmax(140px, 1fr)); gap: 12px; }
.kpi { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; }
.kpi b { display: block; font-size: 22px; }
.kpi span { color: var(--muted); font-size: 12px; text-transform: uppercase;
            letter-spacing: .04em; }
.pair { display: grid; grid-template-columns: repeat(auto-fit, minmax(440px, 1fr)); gap: 18px; }
.pair section { margin: 0; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 8px; border-bottom: 1px solid var(--line); text-align: right; }
th:first-child, td:first-child { text-align: left; }
th.sel, td.sel { background: #eef4fb; font-weight: 600; }
.legend { display: flex; flex-wrap: wrap; gap: 6px 14px; margin: 8px 0 0; color: var(--muted); }
.key i { display: inline-block; width: 11px; height: 11px; border-radius: 2px;
         margin-right: 5px; vertical-align: -1px; }
svg { display: block; max-width: 100%; height: auto; }
svg text { font: 11px -apple-system, "Segoe UI", Roboto, "Liberation Sans", Arial, sans-serif;
           fill: var(--ink); }
svg .axis { fill: var(--muted); }
svg .strong { font-weight: 700; fill: var(--ink); }
svg .value { fill: var(--muted); font-size: 10px; }
svg .cell-text.dark { fill: #fff; }
svg .axis-line { stroke: #9aa3b2; stroke-width: 1; }
svg .grid { stroke: var(--line); stroke-width: 1; }
svg .highlight { stroke: var(--ink); stroke-width: 1.5; }
svg .link:hover { fill-opacity: .7; }
footer { color: var(--muted); font-size: 12px; margin-top: 24px; }
"""


def _period(data: ReportData) -> str:
    since = data.since.isoformat() if data.since else "the first conversion"
    until = data.until.isoformat() if data.until else "the last"
    if not data.since and not data.until:
        return "all conversions in ClickHouse"
    return f"conversions from {since} to {until}"


def _kpi(label: str, value: str) -> str:
    return f'<div class="kpi"><b>{escape(value)}</b><span>{escape(label)}</span></div>'


def _revenue_table(data: ReportData, channels: list[str], models: list[str]) -> str:
    revenue = data.credit_table(revenue=True)
    head = "".join(
        f'<th class="sel">{escape(m)}</th>' if m == data.model else f"<th>{escape(m)}</th>"
        for m in models
    )
    body = []
    for ch in channels:
        cells = "".join(
            f'<td class="{"sel" if m == data.model else ""}">{revenue.get((ch, m), 0.0):,.2f}</td>'
            for m in models
        )
        body.append(f"<tr><td>{escape(ch)}</td>{cells}</tr>")
    rows = "".join(body)
    return f"<table><thead><tr><th>channel</th>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _segments_table(data: ReportData) -> str:
    if not data.segments:
        return '<p class="note">No segment memberships yet.</p>'
    rows = "".join(
        f"<tr><td>{escape(s.segment)}</td><td>{s.members:,}</td><td>{s.memberships:,}</td>"
        f"<td>{s.exits:,}</td></tr>"
        for s in data.segments
    )
    head = "<th>segment</th><th>members now</th><th>entries ever</th><th>exits</th>"
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _bots_table(data: ReportData) -> str:
    if not data.bots:
        return '<p class="note">No touchpoints in this period.</p>'
    rows = "".join(
        f"<tr><td>{escape(b.source)}</td><td>{b.events:,}</td><td>{b.bots:,}</td>"
        f"<td>{100 * b.share:.1f}%</td></tr>"
        for b in data.bots
    )
    head = "<th>source</th><th>touchpoints</th><th>bots</th><th>share</th>"
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def render_html(data: ReportData, title: str = "Journeys attribution report") -> str:
    """The whole report as one HTML document."""
    channels = data.channels()
    models = data.models()
    colours = charts.channel_colours(channels)
    conversions = data.conversions

    heatmap = charts.heatmap_svg(
        channels, models, data.credit_table(), "Conversions credited per channel and model",
        highlight=data.model,
    )  # fmt: skip
    layout = charts.sankey_layout(sankey_paths(data), steps=SANKEY_STEPS, order=channels)
    step_labels = [f"{SANKEY_STEPS - i} before" for i in range(SANKEY_STEPS - 1)]
    sankey = charts.sankey_svg(layout, colours, labels=[*step_labels, "last touch", "conversion"])
    lengths = charts.length_buckets(data.lengths())
    length_svg = charts.histogram_svg(
        [lbl for lbl, _ in lengths], [v for _, v in lengths],
        "Conversions by path length", colour=charts.PALETTE[0], x_label="touches in the path",
    )  # fmt: skip
    times = charts.time_buckets((float(h), float(n)) for h, n in data.hours)
    time_svg = charts.histogram_svg(
        [lbl for lbl, _ in times], [v for _, v in times],
        "Conversions by time to convert", colour=charts.PALETTE[2],
        x_label="first touch to conversion",
    )  # fmt: skip
    daily_values: dict[tuple[date, str], float] = {}
    for d in data.daily:
        daily_values[(d.day, d.channel)] = daily_values.get((d.day, d.channel), 0.0) + d.conversions
    daily_channels = [ch for ch in channels if any(k[1] == ch for k in daily_values)]
    daily_svg = charts.stacked_days_svg(
        daily_values, daily_channels, colours,
        f"Daily conversions by channel ({data.model} credit)",
    )  # fmt: skip
    truncated = (
        f" {layout.truncated:,.0f} of {layout.total:,.0f} paths are longer; their earlier "
        "touches are left out."
        if layout.truncated
        else ""
    )
    kpis = "".join(
        (
            _kpi("conversions", f"{conversions:,}"),
            _kpi("revenue", f"{data.revenue:,.2f}"),
            _kpi("null paths", f"{data.null_paths:,}"),
            _kpi("converting persons", f"{data.persons:,}"),
            _kpi("touches per conversion", f"{data.avg_touches:.2f}"),
            _kpi("median days to convert", f"{data.median_days:.1f}"),
        )
    )
    span = f"{data.first_at[:10]} to {data.last_at[:10]}" if data.first_at else "no journeys yet"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>{CSS}</style>
</head>
<body>
<main>
<h1>{escape(title)}</h1>
<p class="sub">{escape(_period(data))} ({escape(span)});
highlighted model: <b>{escape(data.model)}</b>.
Credit is read from <code>attribution_current</code> (the latest version of each conversion),
journeys with <code>FINAL</code>.</p>
<div class="kpis">{kpis}</div>

<section>
<h2>Channel credit by model</h2>
<p class="note">Conversions each model credits to each channel; every column sums to the
{conversions:,} conversions. Shading is relative to the largest channel of the model.</p>
{heatmap}
<details><summary>Revenue credited per channel and model</summary>
{_revenue_table(data, channels, models)}
</details>
</section>

<section>
<h2>Channel transitions towards conversion</h2>
<p class="note">The last {SANKEY_STEPS} touches of every converting path, aligned on the
conversion. Band width is conversions; a band starts at the touch it leaves.{truncated}</p>
{sankey}
{charts.legend_html(colours, channels)}
</section>

<div class="pair">
<section>
<h2>Path length</h2>
<p class="note">Touches in each converting path (a web/app session is one touch).</p>
{length_svg}
</section>
<section>
<h2>Time to convert</h2>
<p class="note">From the first credited touch to the conversion (30-day lookback).</p>
{time_svg}
</section>
</div>

<section>
<h2>Daily conversions by channel</h2>
<p class="note">Conversions per day of conversion (UTC), credited by {escape(data.model)}.</p>
{daily_svg}
{charts.legend_html(colours, daily_channels)}
</section>

<section>
<h2>Segments</h2>
<p class="note">Persons in each segment now (<code>segment_membership FINAL</code>, is_member =
1), memberships ever entered, and exits. Lifecycle stages and segments are declared in the
rules file (<code>[segments]</code>).</p>
{_segments_table(data)}
</section>

<section>
<h2>Bots by source</h2>
<p class="note">Touchpoints flagged <code>is_bot</code> (crawlers and bots recognised from the
user agent, docs/sources.md): stored, but kept out of journeys, attribution and the learned
models.</p>
{_bots_table(data)}
</section>

<footer>Generated {escape(data.generated_at.strftime("%Y-%m-%d %H:%M UTC"))} by
<code>journeys report</code>. One file: no scripts, fonts or images from elsewhere.</footer>
</main>
</body>
</html>
"""
