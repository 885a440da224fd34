"""Pure chart building for the report: layouts computed here, drawn as inline SVG.

No I/O and no dependencies: every function takes plain numbers and returns either a
layout (dataclasses, for tests) or an SVG string that parses as XML and needs no script,
font file or stylesheet from anywhere else.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from xml.sax.saxutils import escape, quoteattr

SVG_NS = "http://www.w3.org/2000/svg"
CONVERSION = "conversion"

#: Tableau 10, then darker Okabe-Ito tones: neighbours stay distinct, in a fixed order.
PALETTE = (
    "#4E79A7", "#F28E2B", "#59A14F", "#E15759", "#76B7B2", "#EDC948", "#B07AA1",
    "#FF9DA7", "#9C755F", "#BAB0AC", "#0072B2", "#D55E00", "#009E73", "#CC79A7",
    "#56B4E9", "#E69F00",
)  # fmt: skip
OTHER_COLOUR = "#9A9A9A"
CONVERSION_COLOUR = "#2F2F2F"


def channel_colours(channels: Iterable[str]) -> dict[str, str]:
    """A colour per channel, in the order given (most important first)."""
    out: dict[str, str] = {}
    for channel in channels:
        if channel not in out:
            out[channel] = PALETTE[len(out)] if len(out) < len(PALETTE) else OTHER_COLOUR
    out.setdefault(CONVERSION, CONVERSION_COLOUR)
    return out


def _num(value: float) -> str:
    """A coordinate with at most two decimals (small, stable SVG)."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _fmt(value: float) -> str:
    if abs(value - round(value)) < 1e-9:
        return f"{round(value):,}"
    return f"{value:,.1f}"


def _line(x1: float, y1: float, x2: float, y2: float, cls: str) -> str:
    return f'<line class="{cls}" x1="{_num(x1)}" y1="{_num(y1)}" x2="{_num(x2)}" y2="{_num(y2)}"/>'


def _text(x: float, y: float, body: str, cls: str = "", anchor: str = "start") -> str:
    attrs = f' class="{cls}"' if cls else ""
    if anchor != "start":
        attrs += f' text-anchor="{anchor}"'
    return f'<text x="{_num(x)}" y="{_num(y)}"{attrs}>{escape(body)}</text>'


def _svg(width: float, height: float, body: Sequence[str], label: str) -> str:
    return (
        f'<svg xmlns="{SVG_NS}" viewBox="0 0 {_num(width)} {_num(height)}" '
        f'width="{_num(width)}" height="{_num(height)}" role="img" aria-label={quoteattr(label)}>'
        f"<title>{escape(label)}</title>" + "".join(body) + "</svg>"
    )


# ---- Sankey ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SankeyNode:
    column: int
    channel: str
    value: float
    x: float
    y: float
    height: float

    @property
    def key(self) -> tuple[int, str]:
        return (self.column, self.channel)


@dataclass(frozen=True, slots=True)
class SankeyLink:
    source: tuple[int, str]
    target: tuple[int, str]
    value: float
    width: float
    y0: float  # top of the band where it leaves the source
    y1: float  # top of the band where it enters the target
    x0: float
    x1: float

    def path(self) -> str:
        """A closed band between the two nodes (two cubic curves)."""
        xm = (self.x0 + self.x1) / 2
        x0, x1, y0, y1, w = self.x0, self.x1, self.y0, self.y1, self.width
        return (
            f"M{_num(x0)},{_num(y0)} C{_num(xm)},{_num(y0)} {_num(xm)},{_num(y1)} "
            f"{_num(x1)},{_num(y1)} L{_num(x1)},{_num(y1 + w)} C{_num(xm)},{_num(y1 + w)} "
            f"{_num(xm)},{_num(y0 + w)} {_num(x0)},{_num(y0 + w)} Z"
        )


