"""The Avro serde: both wire formats, schema resolution, clear errors."""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.model import Campaign, Identifier, Touchpoint, event_id_for
from pipeline.serde import AvroSerde, SerdeError

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
T0 = datetime(2026, 10, 1, 12, 30, 15, 123000, tzinfo=UTC)


def sample() -> Touchpoint:
    return Touchpoint(
        event_id=event_id_for("segment", "m-1"),
        source="segment",
        source_event_id="m-1",
        occurred_at=T0,
        received_at=T0,
        channel="paid_search",
        event_type="page_view",
        identifiers=(Identifier("anonymous_id", "a-1"), Identifier("user_id", "u-1")),
        campaign=Campaign(source="google", medium="cpc", name="brand", click_id="gclid-1"),
        referrer="https://www.google.com/",
        device_type="mobile",
        revenue=12.5,
        currency="USD",
        properties={"path": "/"},
    )


@pytest.fixture(scope="module")
def som() -> AvroSerde:
    return AvroSerde.from_dir(SCHEMAS)


@pytest.fixture(scope="module")
def confluent() -> AvroSerde:
    return AvroSerde.from_dir(SCHEMAS, "mock://serde-tests")


def test_single_object_round_trip(som: AvroSerde) -> None:
    data = som.encode("Touchpoint", sample().to_record())
    assert data[:2] == b"\xc3\x01"
    assert Touchpoint.from_record(som.decode(data, expect="Touchpoint")) == sample()


def test_confluent_round_trip(confluent: AvroSerde) -> None:
    data = confluent.encode("Touchpoint", sample().to_record())
    assert data[0] == 0
    assert Touchpoint.from_record(confluent.decode(data)) == sample()


def test_consumers_accept_either_format(som: AvroSerde, confluent: AvroSerde) -> None:
    a = som.encode("Touchpoint", sample().to_record())
    b = confluent.encode("Touchpoint", sample().to_record())
    assert confluent.decode(a) == confluent.decode(b)


def test_unknown_schema_id_is_a_clear_error(confluent: AvroSerde) -> None:
    data = confluent.encode("Touchpoint", sample().to_record())
    forged = b"\x00" + struct.pack(">I", 999_999) + data[5:]
    with pytest.raises(SerdeError, match="unknown schema id 999999"):
        confluent.decode(forged)


def test_confluent_framing_without_registry_is_a_clear_error(
    som: AvroSerde, confluent: AvroSerde
) -> None:
    data = confluent.encode("Touchpoint", sample().to_record())
    with pytest.raises(SerdeError, match="no schema registry"):
        som.decode(data)


def test_unknown_fingerprint(som: AvroSerde) -> None:
    data = som.encode("Touchpoint", sample().to_record())
    with pytest.raises(SerdeError, match="unknown schema fingerprint"):
        som.decode(data[:2] + b"\x00" * 8 + data[10:])


@pytest.mark.parametrize("cut", [11, 20, 40])
def test_truncated_body(som: AvroSerde, cut: int) -> None:
    data = som.encode("Touchpoint", sample().to_record())
    with pytest.raises(SerdeError, match="corrupt Touchpoint"):
        som.decode(data[:cut])


@pytest.mark.parametrize("data", [b"", b"{}", b"\x07abc", b"\xc3"])
def test_not_avro(som: AvroSerde, data: bytes) -> None:
    with pytest.raises(SerdeError, match="not Avro"):
        som.decode(data)


def test_wrong_record_type(som: AvroSerde) -> None:
    data = som.encode("Touchpoint", sample().to_record())
    with pytest.raises(SerdeError, match="expected a Journey record"):
        som.decode(data, expect="Journey")


def test_encoding_a_bad_record_names_the_schema(som: AvroSerde) -> None:
    with pytest.raises(SerdeError, match="cannot encode Touchpoint"):
        som.encode("Touchpoint", {"event_id": 3})


_text = st.text(max_size=20)
_opt = st.none() | _text
_time = st.datetimes(  # hypothesis bounds are naive by API; the values are aware (UTC)
    min_value=datetime(2000, 1, 1),  # noqa: DTZ001
    max_value=datetime(2100, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC),
).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))


@settings(max_examples=150, deadline=None)
@given(
    event_id=_text,
    source=_text,
    sid=_opt,
    occurred=_time,
    received=_time,
    idents=st.lists(st.builds(Identifier, _text, _text), max_size=4),
    campaign=st.none() | st.builds(Campaign, _opt, _opt, _opt, _opt, _opt, _opt),
    revenue=st.none() | st.floats(allow_nan=False, allow_infinity=False),
    props=st.dictionaries(_text, _text, max_size=3),
    person=_opt,
)
def test_every_touchpoint_round_trips_in_both_formats(
    som: AvroSerde,
    confluent: AvroSerde,
    event_id: str,
    source: str,
    sid: str | None,
    occurred: datetime,
    received: datetime,
    idents: list[Identifier],
    campaign: Campaign | None,
    revenue: float | None,
    props: dict[str, str],
    person: str | None,
) -> None:
    tp = Touchpoint(
        event_id, source, sid, occurred, received, "email", "email_click", tuple(idents),
        campaign, None, None, None, None, revenue, None, props, person,
    )  # fmt: skip
    for serde in (som, confluent):
        assert (
            Touchpoint.from_record(serde.decode(serde.encode("Touchpoint", tp.to_record()))) == tp
        )
