"""The report's pure parts: chart layouts, SVG, the HTML document and the terminal tables."""

from __future__ import annotations

from datetime import UTC, date, datetime
from xml.etree import ElementTree

import pytest
from rich.console import Console

from sinks.report import charts
from sinks.report.data import (
    MODELS,
    Credit,
    Daily,
    PathCount,
    ReportData,
    parse_rows,
    sankey_paths,
)
from sinks.report.html import render_html
from sinks.report.terminal import bar, render_terminal, sparkline

SVG = "{http://www.w3.org/2000/svg}"

PATHS = [
    (("email", "direct"), 5.0),
    (("paid_search",), 3.0),
    (("email", "email", "store"), 2.0),
    (("display", "email", "paid_social", "direct", "direct", "store"), 1.0),  # 6 touches
    (("direct",), 4.0),
]


def sample_data() -> ReportData:
    channels = ["direct", "email", "paid_search", "store", "display", "paid_social"]
    credit = []
    for i, model in enumerate(MODELS):
        weights = [3 + (i % 3), 2, 1.5, 1, 0.5, 0.5 + 0.25 * (i % 2)]
        total = sum(weights)
        for ch, w in zip(channels, weights, strict=True):
            credit.append(Credit(model, ch, 15 * w / total, 1500.0 * w / total))
    paths = [
        PathCount(tuple(p[-4:]), len(p), int(n))
        for p, n in PATHS  # the same converting paths
    ]
    daily = [
        Daily(date(2026, 10, d), ch, 0.5 + (d % 3) * 0.5, 50.0)
        for d in range(1, 11)
        for ch in channels[:3]
        if (d + len(ch)) % 4
    ]
    return ReportData(
        model="linear",
        generated_at=datetime(2026, 11, 1, tzinfo=UTC),
        conversions=15,
        null_paths=4,
        revenue=1500.0,
        persons=12,
        avg_touches=2.1,
        median_days=1.5,
        first_at="2026-10-01 00:00:00.000",
        last_at="2026-10-10 00:00:00.000",
        credit=credit,
        paths=paths,
        hours=[(0, 6), (5, 2), (30, 3), (200, 2), (400, 1), (800, 1)],
        daily=daily,
    )


# ---- Sankey ------------------------------------------------------------------------


def test_sankey_aligns_paths_on_the_conversion_and_conserves_flow() -> None:
    layout = charts.sankey_layout(PATHS, steps=4, width=800, height=400)
    assert layout.total == 15
    assert layout.truncated == 1  # the six-touch path
    conversion = layout.node((4, charts.CONVERSION))
    assert conversion.value == 15
    # the last touch column holds every conversion once
    assert sum(n.value for n in layout.nodes if n.column == 3) == 15
    assert layout.node((3, "direct")).value == 5 + 4  # email > direct, direct
    assert layout.node((3, "store")).value == 3
    assert layout.node((0, "paid_social")).value == 1  # 4th-last touch of the long path
    for node in layout.nodes:
        out = sum(lk.value for lk in layout.links if lk.source == node.key)
        into = sum(lk.value for lk in layout.links if lk.target == node.key)
        if node.column < layout.steps:
            assert out == pytest.approx(node.value)  # every touch moves on
        assert into <= node.value + 1e-9
        assert node.y >= 0 and node.y + node.height <= 400 + 1e-6


def test_sankey_nodes_do_not_overlap_and_links_fit_their_nodes() -> None:
    layout = charts.sankey_layout(PATHS, steps=4, height=300, gap=6)
    by_column: dict[int, list[charts.SankeyNode]] = {}
    for node in layout.nodes:
        by_column.setdefault(node.column, []).append(node)
    for nodes in by_column.values():
        nodes.sort(key=lambda n: n.y)
        for a, b in zip(nodes, nodes[1:], strict=False):
            assert a.y + a.height <= b.y + 1e-6
    for link in layout.links:
        src, dst = layout.node(link.source), layout.node(link.target)
        assert src.y - 1e-6 <= link.y0 and link.y0 + link.width <= src.y + src.height + 1e-6
        assert dst.y - 1e-6 <= link.y1 and link.y1 + link.width <= dst.y + dst.height + 1e-6
        assert link.x0 < link.x1
        assert link.target[0] == link.source[0] + 1


