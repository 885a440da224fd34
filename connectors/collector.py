"""The HTTP collector: Segment's Tracking API and the vendors' webhooks, over aiohttp.

Routes (``docs/sources.md`` has the details):

* ``POST /v1/track|page|screen|identify|alias|group|batch``: the Segment HTTP Tracking
  API, authenticated with a write key (HTTP Basic, the key as user name and an empty
  password, or ``writeKey`` in the body, as Segment accepts). The path sets ``type``
  when a message has none.
* ``POST /webhooks/sendgrid``: the SendGrid Event Webhook (a JSON array), its ECDSA
  signature checked when a verification key is configured.
* ``POST /webhooks/twilio``: Twilio status callbacks and inbound messages (form
  encoded) and Event Streams CloudEvents (JSON), ``X-Twilio-Signature`` checked when an
  auth token is configured.
* ``POST /webhooks/shopify``: Shopify ``orders/create``, ``X-Shopify-Hmac-Sha256``
  checked when a webhook secret is configured.
* ``POST /webhooks/interactions``: chat / call-centre interactions (JSON), write key auth.
* ``POST /webhooks/store-signals``: QR-code scans and in-store Wi-Fi logins (JSON), write
  key auth.
* ``GET /healthz``.

Every answer is counted by route and status, and every stored touchpoint and dead
letter by source, in :class:`CollectorStats`; ``journeys collect`` serves them to
Prometheus (:func:`collector_metrics`, ``docs/metrics.md``).

Every request is mapped by the pure sources; touchpoints and dead letters (stage
``collect``, location = the HTTP path, ``#i`` for the i-th message of a batch) go to
the *publish* callable together, and the response is sent only after it returned,
which for :class:`AckingPublisher` means the broker acknowledged them. Events in =
touchpoints + dead letters. A batch is accepted message by message: valid messages are
kept and the invalid ones are listed in the response and dead-lettered (a 400 only
when none is valid). Errors are JSON, ``{"error": ..., "field": ...}``; nothing derived
from a payload is logged unredacted, and secrets are never logged.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import hashlib
import hmac
import inspect
import json
import logging
import re
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from connectors.base import Mapped, Rejected, Source, lone_surrogate, map_record
from connectors.collector_http import (
    SHORT_PATHS,
    UNMATCHED_ROUTE,
    CollectorStats,
    CorsPolicy,
    RateLimitedLog,
    api_host,
    collector_metrics,
    cors,
    counting,
    settings_document,
)
from connectors.interactions import InteractionsSource
from connectors.segment import MESSAGE_TYPES, SegmentSource
from connectors.sendgrid import SendGridSource
from connectors.shopify import TOPIC as SHOPIFY_TOPIC
from connectors.shopify import ShopifySource
from connectors.signatures import (
    SignatureKeyError,
    sendgrid_signature_ok,
    shopify_hmac,
    twilio_signature,
    url_variants,
)
from connectors.signatures import load_sendgrid_key as _load_sendgrid_key
from connectors.store_signals import StoreSignalsSource
from connectors.twilio import TwilioSource
from pipeline.core.model import Touchpoint
from pipeline.core.pii import redact

log = logging.getLogger(__name__)
#: Re-exported: the ``collect`` command and the tests import them from here.
__all__ = [
    "UNMATCHED_ROUTE",
    "AckingPublisher",
    "CollectorConfig",
    "CollectorError",
    "CollectorStats",
    "collector_metrics",
    "create_collector",
    "load_sendgrid_key",
    "sendgrid_signature_ok",
    "shopify_hmac",
    "start_collector",
    "twilio_signature",
]

STAGE = "collect"
DEV_WRITE_KEY = "dev"
SEGMENT_PATHS = (*MESSAGE_TYPES, "batch", *SHORT_PATHS)
SENDGRID_SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
TWILIO_SIGNATURE = "X-Twilio-Signature"
SHOPIFY_HMAC = "X-Shopify-Hmac-Sha256"
SHOPIFY_TOPIC_HEADER = "X-Shopify-Topic"
MAX_BATCH = 10_000
_DEAD_LETTER_HEAD = 4096
_WRITE_KEY_RE = re.compile(rb'("writeKey"\s*:\s*)"(?:[^"\\]|\\.)*"')
_EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'

#: Receives one request's touchpoints and dead letters; returns (or its awaitable
#: resolves) once they are safely stored, and raises when they are not.
Publish = Callable[[list[Touchpoint], list[Rejected]], Awaitable[None] | None]


class CollectorError(RuntimeError):
    """The collector cannot start as configured (a bad key, a missing package)."""


class CollectorConfig(BaseModel):
    """What the collector needs; the ``collect`` command builds it from the environment."""

    model_config = ConfigDict(frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(8088, ge=0, le=65535)
    write_keys: tuple[SecretStr, ...] = (SecretStr(DEV_WRITE_KEY),)
    max_body_bytes: int = Field(512 * 1024, ge=1024)
    #: The public base URL the vendors call (``https://collect.example.com``), used to
    #: check Twilio signatures behind a proxy; the request's own URL when unset.
    public_url: str | None = None
    sendgrid_verification_key: SecretStr | None = None
    twilio_auth_token: SecretStr | None = None
    shopify_webhook_secret: SecretStr | None = None
    #: Origins browsers may call the Segment paths from (CORS): ``*`` (the default: a
    #: browser write key is public), exact origins or ``https://*.example.com``.
    allowed_origins: tuple[str, ...] = ("*",)

    def accepts_dev_key(self) -> bool:
        return any(k.get_secret_value() == DEV_WRITE_KEY for k in self.write_keys)


# ---- the publishing half -------------------------------------------------------------


@dataclass
class _Pending:
    touchpoints: list[Touchpoint]
    rejected: list[Rejected]
    future: concurrent.futures.Future[None] = field(default_factory=concurrent.futures.Future)


class AckingPublisher:
    """Publishes each request's records and resolves once the broker acknowledged them.

    *publisher* is a :class:`connectors.publisher.Publisher`. One thread produces what
    the requests hand in and flushes; every request waiting while a flush runs rides on
    the next one (group commit), so acknowledged requests cost one flush round trip and
    the event loop never blocks. A delivery failure fails every request of its flush:
    the senders retry, and the deterministic event ids make the retry harmless.
    """

    def __init__(self, publisher: Any, timeout: float = 30.0) -> None:
        self.publisher = publisher
        self.timeout = timeout
        self._pending: list[_Pending] = []
        self._cv = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="collector-publish", daemon=True)
        self._thread.start()

    async def __call__(self, touchpoints: list[Touchpoint], rejected: list[Rejected]) -> None:
        item = _Pending(list(touchpoints), list(rejected))
        with self._cv:
            if self._closed:
                raise RuntimeError("the publisher is closed")
            self._pending.append(item)
            self._cv.notify()
        await asyncio.wrap_future(item.future)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join(self.timeout + 5)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._pending and not self._closed:
                    self._cv.wait()
                if not self._pending:
                    return
                batch, self._pending = self._pending, []
            self._commit(batch)

    def _commit(self, batch: list[_Pending]) -> None:
        pub = self.publisher
        try:
            failed_before = pub.failed
            for item in batch:
                for tp in item.touchpoints:
                    pub.touchpoint(tp)
                for rej in item.rejected:
                    pub.rejected(rej, STAGE)
            remaining = pub.producer.flush(self.timeout)
            if remaining:
                raise RuntimeError(f"{remaining} messages not acknowledged in {self.timeout:g}s")
            if pub.failed > failed_before:
                raise RuntimeError(f"the broker refused messages: {pub.errors[-3:]}")
        except Exception as exc:  # every waiting request must learn of it, whatever it is
            log.exception("publishing a collector batch failed")
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        for item in batch:
            item.future.set_result(None)


# ---- signatures ------------------------------------------------------------------------


def load_sendgrid_key(key: str) -> Any:
    """The SendGrid verification key (base64 DER, or PEM) as a public key object."""
    try:
        return _load_sendgrid_key(key)
    except SignatureKeyError as exc:
        raise CollectorError(str(exc)) from exc


# ---- requests --------------------------------------------------------------------------


class _Refused(Exception):
    """A request refused as a whole: it becomes one dead letter and a 4xx."""

    def __init__(self, status: int, field: str, message: str, code: str) -> None:
        super().__init__(f"{field}: {message}")
        self.status = status
        self.field = field
        self.message = message
        self.code = code


def _now() -> datetime:
    return datetime.now(UTC)


def _scrub_secrets(raw: bytes) -> bytes:
    return _WRITE_KEY_RE.sub(rb'\1"<redacted>"', raw)


def _log_text(text: str) -> str:
    return redact(text.encode("utf-8", "replace")).decode("utf-8", "replace")


def _field_of(error: str) -> str:
    return error.split(": ", 1)[0] if ": " in error else "$"


def _message_of(error: str) -> str:
    return error.split(": ", 1)[1] if ": " in error else error


def _json_error(status: int, field: str, message: str, code: str, **extra: Any) -> web.Response:
    body = {"error": f"{field}: {message}", "field": field, "code": code, "message": message}
    body.update(extra)
    return web.json_response(body, status=status)


def _parse_json(body: bytes) -> Any:
    if not body.strip():
        raise _Refused(400, "$", "empty body; expected JSON", "invalid_request")
    try:
        data = json.loads(body)
    except UnicodeDecodeError as exc:
        raise _Refused(400, "$", "not valid UTF-8", "invalid_request") from exc
    except json.JSONDecodeError as exc:
        raise _Refused(
            400,
            "$",
            f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}",
            "invalid_request",
        ) from exc
    except RecursionError as exc:
        raise _Refused(400, "$", "JSON nested too deeply", "invalid_request") from exc
    if lone_surrogate(body, data):
        # Valid JSON, but no UTF-8 string (so no Kafka record) can hold it.
        raise _Refused(400, "$", "a string holds a lone UTF-16 surrogate", "invalid_request")
    return data


def _raw_of(item: Any) -> bytes:
    return json.dumps(item, separators=(",", ":"), ensure_ascii=False, default=str).encode()


class _Collector:
    def __init__(self, config: CollectorConfig, publish: Publish, stats: CollectorStats) -> None:
        self.config = config
        self.publish = publish
        self.stats = stats
        self.segment = SegmentSource()
        self.sendgrid = SendGridSource()
        self.twilio = TwilioSource()
        self.shopify = ShopifySource()
        self.interactions = InteractionsSource()
        self.cors = CorsPolicy(config.allowed_origins)
        self.store_signals = StoreSignalsSource()
        self._keys = [k.get_secret_value().encode() for k in config.write_keys if k]
        self._sendgrid_key = (
            load_sendgrid_key(config.sendgrid_verification_key.get_secret_value())
            if config.sendgrid_verification_key is not None
            else None
        )

    # -- plumbing ----------------------------------------------------------------------

    def _scrub(self, raw: bytes) -> bytes:
        """*raw* without its ``writeKey`` value, nor any configured write key wherever it
        appears (a key sent in a misspelt field is still a secret). Keys shorter than 8
        characters (the development key ``dev``) are too common a substring to replace."""
        raw = _scrub_secrets(raw)
        for key in self._keys:
            if len(key) >= 8:
                raw = raw.replace(key, b"<redacted>")
        return raw

    async def _read_body(self, request: web.Request) -> bytes:
        limit = self.config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            head = await request.content.read(_DEAD_LETTER_HEAD)
            raise _TooLarge(head)
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                chunk = await request.content.read(65536)
            except web.RequestPayloadError as exc:
                # aiohttp undoes Content-Encoding while reading (in bounded steps); a
                # body that does not decode, or ends early, lands here.
                encoding = request.headers.get("Content-Encoding", "identity")[:32]
                raise _Refused(
                    400,
                    "Content-Encoding",
                    f"the body could not be read as {encoding}",
                    "invalid_request",
                ) from exc
            if not chunk:
                break
            size += len(chunk)
            chunks.append(chunk)
            if size > limit:
                raise _TooLarge(b"".join(chunks)[:_DEAD_LETTER_HEAD])
        return b"".join(chunks)

    async def _dispatch(
        self,
        request: web.Request,
        source: str,
        work: Callable[[bytes, datetime], Awaitable[_Outcome]],
    ) -> web.Response:
        path = request.path
        received = _now()
        body = b""
        try:
            try:
                body = await self._read_body(request)
                if self.cors.refuses(request):
                    raise _Refused(
                        403,
                        "Origin",
                        "origin not allowed; add it to JOURNEYS_COLLECTOR_ALLOWED_ORIGINS",
                        "forbidden",
                    )
            except _TooLarge as too_large:
                body = too_large.head
                raise _Refused(
                    413,
                    "$",
                    f"body larger than {self.config.max_body_bytes} bytes",
                    "payload_too_large",
                ) from too_large
            outcome = await work(body, received)
        except _Refused as refused:
            rej = Rejected(source, str(refused), self._scrub(body), path)
            log.warning("%s %s: %s", path, refused.status, _log_text(str(refused)))
            if not await self._stored(path, [], [rej]):
                return _json_error(503, "$", "the broker did not acknowledge", "unavailable")
            return _json_error(refused.status, refused.field, refused.message, refused.code)
        for rej in outcome.rejected[:5]:
            log.info("%s rejected %s: %s", path, rej.location, _log_text(rej.error))
        if not await self._stored(path, outcome.touchpoints, outcome.rejected):
            return _json_error(503, "$", "the broker did not acknowledge", "unavailable")
        return outcome.response()

    async def _stored(
        self, path: str, touchpoints: list[Touchpoint], rejected: list[Rejected]
    ) -> bool:
        """Hand the records to *publish*; False (logged) when it failed."""
        try:
            result = self.publish(touchpoints, rejected)
            if inspect.isawaitable(result):
                await result
        except Exception:  # any failure means "not stored": the sender must retry
            log.exception(
                "%s: publishing %d records failed", path, len(touchpoints) + len(rejected)
            )
            return False
        self.stats.stored(touchpoints, rejected)
        return True

    def _authenticated_json(self, request: web.Request, body: bytes) -> Any:
        """The parsed body of a write-key request: a Basic auth header is checked before
        parsing; without one, the key must be the body's ``writeKey``."""
        if "Authorization" in request.headers:
            self._check_write_key(request, None)
            return _parse_json(body)
        data = _parse_json(body)
        self._check_write_key(request, data)
        return data

    def _check_write_key(self, request: web.Request, body: Any) -> None:
        supplied: str | None = None
        header = request.headers.get("Authorization")
        if header:
            scheme, _, value = header.partition(" ")
            if scheme.lower() != "basic":
                raise _Refused(401, "Authorization", "expected Basic auth", "unauthorized")
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise _Refused(
                    401, "Authorization", "malformed Basic auth", "unauthorized"
                ) from exc
            supplied = decoded.split(":", 1)[0]
        elif isinstance(body, Mapping) and isinstance(body.get("writeKey"), str):
            supplied = body["writeKey"]
        if not supplied:
            raise _Refused(
                401, "writeKey", "a write key is required (Basic auth or writeKey)", "unauthorized"
            )
        candidate = supplied.encode()
        if not any(hmac.compare_digest(candidate, key) for key in self._keys):
            raise _Refused(401, "writeKey", "unknown write key", "unauthorized")

    def _map_items(
        self, source: Source, items: Sequence[Any], path: str, received: datetime, one: bool
    ) -> _Outcome:
        if len(items) > MAX_BATCH:
            raise _Refused(400, "batch", f"more than {MAX_BATCH} messages", "invalid_request")
        if not items:
            raise _Refused(400, "batch", "no messages", "invalid_request")
        outcome = _Outcome(one=one)
        for i, item in enumerate(items):
            location = path if one else f"{path}#{i}"
            raw = self._scrub(_raw_of(item))
            mapped: Mapped = map_record(source, item, raw, received, location)
            outcome.touchpoints.extend(mapped.touchpoints)
            if mapped.rejected is not None:
                outcome.rejected.append(mapped.rejected)
                outcome.errors.append((i, mapped.rejected.error))
        return outcome

    # -- routes ------------------------------------------------------------------------

    async def segment_route(self, request: web.Request) -> web.Response:
        last = request.path.rsplit("/", 1)[-1]
        kind = SHORT_PATHS.get(last, last)

        async def work(body: bytes, received: datetime) -> _Outcome:
            data = self._authenticated_json(request, body)
            if not isinstance(data, dict):
                raise _Refused(400, "$", "expected a JSON object", "invalid_request")
            data.pop("writeKey", None)
            if kind == "batch":
                batch = data.get("batch")
                if not isinstance(batch, list):
                    raise _Refused(400, "batch", "expected an array of messages", "invalid_request")
                return self._map_items(self.segment, batch, request.path, received, one=False)
            data.setdefault("type", kind)
            return self._map_items(self.segment, [data], request.path, received, one=True)

        return await self._dispatch(request, "segment", work)

    async def sendgrid_route(self, request: web.Request) -> web.Response:
        async def work(body: bytes, received: datetime) -> _Outcome:
            if self._sendgrid_key is not None:
                signature = request.headers.get(SENDGRID_SIGNATURE, "")
                timestamp = request.headers.get(SENDGRID_TIMESTAMP, "")
                if not signature or not timestamp:
                    raise _Refused(
                        401, SENDGRID_SIGNATURE, "signature headers missing", "unauthorized"
                    )
                if not sendgrid_signature_ok(self._sendgrid_key, body, signature, timestamp):
                    raise _Refused(403, SENDGRID_SIGNATURE, "signature mismatch", "forbidden")
            data = _parse_json(body)
            items = data if isinstance(data, list) else [data]
            return self._map_items(
                self.sendgrid, items, request.path, received, one=not isinstance(data, list)
            )

        return await self._dispatch(request, "sendgrid", work)

    async def twilio_route(self, request: web.Request) -> web.Response:
        async def work(body: bytes, received: datetime) -> _Outcome:
            is_json = request.content_type == "application/json"
            token = self.config.twilio_auth_token
            url = self._public_url(request)
            if is_json:
                if token is not None:
                    self._check_twilio_json(request, url, body, token.get_secret_value())
                data = _parse_json(body)
                items = data if isinstance(data, list) else [data]
                return self._map_items(
                    self.twilio, items, request.path, received, one=not isinstance(data, list)
                )
            try:
                pairs = parse_qsl(
                    body.decode("utf-8"), keep_blank_values=True, strict_parsing=False
                )
            except UnicodeDecodeError as exc:
                raise _Refused(400, "$", "not valid UTF-8", "invalid_request") from exc
            if token is not None:
                expected = request.headers.get(TWILIO_SIGNATURE, "")
                if not expected:
                    raise _Refused(401, TWILIO_SIGNATURE, "header missing", "unauthorized")
                secret = token.get_secret_value()
                if not any(
                    hmac.compare_digest(twilio_signature(secret, u, pairs), expected)
                    for u in url_variants(url)
                ):
                    raise _Refused(403, TWILIO_SIGNATURE, "signature mismatch", "forbidden")
            if not pairs:
                raise _Refused(400, "$", "no form parameters", "invalid_request")
            params: dict[str, str] = {}
            for key, value in pairs:
                params.setdefault(key, value)
            outcome = self._map_items(self.twilio, [params], request.path, received, one=True)
            outcome.twiml = True
            return outcome

        return await self._dispatch(request, "twilio", work)

    def _check_twilio_json(self, request: web.Request, url: str, body: bytes, token: str) -> None:
        expected = request.headers.get(TWILIO_SIGNATURE, "")
        if not expected:
            raise _Refused(401, TWILIO_SIGNATURE, "header missing", "unauthorized")
        body_hash = request.query.get("bodySHA256", "")
        if not body_hash:
            raise _Refused(403, "bodySHA256", "query parameter missing", "forbidden")
        if not hmac.compare_digest(hashlib.sha256(body).hexdigest(), body_hash.lower()):
            raise _Refused(403, "bodySHA256", "does not match the body", "forbidden")
        if not any(
            hmac.compare_digest(twilio_signature(token, u), expected) for u in url_variants(url)
        ):
            raise _Refused(403, TWILIO_SIGNATURE, "signature mismatch", "forbidden")

    def _public_url(self, request: web.Request) -> str:
        if self.config.public_url:
            return self.config.public_url.rstrip("/") + request.path_qs
        return str(request.url)

    async def shopify_route(self, request: web.Request) -> web.Response:
        async def work(body: bytes, received: datetime) -> _Outcome:
            secret = self.config.shopify_webhook_secret
            if secret is not None:
                supplied = request.headers.get(SHOPIFY_HMAC, "")
                if not supplied:
                    raise _Refused(401, SHOPIFY_HMAC, "header missing", "unauthorized")
                if not hmac.compare_digest(shopify_hmac(secret.get_secret_value(), body), supplied):
                    raise _Refused(403, SHOPIFY_HMAC, "HMAC mismatch", "forbidden")
            data = _parse_json(body)
            topic = request.headers.get(SHOPIFY_TOPIC_HEADER)
            if topic is not None and topic != SHOPIFY_TOPIC:
                # Acknowledged (Shopify would retry a 4xx, then drop the subscription), but
                # kept as a dead letter: nothing that arrives is lost.
                rej = Rejected(
                    "shopify",
                    f"{SHOPIFY_TOPIC_HEADER}: unsupported topic {topic[:64]!r}; "
                    f"subscribe {SHOPIFY_TOPIC} only",
                    _raw_of(data),
                    request.path,
                )
                return _Outcome(one=True, rejected=[rej], ignored=True)
            return self._map_items(self.shopify, [data], request.path, received, one=True)

        return await self._dispatch(request, "shopify", work)

    async def interactions_route(self, request: web.Request) -> web.Response:
        return await self._json_route(request, self.interactions)

    async def store_signals_route(self, request: web.Request) -> web.Response:
        return await self._json_route(request, self.store_signals)

    async def _json_route(self, request: web.Request, source: Source) -> web.Response:
        """A JSON object, a ``{"batch": [...]}`` or an array of *source*'s records."""

        async def work(body: bytes, received: datetime) -> _Outcome:
            data = self._authenticated_json(request, body)
            if isinstance(data, dict):
                data.pop("writeKey", None)
                if isinstance(data.get("batch"), list):
                    return self._map_items(source, data["batch"], request.path, received, one=False)
                return self._map_items(source, [data], request.path, received, one=True)
            if isinstance(data, list):
                return self._map_items(source, data, request.path, received, one=False)
            raise _Refused(400, "$", "expected a JSON object or array", "invalid_request")

        return await self._dispatch(request, source.name, work)

    async def healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def settings_route(self, request: web.Request) -> web.Response:
        """Segment's project settings for a known write key, pointing at this collector."""
        key = request.match_info["write_key"]
        if not any(hmac.compare_digest(key.encode(), known) for known in self._keys):
            return _json_error(404, "writeKey", "unknown write key", "not_found")
        host, protocol = api_host(self.config.public_url, request)
        return web.json_response(
            settings_document(key, host, protocol),
            headers={"Cache-Control": "public, max-age=300"},
        )

    async def sdk_metrics_route(self, request: web.Request) -> web.Response:
        """The SDKs' delivery metrics: acknowledged, counted and dropped (no dead letter:
        they are the SDK's telemetry, not events)."""
        try:
            await self._read_body(request)
        except (_TooLarge, _Refused):
            return _json_error(413, "$", "body too large", "payload_too_large")
        self.stats.sdk_metrics += 1
        return web.json_response({"success": True})