@dataclass(frozen=True)
class SankeyLayout:
    steps: int
    width: float
    height: float
    margin: float = 110.0
    nodes: list[SankeyNode] = field(default_factory=list)
    links: list[SankeyLink] = field(default_factory=list)
    total: float = 0.0
    truncated: float = 0.0

    def node(self, key: tuple[int, str]) -> SankeyNode:
        for node in self.nodes:
            if node.key == key:
                return node
        raise KeyError(key)


def sankey_layout(
    paths: Iterable[tuple[Sequence[str], float]],
    steps: int = 4,
    width: float = 900.0,
    height: float = 420.0,
    node_width: float = 14.0,
    gap: float = 8.0,
    margin: float = 110.0,
    order: Sequence[str] = (),
) -> SankeyLayout:
    """Lay out channel-to-channel transitions towards conversion.

    Each path is a converting path (its touch channels in order) with its number of
    conversions. Paths are aligned on the conversion, on the right: column ``steps`` is
    the conversion, column ``steps - 1`` the last touch, and so on back to column 0, the
    ``steps``-th touch before the conversion (earlier touches of longer paths are
    dropped, and ``truncated`` counts those paths). A node is a channel in a column, its
    height its conversions; a link is a transition between two adjacent columns.
    Channels are stacked in *order* (then by volume), so a channel keeps its place.
    """
    if steps < 1:
        raise ValueError("steps must be at least 1")
    node_value: dict[tuple[int, str], float] = {}
    link_value: dict[tuple[tuple[int, str], tuple[int, str]], float] = {}
    total = truncated = 0.0
    for path, count in paths:
        if count <= 0 or not path:
            continue
        tail = list(path)[-steps:]
        if len(path) > steps:
            truncated += count
        total += count
        first = steps - len(tail)
        keys = [(first + i, ch) for i, ch in enumerate(tail)] + [(steps, CONVERSION)]
        for key in keys:
            node_value[key] = node_value.get(key, 0.0) + count
        for a, b in zip(keys, keys[1:], strict=False):
            link_value[(a, b)] = link_value.get((a, b), 0.0) + count
    layout = SankeyLayout(steps, width, height, margin, total=total, truncated=truncated)
    if total <= 0:
        return layout

    volume: dict[str, float] = {}
    for (_col, ch), value in node_value.items():
        volume[ch] = volume.get(ch, 0.0) + value
    rank = {ch: i for i, ch in enumerate(order)}

    def sort_key(key: tuple[int, str]) -> tuple[int, float, str]:
        return (rank.get(key[1], len(rank)), -volume[key[1]], key[1])

    columns: dict[int, list[tuple[int, str]]] = {}
    for key in sorted(node_value, key=sort_key):
        columns.setdefault(key[0], []).append(key)
    top, bottom = 10.0, 10.0
    usable = height - top - bottom
    scale = min(
        (usable - gap * (len(keys) - 1)) / sum(node_value[k] for k in keys)
        for keys in columns.values()
    )
    scale = max(scale, 0.0)
    step_x = (width - 2 * margin - node_width) / steps
    placed: dict[tuple[int, str], SankeyNode] = {}
    for col, keys in columns.items():
        used = sum(node_value[k] for k in keys) * scale + gap * (len(keys) - 1)
        y = top + (usable - used) / 2
        for key in keys:
            h = node_value[key] * scale
            placed[key] = SankeyNode(col, key[1], node_value[key], margin + col * step_x, y, h)
            y += h + gap
    layout.nodes.extend(sorted(placed.values(), key=lambda n: (n.column, n.y)))

    out_offset = {k: 0.0 for k in placed}
    in_offset = {k: 0.0 for k in placed}
    ordered = sorted(link_value.items(), key=lambda kv: (placed[kv[0][0]].y, placed[kv[0][1]].y))
    for (a, b), value in ordered:
        w = value * scale
        src, dst = placed[a], placed[b]
        layout.links.append(
            SankeyLink(
                a, b, value, w,
                y0=src.y + out_offset[a], y1=dst.y + in_offset[b],
                x0=src.x + node_width, x1=dst.x,
            )
        )  # fmt: skip
        out_offset[a] += w
        in_offset[b] += w
    return layout


