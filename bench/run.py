"""``make bench``: run every measurement, write ``bench/results.json``, print the table.

Each measurement runs in its own process (``python -m bench.<name>``) and writes a
JSON fragment under ``var/bench/fragments/``; one that fails is recorded with its
error and the others still run. The machine is shared and has few cores, so the
absolute figures are noisy: compare the ratios, which come from one run. The method
is in docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import REPO, WORK, machine, now_iso
from bench.profile import summarise

RESULTS = REPO / "bench" / "results.json"
FRAGMENTS = WORK / "fragments"

#: The targets of the design brief (section "Performance").
TARGET_PIPELINE_SHARE = 0.50
TARGET_WORKER_CPU_US = 80.0
TARGET_P99_S = 1.0
TARGET_ATTRIBUTION_SHARE = 0.5
#: Of the core issue ("credits within seconds"), not of the brief.
TARGET_CREDIT_P99_S = 2.0


def _step(name: str, module: str, args: list[str], timeout: float) -> dict[str, Any]:
    """Run ``python -m bench.<module> ARGS`` and read its fragment (or the error)."""
    out = FRAGMENTS / f"{name}.json"
    out.unlink(missing_ok=True)
    print(f"[bench] {name}: running ({' '.join(args)})", flush=True)
    started = time.monotonic()
    try:
        proc = subprocess.run(  # noqa: S603 - our own modules
            [sys.executable, "-m", f"bench.{module}", "--out", str(out), *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        print(f"[bench] {name}: timed out after {timeout:.0f} s", flush=True)
        return {"error": f"timed out after {timeout:.0f} s"}
    seconds = round(time.monotonic() - started, 1)
    if proc.returncode != 0 or not out.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        print(f"[bench] {name}: failed in {seconds} s: {' | '.join(tail)}", flush=True)
        return {"error": " | ".join(tail) or f"exit code {proc.returncode}"}
    print(f"[bench] {name}: done in {seconds} s", flush=True)
    result: dict[str, Any] = json.loads(out.read_text())
    result["wall_seconds"] = seconds
    return result


def _get(data: dict[str, Any], *path: str) -> Any:
    node: Any = data
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _ratio(a: Any, b: Any) -> float | None:
    if isinstance(a, int | float) and isinstance(b, int | float) and b:
        return round(a / b, 4)
    return None


def _cpu_us_per_event(parts: dict[str, dict[str, Any]], name: str) -> float | None:
    """Worker CPU microseconds per touchpoint of a throughput run (all workers summed)."""
    cpu, events = _get(parts, name, "worker_cpu_s"), _get(parts, name, "events")
    if not isinstance(cpu, list) or not isinstance(events, int) or not events:
        return None
    return round(1e6 * sum(cpu) / events, 1)


def _at_least(value: Any, target: float) -> bool | None:
    return None if not isinstance(value, int | float) else value >= target


def _at_most(value: Any, target: float) -> bool | None:
    return None if not isinstance(value, int | float) else value <= target


def summarise_results(parts: dict[str, dict[str, Any]], started: str) -> dict[str, Any]:
    """The flat results (the keys the brief asks for), then the details of each part."""
    bare = _get(parts, "bare_pipe", "events_per_s")
    one = _get(parts, "pipeline_1_worker", "events_per_s")
    two = _get(parts, "pipeline_2_workers", "events_per_s")
    cpu_one = _cpu_us_per_event(parts, "pipeline_1_worker")
    cpu_two = _cpu_us_per_event(parts, "pipeline_2_workers")
    two_cpu = _get(parts, "pipeline_2_workers", "worker_cpu_s")
    busiest = (
        round(max(two_cpu) / sum(two_cpu), 3)
        if isinstance(two_cpu, list) and two_cpu and sum(two_cpu) > 0
        else None
    )
    p50 = _get(parts, "pipeline_1_worker", "latency", "p50_s")
    p99 = _get(parts, "pipeline_1_worker", "latency", "p99_s")
    credit_busy = _get(parts, "pipeline_1_worker", "conversion_to_credit_quarter_capacity", "p99_s")
    credit_trickle = _get(parts, "pipeline_1_worker", "conversion_to_credit_trickle", "p99_s")
    credit_p99 = (
        max(credit_busy, credit_trickle)
        if isinstance(credit_busy, int | float) and isinstance(credit_trickle, int | float)
        else None
    )
    ours = _get(parts, "attribution", "journeys_seconds", "total")
    theirs = _get(parts, "attribution", "channelattribution_seconds", "total")
    growth = _get(parts, "identity", "growth_vs_linear")
    ratios = {
        "pipeline_1_worker_vs_bare_pipe": _ratio(one, bare),
        "pipeline_2_workers_vs_bare_pipe": _ratio(two, bare),
        "pipeline_2_workers_vs_1_worker": _ratio(two, one),
        "worker_cpu_per_event_2_workers_vs_1": _ratio(cpu_two, cpu_one),
        "attribution_vs_channelattribution": _ratio(ours, theirs),
        "attribution_heuristics_vs_channelattribution": _get(
            parts, "attribution", "ratios", "heuristics"
        ),
        "attribution_markov_vs_channelattribution": _get(parts, "attribution", "ratios", "markov"),
    }
    targets = {
        "pipeline_1_worker_at_least_50pct_of_bare_pipe": _at_least(
            ratios["pipeline_1_worker_vs_bare_pipe"], TARGET_PIPELINE_SHARE
        ),
        "worker_cpu_at_most_80_us_per_touchpoint": _at_most(cpu_one, TARGET_WORKER_CPU_US),
        "latency_p99_at_most_1_s": _at_most(p99, TARGET_P99_S),
        "conversion_to_credit_p99_at_most_2_s": _at_most(credit_p99, TARGET_CREDIT_P99_S),
        "attribution_at_most_half_of_channelattribution": _at_most(
            ratios["attribution_vs_channelattribution"], TARGET_ATTRIBUTION_SHARE
        ),
        "identity_memory_at_most_linear": _at_most(growth, 1.1),
    }
    return {
        "bare_pipe_events_per_s": bare,
        "pipeline_events_per_s_1_worker": one,
        "pipeline_events_per_s_2_workers": two,
        "worker_cpu_us_per_touchpoint_1_worker": cpu_one,
        "worker_cpu_us_per_touchpoint_2_workers": cpu_two,
        "busiest_of_2_workers_cpu_share": busiest,
        "latency_p50_s": p50,
        "latency_p99_s": p99,
        "conversion_to_credit_p99_s": credit_p99,
        "conversion_to_credit_p99_s_quarter_capacity": credit_busy,
        "conversion_to_credit_p99_s_trickle": credit_trickle,
        "attribution_seconds": ours,
        "channelattribution_seconds": theirs,
        "channelattribution_missing": _get(parts, "attribution", "channelattribution_missing"),
        "identity_bytes_per_million": _get(parts, "identity", "bytes_per_million"),
        "identity_bytes_method": _get(parts, "identity", "method"),
        "audience_step_signals_per_s": _get(parts, "audiences", "step_signals_per_s"),
        "audience_share_of_worker": _get(
            parts, "profile_1_worker", "share_by_stage", "audiences_agent"
        ),
        "ratios": ratios,
        "targets": {
            "pipeline_share_of_bare_pipe": TARGET_PIPELINE_SHARE,
            "worker_cpu_us_per_touchpoint": TARGET_WORKER_CPU_US,
            "latency_p99_s": TARGET_P99_S,
            "conversion_to_credit_p99_s": TARGET_CREDIT_P99_S,
            "attribution_vs_channelattribution": TARGET_ATTRIBUTION_SHARE,
        },
        "targets_met": targets,
        "machine": machine(),
        "started_at": started,
        "finished_at": now_iso(),
        "notes": [
            "One run on a shared machine: absolute figures are noisy, compare the ratios.",
            "Pipeline events/s: first produce to the last of the N touchpoints visible in "
            "ClickHouse `touchpoints` (the table waited on); all_stages_* also waits for "
            "the other tables to go quiet.",
            "Latency: produce time of each event to the return of the chDB insert of its "
            "row, at a steady rate of a quarter of the measured throughput, 1 worker.",
            "Conversion to credit: the collector's 200 to an order to the return of the chDB "
            "insert that completes its credit (all eight models), during the quarter-load "
            "latency run and on a trickle of 1 event/s through the collector alone; "
            "conversion_to_credit_p99_s is the larger of the two.",
        ],
        "details": parts,
    }


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if unit == "MB" and isinstance(value, int | float):
        return f"{value / 1e6:,.0f} MB"
    if isinstance(value, float) and value < 100:
        return f"{value:.3g}{unit}"
    if isinstance(value, int | float):
        return f"{value:,.0f}{unit}"
    return str(value)


def print_table(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    r, ratios, met = results, results["ratios"], results["targets_met"]
    table = Table(title=f"Journeys benchmark ({RESULTS.relative_to(REPO)})")
    for col in ("measurement", "value", "target", "met"):
        table.add_column(col, justify="left" if col == "measurement" else "right")
    rows: list[tuple[str, Any, str, Any]] = [
        ("bare pipe (consume+decode+insert), events/s", r["bare_pipe_events_per_s"], "", None),
        ("pipeline, 1 worker, touchpoints/s", r["pipeline_events_per_s_1_worker"], "", None),
        ("pipeline, 2 workers, touchpoints/s", r["pipeline_events_per_s_2_workers"], "", None),
        (
            "pipeline 1 worker / bare pipe",
            ratios["pipeline_1_worker_vs_bare_pipe"],
            ">= 0.5",
            met["pipeline_1_worker_at_least_50pct_of_bare_pipe"],
        ),
        ("pipeline 2 workers / bare pipe", ratios["pipeline_2_workers_vs_bare_pipe"], "", None),
        (
            "worker CPU per touchpoint, 1 worker, µs",
            r["worker_cpu_us_per_touchpoint_1_worker"],
            "<= 80",
            met["worker_cpu_at_most_80_us_per_touchpoint"],
        ),
        (
            "worker CPU per touchpoint, 2 workers / 1",
            ratios["worker_cpu_per_event_2_workers_vs_1"],
            "(4 workers: <= 1.15)",
            None,
        ),
        (
            "busiest of 2 workers, share of their CPU",
            r["busiest_of_2_workers_cpu_share"],
            "(of 4: <= 0.35)",
            None,
        ),
        ("latency p50, s", r["latency_p50_s"], "", None),
        ("latency p99, s", r["latency_p99_s"], "<= 1", met["latency_p99_at_most_1_s"]),
        (
            "conversion to credit p99 (quarter load / trickle), s",
            f"{_fmt(r['conversion_to_credit_p99_s_quarter_capacity'])} / "
            f"{_fmt(r['conversion_to_credit_p99_s_trickle'])}",
            "<= 2",
            met["conversion_to_credit_p99_at_most_2_s"],
        ),
        ("attribute --paths 100k paths, s", r["attribution_seconds"], "", None),
        ("ChannelAttribution (heuristics + markov), s", r["channelattribution_seconds"], "", None),
        (
            "attribution / ChannelAttribution",
            ratios["attribution_vs_channelattribution"],
            "<= 0.5",
            met["attribution_at_most_half_of_channelattribution"],
        ),
        ("audiences step, person signals/s", r["audience_step_signals_per_s"], "", None),
        ("audiences agent, share of worker samples", r["audience_share_of_worker"], "", None),
        (
            "identity tables, bytes per million identifiers",
            r["identity_bytes_per_million"],
            "linear",
            met["identity_memory_at_most_linear"],
        ),
    ]
    for name, value, target, ok in rows:
        unit = "MB" if "bytes" in name else ""
        table.add_row(name, _fmt(value, unit), target, _fmt(ok) if ok is not None else "")
    console = Console(width=max(110, Console().width))
    console.print(table)
    m = r["machine"]
    console.print(
        f"{m['cores']} cores, Python {m['python']}, load {m['load_average_at_start']}; "
        "one run on a shared machine: compare ratios. Method: docs/performance.md"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000, help="touchpoints per run")
    parser.add_argument("--warm-up", type=int, default=2_000, help="warm-up touchpoints")
    parser.add_argument("--identifiers", type=int, default=200_000, help="identity sample")
    parser.add_argument("--latency-seconds", type=float, default=15.0)
    parser.add_argument(
        "--trickle-seconds", type=float, default=60.0, help="conversion to credit at 1 event/s"
    )
    parser.add_argument("--profile-seconds", type=float, default=15.0, help="0: no py-spy")
    parser.add_argument("--repeat", type=int, default=3, help="bare pipe and attribution")
    parser.add_argument(
        "--only",
        action="append",
        choices=(
            "bare_pipe",
            "pipeline_1_worker",
            "pipeline_2_workers",
            "attribution",
            "identity",
            "audiences",
        ),
        help="run only these parts (repeatable)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    started = now_iso()
    sizes = ["--events", str(args.events), "--warm-up", str(args.warm_up)]
    e2e = [*sizes, "--latency-seconds", str(args.latency_seconds)]
    plan: dict[str, tuple[str, list[str], float]] = {
        "bare_pipe": ("bare_pipe", [*sizes, "--repeat", str(args.repeat)], 300),
        "pipeline_1_worker": (
            "pipeline_e2e",
            [
                *e2e,
                "--workers",
                "1",
                "--profile-seconds",
                str(args.profile_seconds),
                "--credit-rate",
                "4",
                "--trickle-seconds",
                str(args.trickle_seconds),
            ],
            420 + args.trickle_seconds + 60,
        ),
        "pipeline_2_workers": ("pipeline_e2e", [*e2e, "--workers", "2"], 420),
        "attribution": ("attribution", ["--repeat", str(args.repeat)], 300),
        "identity": ("identity", ["--identifiers", str(args.identifiers)], 300),
        "audiences": ("audiences", [*sizes, "--repeat", str(args.repeat)], 300),
    }
    data = _step("data", "data", sizes, 300)
    parts: dict[str, dict[str, Any]] = {"data": data}
    for name, (module, extra, timeout) in plan.items():
        if args.only and name not in args.only:
            continue
        parts[name] = _step(name, module, extra, timeout)
    spy = _get(parts, "pipeline_1_worker", "py_spy_profile")
    if spy and Path(spy).exists():
        parts["profile_1_worker"] = summarise(Path(spy))
    results = summarise_results(parts, started)
    earlier = json.loads(args.out.read_text()) if args.out.exists() else {}
    if "queries" in earlier:  # keep the figures of make bench-queries (bench/queries.py)
        results["queries"] = earlier["queries"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    print(f"[bench] wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
