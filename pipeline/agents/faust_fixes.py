"""A fix to faust-streaming's table recovery on brokers that report odd offsets.

Recovery seeks each changelog partition to the offset it computed, mapping only -1 to 0.
On the embedded Tansu broker that computation can give None or a smaller negative number
for an empty or freshly created partition, and aiokafka's ``seek`` then raises ``ValueError``
("Offset must be a positive integer"), which crashes the worker during a rebalance (seen
when a second worker joins while one is paused). Any negative offset means "from the
start": this reads from 0 instead. Apply it once, before a Faust app starts recovery.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

_APPLIED = False


def _start(offset: int | None) -> int:
    """Where to read a changelog partition from: *offset*, or its start when the broker
    gave no usable one (None or a negative number)."""
    return 0 if offset is None or offset < 0 else offset


def apply() -> None:
    """Patch ``faust.tables.recovery.Recovery._seek_offsets`` (idempotent)."""
    global _APPLIED  # noqa: PLW0603 - a process-wide patch, applied once
    if _APPLIED:
        return
    from faust.tables.recovery import Recovery

    original = Recovery._seek_offsets

    async def _seek_offsets(
        self: Any, consumer: Any, tps: Any, offsets: Counter[Any], title: str
    ) -> None:
        clamped: Counter[Any] = Counter({tp: _start(offsets[tp]) for tp in tps})
        await original(self, consumer, tps, clamped, title)

    Recovery._seek_offsets = _seek_offsets  # type: ignore[method-assign]
    _APPLIED = True