def sankey_svg(
    layout: SankeyLayout,
    colours: Mapping[str, str],
    node_width: float = 14.0,
    labels: Sequence[str] = (),
) -> str:
    """The layout as SVG: bands coloured by their source channel, labelled nodes."""
    body: list[str] = []
    for i, text in enumerate(labels[: layout.steps + 1]):
        col_x = _column_x(layout, i, node_width)
        body.append(_text(col_x + node_width / 2, layout.height - 2, text, "axis", "middle"))
    for link in layout.links:
        colour = colours.get(link.source[1], OTHER_COLOUR)
        title = f"{link.source[1]} → {link.target[1]}: {_fmt(link.value)} conversions"
        body.append(
            f'<path class="link" d="{link.path()}" fill="{colour}" fill-opacity="0.38">'
            f"<title>{escape(title)}</title></path>"
        )
    for node in layout.nodes:
        colour = colours.get(node.channel, OTHER_COLOUR)
        title = f"{node.channel}: {_fmt(node.value)}"
        body.append(
            f'<rect class="node" x="{_num(node.x)}" y="{_num(node.y)}" '
            f'width="{_num(node_width)}" height="{_num(max(node.height, 0.5))}" fill="{colour}">'
            f"<title>{escape(title)}</title></rect>"
        )
        if node.height >= 9 or node.column == layout.steps:
            label = f"{node.channel} {_fmt(node.value)}"
            mid = node.y + node.height / 2 + 4
            if node.column == 0:
                body.append(_text(node.x - 5, mid, label, "label", "end"))
            else:
                body.append(_text(node.x + node_width + 5, mid, label, "label"))
    return _svg(layout.width, layout.height + 14, body, "Transitions between channels")


def _column_x(layout: SankeyLayout, column: int, node_width: float) -> float:
    for node in layout.nodes:
        if node.column == column:
            return node.x
    return layout.margin + column * (layout.width - 2 * layout.margin - node_width) / layout.steps


# ---- bars, histograms, heatmaps ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    value: float
    x: float
    y: float
    width: float
    height: float


def histogram_layout(
    labels: Sequence[str],
    values: Sequence[float],
    width: float = 440.0,
    height: float = 220.0,
    left: float = 44.0,
    bottom: float = 40.0,
) -> list[Bar]:
    """Vertical bars, one per label, scaled to the largest value."""
    if len(labels) != len(values):
        raise ValueError("one value per label")
    if not labels:
        return []
    top = 16.0
    peak = max(*values, 1e-9)
    slot = (width - left - 8) / len(labels)
    plot_h = height - top - bottom
    bars = []
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        h = plot_h * max(value, 0.0) / peak
        bars.append(
            Bar(label, value, left + i * slot + slot * 0.12, top + plot_h - h, slot * 0.76, h)
        )
    return bars


def histogram_svg(
    labels: Sequence[str],
    values: Sequence[float],
    title: str,
    colour: str = PALETTE[0],
    width: float = 440.0,
    height: float = 220.0,
    x_label: str = "",
) -> str:
    bars = histogram_layout(labels, values, width, height)
    bottom = 40.0
    base = height - bottom
    body = [_line(40, base, width - 4, base, "axis-line")]
    total = sum(values) or 1.0
    for bar in bars:
        share = 100 * bar.value / total
        body.append(
            f'<rect class="bar" x="{_num(bar.x)}" y="{_num(bar.y)}" width="{_num(bar.width)}" '
            f'height="{_num(bar.height)}" fill="{colour}">'
            f"<title>{escape(f'{bar.label}: {_fmt(bar.value)} ({share:.1f}%)')}</title></rect>"
        )
        centre = bar.x + bar.width / 2
        body.append(_text(centre, bar.y - 4, _fmt(bar.value), "value", "middle"))
        body.append(_text(centre, base + 14, bar.label, "axis", "middle"))
    if x_label:
        body.append(_text(width / 2, height - 6, x_label, "axis", "middle"))
    return _svg(width, height, body, title)


