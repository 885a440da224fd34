"""What every connector shares: the source contract, errors as values, field access.

A source maps one parsed record (a JSON object or a CSV row) to zero or more
touchpoints, or raises :class:`FieldError` naming the offending field. Callers use
:func:`map_record`, which turns that into an ``ok``/``err`` split: nothing is dropped.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from pipeline.core.model import Identifier, ModelError, Touchpoint
from pipeline.core.pii import PIIError, hash_email, hash_phone


class ConnectorError(ValueError):
    """A connector cannot be used as asked (unknown source, unreadable file...)."""


class FieldError(ValueError):
    """A record is invalid; ``field`` names the culprit (dotted path)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record that became a dead letter instead of touchpoints."""

    source: str
    error: str
    raw: bytes
    location: str | None = None


class Source(Protocol):
    """A connector's pure half."""

    name: str
    #: File formats `journeys replay` accepts for this source: "jsonl" and/or "csv".
    formats: tuple[str, ...]

    def map(self, record: Mapping[str, Any], received_at: datetime) -> list[Touchpoint]: ...


@dataclass(frozen=True, slots=True)
class Mapped:
    touchpoints: list[Touchpoint]
    rejected: Rejected | None


def map_record(
    source: Source, record: Any, raw: bytes, received_at: datetime, location: str | None = None
) -> Mapped:
    """Map *record* with *source*; any invalid field becomes a :class:`Rejected` value.

    A JSON array is accepted when the source has a ``map_array`` (SendGrid posts its
    events as one array).
    """
    try:
        map_array = getattr(source, "map_array", None)
        if isinstance(record, list) and map_array is not None:
            touchpoints: list[Touchpoint] = map_array(record, received_at)
            if not record:
                # One record in, nothing out would be a silent loss: events in = stored +
                # dead letters.
                raise FieldError("$", "empty array: no events")
            return Mapped(touchpoints, None)
        if not isinstance(record, Mapping):
            raise FieldError("$", f"expected a JSON object, got {type(record).__name__}")
        return Mapped(source.map(record, received_at), None)
    except (FieldError, ModelError, ValueError) as exc:
        return Mapped([], Rejected(source.name, str(exc), raw, location))


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def lone_surrogate(raw: bytes, parsed: Any) -> bool:
    """True when the JSON *raw* decoded to a string holding a lone UTF-16 surrogate
    (``"\\ud800"``): valid JSON, but no UTF-8 (so no Avro record) can carry it."""
    if not _SURROGATE_ESCAPE.search(raw):
        return False
    try:
        json.dumps(parsed, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    except (ValueError, RecursionError):
        return False
    return False


# ---- field helpers -------------------------------------------------------------------


def get_path(record: Mapping[str, Any], path: str) -> Any:
    """``record["a"]["b"]`` for ``"a.b"``; None when any step is missing."""
    node: Any = record
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
        if node is None:
            return None
    return node


def opt_str(record: Mapping[str, Any], path: str, max_len: int = 2048) -> str | None:
    value = get_path(record, path)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise FieldError(path, f"expected a string, got {type(value).__name__}")
    text = str(value)
    if len(text) > max_len:
        raise FieldError(path, f"longer than {max_len} characters")
    return text


def req_str(record: Mapping[str, Any], path: str, max_len: int = 2048) -> str:
    value = opt_str(record, path, max_len)
    if value is None:
        raise FieldError(path, "required")
    return value


def opt_float(record: Mapping[str, Any], path: str) -> float | None:
    value = get_path(record, path)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise FieldError(path, "expected a number, got bool")
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise FieldError(path, f"expected a number, got {value!r:.40}") from exc
    if not math.isfinite(number):
        raise FieldError(path, "expected a finite number")
    return number


def email_identifier(record: Mapping[str, Any], path: str) -> Identifier | None:
    """``email_sha256`` of the address at *path* (None when absent).

    The raw address stops here; one that is no address is a :class:`FieldError` naming
    *path* (and never echoing the value).
    """
    email = opt_str(record, path, 320)
    if email is None:
        return None
    try:
        return Identifier("email_sha256", hash_email(email))
    except PIIError as exc:
        raise FieldError(path, "not an e-mail address") from exc


def phone_identifier(record: Mapping[str, Any], path: str) -> Identifier | None:
    """``phone_sha256`` of the E.164 form of the number at *path* (None when absent)."""
    phone = opt_str(record, path, 64)
    if phone is None:
        return None
    try:
        return Identifier("phone_sha256", hash_phone(phone))
    except PIIError as exc:
        raise FieldError(path, "not a phone number") from exc


def parse_time(value: Any, field: str) -> datetime:
    """An ISO-8601 string (``Z`` allowed) or epoch seconds/millis, as an aware UTC datetime.

    Times without a zone are read as UTC, the convention of every source here.
    """
    if value is None or value == "":
        raise FieldError(field, "required")
    if isinstance(value, bool):
        raise FieldError(field, "expected a timestamp, got bool")
    if isinstance(value, int | float):
        seconds = value / 1000 if value > 1e11 else value
        try:
            return datetime.fromtimestamp(seconds, tz=UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise FieldError(field, f"timestamp out of range: {value}") from exc
    if not isinstance(value, str):
        raise FieldError(field, f"expected a timestamp, got {type(value).__name__}")
    text = value.strip()
    if text.isdigit():
        return parse_time(int(text), field)
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise FieldError(field, f"not an ISO-8601 timestamp: {value!r:.40}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def content_id(record: Mapping[str, Any] | Sequence[Any]) -> str:
    """A stable id for a record that has no id of its own: a hash of its canonical JSON."""
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)
    return "sha1:" + hashlib.sha1(canonical.encode("utf-8")).hexdigest()  # noqa: S324


def snake(text: str) -> str:
    """``"Order Completed"`` -> ``"order_completed"``."""
    out: list[str] = []
    prev_alnum = False
    for ch in text.strip():
        if ch.isalnum():
            if ch.isupper() and prev_alnum and out and out[-1].islower():
                out.append("_")
            out.append(ch.lower())
            prev_alnum = True
        elif prev_alnum:
            out.append("_")
            prev_alnum = False
    return "".join(out).strip("_")


SourceFactory = Callable[[], Source]