class _TooLarge(Exception):
    def __init__(self, head: bytes) -> None:
        super().__init__("body too large")
        self.head = head


@dataclass
class _Outcome:
    """What one request became; :meth:`response` is sent once it is stored."""

    one: bool
    touchpoints: list[Touchpoint] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)
    twiml: bool = False
    ignored: bool = False

    def response(self) -> web.Response:
        if self.ignored:
            return web.json_response({"success": True, "ignored": True}, status=202)
        if self.errors and self.one:
            error = self.errors[0][1]
            return _json_error(400, _field_of(error), _message_of(error), "invalid_request")
        if self.errors and not self.touchpoints:
            index, error = self.errors[0]
            inner = _field_of(error)
            field_ = f"batch[{index}]" + ("" if inner == "$" else f".{inner}")
            return _json_error(
                400, field_, _message_of(error), "invalid_request", rejected=self._listing()
            )
        if self.twiml:
            return web.Response(text=_EMPTY_TWIML, content_type="text/xml")
        body: dict[str, Any] = {"success": True, "accepted": len(self.touchpoints)}
        if self.errors:
            body["rejected"] = self._listing()
        return web.json_response(body)

    def _listing(self) -> list[dict[str, Any]]:
        return [{"index": i, "field": _field_of(e), "error": e} for i, e in self.errors[:100]]


