"""The worker's shortcuts (docs/performance.md): the router's splice of ``person_id``
into the bytes it received, the journey stage's throttled watermark writes, and the
output producer's flush, which waits for what was produced before it, not for an empty
queue."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from pipeline.agents.identity import IdentityRouter
from pipeline.agents.journeys import WATERMARK_KEY, JourneyStep, SnapshotCache
from pipeline.agents.messages import Out
from pipeline.agents.output import OutputError, OutputProducer
from pipeline.core.identity import IdentityGraph
from pipeline.core.model import Identifier, Touchpoint, to_millis
from pipeline.serde import AvroSerde
from pipeline.settings import REPO_ROOT, Settings
from pipeline.topics import Topics

T0 = datetime(2026, 9, 1, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def serde() -> AvroSerde:
    return AvroSerde.from_dir(REPO_ROOT / "schemas")


def _touchpoint(person: str | None = None, **extra: Any) -> Touchpoint:
    return Touchpoint(
        event_id="e-1",
        source="segment",
        source_event_id=None,
        occurred_at=T0,
        received_at=T0,
        channel="email",
        event_type="page",
        identifiers=(Identifier("user_id", "u-1"),),
        properties={"path": "/é"},
        person_id=person,
        **extra,
    )


@pytest.mark.parametrize("person", ["p-1", "p-" + "x" * 200, "pérson-ü"])
def test_the_router_splices_the_person_into_the_original_bytes(
    serde: AvroSerde, person: str
) -> None:
    topics = Topics.from_settings(Settings(topic_prefix="unit"))
    graph = IdentityGraph()
    router = IdentityRouter(serde, topics, graph)
    value = serde.encode("Touchpoint", _touchpoint().to_record())
    graph.lookup = lambda *_a, **_k: person  # type: ignore[method-assign]
    (out,) = router.process(value, topics.touchpoints.name, 0, 0)
    expected = serde.encode("Touchpoint", _touchpoint(person).to_record())
    assert out.value == expected
    assert out.key == person.encode()
    assert serde.decode(out.value)["person_id"] == person


def test_a_touchpoint_that_already_has_a_person_is_encoded_again(serde: AvroSerde) -> None:
    topics = Topics.from_settings(Settings(topic_prefix="unit"))
    graph = IdentityGraph()
    router = IdentityRouter(serde, topics, graph)
    value = serde.encode("Touchpoint", _touchpoint("old").to_record())
    graph.lookup = lambda *_a, **_k: "new"  # type: ignore[method-assign]
    (out,) = router.process(value, topics.touchpoints.name, 0, 0)
    assert serde.decode(out.value)["person_id"] == "new"


def test_the_watermark_is_kept_with_the_states_and_never_goes_back(serde: AvroSerde) -> None:
    topics = Topics.from_settings(Settings(topic_prefix="unit"))
    states: dict[str, Any] = {}
    step = JourneyStep(serde, topics, states, SnapshotCache({}))
    key = WATERMARK_KEY.format(partition=0)
    t0 = to_millis(T0)
    assert step._watermark(0, t0) == t0
    assert states[key] == t0  # in the table: checkpointed with the states it governs
    assert step._watermark(0, t0 - 5) == t0  # an older event does not lower it
    step._watermark(0, t0 + 3)
    assert states[key] == t0 + 3
    # A restarted stage starts from what was checkpointed.
    again = JourneyStep(serde, topics, states, SnapshotCache({}))
    assert again._watermark(0, t0) == t0 + 3


class _FakeProducer:
    """confluent-kafka's Producer: delivery reports are served by flush (in order)."""

    def __init__(self) -> None:
        self.queued: list[Any] = []
        self.fail: set[int] = set()
        self.served = 0

    def produce(self, topic: str, **kwargs: Any) -> None:
        self.queued.append(kwargs["on_delivery"])

    def poll(self, _timeout: float = 0) -> int:
        return 0

    def flush(self, _timeout: float = 0) -> int:
        while self.queued:
            callback = self.queued.pop(0)
            self.served += 1
            callback("broker down" if self.served in self.fail else None, "msg")
        return 0

    def __len__(self) -> int:
        return len(self.queued)


def test_flush_sync_waits_for_every_message_and_raises_a_lost_one() -> None:
    fake = _FakeProducer()
    out = OutputProducer({}, producer=fake)
    reports: list[Any] = []
    for _ in range(3):
        out.send(Out("t", b"k", b"v"), lambda _err, msg: reports.append(msg))
    assert out.unacknowledged == 3 and out.produced == 3
    out.flush_sync()
    assert out.unacknowledged == 0 and reports == ["msg"] * 3
    fake.fail = {4}
    out.send(Out("t", b"k", b"lost"), lambda _err, msg: reports.append(msg))
    with pytest.raises(OutputError, match="broker down"):
        out.flush_sync()
    assert len(reports) == 3  # a lost message is not reported as delivered
