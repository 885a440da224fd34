"""The audiences stage on its own: person signals per second through its step.

The benchmark's touchpoints (``bench/data.py``) are classified as the journey stage does
(:func:`pipeline.core.profiles.classify`), keyed by their strongest identifier as a
stand-in for the person, and the PersonSignal records go through
:class:`pipeline.agents.audiences.AudienceStep` with dict tables, flushed every 100
signals as the Faust agent's batches are. Faust's own cost per event comes on top in the
worker; ``pipeline_1_worker`` (py-spy) gives the agent's share of the worker.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from bench.common import fragment_main
from bench.data import plan


def measure(events: int, warm_up: int, repeat: int) -> dict[str, Any]:
    from pipeline.agents.audiences import AudienceStep, partition_for
    from pipeline.core.model import Touchpoint
    from pipeline.core.profiles import classify
    from pipeline.serde import AvroSerde
    from pipeline.settings import Settings
    from pipeline.topics import Topics

    settings = Settings()
    serde = AvroSerde.from_dir(settings.schemas_dir)
    topics = Topics.from_settings(settings)
    partitions = topics.person_signals.partitions
    data = plan(events, warm_up).main  # the pipeline's measured touchpoints
    signals: list[tuple[int, bytes]] = []
    for value in data.values:
        tp = Touchpoint.from_record(serde.decode(value, expect="Touchpoint"))
        person = tp.routing_key()
        signal = classify(tp.with_person(person))
        if signal is not None:
            key = person.encode()
            signals.append((partition_for(key, partitions), serde.encode(
                "PersonSignal", signal.to_record()
            )))  # fmt: skip
    best, outputs = float("inf"), 0
    for _ in range(repeat):
        steps = [AudienceStep(serde, topics, {}) for _ in range(partitions)]
        started, outputs = time.process_time(), 0
        for i, (partition, value) in enumerate(signals):
            outputs += len(steps[partition].process(value, "signals", partition, i))
            if i % 100 == 99:
                outputs += sum(len(step.flush()) for step in steps)
        outputs += sum(len(step.flush()) for step in steps)
        best = min(best, time.process_time() - started)
    return {
        "touchpoints": len(data.values),
        "signals": len(signals),
        "signals_per_touchpoint": round(len(signals) / max(1, len(data.values)), 3),
        "outputs": outputs,
        "step_signals_per_s": round(len(signals) / best, 1) if signals else None,
        "step_us_per_signal": round(best / max(1, len(signals)) * 1e6, 1),
        "method": "AudienceStep with dict tables, CPU time of the best of the repeats; "
        "Faust's per-event cost is not included",
    }


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--warm-up", type=int, default=2_000)
    p.add_argument("--repeat", type=int, default=3)


def main() -> int:
    return fragment_main(__doc__ or "", _args, lambda a: measure(a.events, a.warm_up, a.repeat))


if __name__ == "__main__":
    raise SystemExit(main())
