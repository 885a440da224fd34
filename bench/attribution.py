"""Attribution on a path file: ``journeys attribute --paths`` against ChannelAttribution.

One synthetic ChannelAttribution-layout file of 100,000 distinct paths over 12
channels (up to 20 touches, conversions and nulls per path) is written once. Both
implementations are timed in this process, alternately, ``--repeat`` times, and the
medians are reported:

* Journeys: ``read_path_file`` and ``attribute_paths`` with all eight models (what
  ``journeys attribute --paths`` runs), and separately the heuristic models
  (first/last/linear) and first-order Markov (solved exactly);
* ChannelAttribution: ``pandas.read_csv``, ``heuristic_models`` and ``markov_model``
  with its defaults (first order, a Monte-Carlo simulation of 100,000 journeys).

The CLI itself is also run once end to end (``journeys attribute --paths FILE --format
csv``, interpreter start included).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib
import io
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import WORK, fragment_main

CHANNELS = (
    "direct", "organic_search", "paid_search", "email", "sms", "push", "organic_social",
    "paid_social", "display", "referral", "affiliate", "store",
)  # fmt: skip
HEURISTICS = ("first_touch", "last_touch", "linear")


def write_paths(path: Path, distinct: int = 100_000, seed: int = 12) -> dict[str, Any]:
    """A ChannelAttribution-style file of *distinct* distinct paths over 12 channels."""
    rng = random.Random(seed)
    weights = [rng.uniform(0.3, 1.0) for _ in CHANNELS]
    lift = {c: rng.uniform(0.05, 0.3) for c in CHANNELS}
    seen: set[str] = set()
    touches = conversions = nulls = 0
    rows: list[tuple[str, int, float, int]] = []
    while len(rows) < distinct:
        length = min(20, 1 + int(rng.expovariate(1 / 6.0)))
        chain = [rng.choices(CHANNELS, weights)[0]]
        for _ in range(length - 1):
            # Customers often come back the same way.
            chain.append(chain[-1] if rng.random() < 0.3 else rng.choices(CHANNELS, weights)[0])
        text = " > ".join(chain)
        if text in seen:
            continue
        seen.add(text)
        p = min(0.9, sum(lift[c] for c in set(chain)) / 2)
        conv = sum(1 for _ in range(rng.randint(1, 6)) if rng.random() < p / 3)
        null = rng.randint(0, 8) if conv else rng.randint(1, 8)
        value = round(sum(rng.uniform(20, 200) for _ in range(conv)), 2)
        rows.append((text, conv, value, null))
        touches += length
        conversions += conv
        nulls += null
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "total_conversions", "total_conversion_value", "total_null"])
        writer.writerows(rows)
    return {
        "distinct_paths": distinct,
        "channels": len(CHANNELS),
        "touches": touches,
        "conversions": conversions,
        "nulls": nulls,
        "max_length": 20,
    }


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def _journeys_once(path: Path) -> dict[str, float]:
    from pipeline.core.attribution import MODELS, attribute_paths
    from pipeline.core.paths import read_path_file

    read_s, stats = _timed(lambda: read_path_file(path))
    all_s, _ = _timed(lambda: attribute_paths(stats, MODELS))
    heur_s, _ = _timed(lambda: attribute_paths(stats, HEURISTICS))
    markov_s, _ = _timed(lambda: attribute_paths(stats, ("markov",)))
    return {
        "read": read_s,
        "all_8_models": all_s,
        "heuristics": heur_s,
        "markov": markov_s,
        "total": read_s + all_s,
    }


def _channelattribution_once(ca: Any, path: Path) -> dict[str, float]:
    pd = importlib.import_module("pandas")  # the bench extra: not needed to type-check
    quiet = io.StringIO()
    read_s, data = _timed(lambda: pd.read_csv(path))
    with contextlib.redirect_stdout(quiet):
        heur_s, _ = _timed(
            lambda: ca.heuristic_models(
                data, "path", "total_conversions", var_value="total_conversion_value",
                flg_pro=False,
            )
        )  # fmt: skip
        markov_s, _ = _timed(
            lambda: ca.markov_model(
                data, "path", "total_conversions", var_value="total_conversion_value",
                var_null="total_null", order=1, verbose=False, flg_pro=False,
            )
        )  # fmt: skip
    return {
        "read": read_s,
        "heuristics": heur_s,
        "markov": markov_s,
        "total": read_s + heur_s + markov_s,
    }


def _medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(statistics.median(r[k] for r in runs), 4) for k in runs[0]}


def _cli_seconds(path: Path) -> float:
    started = time.perf_counter()
    subprocess.run(  # noqa: S603 - our own CLI
        [
            sys.executable,
            "-m",
            "cli.main",
            "attribute",
            "--paths",
            str(path),
            "--format",
            "csv",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return round(time.perf_counter() - started, 3)


def _load_channelattribution() -> tuple[Any, str | None, str | None]:
    """(module or None, version, why it is missing)."""
    quiet = io.StringIO()
    try:
        with contextlib.redirect_stdout(quiet):
            ca = importlib.import_module("ChannelAttribution")
        importlib.import_module("pandas")
    except ImportError as exc:
        return None, None, f"{type(exc).__name__}: {exc} (pip install -e '.[bench]')"
    from importlib.metadata import version

    return ca, version("ChannelAttribution"), None


def measure(repeat: int) -> dict[str, Any]:
    path = WORK / "paths-100k-12ch.csv"
    shape = write_paths(path)
    ca, ca_version, missing = _load_channelattribution()
    ours: list[dict[str, float]] = []
    theirs: list[dict[str, float]] = []
    for _ in range(repeat):
        ours.append(_journeys_once(path))
        if ca is not None:
            theirs.append(_channelattribution_once(ca, path))
    mine = _medians(ours)
    result: dict[str, Any] = {
        "file": str(path),
        "shape": shape,
        "repeat": repeat,
        "journeys_seconds": mine,
        "journeys_cli_seconds": _cli_seconds(path),
        "channelattribution_version": ca_version,
        "channelattribution_missing": missing,
        "channelattribution_seconds": None,
    }
    if theirs:
        other = _medians(theirs)
        result["channelattribution_seconds"] = other
        result["ratios"] = {
            "total": round(mine["total"] / other["total"], 3),
            "heuristics": round(mine["heuristics"] / other["heuristics"], 3),
            "markov": round(mine["markov"] / other["markov"], 3),
            "read": round(mine["read"] / other["read"], 3),
        }
    return result


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repeat", type=int, default=3, help="alternate runs; medians reported")


def main() -> int:
    return fragment_main(__doc__ or "", _args, lambda a: measure(a.repeat))


if __name__ == "__main__":
    raise SystemExit(main())
