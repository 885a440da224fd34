"""``make bench-queries``: the analysts' queries at a year of data, query time and CLI time.

Three steps, each in its own process (one process may open a chDB path at a time):

1. ``--step generate`` migrates a fresh chDB path and fills it in-engine
   (:mod:`bench.query_data`, 10M touchpoints by default), then refreshes
   ``daily_channel_credit`` as the sink would.
2. ``--step time`` opens it, lets background merges finish, merges every month but the
   newest into one part as a live system's quiet months are (migration 0014), stops
   merges (the parts stay as they are), then times every ``queries/*.sql`` (default
   parameters, and one month where the query takes since/until) plus the README's
   examples and the person lookups: the median of ``--repeat`` runs with the analysts'
   settings, in wall time and in CPU time of the process (``query_cpu_s``, both cores
   together: less moved by other load on a shared machine). It then serves the
   read-only endpoint, as ``journeys run`` does, and times ``journeys query`` through it
   (``cli_owner_s``).
3. The parent times ``journeys query`` opening the data itself (``cli_s``), and merges
   everything into ``bench/results.json`` under ``queries``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import REPO, WORK, machine, now_iso

RESULTS = REPO / "bench" / "results.json"
QUERIES = REPO / "queries"
DB = "journeys"
#: The month the one-month runs read (the generated year is 2025).
MONTH = {"since": "2025-06-01", "until": "2025-07-01"}
#: Query time and CLI time each query must stay under (issue 16).
QUERY_LIMIT_S, CLI_LIMIT_S = 1.0, 1.5

#: The README's examples and the lookups analysts run by hand.
EXTRA = {
    "readme_touchpoints_by_channel": "SELECT channel, count() AS n FROM journeys.touchpoints "
    "FINAL GROUP BY channel ORDER BY n DESC",
    "readme_dead_letters": "SELECT location, error FROM journeys.dead_letters FINAL LIMIT 5",
    "person_touchpoints": "SELECT occurred_at, channel, event_type, source "
    "FROM journeys.touchpoints FINAL WHERE person_id = 'p4242' ORDER BY occurred_at",
    "person_journeys": "SELECT journey_id, ended_at, converted, path FROM journeys.journeys "
    "FINAL WHERE person_id = 'p4242' ORDER BY ended_at",
    "touchpoints_per_channel_per_day_30d": "SELECT toDate(occurred_at) AS day, channel, "
    "count() AS n FROM journeys.touchpoints FINAL WHERE occurred_at >= "
    "toDateTime64('2025-12-01 00:00:00', 3, 'UTC') GROUP BY day, channel ORDER BY day, channel",
    "select_1": "SELECT 1",
}


def _cases() -> list[tuple[str, list[str], str]]:
    """``(name, journeys query arguments, bound SQL)`` of every timed query."""
    from sinks.report.sql import bind, load_query_files

    out: list[tuple[str, list[str], str]] = []
    for qf in load_query_files(QUERIES):
        out.append((qf.name, ["--file", str(qf.path)], bind(qf, {})))
        if {"since", "until"} <= set(qf.params):
            args = [f"{k}={v}" for k, v in MONTH.items()]
            cli = ["--file", str(qf.path), *(a for kv in args for a in ("--param", kv))]
            out.append((f"{qf.name}@month", cli, bind(qf, MONTH)))
    for name, sql in EXTRA.items():
        out.append((name, [sql], sql))
    return out


def _url(path: Path) -> str:
    return f"chdb://{path}"


def step_generate(path: Path, touchpoints: int) -> dict[str, Any]:
    from bench.query_data import generate
    from sinks.clickhouse import connect, migrate

    shutil.rmtree(path, ignore_errors=True)
    client = connect(_url(path))
    try:
        migrate(client, DB)
        started = time.monotonic()
        generate(client.command, DB, touchpoints)
        client.command(f"SYSTEM REFRESH VIEW {DB}.daily_channel_credit_mv")
        client.command(f"SYSTEM WAIT VIEW {DB}.daily_channel_credit_mv")
        counts = {
            t: int(client.query_rows(f"SELECT count() FROM {DB}.{t}")[1][0][0])
            for t in ("touchpoints", "journeys", "attribution", "identities", "identity_merges")
        }
        return {"generate_s": round(time.monotonic() - started, 1), "rows": counts}
    finally:
        client.close()


def _cpu_s() -> float:
    """CPU seconds of this process (chDB runs in it): a figure other load moves less."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _settle(client: Any, limit_s: float = 600.0) -> dict[str, Any]:
    """Let background merges finish (a year of data has long settled into few parts per
    partition), then stop them so that every query sees the same parts."""
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        _, rows = client.query_rows("SELECT count() FROM system.merges")
        if int(rows[0][0]) == 0:
            break
        time.sleep(2)
    aged = _age(client)
    client.command("SYSTEM STOP MERGES")
    _, rows = client.query_rows(
        f"SELECT table, count(), sum(rows) FROM system.parts WHERE database = '{DB}' AND active "
        "GROUP BY table ORDER BY table"
    )
    return {
        "waited_s": round(time.monotonic() - started, 1),
        "months_merged": aged,
        "parts": {str(t): int(n) for t, n, _r in rows},
        "rows": {str(t): int(r) for t, _n, r in rows},
    }


