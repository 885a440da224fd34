"""Bad input at volume: hostile payloads to every collector path and every replay format.

Hypothesis sends malformed, truncated, oversized, wrongly typed and hostile payloads
(deep nesting, huge strings, invalid UTF-8, lone surrogates, SQL and path
metacharacters, raw e-mails and phone numbers) to

* every collector path (``/v1/*``, ``/webhooks/sendgrid|twilio|shopify|interactions``),
  served by one real aiohttp server for the whole test, with write keys, a Twilio auth
  token and a Shopify secret configured and often signed correctly, so payloads get past
  the checks and into the mappers;
* every ``replay --source`` of :mod:`connectors.registry`, as files in its formats.

Properties:

* the services stay up: no 5xx, no exception out of ``replay_files``, ``/healthz`` at the
  end;
* nothing is lost: every message in becomes touchpoints or one dead letter, and what the
  publisher is handed encodes with the real Avro schemas (what Kafka would carry);
* no secret (write key, webhook secrets) and no raw e-mail or phone number appears in the
  logs (all loggers, captured) or in the dead letters as they would be published.

The broker is replaced by a recording publisher that applies the same encoding and
redaction as :class:`connectors.publisher.Publisher`, so that the test runs in seconds.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import csv
import gzip
import http.client
import io
import json
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from connectors.base import Rejected
from connectors.collector import CollectorConfig, create_collector, shopify_hmac, twilio_signature
from connectors.registry import SOURCES
from connectors.replay import replay_files
from pipeline.core.dead_letters import dead_letter_record
from pipeline.core.model import Touchpoint
from pipeline.serde import AvroSerde
from pipeline.settings import REPO_ROOT

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
WRITE_KEY = "wk-Fuzz-S3cret-7f3a9c"
TWILIO_TOKEN = "twilio-tok-9d8c7b6a5f4e3d2c"
SHOPIFY_SECRET = "shpss-fuzz-1a2b3c4d5e6f"
SECRETS = (WRITE_KEY, TWILIO_TOKEN, SHOPIFY_SECRET)
# Raw personal data planted in payloads; none of it may come out anywhere.
EMAILS = ("victim.one@example.org", "Second.Victim+tag@example.co.uk")
PHONES = ("+14155550199", "+44 20 7946 0958")
MAX_BODY = 64 * 1024
SERDE = AvroSerde.from_dir(REPO_ROOT / "schemas")
ENCODE_TP = SERDE.encoder("Touchpoint")
ENCODE_DL = SERDE.encoder("DeadLetter")

# ---- hostile values -------------------------------------------------------------------

METACHARS = (
    "'; DROP TABLE journeys.touchpoints; --",
    '" OR 1=1 --',
    "../../../../etc/passwd",
    "..\\..\\windows\\system32",
    "%00%2e%2e%2f",
    "\x00\x01\x7f",
    "${jndi:ldap://x}",
    "{{7*7}}",
    "<script>alert(1)</script>",
    "Robert'); SELECT * FROM system.users; --",
    "\u202e\ufeff\u0000",
    "FORMAT TSV\nINSERT INTO x VALUES",
)


def _nested(depth: int) -> Any:
    node: Any = "x"
    for i in range(depth):
        node = [node] if i % 2 else {"a": node}
    return node


hostile_scalars = st.one_of(
    st.sampled_from(METACHARS),
    st.sampled_from(EMAILS + PHONES),
    st.text(max_size=40),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.integers(min_value=3000, max_value=20000).map(lambda n: "A" * n),
)
hostile_values = st.one_of(
    hostile_scalars,
    st.lists(hostile_scalars, max_size=4),
    st.dictionaries(st.sampled_from(("email", "phone", "id", "$", "")), hostile_scalars),
    st.integers(min_value=50, max_value=3000).map(_nested),
)


def _paths(record: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    if isinstance(record, dict):
        for key, value in record.items():
            out.append((*prefix, key))
            out.extend(_paths(value, (*prefix, key)))
    return out


def _set(record: Any, path: tuple[str, ...], value: Any) -> Any:
    node = record
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return record


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any]) -> Any:
    """*base* with a few fields set to hostile values, or something else entirely."""
    record = json.loads(json.dumps(base))
    paths = _paths(record)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(paths)) if paths else ("x",)
        with contextlib.suppress(KeyError, TypeError):
            _set(record, path, draw(hostile_values))
        paths = _paths(record)
    return draw(st.one_of(st.just(record), st.just(record), hostile_values))


def _dumps(value: Any) -> bytes:
    try:
        return json.dumps(value, allow_nan=True).encode()
    except (RecursionError, ValueError):
        return b"[" * 5000


@st.composite
def damaged(draw: st.DrawFn, body: bytes) -> bytes:
    """*body* as is, truncated, with invalid UTF-8 or a lone surrogate, or oversized."""
    kind = draw(st.sampled_from(("as-is", "as-is", "truncate", "bytes", "surrogate", "huge")))
    if kind == "truncate" and body:
        return body[: draw(st.integers(min_value=0, max_value=len(body) - 1))]
    if kind == "bytes":
        at = draw(st.integers(min_value=0, max_value=len(body)))
        return body[:at] + draw(
            st.sampled_from((b"\xff\xfe", b"\xc3\x28", b"\x80", b"\xed\xa0\x80"))
        )
    if kind == "surrogate" and b'"' in body:
        return body.replace(b'"', b'"\\ud800', 1)
    if kind == "huge":
        return body + b" " * (MAX_BODY + 1)
    return body


# ---- base messages (valid examples of every source) ------------------------------------


def _first_json_line(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text().splitlines()[0]))


SEGMENT = {
    "type": "track",
    "userId": "u-1",
    "anonymousId": "a-1",
    "event": "Order Completed",
    "timestamp": "2026-10-01T10:00:00Z",
    "messageId": "m-1",
    "properties": {"revenue": 25.0, "currency": "USD", "order_id": "o-1"},
    "context": {
        "traits": {"email": EMAILS[0], "phone": PHONES[0]},
        "page": {"url": "https://shop.example.com/?utm_source=google&utm_medium=cpc"},
    },
}
SENDGRID = _first_json_line(FIXTURES / "sendgrid" / "events.jsonl")
TWILIO = _first_json_line(FIXTURES / "twilio" / "callbacks.jsonl")
SHOPIFY = dict(json.loads((FIXTURES / "shopify" / "order_online.json").read_text()))
INTERACTIONS = _first_json_line(FIXTURES / "interactions" / "interactions.jsonl")
# Raw personal data already in the fixtures must not come out either.
FIXTURE_PII = ("jon@example.com", "+15017250604", "+14155550134")
PII = EMAILS + PHONES + FIXTURE_PII
BASES: dict[str, dict[str, Any]] = {
    "segment": SEGMENT,
    "sendgrid": SENDGRID,
    "twilio": TWILIO,
    "shopify": SHOPIFY,
    "interactions": INTERACTIONS,
}


def _csv_base(path: Path) -> dict[str, str]:
    with path.open(newline="") as fh:
        return dict(next(csv.DictReader(fh)))


CSV_BASES = {
    "pos": _csv_base(FIXTURES / "pos" / "transactions.csv"),
    "ads": _csv_base(FIXTURES / "ads" / "clicks.csv"),
    "store_signals": _csv_base(FIXTURES / "store_signals" / "signals.csv"),
}

# ---- one collector for the whole test, and what it publishes ---------------------------


@dataclass
class Recorder:
    """Stands in for Kafka: encodes what it is handed as the real publisher would."""

    calls: list[tuple[list[Touchpoint], list[Rejected]]] = field(default_factory=list)
    dead: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, touchpoints: list[Touchpoint], rejected: list[Rejected]) -> None:
        for tp in touchpoints:
            ENCODE_TP(tp.to_record())
        records = [
            dead_letter_record(r.source, "collect", r.error, r.raw, r.location) for r in rejected
        ]
        for record in records:
            ENCODE_DL(record)
        with self.lock:
            self.calls.append((list(touchpoints), list(rejected)))
            self.dead.extend(records)

    def take(self) -> tuple[list[Touchpoint], list[Rejected]]:
        with self.lock:
            calls, self.calls = self.calls, []
        return [t for c in calls for t in c[0]], [r for c in calls for r in c[1]]


@dataclass
class Served:
    port: int
    recorder: Recorder

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("POST", path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    recorder = Recorder()
    config = CollectorConfig(
        port=0,
        write_keys=(SecretStr(WRITE_KEY),),
        max_body_bytes=MAX_BODY,
        twilio_auth_token=SecretStr(TWILIO_TOKEN),
        shopify_webhook_secret=SecretStr(SHOPIFY_SECRET),
        allowed_origins=(ORIGIN,),
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(create_collector(config, recorder), access_log=None)
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, name="collector", daemon=True)
    thread.start()
    assert ready.wait(30), "the collector did not start"
    try:
        yield Served(port, recorder)
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)


# ---- checks ----------------------------------------------------------------------------


def assert_clean(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"a secret leaked into {where}"
    for pii in PII:
        assert pii not in text, f"raw personal data {pii!r} leaked into {where}"


def check_dead_letters(records: list[dict[str, Any]]) -> None:
    for record in records:
        payload = record["payload"]
        text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else str(payload)
        assert_clean(text, f"dead letter payload ({record['location']})")
        assert_clean(str(record["error"]), f"dead letter error ({record['location']})")


def check_logs(caplog: pytest.LogCaptureFixture) -> None:
    for rec in caplog.records:
        text = rec.getMessage() + (str(rec.exc_info[1]) if rec.exc_info else "")
        assert_clean(text, f"the log ({rec.name})")
    caplog.clear()


# ---- the collector ---------------------------------------------------------------------

SEGMENT_PATHS = tuple(f"/v1/{k}" for k in ("track", "page", "screen", "identify", "alias", "group",
                                          "t", "p", "s", "i", "a", "g"))  # fmt: skip
BATCH_PATHS = ("/v1/batch", "/v1/b", "/v1/import")
ORIGIN = "https://shop.example"


@st.composite
def browser_like(
    draw: st.DrawFn, body: bytes, headers: dict[str, str]
) -> tuple[bytes, dict[str, str]]:
    """*body* and *headers* as a Segment SDK might send them: text/plain or no content
    type, gzip (sometimes broken, sometimes a small bomb), an allowed or refused Origin."""
    hdrs = dict(headers)
    kind = draw(st.sampled_from(("application/json", "text/plain", None)))
    if kind is None:
        hdrs.pop("Content-Type", None)
    else:
        hdrs["Content-Type"] = kind
    encoding = draw(st.sampled_from(("identity", "identity", "gzip", "broken-gzip", "bomb")))
    if encoding == "gzip":
        body = gzip.compress(body)
    elif encoding == "broken-gzip":
        body = gzip.compress(body)[: draw(st.integers(0, 30))]
    elif encoding == "bomb":
        body = gzip.compress(body + b" " * (4 * MAX_BODY))
    if encoding != "identity":
        hdrs["Content-Encoding"] = "gzip"
    origin = draw(st.sampled_from((None, None, ORIGIN, "https://evil.example", "null")))
    if origin is not None:
        hdrs["Origin"] = origin
    return body, hdrs


@st.composite
def requests(draw: st.DrawFn, served_url: Any) -> tuple[str, bytes, dict[str, str], int]:
    """(path, body, headers, messages in) of one hostile request to some path."""
    route = draw(st.sampled_from((*SEGMENT_PATHS, *BATCH_PATHS, "sendgrid", "twilio", "shopify",
                                  "interactions")))  # fmt: skip
    auth = draw(st.sampled_from(("basic", "basic", "body", "wrong", "none")))
    headers = {"Content-Type": "application/json"}
    if auth == "basic":
        headers["Authorization"] = "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    elif auth == "wrong":
        headers["Authorization"] = "Basic " + base64.b64encode(b"'; DROP TABLE x; --:").decode()

    def keyed(message: Any) -> Any:
        if auth == "body" and isinstance(message, dict):
            return {**message, "writeKey": WRITE_KEY}
        return message

    if route in SEGMENT_PATHS:
        message = keyed(draw(mutated(SEGMENT)))
        body, headers = draw(browser_like(draw(damaged(_dumps(message))), headers))
        return route, body, headers, 1
    if route in BATCH_PATHS:
        items = draw(st.lists(mutated(SEGMENT), min_size=0, max_size=6))
        body = draw(damaged(_dumps(keyed({"batch": items}))))
        body, headers = draw(browser_like(body, headers))
        return route, body, headers, max(1, len(items))
    if route == "sendgrid":
        items = draw(st.lists(mutated(SENDGRID), min_size=0, max_size=6))
        payload: Any = items if draw(st.booleans()) else (items[0] if items else {})
        n = max(1, len(items)) if isinstance(payload, list) else 1
        return "/webhooks/sendgrid", draw(damaged(_dumps(payload))), {}, n
    if route == "interactions":
        message = keyed(draw(mutated(INTERACTIONS)))
        return "/webhooks/interactions", draw(damaged(_dumps(message))), headers, 1
    if route == "shopify":
        body = draw(damaged(_dumps(draw(mutated(SHOPIFY)))))
        hdrs = {"Content-Type": "application/json", "X-Shopify-Topic": "orders/create"}
        if draw(st.sampled_from(("good", "good", "bad", "none"))) != "none":
            good = shopify_hmac(SHOPIFY_SECRET, body)
            hdrs["X-Shopify-Hmac-Sha256"] = good if draw(st.booleans()) else good[::-1]
        return "/webhooks/shopify", body, hdrs, 1
    # twilio: form-encoded, signed over the URL and the sorted parameters
    message = draw(mutated(TWILIO))
    params = [(str(k), v if isinstance(v, str) else _dumps(v).decode()) for k, v in
              (message.items() if isinstance(message, dict) else [("Body", message)])]  # fmt: skip
    body = draw(damaged(urlencode(params).encode()))
    hdrs = {"Content-Type": "application/x-www-form-urlencoded"}
    if draw(st.booleans()):
        hdrs["X-Twilio-Signature"] = twilio_signature(
            TWILIO_TOKEN, served_url("/webhooks/twilio"), params
        )
    return "/webhooks/twilio", body, hdrs, 1


@pytest.mark.timeout(120)
def test_hostile_requests_to_every_collector_path(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: dict[str, int] = {}

    @settings(
        max_examples=300,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                               HealthCheck.function_scoped_fixture],
    )  # fmt: skip
    @given(requests(served.url))
    def one(request: tuple[str, bytes, dict[str, str], int]) -> None:
        path, body, headers, messages = request
        served.recorder.take()
        served.recorder.dead.clear()
        status, answer = served.post(path, body, headers)
        seen[f"{path} {status}"] = seen.get(f"{path} {status}", 0) + 1
        assert status < 500, (path, status, answer[:300])
        touchpoints, rejected = served.recorder.take()
        # Nothing is lost: each message is touchpoints or a dead letter (a request refused
        # as a whole is one dead letter), and nothing comes back without a trace.
        assert touchpoints or rejected, (path, status, answer[:300])
        assert len(rejected) <= messages, (path, status, [r.error for r in rejected])
        if status >= 400:
            assert not touchpoints, (path, status)
            assert rejected
        if status == 200 and path != "/webhooks/twilio":
            reply = json.loads(answer)
            assert len(reply.get("rejected", [])) == min(len(rejected), 100)
        assert len(touchpoints) + len(rejected) >= messages or status >= 400, (
            path, status, messages, len(touchpoints), len(rejected),
        )  # fmt: skip
        # The answer may quote the sender's own value back; it never holds a secret.
        for secret in SECRETS:
            assert secret not in answer.decode("utf-8", "replace"), path
        check_dead_letters(served.recorder.dead)
        served.recorder.dead.clear()
        check_logs(caplog)

    one()
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    conn.request("GET", "/healthz")
    assert conn.getresponse().status == 200
    conn.close()
    # The fuzz reached every path, and reached the mappers (some 200s) on each.
    for path in (*SEGMENT_PATHS, *BATCH_PATHS, "/webhooks/sendgrid", "/webhooks/twilio",
                 "/webhooks/shopify", "/webhooks/interactions"):  # fmt: skip
        assert any(k.startswith(path + " ") for k in seen), (path, seen)
    assert any(k.endswith(" 200") for k in seen), seen


@pytest.mark.timeout(60)
def test_hostile_requests_to_the_sdk_side_paths(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    """/v1/m, the settings and unknown paths: never a 5xx, never a record, never a secret
    or personal data in an answer or a log line (paths are logged when nothing matches)."""
    caplog.set_level(logging.DEBUG)

    @settings(
        max_examples=60,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(
        path=st.sampled_from(("/v1/m", f"/v1/projects/{WRITE_KEY}/settings",
                              f"/projects/{WRITE_KEY}x/settings", f"/v1/projects/{WRITE_KEY}/",
                              f"/v1/{WRITE_KEY}", f"/v1/x/{EMAILS[0]}", "/v1/projects//settings")),
        body=st.binary(max_size=512),
        origin=st.sampled_from((None, ORIGIN, "https://evil.example")),
        method=st.sampled_from(("GET", "POST", "OPTIONS")),
    )  # fmt: skip
    def one(path: str, body: bytes, origin: str | None, method: str) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
        try:
            headers = {"Content-Type": "text/plain"} | ({"Origin": origin} if origin else {})
            conn.request(method, path, body=body if method == "POST" else None, headers=headers)
            resp = conn.getresponse()
            status, answer = resp.status, resp.read()
        finally:
            conn.close()
        assert status < 500, (path, status)
        assert served.recorder.take() == ([], [])
        text = answer.decode("utf-8", "replace")
        if "/settings" in path and status == 200:
            # The document names the key it was asked for; nothing else.
            text = text.replace(WRITE_KEY, "")
        assert_clean(text, f"the answer to {method} {path}")
        check_logs(caplog)

    one()


# ---- replay ----------------------------------------------------------------------------


@st.composite
def jsonl_file(draw: st.DrawFn, base: dict[str, Any]) -> bytes:
    lines = [draw(damaged(_dumps(draw(mutated(base))))) for _ in range(draw(st.integers(1, 8)))]
    return b"\n".join(line.replace(b"\n", b" ").replace(b"\r", b" ") for line in lines) + b"\n"


@st.composite
def csv_file(draw: st.DrawFn, base: dict[str, str]) -> bytes:
    header = list(base)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for _ in range(draw(st.integers(1, 8))):
        row = dict(base)
        for key in draw(st.lists(st.sampled_from(header), max_size=3)):
            value = draw(hostile_scalars)
            row[key] = value if isinstance(value, str) else json.dumps(value)
        cells = [row[h] for h in header]
        if draw(st.integers(0, 5)) == 0:
            cells = cells[: draw(st.integers(0, len(cells)))]
        writer.writerow(cells)
    data = out.getvalue().encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 5)) == 0:
        data += b"\xff\xfe,broken\n"
    if draw(st.integers(0, 5)) == 0:
        data = data[: draw(st.integers(0, len(data)))]
    return data


def _records_in(data: bytes, fmt: str) -> int:
    """Non-blank lines (JSONL) or rows after the header (CSV): the replay's messages."""
    if fmt == "jsonl":
        return sum(1 for line in data.split(b"\n") if line.strip())
    return -1  # CSV: counted by the replay itself (quoted cells may span lines)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", sorted(SOURCES))
