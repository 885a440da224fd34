"""The HTTP collector: auth, limits, signatures, dead letters; a fake publisher acks."""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from connectors.base import Rejected
from connectors.collector import (
    AckingPublisher,
    CollectorConfig,
    CollectorError,
    create_collector,
    sendgrid_signature_ok,
    shopify_hmac,
    start_collector,
    twilio_signature,
)
from pipeline.core.dead_letters import dead_letter_record
from pipeline.core.model import Touchpoint
from pipeline.core.pii import sha256_hex

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
T = TypeVar("T")
DEV = {"Authorization": "Basic " + base64.b64encode(b"dev:").decode()}
TRACK = {
    "userId": "u-1",
    "event": "Order Completed",
    "timestamp": "2026-10-01T10:00:00Z",
    "messageId": "m-1",
    "properties": {"revenue": 25.0, "currency": "USD"},
    "context": {"traits": {"email": "ana.customer@example.com"}},
}


class FakeStore:
    """Stands in for the broker: records what is published, acks or fails."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.touchpoints: list[Touchpoint] = []
        self.rejected: list[Rejected] = []

    async def __call__(self, touchpoints: list[Touchpoint], rejected: list[Rejected]) -> None:
        await asyncio.sleep(0)
        if self.fail:
            raise RuntimeError("broker down")
        self.touchpoints.extend(touchpoints)
        self.rejected.extend(rejected)


def run(
    scenario: Callable[[TestClient[Any, Any]], Awaitable[T]],
    store: FakeStore,
    **config: Any,
) -> T:
    async def main() -> T:
        app = create_collector(CollectorConfig(**config), store)
        async with TestClient(TestServer(app)) as client:
            return await scenario(client)

    return asyncio.run(main())


async def post(
    client: TestClient[Any, Any],
    path: str,
    body: Any,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    resp = await client.post(path, data=data, headers=hdrs)
    text = await resp.text()
    try:
        return resp.status, json.loads(text)
    except json.JSONDecodeError:
        return resp.status, text


# ---- Segment Tracking API --------------------------------------------------------------


def test_healthz() -> None:
    async def scenario(client: TestClient[Any, Any]) -> int:
        resp = await client.get("/healthz")
        return resp.status

    assert run(scenario, FakeStore()) == 200


def test_track_with_the_write_key_is_published_before_the_answer() -> None:
    store = FakeStore()
    status, body = run(lambda c: post(c, "/v1/track", TRACK, DEV), store)
    assert status == 200 and body["success"] is True
    (tp,) = store.touchpoints
    assert tp.event_type == "order_completed"
    assert tp.identifier("email_sha256") == sha256_hex("ana.customer@example.com")
    assert store.rejected == []


def test_the_path_sets_the_message_type() -> None:
    store = FakeStore()
    msg = {"anonymousId": "a-1", "timestamp": "2026-10-01T10:00:00Z", "messageId": "p-1"}
    status, _ = run(lambda c: post(c, "/v1/page", msg, DEV), store)
    assert status == 200
    assert store.touchpoints[0].event_type == "page_view"


def test_the_write_key_may_travel_in_the_body_and_is_not_kept() -> None:
    store = FakeStore()
    msg = {**TRACK, "writeKey": "dev", "timestamp": "not a time"}
    status, body = run(lambda c: post(c, "/v1/track", msg), store)
    assert status == 400
    assert body["field"] == "timestamp"
    (rej,) = store.rejected
    assert b"writeKey" not in rej.raw and b'"dev"' not in rej.raw


@pytest.mark.parametrize(
    ("headers", "field"),
    [
        ({}, "writeKey"),
        ({"Authorization": "Basic " + base64.b64encode(b"nope:").decode()}, "writeKey"),
        ({"Authorization": "Bearer dev"}, "Authorization"),
        ({"Authorization": "Basic %%%"}, "Authorization"),
    ],
)
def test_missing_or_wrong_write_key_is_401_and_a_dead_letter(
    headers: dict[str, str], field: str
) -> None:
    store = FakeStore()
    status, body = run(lambda c: post(c, "/v1/track", TRACK, headers), store)
    assert status == 401
    assert body["field"] == field
    assert store.touchpoints == []
    (rej,) = store.rejected
    assert rej.source == "segment" and rej.location == "/v1/track"
    # the dead letter is redacted on its way to the topic
    record = dead_letter_record(rej.source, "collect", rej.error, rej.raw, rej.location)
    assert b"ana.customer@example.com" not in record["payload"]
    assert record["stage"] == "collect" and record["location"] == "/v1/track"


def test_a_wrong_key_is_401_even_before_the_body_is_parsed() -> None:
    store = FakeStore()
    headers = {"Authorization": "Basic " + base64.b64encode(b"nope:").decode()}
    status, body = run(lambda c: post(c, "/v1/track", b"{not json", headers), store)
    assert status == 401 and body["field"] == "writeKey"


def test_other_write_keys_from_the_setting() -> None:
    store = FakeStore()
    headers = {"Authorization": "Basic " + base64.b64encode(b"prod-key:").decode()}
    keys = (SecretStr("prod-key"), SecretStr("other"))
    assert run(lambda c: post(c, "/v1/track", TRACK, headers), store, write_keys=keys)[0] == 200
    assert run(lambda c: post(c, "/v1/track", TRACK, DEV), store, write_keys=keys)[0] == 401


def test_a_batch_keeps_its_valid_messages_and_dead_letters_the_others() -> None:
    store = FakeStore()
    good = {**TRACK, "type": "track"}
    batch = {"batch": [good, {**good, "type": "nonsense"}, {**good, "messageId": "m-2"}]}
    status, body = run(lambda c: post(c, "/v1/batch", batch, DEV), store)
    assert status == 200
    assert body["accepted"] == 2
    assert body["rejected"] == [
        {"index": 1, "field": "type", "error": body["rejected"][0]["error"]}
    ]
    assert len(store.touchpoints) == 2
    (rej,) = store.rejected
    assert rej.location == "/v1/batch#1"
    assert len(store.touchpoints) + len(store.rejected) == 3  # events in = stored + dead


def test_a_batch_with_no_valid_message_is_400_naming_the_first_problem() -> None:
    store = FakeStore()
    batch = {"batch": [{"userId": "u"}, {"userId": "u"}]}
    status, body = run(lambda c: post(c, "/v1/batch", batch, DEV), store)
    assert status == 400
    assert body["field"] == "batch[0].type"
    assert len(body["rejected"]) == 2
    assert [r.location for r in store.rejected] == ["/v1/batch#0", "/v1/batch#1"]


def test_a_gzipped_batch_is_read() -> None:
    store = FakeStore()
    raw = gzip.compress(json.dumps({"batch": [{**TRACK, "type": "track"}]}).encode())
    headers = {**DEV, "Content-Encoding": "gzip"}
    status, _ = run(lambda c: post(c, "/v1/batch", raw, headers), store)
    assert status == 200 and len(store.touchpoints) == 1


def test_an_oversized_body_is_413_and_a_dead_letter() -> None:
    store = FakeStore()
    big = {**TRACK, "properties": {"padding": "x" * 5000}}
    status, body = run(lambda c: post(c, "/v1/track", big, DEV), store, max_body_bytes=2048)
    assert status == 413
    assert body["code"] == "payload_too_large"
    (rej,) = store.rejected
    assert rej.location == "/v1/track" and 0 < len(rej.raw) <= 4096


def test_an_oversized_streamed_body_without_length_is_413() -> None:
    store = FakeStore()

    async def scenario(client: TestClient[Any, Any]) -> int:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b"x" * 1024

        resp = await client.post("/v1/track", data=chunks(), headers=DEV)
        return resp.status

    assert run(scenario, store, max_body_bytes=4096) == 413
    assert len(store.rejected) == 1


def test_malformed_json_is_400_naming_the_problem() -> None:
    store = FakeStore()
    status, body = run(lambda c: post(c, "/v1/track", b'{"userId": "u-1",', DEV), store)
    assert status == 400
    assert body["field"] == "$"
    assert body["error"].startswith("$: invalid JSON at line 1 column")
    (rej,) = store.rejected
    assert rej.raw == b'{"userId": "u-1",'


def test_a_broker_that_does_not_ack_gives_503() -> None:
    status, body = run(lambda c: post(c, "/v1/track", TRACK, DEV), FakeStore(fail=True))
    assert status == 503
    assert body["code"] == "unavailable"


def test_logs_never_hold_a_raw_address(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    msg = {**TRACK, "timestamp": "ana.customer@example.com"}
    status, body = run(lambda c: post(c, "/v1/track", msg, DEV), FakeStore())
    assert status == 400 and body["field"] == "timestamp"
    assert "timestamp" in caplog.text
    assert "ana.customer@example.com" not in caplog.text


def test_the_collector_can_be_embedded_in_a_running_loop() -> None:
    async def main() -> int:
        runner = await start_collector(CollectorConfig(port=0), FakeStore())
        try:
            host, port = runner.addresses[0][:2]
            async with (
                ClientSession() as session,
                session.get(f"http://{host}:{port}/healthz") as resp,
            ):
                return resp.status
        finally:
            await runner.cleanup()

    assert asyncio.run(main()) == 200


def test_no_write_key_at_all_is_refused_at_start() -> None:
    with pytest.raises(CollectorError):
        create_collector(CollectorConfig(write_keys=()), FakeStore())


# ---- SendGrid --------------------------------------------------------------------------


def sendgrid_batch() -> bytes:
    return (FIXTURES / "sendgrid" / "webhook_batch.json").read_bytes()


def test_the_documented_sendgrid_signature_verifies() -> None:
    # the test vector of SendGrid's own SDKs (sendgrid-nodejs eventwebhook tests)
    from connectors.collector import load_sendgrid_key

    key = load_sendgrid_key(
        "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaWjcMMsTbhdbcwHBc"
        "epxo7yAQGhHPTnlvFYPAZFceEu/1FwCM/QmGUhA=="
    )
    payload = b'{"category":"example_payload","event":"test_event","message_id":"message_id"}'
    signature = (
        "MEUCIQCtIHJeH93Y+qpYeWrySphQgpNGNr/U+UyUlBkU6n7RAwIgJTz2C+8a8xonZGi6BpSzoQsbVRamr2nlx"
        "FDWYNH2j/0="
    )
    assert sendgrid_signature_ok(key, payload, signature, "1588788367")
    assert not sendgrid_signature_ok(key, payload + b" ", signature, "1588788367")
    assert not sendgrid_signature_ok(key, payload, signature, "1588788368")


def test_an_unsigned_sendgrid_batch_is_accepted_when_no_key_is_set() -> None:
    store = FakeStore()
    status, body = run(lambda c: post(c, "/webhooks/sendgrid", sendgrid_batch()), store)
    assert status == 200 and body["accepted"] == 10
    assert len(store.touchpoints) == 10


def test_a_bad_sendgrid_event_is_a_dead_letter_the_rest_is_kept() -> None:
    store = FakeStore()
    events = json.loads(sendgrid_batch())
    del events[2]["sg_event_id"]
    status, body = run(lambda c: post(c, "/webhooks/sendgrid", events), store)
    assert status == 200
    assert body["rejected"][0]["field"] == "sg_event_id"
    assert len(store.touchpoints) == 9
    (rej,) = store.rejected
    assert rej.location == "/webhooks/sendgrid#2"
    assert rej.error == "sg_event_id: required"


@pytest.fixture(scope="module")
def sendgrid_keys() -> tuple[Any, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private = ec.generate_private_key(ec.SECP256R1())
    public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, base64.b64encode(public).decode()


def sendgrid_sign(private: Any, body: bytes, timestamp: str) -> str:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    return base64.b64encode(
        private.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    ).decode()


def test_sendgrid_signatures_are_checked(sendgrid_keys: tuple[Any, str]) -> None:
    private, public = sendgrid_keys
    body = sendgrid_batch()
    ts = "1790409600"
    good = {
        "X-Twilio-Email-Event-Webhook-Signature": sendgrid_sign(private, body, ts),
        "X-Twilio-Email-Event-Webhook-Timestamp": ts,
    }
    forged = {**good, "X-Twilio-Email-Event-Webhook-Timestamp": "1790409601"}
    store = FakeStore()
    key = SecretStr(public)

    async def scenario(client: TestClient[Any, Any]) -> list[int]:
        return [
            (await post(client, "/webhooks/sendgrid", body, good))[0],
            (await post(client, "/webhooks/sendgrid", body, forged))[0],
            (await post(client, "/webhooks/sendgrid", body, {}))[0],
        ]

    assert run(scenario, store, sendgrid_verification_key=key) == [200, 403, 401]
    assert len(store.touchpoints) == 10
    assert [r.location for r in store.rejected] == ["/webhooks/sendgrid"] * 2
    assert all(r.source == "sendgrid" for r in store.rejected)


def test_a_bad_sendgrid_key_is_refused_at_start() -> None:
    with pytest.raises(CollectorError):
        create_collector(
            CollectorConfig(sendgrid_verification_key=SecretStr("not a key")), FakeStore()
        )


# ---- Twilio ----------------------------------------------------------------------------


def test_the_documented_twilio_signature() -> None:
    # Twilio's own example (TwilioDevEd api-snippets, security/signature_validation)
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+14158675310",
        "Digits": "1234",
        "From": "+14158675310",
        "To": "+18005551212",
    }
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert twilio_signature("12345", url, list(params.items())) == "GvWf1cFY/Q7PnoempGyD5oXAezc="


def status_params() -> dict[str, str]:
    line = (FIXTURES / "twilio" / "callbacks.jsonl").read_text().splitlines()[0]
    params: dict[str, str] = json.loads(line)
    params.pop("Timestamp")
    return params


FORM = {"Content-Type": "application/x-www-form-urlencoded"}
PUBLIC = "https://collect.shop.example"


def test_twilio_status_callbacks_are_signed_form_posts() -> None:
    params = status_params()
    body = urlencode(params).encode()
    sig = twilio_signature("tok", PUBLIC + "/webhooks/twilio", list(params.items()))
    store = FakeStore()

    async def scenario(client: TestClient[Any, Any]) -> list[tuple[int, Any]]:
        return [
            await post(client, "/webhooks/twilio", body, {**FORM, "X-Twilio-Signature": sig}),
            await post(
                client, "/webhooks/twilio", body, {**FORM, "X-Twilio-Signature": sig[:-2] + "A="}
            ),
            await post(client, "/webhooks/twilio", body, FORM),
        ]

    (ok, forged, unsigned) = run(
        scenario, store, twilio_auth_token=SecretStr("tok"), public_url=PUBLIC
    )
    assert ok[0] == 200 and "<Response></Response>" in ok[1]
    assert forged[0] == 403 and forged[1]["field"] == "X-Twilio-Signature"
    assert unsigned[0] == 401
    (tp,) = store.touchpoints
    assert tp.event_type == "sms_sent" and tp.channel == "sms"
    assert len(store.rejected) == 2


def test_twilio_without_a_token_accepts_unsigned_posts_and_rejects_bad_ones() -> None:
    store = FakeStore()
    params = {k: v for k, v in status_params().items() if k not in ("MessageSid", "SmsSid")}

    async def scenario(client: TestClient[Any, Any]) -> list[tuple[int, Any]]:
        return [
            await post(client, "/webhooks/twilio", urlencode(status_params()).encode(), FORM),
            await post(client, "/webhooks/twilio", urlencode(params).encode(), FORM),
        ]

    ok, bad = run(scenario, store)
    assert ok[0] == 200
    assert bad[0] == 400 and bad[1]["field"] == "MessageSid"
    assert len(store.touchpoints) == 1 and len(store.rejected) == 1


def test_twilio_event_streams_json_checks_the_body_hash() -> None:
    line = (FIXTURES / "twilio" / "callbacks.jsonl").read_text().splitlines()[-1]
    body = f"[{line}]".encode()
    digest = hashlib.sha256(body).hexdigest()
    path = f"/webhooks/twilio?bodySHA256={digest}"
    sig = twilio_signature("tok", PUBLIC + path)
    headers = {"X-Twilio-Signature": sig}
    store = FakeStore()

    async def scenario(client: TestClient[Any, Any]) -> list[int]:
        return [
            (await post(client, path, body, headers))[0],
            (await post(client, path, body + b" ", headers))[0],
        ]

    assert run(scenario, store, twilio_auth_token=SecretStr("tok"), public_url=PUBLIC) == [
        200,
        403,
    ]
    (tp,) = store.touchpoints
    assert tp.event_type == "sms_click"


# ---- Shopify ---------------------------------------------------------------------------


def test_shopify_hmac_is_checked() -> None:
    body = (FIXTURES / "shopify" / "order_online.json").read_bytes()
    good = {
        "X-Shopify-Hmac-Sha256": shopify_hmac("s3cret", body),
        "X-Shopify-Topic": "orders/create",
    }
    bad = {**good, "X-Shopify-Hmac-Sha256": shopify_hmac("other", body)}
    store = FakeStore()

    async def scenario(client: TestClient[Any, Any]) -> list[int]:
        return [
            (await post(client, "/webhooks/shopify", body, good))[0],
            (await post(client, "/webhooks/shopify", body, bad))[0],
            (await post(client, "/webhooks/shopify", body, {}))[0],
        ]

    assert run(scenario, store, shopify_webhook_secret=SecretStr("s3cret")) == [200, 403, 401]
    (tp,) = store.touchpoints
    assert tp.event_type == "purchase" and tp.revenue == 403.0
    assert len(store.rejected) == 2
    assert all(r.location == "/webhooks/shopify" for r in store.rejected)


def test_a_shopify_topic_other_than_orders_create_is_acknowledged_as_a_dead_letter() -> None:
    body = (FIXTURES / "shopify" / "order_online.json").read_bytes()
    store = FakeStore()
    headers = {"X-Shopify-Topic": "orders/updated"}
    status, body_ = run(lambda c: post(c, "/webhooks/shopify", body, headers), store)
    assert status == 202 and body_["ignored"] is True
    assert store.touchpoints == []
    (rej,) = store.rejected
    assert rej.error.startswith("X-Shopify-Topic: unsupported topic")


# ---- interactions ----------------------------------------------------------------------


def test_interactions_need_the_write_key_and_accept_arrays() -> None:
    lines = (FIXTURES / "interactions" / "interactions.jsonl").read_text().splitlines()
    items = [json.loads(line) for line in lines]
    store = FakeStore()

    async def scenario(client: TestClient[Any, Any]) -> list[int]:
        return [
            (await post(client, "/webhooks/interactions", items, DEV))[0],
            (await post(client, "/webhooks/interactions", items[0]))[0],
        ]

    assert run(scenario, store) == [200, 401]
    assert [tp.channel for tp in store.touchpoints] == ["chat", "call_center", "call_center"]
    assert len(store.rejected) == 1


# ---- the acking publisher --------------------------------------------------------------


class FakeProducer:
    def __init__(self, publisher: FakePublisher) -> None:
        self.publisher = publisher
        self.flushes = 0

    def flush(self, _timeout: float) -> int:
        self.flushes += 1
        if self.publisher.refuse:
            self.publisher.failed += 1
        return 0


class FakePublisher:
    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.failed = 0
        self.errors: list[str] = []
        self.sent: list[Any] = []
        self.producer = FakeProducer(self)

    def touchpoint(self, tp: Touchpoint) -> None:
        self.sent.append(tp)

    def rejected(self, rej: Rejected, stage: str) -> None:
        self.sent.append((stage, rej))


def test_the_acking_publisher_resolves_after_the_flush() -> None:
    fake = FakePublisher()
    acking = AckingPublisher(fake, timeout=5)
    rej = Rejected("segment", "x: y", b"{}", "/v1/track")

    async def main() -> None:
        await asyncio.gather(*(acking([], [rej]) for _ in range(20)))

    try:
        asyncio.run(main())
    finally:
        acking.close()
    assert len(fake.sent) == 20 and fake.sent[0] == ("collect", rej)
    assert 1 <= fake.producer.flushes <= 20  # waiting requests share flushes


def test_the_acking_publisher_fails_the_requests_of_a_refused_flush() -> None:
    acking = AckingPublisher(FakePublisher(refuse=True), timeout=5)
    try:
        with pytest.raises(RuntimeError, match="refused"):
            asyncio.run(acking([], [Rejected("segment", "x: y", b"{}", "/v1/track")]))
    finally:
        acking.close()


# ---- the real Segment SDK --------------------------------------------------------------


def test_the_segment_python_sdk_delivers_to_the_collector() -> None:
    analytics = pytest.importorskip("segment.analytics")
    store = FakeStore()
    errors: list[Any] = []

    def send(host: str) -> None:
        client = analytics.Client(
            write_key="dev",
            host=host,
            sync_mode=True,
            max_retries=0,
            on_error=lambda err, _batch: errors.append(err),
        )
        client.track(
            user_id="u-42",
            event="Product Viewed",
            properties={"sku": "IPOD2008PINK"},
            context={"traits": {"email": "sdk.user@example.com"}},
        )
        client.identify(user_id="u-42", traits={"email": "sdk.user@example.com"})
        client.page(anonymous_id="anon-1", name="Home", properties={"url": "https://shop.example/"})
        client.flush()

    async def main() -> None:
        app = create_collector(CollectorConfig(), store)
        async with TestServer(app, host="127.0.0.1") as server:
            host = f"http://127.0.0.1:{server.port}"
            await asyncio.get_running_loop().run_in_executor(None, send, host)

    asyncio.run(main())
    assert errors == []
    assert sorted(tp.event_type for tp in store.touchpoints) == [
        "identify",
        "page_view",
        "product_viewed",
    ]
    assert store.rejected == []
    tp = next(t for t in store.touchpoints if t.event_type == "product_viewed")
    assert tp.identifier("email_sha256") == sha256_hex("sdk.user@example.com")
