"""The audiences agent in Faust's test context: signals put into the agent come out as
audience changes and profiles, through the agent's batches and its Faust table."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import faust
import pytest
from faust.types import TP

from pipeline.agents import audiences as module
from pipeline.agents.messages import Out
from pipeline.core.model import to_millis
from pipeline.core.profiles import Signal
from pipeline.core.segments import SegmentRules
from pipeline.serde import AvroSerde
from pipeline.settings import REPO_ROOT, Settings
from pipeline.topics import Topics

T0 = to_millis(datetime(2026, 9, 1, 9, 0, tzinfo=UTC))
H = 3_600_000


class Collected:
    """Stands in for the agent's librdkafka producer: keeps what it is given."""

    sent: list[Out] = []

    def __init__(self, _config: dict[str, Any]) -> None:
        Collected.sent = []

    def send(self, out: Out) -> None:
        Collected.sent.append(out)

    def flush_sync(self) -> None:
        return None


def test_the_agent_turns_signals_into_audience_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module, "OutputProducer", Collected)
    serde = AvroSerde.from_dir(REPO_ROOT / "schemas")
    settings = Settings(topic_prefix="unit", partitions=1, audience_grace_s=0.0)
    topics = Topics.from_settings(settings)
    app = faust.App("audiences-test", broker="kafka://127.0.0.1:9", store="memory://")
    module.register_audience_agents(app, settings, serde, topics, SegmentRules())
    agent = next(a for a in app.agents.values() if a.name.endswith("audiences"))
    # No broker here: the changelog's partition comes from the same CRC32 the running
    # producer's partitioner uses, and its messages stay in the unstarted producer.
    monkeypatch.setattr(
        app.producer,
        "key_partition",
        lambda topic, key: TP(topic, module.partition_for(key, settings.partitions)),
    )

    def signal(eid: str, hours: float, kind: str, **kw: Any) -> bytes:
        s = Signal(eid, "p-1", T0 + int(hours * H), kind, **kw)
        return serde.encode("PersonSignal", s.to_record())

    async def run() -> None:
        async with agent.test_context() as ctx:
            await ctx.put(signal("a", 0, "cart_add", value=9.0, items=1), key=b"p-1", partition=0)
            await ctx.put(signal("b", 30, "email_open"), key=b"p-1", partition=0)
            for _ in range(100):  # the batch is handled once take_events yields it
                if any(o.topic == topics.audiences.name for o in Collected.sent):
                    break
                await asyncio.sleep(0.05)

    asyncio.run(run())
    changes = [
        serde.decode(o.value or b"", expect="AudienceChange")
        for o in Collected.sent
        if o.topic == topics.audiences.name
    ]
    assert [(c["segment"], c["change"], c["reason"]) for c in changes] == [
        ("prospect", "ENTERED", "cart_add"),
        ("abandoned_cart", "ENTERED", "time"),
    ]
    profiles = [o for o in Collected.sent if o.topic == topics.profiles.name]
    assert profiles and profiles[-1].key == b"p-1"
