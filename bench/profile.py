"""Summarise a py-spy ``--format raw`` profile (folded stacks) of the worker.

Each sample is charged to the innermost frame that is not Python's standard library
(so ``json.dumps`` called by the identity stage counts as the identity stage), and
that frame's file gives the layer: Journeys' own code by module, fastavro, Faust and
mode, aiokafka, asyncio (only when nothing else is on the stack), others.
"""

from __future__ import annotations

import re
import sysconfig
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
_STDLIB = sysconfig.get_paths()["stdlib"]

#: The command-line entry points are on every main-thread stack: not worth listing.
_ENTRY = ("cli/main.py", "cli/commands/")

LAYERS = (
    ("fastavro", "fastavro/"),
    ("faust", "faust/"),
    ("mode", "mode/"),
    ("aiokafka", "aiokafka/"),
    ("rocksdict", "rocksdict"),
    ("asyncio", "asyncio/"),
)


def _layer(path: str) -> str | None:
    """The layer of a frame's file; None for the standard library (charge the caller)."""
    for project in ("pipeline/", "connectors/", "sinks/"):
        index = path.find(project)
        if index >= 0 and "site-packages" not in path:
            return path[index:]
    for name, marker in LAYERS:
        if marker in path:
            return name
    if path.startswith(_STDLIB) or path.startswith("<frozen") or not path:
        return None
    return "other"


#: Where a sample's stack says it is: the audiences Faust agent (its step, including the
#: Faust stream iteration that feeds it), Faust's and aiokafka's own services (consumer,
#: fetcher, producer, table changelogs), or the batch engine.
STAGES = (
    ("audiences_agent", ("register_audience_agents.<locals>.audiences", "AudienceStep.")),
    ("batch_engine", ("EngineService._consume",)),
    ("faust_and_aiokafka", ("faust/", "aiokafka/", "mode/threads")),
)


def _stage(stack: str) -> str:
    for name, markers in STAGES:
        if any(marker in stack for marker in markers):
            return name
    return "other"


def summarise(path: Path, top: int = 12) -> dict[str, Any]:
    """Shares of samples by layer, and the project functions with most inclusive time."""
    by_layer: Counter[str] = Counter()
    by_stage: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        by_stage[_stage(stack)] += count
        frames = [m.groupdict() for f in stack.split(";") if (m := _FRAME.match(f))]
        charged = "stdlib"
        for frame in reversed(frames):
            layer = _layer(frame["file"])
            if layer is not None:
                charged = layer
                break
        if charged == "asyncio":
            charged = "asyncio (event loop)"
        by_layer[charged] += count
        mine = {
            f"{f['func']} ({_layer(f['file'])})"
            for f in frames
            if (_layer(f["file"]) or "").startswith(("pipeline/", "connectors/", "sinks/"))
            and not (_layer(f["file"]) or "").startswith(_ENTRY)
        }
        for name in mine:
            inclusive[name] += count
    if not total:
        return {"samples": 0}
    return {
        "samples": total,
        "self_share_by_layer": {k: round(v / total, 3) for k, v in by_layer.most_common()},
        "share_by_stage": {k: round(v / total, 3) for k, v in by_stage.most_common()},
        "project_functions_inclusive_share": {
            k: round(v / total, 3) for k, v in inclusive.most_common(top)
        },
    }
