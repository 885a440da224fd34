"""The collector's HTTP edge: counters, CORS for browsers, and Segment's settings document.

* :class:`CollectorStats` counts every answer, stored record, refused cross-origin
  request and SDK metrics post; :func:`collector_metrics` serves them to Prometheus.
* :func:`counting` (a middleware) counts answers and logs, rate-limited, every request
  that reaches no route, with its path and origin: a site or app that points at a
  wrong path is seen at once, not only in a counter.
* :func:`cors` answers preflights on the Segment paths (``/v1/...``, ``/projects/...``)
  and adds ``Access-Control-Allow-Origin`` to their answers; an origin outside
  :attr:`CorsPolicy.origins` gets a 403 (counted and logged). Vendor webhooks get no
  CORS: no browser calls them.
* :func:`settings_document` is what ``GET /v1/projects/{writeKey}/settings`` returns:
  the document analytics.js and the mobile SDKs read at start-up, its
  ``integrations["Segment.io"]`` pointing at this collector.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from connectors.base import Rejected
from pipeline.core.model import Touchpoint
from pipeline.core.pii import redact
from pipeline.metrics import Registry

log = logging.getLogger("connectors.collector")

#: The route label of a request that matched no route (a 404 or a 405): the path itself
#: would let any scanner add series.
UNMATCHED_ROUTE = "other"
#: The route label of every CORS preflight (``OPTIONS``).
PREFLIGHT_ROUTE = "preflight"
#: Segment's short paths (analytics.js posts to the first letter of the type; the
#: mobile SDKs post batches to ``/b``) and ``/import``, as the long names they stand for.
SHORT_PATHS = {
    "t": "track",
    "p": "page",
    "s": "screen",
    "i": "identify",
    "g": "group",
    "a": "alias",
    "b": "batch",
    "import": "batch",
}
ALLOWED_HEADERS = "Authorization, Content-Type, X-Retry-Count"
ALLOWED_METHODS = "GET, POST, OPTIONS"
_CORS_PREFIXES = ("/v1/", "/projects/")
_SHOWN = 200
_PROJECT_KEY = re.compile(rb"/projects/[^/]*")


@dataclass
class CollectorStats:
    """What the collector answered and stored since it started. Updated on the event
    loop without a lock; :func:`collector_metrics` reads copies at scrape time."""

    #: (route, HTTP status) -> answers; the route is the registered path.
    requests: dict[tuple[str, int], int] = field(default_factory=dict)
    #: source -> touchpoints the broker acknowledged.
    touchpoints: dict[str, int] = field(default_factory=dict)
    #: source -> dead letters the broker acknowledged.
    dead_letters: dict[str, int] = field(default_factory=dict)
    #: kind (preflight, request) -> cross-origin requests refused for their origin.
    cors_refused: dict[str, int] = field(default_factory=dict)
    #: SDK delivery-metrics posts (``/v1/m``) received.
    sdk_metrics: int = 0

    def answered(self, route: str, status: int) -> None:
        key = (route, status)
        self.requests[key] = self.requests.get(key, 0) + 1

    def stored(self, touchpoints: list[Touchpoint], rejected: list[Rejected]) -> None:
        for tp in touchpoints:
            self.touchpoints[tp.source] = self.touchpoints.get(tp.source, 0) + 1
        for rej in rejected:
            self.dead_letters[rej.source] = self.dead_letters.get(rej.source, 0) + 1

    def refused_origin(self, kind: str) -> None:
        self.cors_refused[kind] = self.cors_refused.get(kind, 0) + 1


def collector_metrics(stats: CollectorStats) -> Registry:
    """The collector's metrics, read from *stats* at scrape time (``docs/metrics.md``)."""
    registry = Registry()
    registry.counter(
        "journeys_collector_requests_total",
        "HTTP requests answered, by route and status code (route other: no route matched; "
        "preflight: CORS preflights).",
        lambda: {(route, str(code)): n for (route, code), n in dict(stats.requests).items()},
        labels=("route", "code"),
    )
    registry.counter(
        "journeys_collector_touchpoints_total",
        "Touchpoints published and acknowledged by the broker, by source.",
        lambda: dict(stats.touchpoints),
        labels=("source",),
    )
    registry.counter(
        "journeys_collector_dead_letters_total",
        "Dead letters (refused requests, invalid messages) published and acknowledged by "
        "the broker, by source.",
        lambda: dict(stats.dead_letters),
        labels=("source",),
    )
    registry.counter(
        "journeys_collector_cors_refused_total",
        "Cross-origin requests refused because their Origin is not allowed "
        "(JOURNEYS_COLLECTOR_ALLOWED_ORIGINS), by kind: preflight or request.",
        lambda: dict(stats.cors_refused),
        labels=("kind",),
    )
    registry.counter(
        "journeys_collector_sdk_metrics_total",
        "Delivery-metrics posts of Segment's SDKs (/v1/m), acknowledged and dropped.",
        lambda: stats.sdk_metrics,
    )
    return registry


