"""``make bench`` judges its figures against the design brief's targets: the pipeline at
half the bare pipe, 80 µs of worker CPU per touchpoint, a p99 of 1 s and attribution in
half ChannelAttribution's time."""

from __future__ import annotations

from typing import Any

from bench.run import summarise_results


def parts(one: float, cpu: list[float], p99: float, ours: float) -> dict[str, dict[str, Any]]:
    return {
        "bare_pipe": {"events_per_s": 10_000.0},
        "pipeline_1_worker": {
            "events_per_s": one,
            "events": 20_000,
            "worker_cpu_s": cpu,
            "latency": {"p50_s": 0.3, "p99_s": p99},
        },
        "pipeline_2_workers": {"events_per_s": 6_000.0, "events": 20_000, "worker_cpu_s": [3, 1]},
        "attribution": {
            "journeys_seconds": {"total": ours},
            "channelattribution_seconds": {"total": 1.0},
        },
        "identity": {"growth_vs_linear": 1.0},
    }


def test_figures_within_the_brief_meet_every_target() -> None:
    r = summarise_results(parts(5_000.0, [1.6], 0.9, 0.5), "now")
    assert r["worker_cpu_us_per_touchpoint_1_worker"] == 80.0
    assert r["busiest_of_2_workers_cpu_share"] == 0.75
    assert r["ratios"]["worker_cpu_per_event_2_workers_vs_1"] == 2.5
    met = r["targets_met"]
    assert met["pipeline_1_worker_at_least_50pct_of_bare_pipe"] is True
    assert met["worker_cpu_at_most_80_us_per_touchpoint"] is True
    assert met["latency_p99_at_most_1_s"] is True
    assert met["attribution_at_most_half_of_channelattribution"] is True


def test_figures_past_the_brief_are_not_met() -> None:
    met = summarise_results(parts(4_999.0, [1.7], 1.1, 0.51), "now")["targets_met"]
    assert met["pipeline_1_worker_at_least_50pct_of_bare_pipe"] is False
    assert met["worker_cpu_at_most_80_us_per_touchpoint"] is False
    assert met["latency_p99_at_most_1_s"] is False
    assert met["attribution_at_most_half_of_channelattribution"] is False


def test_a_missing_part_is_not_judged() -> None:
    met = summarise_results({}, "now")["targets_met"]
    assert set(met.values()) == {None}