def test_sankey_keeps_the_given_channel_order_in_each_column() -> None:
    order = ["store", "paid_search", "direct", "email"]
    layout = charts.sankey_layout(PATHS, steps=4, order=order)
    last = sorted((n for n in layout.nodes if n.column == 3), key=lambda n: n.y)
    assert [n.channel for n in last] == ["store", "paid_search", "direct"]


def test_sankey_of_nothing_is_empty_and_still_draws() -> None:
    layout = charts.sankey_layout([], steps=3)
    assert layout.nodes == [] and layout.links == [] and layout.total == 0
    ElementTree.fromstring(charts.sankey_svg(layout, {}))
    with pytest.raises(ValueError, match="steps"):
        charts.sankey_layout(PATHS, steps=0)


def test_sankey_svg_has_one_band_per_link_and_parses() -> None:
    layout = charts.sankey_layout(PATHS, steps=4)
    colours = charts.channel_colours(["direct", "email"])
    root = ElementTree.fromstring(charts.sankey_svg(layout, colours, labels=["a", "b"]))
    assert root.tag == f"{SVG}svg"
    assert len(root.findall(f"{SVG}path")) == len(layout.links)
    assert len(root.findall(f"{SVG}rect")) == len(layout.nodes)
    fills = {p.get("fill") for p in root.findall(f"{SVG}path")}
    assert colours["email"] in fills and colours["direct"] in fills


def test_report_paths_pad_long_paths_so_they_count_as_truncated() -> None:
    data = sample_data()
    padded = sankey_paths(data)
    layout = charts.sankey_layout(padded, steps=4)
    assert layout.total == 15 and layout.truncated == 1


# ---- other charts ------------------------------------------------------------------


def test_histogram_scales_to_the_largest_bar() -> None:
    bars = charts.histogram_layout(["1", "2", "3"], [10, 5, 0], width=300, height=200)
    assert [b.label for b in bars] == ["1", "2", "3"]
    assert bars[0].height == pytest.approx(2 * bars[1].height)
    assert bars[2].height == 0
    assert bars[0].y + bars[0].height == pytest.approx(bars[1].y + bars[1].height)
    root = ElementTree.fromstring(charts.histogram_svg(["1", "2"], [3, 1], "t"))
    assert len(root.findall(f"{SVG}rect")) == 2
    with pytest.raises(ValueError, match="one value per label"):
        charts.histogram_layout(["a"], [1, 2])


def test_buckets_of_time_to_convert_and_path_length() -> None:
    buckets = dict(charts.time_buckets([(0, 6), (23, 1), (24, 2), (700, 1), (720, 1)]))
    assert buckets["< 1 h"] == 6
    assert buckets["1-24 h"] == 1
    assert buckets["1-3 d"] == 2
    assert buckets["14-30 d"] == 1
    assert buckets["30 d +"] == 1
    assert sum(buckets.values()) == 11
    lengths = charts.length_buckets([(1, 4), (2, 3), (12, 1), (15, 2)], cap=10)
    assert lengths[0] == ("1", 4) and lengths[-1] == ("10+", 3)
    assert charts.length_buckets([(1, 2), (3, 1)]) == [("1", 2), ("2", 0), ("3", 1)]


def test_stacked_days_fill_missing_days_and_stack_in_order() -> None:
    values = {(date(2026, 10, 1), "a"): 2.0, (date(2026, 10, 1), "b"): 1.0}
    values[(date(2026, 10, 4), "b")] = 3.0
    days, segments, peak = charts.stacked_days_layout(values, ["a", "b"], height=130, bottom=30)
    assert len(days) == 4 and peak == 3.0
    first = [s for s in segments if s.day == date(2026, 10, 1)]
    assert [s.channel for s in first] == ["a", "b"]
    assert first[1].y + first[1].height == pytest.approx(first[0].y)  # b sits on a
    assert first[0].height + first[1].height == pytest.approx(90)  # the tallest day
    root = ElementTree.fromstring(charts.stacked_days_svg(values, ["a", "b"], {}, "t"))
    assert len(root.findall(f"{SVG}rect")) == 3