def test_hostile_files_for_every_replay_source(
    name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = SOURCES[name]
    caplog.set_level(logging.DEBUG)
    counter = iter(range(10**9))

    @settings(
        max_examples=40,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                               HealthCheck.function_scoped_fixture],
    )  # fmt: skip
    @given(st.data())
    def one(data: st.DataObject) -> None:
        fmt = data.draw(st.sampled_from(source.formats))
        if fmt == "csv":
            base_csv = CSV_BASES.get(name) or {k: str(v) for k, v in BASES[name].items()}
            content = data.draw(csv_file(base_csv))
        else:
            content = data.draw(jsonl_file(BASES.get(name) or dict(CSV_BASES[name])))
        path = tmp_path / f"f{next(counter)}.{fmt}"
        path.write_bytes(content)
        touchpoints: list[Touchpoint] = []
        rejected: list[Rejected] = []
        stats = replay_files([path], source, touchpoints.append, rejected.append)
        for tp in touchpoints:
            ENCODE_TP(tp.to_record())
        dead = [
            dead_letter_record(r.source, "replay", r.error, r.raw, r.location) for r in rejected
        ]
        for record in dead:
            ENCODE_DL(record)
            assert str(record["location"]).startswith(f"{path}:")
        lines = _records_in(content, fmt)
        if lines >= 0:
            assert stats.records == lines
        # events in = stored + dead letters: each record is touchpoints or one dead letter
        assert stats.rejected == len(rejected) <= stats.records
        assert len(touchpoints) == stats.touchpoints >= stats.records - stats.rejected
        check_dead_letters(dead)
        check_logs(caplog)

    one()