def _age(client: Any, limit_s: float = 600.0) -> dict[str, int]:
    """What an hour without writes does on a live system (migration 0014): every month of a
    table with ``min_age_to_force_merge_seconds`` but its newest (the month still being
    written) merged into one part, and the parts it replaced deleted. Returns how many
    months of each table were merged."""
    _, rows = client.query_rows(
        "SELECT p.table, p.partition_id, count() FROM system.parts AS p "
        "JOIN system.tables AS t ON t.database = p.database AND t.name = p.table "
        f"WHERE p.database = '{DB}' AND p.active "
        "AND t.engine_full LIKE '%min_age_to_force_merge_seconds%' "
        "GROUP BY p.table, p.partition_id"
    )
    newest: dict[str, str] = {}
    for table, partition, _n in rows:
        newest[table] = max(newest.get(table, ""), str(partition))
    merged: dict[str, int] = {}
    for table, partition, parts in rows:
        if int(parts) > 1 and partition != newest[table]:
            client.command(f"OPTIMIZE TABLE {DB}.{table} PARTITION ID '{partition}' FINAL")
            merged[str(table)] = merged.get(str(table), 0) + 1
    # An hour later the merged parts are long deleted too (old_parts_lifetime, 8 min);
    # until then every process that opens the data loads them (seconds at this size).
    for table in merged:
        client.command(f"ALTER TABLE {DB}.{table} MODIFY SETTING old_parts_lifetime = 0")
    started = time.monotonic()
    while merged and time.monotonic() - started < limit_s:
        names = ", ".join(f"'{t}'" for t in merged)
        _, left = client.query_rows(
            f"SELECT count() FROM system.parts WHERE database = '{DB}' AND table IN ({names}) "
            "AND NOT active"
        )
        if int(left[0][0]) == 0:
            break
        time.sleep(2)
    for table in merged:
        client.command(f"ALTER TABLE {DB}.{table} RESET SETTING old_parts_lifetime")
    return merged


def _cli(args: list[str], env: dict[str, str]) -> float:
    started = time.monotonic()
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "cli.main", "query", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=300,
        check=False,
    )
    took = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"journeys query {args}: {done.stderr.decode()[-400:]}")
    return took


def _env(path: Path) -> dict[str, str]:
    return {**os.environ, "JOURNEYS_CLICKHOUSE_URL": _url(path), "PYTHONPATH": str(REPO)}