def _mix(colour: str, share: float) -> str:
    """*colour* blended with white: share 0 is white, 1 is the colour."""
    share = min(max(share, 0.0), 1.0)
    rgb = [int(colour[i : i + 2], 16) for i in (1, 3, 5)]
    out = [round(255 + (c - 255) * share) for c in rgb]
    return "#" + "".join(f"{c:02x}" for c in out)


def heatmap_svg(
    rows: Sequence[str],
    columns: Sequence[str],
    values: Mapping[tuple[str, str], float],
    title: str,
    highlight: str | None = None,
    colour: str = PALETTE[0],
    cell_w: float = 82.0,
    cell_h: float = 24.0,
    left: float = 130.0,
) -> str:
    """A table of cells shaded by value (each column scaled to its largest cell)."""
    top = 34.0
    width = left + cell_w * len(columns) + 4
    height = top + cell_h * len(rows) + 4
    body: list[str] = []
    peaks = {c: max((values.get((r, c), 0.0) for r in rows), default=0.0) or 1.0 for c in columns}
    for j, col in enumerate(columns):
        cls = "axis strong" if col == highlight else "axis"
        body.append(_text(left + j * cell_w + cell_w / 2, top - 10, col, cls, "middle"))
    for i, row in enumerate(rows):
        y = top + i * cell_h
        body.append(_text(left - 8, y + cell_h / 2 + 4, row, "label", "end"))
        for j, col in enumerate(columns):
            value = values.get((row, col), 0.0)
            share = value / peaks[col]
            x = left + j * cell_w
            body.append(
                f'<rect class="cell" x="{_num(x + 1)}" y="{_num(y + 1)}" '
                f'width="{_num(cell_w - 2)}" height="{_num(cell_h - 2)}" '
                f'fill="{_mix(colour, 0.08 + 0.8 * share)}">'
                f"<title>{escape(f'{row}, {col}: {value:,.2f}')}</title></rect>"
            )
            cls = "cell-text dark" if share > 0.55 else "cell-text"
            body.append(_text(x + cell_w / 2, y + cell_h / 2 + 4, f"{value:,.1f}", cls, "middle"))
    if highlight is not None and highlight in columns:
        j = list(columns).index(highlight)
        body.append(
            f'<rect class="highlight" x="{_num(left + j * cell_w)}" y="{_num(top)}" '
            f'width="{_num(cell_w)}" height="{_num(cell_h * len(rows))}" fill="none"/>'
        )
    return _svg(width, height, body, title)


@dataclass(frozen=True, slots=True)
class StackSegment:
    day: date
    channel: str
    value: float
    x: float
    y: float
    width: float
    height: float


def stacked_days_layout(
    values: Mapping[tuple[date, str], float],
    channels: Sequence[str],
    width: float = 900.0,
    height: float = 260.0,
    left: float = 44.0,
    bottom: float = 30.0,
) -> tuple[list[date], list[StackSegment], float]:
    """Stacked daily bars: every day from the first to the last, channels in order.

    Returns the days, the segments and the largest daily total.
    """
    if not values:
        return [], [], 0.0
    first, last = min(d for d, _ in values), max(d for d, _ in values)
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    totals = {d: sum(values.get((d, ch), 0.0) for ch in channels) for d in days}
    peak = max(*totals.values(), 1e-9)
    top = 10.0
    plot_h = height - top - bottom
    slot = (width - left - 8) / len(days)
    segments: list[StackSegment] = []
    for i, day in enumerate(days):
        y = top + plot_h
        for channel in channels:
            value = values.get((day, channel), 0.0)
            if value <= 0:
                continue
            h = plot_h * value / peak
            y -= h
            segments.append(
                StackSegment(day, channel, value, left + i * slot + slot * 0.1, y, slot * 0.8, h)
            )
    return days, segments, peak


