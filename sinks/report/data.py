"""The attribution report's data: a few read-only queries, parsed into plain records.

The queries go through a ``run(sql) -> bytes`` callable: ``journeys report`` passes
the function ``journeys query`` uses (the read-only endpoint of the process that owns
chDB when there is one, else a direct connection), the demo its own client, the tests
the endpoint. Every result is requested as ``JSONEachRow``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from pipeline.core.attribution import MODELS
from sinks.report.sql import bind_sql

Runner = Callable[[str], bytes]


#: Touches before the conversion shown in the Sankey.
SANKEY_STEPS = 4

_DATES = "toDate({col}) >= {{since:Date}} AND toDate({col}) < {{until:Date}}"

SUMMARY_SQL = f"""
SELECT countIf(converted) AS conversions,
       countIf(NOT converted) AS nulls,
       sumIf(revenue, converted) AS revenue,
       uniqExactIf(person_id, converted) AS persons,
       avgIf(touch_count, converted) AS avg_touches,
       quantileExactIf(0.5)(days_to_convert, converted) AS median_days,
       min(ended_at) AS first_at,
       max(ended_at) AS last_at
FROM {{db}}.journeys FINAL
WHERE {_DATES.format(col="ended_at")}
"""
CREDIT_SQL = f"""
SELECT model, channel, sum(credit) AS credit, sum(revenue_credit) AS revenue
FROM {{db}}.attribution_current
WHERE {_DATES.format(col="converted_at")}
GROUP BY model, channel
ORDER BY model, channel
"""
PATHS_SQL = f"""
SELECT arraySlice(path, -{SANKEY_STEPS}) AS tail, length(path) AS touches, count() AS conversions
FROM {{db}}.journeys FINAL
WHERE converted AND {_DATES.format(col="ended_at")}
GROUP BY tail, touches
"""
HOURS_SQL = f"""
SELECT toUInt32(floor(days_to_convert * 24)) AS hours, count() AS conversions
FROM {{db}}.journeys FINAL
WHERE converted AND {_DATES.format(col="ended_at")}
GROUP BY hours
ORDER BY hours
"""
DAILY_SQL = f"""
SELECT toDate(converted_at) AS day, channel, sum(credit) AS conversions,
       sum(revenue_credit) AS revenue
FROM {{db}}.attribution_current
WHERE model = {{model:String}} AND {_DATES.format(col="converted_at")}
GROUP BY day, channel
ORDER BY day, channel
"""


SEGMENTS_SQL = """
SELECT segment, countIf(is_member = 1) AS members, count() AS memberships,
       countIf(is_member = 0) AS exits
FROM {db}.segment_membership FINAL
GROUP BY segment
ORDER BY members DESC, segment
"""


BOTS_SQL = f"""
SELECT source, count() AS events, countIf(is_bot) AS bots
FROM {{db}}.touchpoints FINAL
WHERE {_DATES.format(col="occurred_at")}
GROUP BY source
ORDER BY source
"""


class ReportError(RuntimeError):
    """The report's data could not be read or understood."""


@dataclass(frozen=True, slots=True)
class Credit:
    model: str
    channel: str
    credit: float
    revenue: float


@dataclass(frozen=True, slots=True)
class PathCount:
    tail: tuple[str, ...]  # the last SANKEY_STEPS touches
    touches: int  # the full path length
    conversions: int


@dataclass(frozen=True, slots=True)
class Daily:
    day: date
    channel: str
    conversions: float
    revenue: float


@dataclass(frozen=True, slots=True)
class SegmentSize:
    segment: str
    members: int  # in the segment now
    memberships: int  # entries ever (a person may enter again after an exit)
    exits: int


@dataclass(frozen=True, slots=True)
class BotShare:
    source: str
    events: int  # touchpoints stored
    bots: int  # of which flagged is_bot (kept out of journeys and attribution)

    @property
    def share(self) -> float:
        return self.bots / self.events if self.events else 0.0