class RateLimitedLog:
    """At most *per_minute* warnings a minute; the next one says how many were dropped.
    *secrets* (the write keys long enough to recognise) never appear in a line."""

    def __init__(self, per_minute: int = 20, secrets: Sequence[bytes] = ()) -> None:
        self.per_minute = per_minute
        self.secrets = tuple(secrets)
        self._window = 0.0
        self._sent = 0
        self._dropped = 0

    def warning(self, message: str, *args: Any) -> bool:
        now = time.monotonic()
        if now - self._window >= 60.0:
            self._window, self._sent = now, 0
        if self._sent >= self.per_minute:
            self._dropped += 1
            return False
        self._sent += 1
        if self._dropped:
            message += " (%d similar messages dropped)"
            args = (*args, self._dropped)
            self._dropped = 0
        log.warning(message, *args)
        return True


def shown(text: str | None, secrets: Sequence[bytes] = ()) -> str:
    """A header value or path fit for a log line: cut short, without personal data, and
    without a write key (whatever follows ``/projects/``, and each of *secrets*)."""
    if not text:
        return "-"
    cut = text[:_SHOWN] + ("..." if len(text) > _SHOWN else "")
    raw = _PROJECT_KEY.sub(b"/projects/<writeKey>", cut.encode("utf-8", "replace"))
    for secret in secrets:
        raw = raw.replace(secret, b"<redacted>")
    return redact(raw).decode("utf-8", "replace")


def counting(stats: CollectorStats, noise: RateLimitedLog) -> Middleware:
    """An aiohttp middleware that counts every answer in *stats* and logs (through
    *noise*) the requests that matched no route."""

    @web.middleware
    async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        if request.method == "OPTIONS":
            route = PREFLIGHT_ROUTE
        else:
            route = resource.canonical if resource is not None else UNMATCHED_ROUTE
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            stats.answered(route, exc.status)
            if route == UNMATCHED_ROUTE:
                _unmatched(noise, request, exc.status)
            raise
        except Exception:
            stats.answered(route, 500)  # aiohttp answers an unhandled error with a 500
            raise
        stats.answered(route, response.status)
        return response

    return count


def _unmatched(noise: RateLimitedLog, request: web.Request, status: int) -> None:
    noise.warning(
        "%d: no route for %s %s (origin %s, user agent %s); see docs/sources.md for the paths",
        status,
        request.method,
        shown(request.path, noise.secrets),
        shown(request.headers.get("Origin"), noise.secrets),
        shown(request.headers.get("User-Agent"), noise.secrets),
    )


# ---- CORS ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CorsPolicy:
    """The origins browsers may call the Segment paths from: ``*`` (any: a browser
    write key is public by nature), exact origins, or ``https://*.example.com``."""

    origins: tuple[str, ...] = ("*",)

    def refuses(self, request: web.Request) -> bool:
        """True for a browser request to a CORS path from an origin not allowed."""
        origin = request.headers.get("Origin")
        return origin is not None and is_cors_path(request.path) and not self.allows(origin)

    def allows(self, origin: str) -> bool:
        wanted = origin.strip().rstrip("/").lower()
        for pattern in self.origins:
            allowed = pattern.strip().rstrip("/").lower()
            if allowed in ("*", wanted):
                return True
            if "://*." in allowed and _wildcard_match(allowed, wanted):
                return True
        return False


def _wildcard_match(pattern: str, origin: str) -> bool:
    scheme, _, rest = pattern.partition("://*.")
    parts = urlsplit(origin)
    if parts.scheme != scheme or not parts.hostname:
        return False
    suffix_host, _, suffix_port = rest.partition(":")
    if suffix_port and str(parts.port or "") != suffix_port:
        return False
    if not suffix_port and parts.port is not None:
        return False
    return parts.hostname.endswith("." + suffix_host)


