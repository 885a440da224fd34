"""The benchmark's touchpoints: generated Segment logs mapped by the Segment connector.

``journeys generate`` writes realistic Segment track/page/identify calls; each line is
mapped with the same code as ``journeys replay`` and the touchpoints are Avro-encoded
once (single-object encoding, as the embedded stack does) and cached under
``var/bench/``, so every measurement sends the very same bytes.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bench.common import WORK, EventSet, fragment_main

#: Segment messages per generated person, roughly (2,000 people gave 16,502).
MESSAGES_PER_PERSON = 8.2


def build(count: int, seed: int = 11, days: int = 30) -> EventSet:
    """At least *count* touchpoints (then cut to *count*), from generated Segment logs."""
    from connectors.base import map_record
    from connectors.generate import generate
    from connectors.registry import get_source
    from pipeline.serde import AvroSerde
    from pipeline.settings import Settings

    people = int(count / MESSAGES_PER_PERSON * 1.1) + 10
    out = WORK / f"segment-{people}-{seed}"
    log_path = out / "segment.jsonl"
    if not log_path.exists():
        generate(out, people=people, days=days, seed=seed, malformed_share=0.0)
    source = get_source("segment")
    encode = AvroSerde.from_dir(Settings().schemas_dir).encoder("Touchpoint")
    keys: list[bytes] = []
    values: list[bytes] = []
    ids: list[str] = []
    received = datetime.now(UTC)
    with log_path.open("rb") as f:
        for lineno, line in enumerate(f, 1):
            record: Any = json.loads(line)
            mapped = map_record(source, record, line, received, f"{log_path}:{lineno}")
            for tp in mapped.touchpoints:
                keys.append(tp.routing_key().encode())
                values.append(encode(tp.to_record()))
                ids.append(tp.event_id)
            if len(values) >= count:
                break
    if len(values) < count:
        # The per-person estimate was short: generate for twice as many.
        return build(count * 2, seed, days).slice(0, count)
    return EventSet(keys[:count], values[:count], ids[:count], f"segment, {people} people")


def cached(count: int, seed: int = 11) -> EventSet:
    """The event set of *count* touchpoints, built once and cached."""
    path = WORK / f"touchpoints-{count}-{seed}.pickle"
    if path.exists():
        return EventSet.load(path)
    events = build(count, seed)
    events.save(path)
    return events


@dataclass(frozen=True)
class Plan:
    """One event set cut in three: warm-up, the measured run, the latency run."""

    warm: EventSet
    main: EventSet
    spare: EventSet

    @property
    def total(self) -> int:
        return len(self.warm) + len(self.main) + len(self.spare)


def plan(events: int, warm_up: int) -> Plan:
    """*warm_up* events, then *events* measured ones, then *events* // 2 for latency."""
    every = cached(warm_up + events + events // 2)
    return Plan(
        every.slice(0, warm_up),
        every.slice(warm_up, warm_up + events),
        every.slice(warm_up + events, len(every)),
    )


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--events", type=int, required=True)
    p.add_argument("--warm-up", type=int, default=2000)


def _measure(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    cut = plan(args.events, args.warm_up)
    sizes = [len(v) for v in cut.main.values]
    return {
        "events_built": cut.total,
        "source": cut.main.source,
        "avg_value_bytes": round(sum(sizes) / len(sizes), 1),
        "build_seconds": round(time.perf_counter() - started, 2),
    }


def main() -> int:
    return fragment_main("Build the benchmark touchpoints.", _args, _measure)


if __name__ == "__main__":
    raise SystemExit(main())