def test_heatmap_has_a_cell_per_pair_and_escapes_text() -> None:
    values = {("a<b", "m1"): 1.0, ("c", "m2"): 2.0}
    svg = charts.heatmap_svg(["a<b", "c"], ["m1", "m2"], values, "t & u", highlight="m2")
    root = ElementTree.fromstring(svg)
    cells = [r for r in root.findall(f"{SVG}rect") if r.get("class") == "cell"]
    assert len(cells) == 4
    assert "a&lt;b" in svg


def test_channel_colours_are_distinct_then_grey() -> None:
    names = [f"c{i}" for i in range(len(charts.PALETTE) + 2)]
    colours = charts.channel_colours(names)
    assert len({colours[n] for n in names[: len(charts.PALETTE)]}) == len(charts.PALETTE)
    assert colours[names[-1]] == charts.OTHER_COLOUR
    assert colours[charts.CONVERSION] == charts.CONVERSION_COLOUR


def test_ticks_are_round_and_below_the_peak() -> None:
    assert charts._ticks(8) == [2, 4, 6, 8]
    assert all(t <= 7.3 for t in charts._ticks(7.3))
    assert charts._ticks(0.9) == pytest.approx([0.25, 0.5, 0.75])


# ---- the documents -----------------------------------------------------------------


def svgs(html: str) -> list[str]:
    return ["<svg" + part.split("</svg>", 1)[0] + "</svg>" for part in html.split("<svg")[1:]]


def test_html_report_is_one_self_contained_document() -> None:
    html = render_html(sample_data())
    assert html.startswith("<!DOCTYPE html>")
    found = svgs(html)
    assert len(found) == 5  # heatmap, sankey, path length, time to convert, daily
    roots = [ElementTree.fromstring(svg) for svg in found]
    titles = [r.findtext(f"{SVG}title") for r in roots]
    assert titles[0] == "Conversions credited per channel and model"
    assert titles[1] == "Transitions between channels"
    assert "Daily conversions by channel" in str(titles[4])
    lowered = html.lower()
    for needle in ("<script", "<link", "<img", "<iframe", "@import", "url("):
        assert needle not in lowered, needle
    assert "http" not in lowered.replace("http://www.w3.org/2000/svg", "")
    assert "1 of 15 paths are longer" in html


def test_html_report_of_an_empty_database_still_renders() -> None:
    html = render_html(ReportData())
    for svg in svgs(html):
        ElementTree.fromstring(svg)
    assert "no journeys yet" in html


def test_terminal_report_prints_every_table() -> None:
    console = Console(record=True, width=140)
    render_terminal(sample_data(), console)
    text = console.export_text()
    for title in (
        "Conversions credited per channel, by model",
        "Top transitions towards conversion",
        "Path length of converting journeys",
        "Time to convert",
        "Daily conversions by channel (linear)",
    ):
        assert title in text
    empty = Console(record=True, width=100)
    render_terminal(ReportData(), empty)
    assert "No converted journeys" in empty.export_text()


def test_text_bars_and_sparklines() -> None:
    assert bar(10, 10, width=4) == "████"
    assert bar(5, 10, width=4) == "██"
    assert bar(0, 10) == "" and bar(1, 0) == ""
    assert sparkline([0, 1, 2, 4]) == " ▂▄█"
    assert sparkline([0, 0]) == "  "


def test_parse_rows_reads_json_each_row_with_quoted_integers() -> None:
    rows = parse_rows(b'{"n":"12","x":1.5}\n{"n":"3","x":null}\n')
    assert rows == [{"n": "12", "x": 1.5}, {"n": "3", "x": None}]