def is_cors_path(path: str) -> bool:
    return path.startswith(_CORS_PREFIXES)


def cors(policy: CorsPolicy, stats: CollectorStats, noise: RateLimitedLog) -> Middleware:
    """An aiohttp middleware: CORS on the Segment paths (see the module docstring).

    A ``POST`` from a refused origin to a route is counted and logged here and refused
    by the route (:meth:`CorsPolicy.refuses`), so that its body becomes a dead letter
    like any refused request.
    """

    @web.middleware
    async def handle(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is None or not is_cors_path(request.path):
            return await handler(request)
        allowed = policy.allows(origin)
        if request.method == "OPTIONS":
            if not allowed:
                return _refuse(request, origin, "preflight", stats, noise)
            return web.Response(status=204, headers=_preflight_headers(origin))
        if not allowed:
            if request.method == "POST" and request.match_info.route.resource is not None:
                _log_refusal(request, origin, "request", stats, noise)
                return await handler(request)
            return _refuse(request, origin, "request", stats, noise)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers.update(_allow_headers(origin))
            raise
        response.headers.update(_allow_headers(origin))
        return response

    return handle


def _allow_headers(origin: str) -> dict[str, str]:
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}


def _preflight_headers(origin: str) -> dict[str, str]:
    return {
        **_allow_headers(origin),
        "Access-Control-Allow-Methods": ALLOWED_METHODS,
        "Access-Control-Allow-Headers": ALLOWED_HEADERS,
        "Access-Control-Max-Age": "86400",
    }


def _log_refusal(
    request: web.Request, origin: str, kind: str, stats: CollectorStats, noise: RateLimitedLog
) -> None:
    stats.refused_origin(kind)
    noise.warning(
        "403: %s %s from origin %s refused: not in JOURNEYS_COLLECTOR_ALLOWED_ORIGINS",
        "preflight of" if kind == "preflight" else request.method,
        shown(request.path, noise.secrets),
        shown(origin, noise.secrets),
    )


def _refuse(
    request: web.Request, origin: str, kind: str, stats: CollectorStats, noise: RateLimitedLog
) -> web.Response:
    _log_refusal(request, origin, kind, stats, noise)
    message = "origin not allowed; add it to JOURNEYS_COLLECTOR_ALLOWED_ORIGINS"
    body = {"error": f"Origin: {message}", "field": "Origin", "code": "forbidden"}
    return web.json_response({**body, "message": message}, status=403)


# ---- the settings document -------------------------------------------------------------


def api_host(public_url: str | None, request: web.Request) -> tuple[str, str]:
    """(``apiHost``, protocol) of this collector as the SDKs write it: host, port and
    path prefix without the scheme, ending in ``/v1`` (``collect.example.com/v1``)."""
    if public_url:
        parts = urlsplit(public_url.rstrip("/"))
        return f"{parts.netloc}{parts.path}/v1", parts.scheme or "https"
    return f"{request.host}/v1", request.scheme


def settings_document(write_key: str, host: str, protocol: str) -> dict[str, Any]:
    """The project settings Segment's SDKs load (``/v1/projects/{writeKey}/settings``).

    Only the ``Segment.io`` destination, pointing at this collector; no device-mode
    destinations, no remote plugins, no tracking plan. ``metrics.sampleRate`` 0: the
    SDKs' own delivery telemetry has no use here.
    """
    segment = {
        "apiKey": write_key,
        "apiHost": host,
        "protocol": protocol,
        "unbundledIntegrations": [],
        "addBundledMetadata": True,
        "maybeBundledConfigIds": {},
    }
    default_on = {"__default": {"enabled": True, "integrations": {}}}
    return {
        "integrations": {"Segment.io": segment},
        "plan": {"track": default_on, "identify": default_on, "group": default_on},
        "edgeFunction": {},
        "analyticsNextEnabled": True,
        "middlewareSettings": {},
        "enabledMiddleware": {},
        "metrics": {"sampleRate": 0, "host": host},
        "legacyVideoPluginsEnabled": False,
        "remotePlugins": [],
    }


def origins_setting(value: str | None) -> tuple[str, ...]:
    """``JOURNEYS_COLLECTOR_ALLOWED_ORIGINS`` (comma-separated) as a tuple; ``*`` when empty."""
    found = tuple(o.strip() for o in (value or "").split(",") if o.strip())
    return found or ("*",)