@dataclass
class ReportData:
    model: str = "linear"
    since: date | None = None
    until: date | None = None
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    conversions: int = 0
    null_paths: int = 0
    revenue: float = 0.0
    persons: int = 0
    avg_touches: float = 0.0
    median_days: float = 0.0
    first_at: str = ""
    last_at: str = ""
    credit: list[Credit] = field(default_factory=list)
    paths: list[PathCount] = field(default_factory=list)
    hours: list[tuple[int, int]] = field(default_factory=list)
    daily: list[Daily] = field(default_factory=list)
    segments: list[SegmentSize] = field(default_factory=list)
    bots: list[BotShare] = field(default_factory=list)

    def channels(self) -> list[str]:
        """Channels by the credit the report's model gives them, largest first."""
        total: dict[str, float] = {}
        for c in self.credit:
            total.setdefault(c.channel, 0.0)
            if c.model == self.model:
                total[c.channel] += c.credit
        return sorted(total, key=lambda ch: (-total[ch], ch))

    def models(self) -> list[str]:
        present = {c.model for c in self.credit}
        return [m for m in MODELS if m in present] + sorted(present - set(MODELS))

    def credit_table(self, revenue: bool = False) -> dict[tuple[str, str], float]:
        return {(c.channel, c.model): c.revenue if revenue else c.credit for c in self.credit}

    def lengths(self) -> list[tuple[int, int]]:
        counts: dict[int, int] = {}
        for p in self.paths:
            counts[p.touches] = counts.get(p.touches, 0) + p.conversions
        return sorted(counts.items())


def parse_rows(body: bytes) -> list[dict[str, Any]]:
    """Rows of a ``JSONEachRow`` result."""
    try:
        return [json.loads(line) for line in body.decode("utf-8").splitlines() if line.strip()]
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"unexpected answer from ClickHouse: {body[:200]!r}") from exc


def _float(value: Any) -> float:
    # ClickHouse writes 64-bit integers as strings in JSON, and nan/inf as null.
    return 0.0 if value is None else float(value)


def fetch_report(
    run: Runner,
    database: str = "journeys",
    since: date | None = None,
    until: date | None = None,
    model: str = "linear",
) -> ReportData:
    """Read everything the report shows through *run*."""
    params = {
        "since": (since or date(1970, 1, 1)).isoformat(),
        "until": (until or date(2100, 1, 1)).isoformat(),
        "model": model,
    }

    def rows(sql: str) -> list[dict[str, Any]]:
        used = {k: v for k, v in params.items() if "{" + k + ":" in sql}
        bound = bind_sql(sql.replace("{db}", database), used)
        return parse_rows(run(bound + "\nFORMAT JSONEachRow"))

    data = ReportData(model=model, since=since, until=until)
    summary = rows(SUMMARY_SQL)
    if summary:
        s = summary[0]
        data.conversions = int(_float(s["conversions"]))
        data.null_paths = int(_float(s["nulls"]))
        data.revenue = _float(s["revenue"])
        data.persons = int(_float(s["persons"]))
        data.avg_touches = _float(s["avg_touches"])
        data.median_days = _float(s["median_days"])
        if data.conversions or data.null_paths:
            data.first_at, data.last_at = str(s["first_at"]), str(s["last_at"])
    data.credit = [
        Credit(r["model"], r["channel"], _float(r["credit"]), _float(r["revenue"]))
        for r in rows(CREDIT_SQL)
    ]
    data.paths = [
        PathCount(tuple(r["tail"]), int(_float(r["touches"])), int(_float(r["conversions"])))
        for r in rows(PATHS_SQL)
    ]
    data.hours = [(int(_float(r["hours"])), int(_float(r["conversions"]))) for r in rows(HOURS_SQL)]
    data.daily = [
        Daily(
            date.fromisoformat(str(r["day"])),
            r["channel"],
            _float(r["conversions"]),
            _float(r["revenue"]),
        )
        for r in rows(DAILY_SQL)
    ]
    data.segments = [
        SegmentSize(
            r["segment"],
            int(_float(r["members"])),
            int(_float(r["memberships"])),
            int(_float(r["exits"])),
        )
        for r in rows(SEGMENTS_SQL)
    ]
    data.bots = [
        BotShare(r["source"], int(_float(r["events"])), int(_float(r["bots"])))
        for r in rows(BOTS_SQL)
    ]
    return data


def sankey_paths(data: ReportData) -> Sequence[tuple[Sequence[str], float]]:
    """The converting paths for the Sankey: full length kept for the truncation count."""
    out: list[tuple[Sequence[str], float]] = []
    for p in data.paths:
        # A path longer than its tail: pad the front so sankey_layout counts it truncated.
        prefix = ("…",) * max(p.touches - len(p.tail), 0)
        out.append((prefix + p.tail, float(p.conversions)))
    return out
