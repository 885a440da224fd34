"""Faust's table recovery reads a changelog from its start when the broker gives no usable
offset (None or negative), instead of crashing the worker in aiokafka's ``seek``."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from faust.tables.recovery import Recovery

from pipeline.agents import faust_fixes


class _Consumer:
    def __init__(self) -> None:
        self.sought: dict[Any, int] = {}

    async def seek_wait(self, offsets: dict[Any, int]) -> None:
        for tp, offset in offsets.items():
            if not isinstance(offset, int) or offset < 0:
                raise ValueError("Offset must be a positive integer")  # as aiokafka does
            self.sought[tp] = offset


def test_recovery_seeks_from_the_start_when_the_offset_is_unusable() -> None:
    faust_fixes.apply()
    faust_fixes.apply()  # idempotent
    consumer = _Consumer()
    offsets: Counter[Any] = Counter({"a": None, "b": -2, "c": -1, "d": 7})  # type: ignore[dict-item]
    recovery: Any = object.__new__(Recovery)
    asyncio.run(recovery._seek_offsets(consumer, set(offsets), offsets, "active"))
    assert consumer.sought == {"a": 0, "b": 0, "c": 0, "d": 7}