def step_time(path: Path, repeat: int) -> dict[str, Any]:
    from sinks.clickhouse import connect
    from sinks.query_server import QueryServer

    client = connect(_url(path))
    client.command("SYSTEM STOP VIEWS")  # the data is fixed: no refresh during the timing
    settled = _settle(client)
    settings = client.analyst_settings()
    out: dict[str, Any] = {"_parts": settled}
    try:
        for name, _args, sql in _cases():
            times, cpu, rows = [], [], 0
            for _ in range(repeat):
                started, cpu_started = time.monotonic(), _cpu_s()
                body = client.raw_query(sql + "\nFORMAT TSV", settings=settings)
                times.append(time.monotonic() - started)
                cpu.append(_cpu_s() - cpu_started)
                rows = body.count(b"\n")
            out[name] = {
                "query_s": round(statistics.median(times), 3),
                "query_cpu_s": round(statistics.median(cpu), 3),
                "rows": rows,
            }
        server = QueryServer(client, _url(path))
        server.start()
        try:
            for name, args, _sql in _cases():
                times = [_cli(args, _env(path)) for _ in range(repeat)]
                out[name]["cli_owner_s"] = round(statistics.median(times), 3)
        finally:
            server.stop()
    finally:
        client.close()
    return out


def _child(step: str, path: Path, *extra: str) -> Any:
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "bench.queries", "--step", step, "--path", str(path), *extra],
        env=_env(path),
        capture_output=True,
        timeout=3600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench.queries --step {step}: {done.stderr.decode()[-2000:]}")
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--touchpoints", type=int, default=10_000_000, help="size of the set")
    parser.add_argument("--repeat", type=int, default=3, help="runs per query (median)")
    parser.add_argument("--path", type=Path, default=WORK / "queries" / "clickhouse")
    parser.add_argument("--reuse", action="store_true", help="keep an already generated set")
    parser.add_argument("--step", choices=("generate", "time"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.step == "generate":
        print(json.dumps(step_generate(args.path, args.touchpoints)))
        return 0
    if args.step == "time":
        print(json.dumps(step_time(args.path, args.repeat)))
        return 0
    started = now_iso()
    gen: dict[str, Any] = {}
    if not (args.reuse and args.path.exists()):
        print(f"[bench-queries] generating {args.touchpoints:,} touchpoints", flush=True)
        gen = _child("generate", args.path, "--touchpoints", str(args.touchpoints))
    print(f"[bench-queries] {gen}; settling merges, then timing the queries", flush=True)
    timings = _child("time", args.path, "--repeat", str(args.repeat))
    parts = timings.pop("_parts")
    # The first processes to open the data after the timing step (which merged whole
    # months) took seconds more in some runs: timed on their own and reported, not
    # counted into any query's figure.
    first_opens = [round(_cli(["SELECT 1"], _env(args.path)), 3) for _ in range(3)]
    print(f"[bench-queries] first opens of the data (SELECT 1): {first_opens} s", flush=True)
    for name, cli_args, _sql in _cases():
        timings[name]["cli_s"] = round(
            statistics.median(_cli(cli_args, _env(args.path)) for _ in range(args.repeat)), 3
        )
    slow = sorted(
        n for n, t in timings.items() if t["query_s"] >= QUERY_LIMIT_S or t["cli_s"] >= CLI_LIMIT_S
    )
    result = {
        "started": started,
        "touchpoints": args.touchpoints,
        "generated": gen,
        "active_parts": parts,
        "first_opens_s": first_opens,
        "machine": machine(),
        "repeat": args.repeat,
        "limits": {"query_s": QUERY_LIMIT_S, "cli_s": CLI_LIMIT_S},
        "all_within_limits": not slow,
        "over_limits": slow,
        "queries": timings,
    }
    data = json.loads(args.out.read_text()) if args.out.exists() else {}
    data["queries"] = result
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2) + "\n")
    width = max(len(n) for n in timings)
    print(f"{'query':<{width}}  query_s  cpu_s  cli_owner_s  cli_s  rows")
    for name, t in timings.items():
        times = f"{t['query_s']:7.3f}  {t['query_cpu_s']:5.2f}  {t['cli_owner_s']:11.3f}"
        times += f"  {t['cli_s']:5.2f}"
        print(f"{name:<{width}}  {times}  {t['rows']}")
    print(f"[bench-queries] over the limits: {slow or 'none'}; wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