def create_collector(
    config: CollectorConfig, publish: Publish, stats: CollectorStats | None = None
) -> web.Application:
    """The collector as an aiohttp application.

    *publish* receives each request's touchpoints and dead letters and must return (or
    its awaitable resolve) only once they are stored, raising when they are not: the
    request is answered 503 then, so that the sender retries. Tests pass a fake; the
    ``collect`` command passes an :class:`AckingPublisher`. *stats*, when given, counts
    the answers and the stored records (for :func:`collector_metrics`).
    """
    if not config.write_keys:
        raise CollectorError("no write key configured (JOURNEYS_WRITE_KEYS)")
    stats = stats if stats is not None else CollectorStats()
    collector = _Collector(config, publish, stats)
    noise = RateLimitedLog(secrets=[key for key in collector._keys if len(key) >= 8])
    # The body limit is enforced while reading (413 + dead letter), after any gzip is
    # undone; aiohttp's own limit is set above it so that it never answers first.
    app = web.Application(
        client_max_size=config.max_body_bytes + 1024,
        middlewares=[
            counting(stats, noise),
            cors(collector.cors, stats, noise),
        ],
    )
    app.router.add_get("/healthz", collector.healthz)
    for kind in SEGMENT_PATHS:
        app.router.add_post(f"/v1/{kind}", collector.segment_route)
    app.router.add_post("/v1/m", collector.sdk_metrics_route)
    for prefix in ("/v1", ""):
        app.router.add_get(f"{prefix}/projects/{{write_key}}/settings", collector.settings_route)
    app.router.add_post("/webhooks/sendgrid", collector.sendgrid_route)
    app.router.add_post("/webhooks/twilio", collector.twilio_route)
    app.router.add_post("/webhooks/shopify", collector.shopify_route)
    app.router.add_post("/webhooks/interactions", collector.interactions_route)
    app.router.add_post("/webhooks/store-signals", collector.store_signals_route)
    return app


async def start_collector(config: CollectorConfig, publish: Publish) -> web.AppRunner:
    """Serve the collector on ``config.host:config.port`` inside a running event loop.

    For embedding (``journeys run``); call ``await runner.cleanup()`` to stop it.
    """
    runner = web.AppRunner(create_collector(config, publish), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, config.host, config.port).start()
    return runner