def stacked_days_svg(
    values: Mapping[tuple[date, str], float],
    channels: Sequence[str],
    colours: Mapping[str, str],
    title: str,
    width: float = 900.0,
    height: float = 260.0,
) -> str:
    days, segments, peak = stacked_days_layout(values, channels, width, height)
    bottom, left = 30.0, 44.0
    base = height - bottom
    body = [_line(left, base, width - 4, base, "axis-line")]
    if peak > 0:
        for tick in _ticks(peak):
            y = 10 + (base - 10) * (1 - tick / peak)
            body.append(_line(left, y, width - 4, y, "grid"))
            body.append(_text(left - 6, y + 4, _fmt(tick), "axis", "end"))
    for seg in segments:
        colour = colours.get(seg.channel, OTHER_COLOUR)
        tip = f"{seg.day.isoformat()} {seg.channel}: {seg.value:,.2f}"
        body.append(
            f'<rect class="seg" x="{_num(seg.x)}" y="{_num(seg.y)}" width="{_num(seg.width)}" '
            f'height="{_num(seg.height)}" fill="{colour}"><title>{escape(tip)}</title></rect>'
        )
    if days:
        every = max(1, math.ceil(len(days) / 10))
        slot = (width - left - 8) / len(days)
        for i in range(0, len(days), every):
            body.append(
                _text(
                    left + (i + 0.5) * slot, base + 16, days[i].strftime("%b %d"), "axis", "middle"
                )
            )
    return _svg(width, height, body, title)


def _ticks(peak: float, count: int = 4) -> list[float]:
    """Round tick values from 0 (excluded) up to *peak*."""
    raw = peak / count
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    ticks, value = [], step
    while value <= peak + 1e-9:
        ticks.append(value)
        value += step
    return ticks


def legend_html(colours: Mapping[str, str], channels: Sequence[str]) -> str:
    """An HTML legend (swatch + name) for *channels*."""
    items = "".join(
        f'<span class="key"><i style="background:{colours.get(ch, OTHER_COLOUR)}"></i>'
        f"{escape(ch)}</span>"
        for ch in channels
    )
    return f'<div class="legend">{items}</div>'


# ---- distributions -----------------------------------------------------------------

#: Time-to-convert buckets: (label, upper bound in hours, exclusive), as in
#: queries/06_time_to_convert.sql.
TIME_BUCKETS: tuple[tuple[str, float], ...] = (
    ("< 1 h", 1),
    ("1-24 h", 24),
    ("1-3 d", 72),
    ("3-7 d", 168),
    ("7-14 d", 336),
    ("14-30 d", 720),
    ("30 d +", math.inf),
)


def time_buckets(hour_counts: Iterable[tuple[float, float]]) -> list[tuple[str, float]]:
    """Counts per time-to-convert bucket from (hours, count) pairs."""
    totals = [0.0] * len(TIME_BUCKETS)
    for hours, count in hour_counts:
        for i, (_label, upper) in enumerate(TIME_BUCKETS):
            if hours < upper:
                totals[i] += count
                break
    return [(label, totals[i]) for i, (label, _u) in enumerate(TIME_BUCKETS)]


def length_buckets(
    length_counts: Iterable[tuple[int, float]], cap: int = 10
) -> list[tuple[str, float]]:
    """Counts per path length 1..cap-1 and 'cap+' (lengths below 1 are dropped)."""
    totals = [0.0] * cap
    for length, count in length_counts:
        if length >= 1:
            totals[min(length, cap) - 1] += count
    labels = [str(i) for i in range(1, cap)] + [f"{cap}+"]
    last = max((i for i, v in enumerate(totals) if v > 0), default=0)
    return list(zip(labels, totals, strict=True))[: max(last + 1, 1)]
