"""What Segment's browser and mobile SDKs need from the collector: short paths, any body
(text/plain, gzip, chunked), CORS, the settings document, /v1/m, logged unknown routes."""

from __future__ import annotations

import base64
import gzip
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pydantic import SecretStr

from connectors.collector import CollectorStats, collector_metrics
from connectors.collector_http import CorsPolicy, RateLimitedLog, origins_setting
from tests.unit.connectors.test_collector import DEV, FakeStore, run

KEY = "wk-browser-0123456789"
BASIC = {"Authorization": "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()}
SHOP = "http://shop.example.test:8000"


def message(kind: str, n: int = 1, **extra: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "type": kind,
        "anonymousId": "anon-1",
        "messageId": f"ajs-next-{kind}-{n}",
        "timestamp": "2026-10-01T10:00:00.000Z",
        "context": {
            "page": {"url": "https://shop.example.test/p/1", "referrer": ""},
            "userAgent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
            "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        },
    }
    if kind == "track":
        msg["event"] = "Product Added"
    if kind == "alias":
        msg.update(userId="u-1", previousId="anon-1")
    return {**msg, **extra}


async def text_post(
    client: TestClient[Any, Any], path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, Any, dict[str, str]]:
    resp = await client.post(path, data=body, headers={"Content-Type": "text/plain", **headers})
    text = await resp.text()
    try:
        parsed: Any = json.loads(text)
    except json.JSONDecodeError:
        parsed = text
    return resp.status, parsed, dict(resp.headers)


# ---- paths and bodies ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("short", "kind", "event_type"),
    [
        ("t", "track", "product_added"),
        ("p", "page", "page_view"),
        ("s", "screen", "screen_view"),
        ("i", "identify", "identify"),
        ("g", "group", "group"),
        ("a", "alias", "alias"),
    ],
)
def test_the_short_paths_behave_like_their_long_names(
    short: str, kind: str, event_type: str
) -> None:
    store = FakeStore()
    msg = message(kind)
    del msg["type"]  # analytics.js sends it, but the path alone must be enough
    body = json.dumps({**msg, "writeKey": KEY}).encode()
    status, answer, _ = run(
        lambda c: text_post(c, f"/v1/{short}", body, BASIC), store, write_keys=(SecretStr(KEY),)
    )
    assert status == 200, answer
    (tp,) = store.touchpoints
    assert tp.event_type == event_type and tp.source_event_id == f"ajs-next-{kind}-1"
    assert store.rejected == []


@pytest.mark.parametrize("path", ["/v1/b", "/v1/import", "/v1/batch"])
def test_the_batch_paths_take_a_batch(path: str) -> None:
    store = FakeStore()
    batch = {"batch": [message("page", 1), message("track", 2)], "writeKey": KEY}
    status, answer, _ = run(
        lambda c: text_post(c, path, json.dumps(batch).encode(), {}),
        store,
        write_keys=(SecretStr(KEY),),
    )
    assert (status, answer["accepted"]) == (200, 2)
    assert [t.event_type for t in store.touchpoints] == ["page_view", "product_added"]


def test_json_without_a_content_type_is_read() -> None:
    store = FakeStore()

    async def scenario(client: TestClient[Any, Any]) -> int:
        body = json.dumps(message("track")).encode()
        resp = await client.post("/v1/t", data=body, headers={**DEV, "Content-Type": ""})
        return resp.status

    assert run(scenario, store) == 200
    assert len(store.touchpoints) == 1


def kotlin_batch(n: int, write_key: str) -> bytes:
    """A batch file as analytics-kotlin's EventsFileManager writes it (the write key in the
    body, no Authorization header)."""
    events = ",".join(
        json.dumps(
            {
                **message("track", i, event="Order Completed"),
                "properties": {"revenue": 10 + i, "order_id": f"o-{i}"},
                "context": {
                    "app": {"name": "Shop", "version": "5.1"},
                    "device": {"id": "dev-1", "type": "android", "model": "Pixel 8"},
                    "os": {"name": "Android", "version": "14"},
                    "library": {"name": "analytics-kotlin", "version": "1.15.0"},
                    "userAgent": "Dalvik/2.1.0 (Linux; U; Android 14; Pixel 8 Build/AP1A)",
                },
            },
            separators=(",", ":"),
        )
        for i in range(n)
    )
    return (
        '{"batch":[' + events + f'],"sentAt":"2026-10-01T10:00:05.000Z","writeKey":"{write_key}"}}'
    ).encode()


async def chunks(data: bytes, size: int = 997) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def test_a_kotlin_shaped_gzip_chunked_text_batch_to_v1_b_lands_entirely() -> None:
    store = FakeStore()
    body = gzip.compress(kotlin_batch(200, KEY))

    async def scenario(client: TestClient[Any, Any]) -> tuple[int, Any]:
        headers = {
            "Content-Type": "text/plain",
            "Content-Encoding": "gzip",
            "User-Agent": "analytics-kotlin/1.15.0",
        }
        resp = await client.post("/v1/b", data=chunks(body), headers=headers)
        assert resp.request_info.headers.get("Transfer-Encoding") == "chunked"
        return resp.status, await resp.json()

    status, answer = run(scenario, store, write_keys=(SecretStr(KEY),))
    assert (status, answer["accepted"]) == (200, 200)
    assert {t.source_event_id for t in store.touchpoints} == {
        f"ajs-next-track-{i}" for i in range(200)
    }
    assert {t.device_type for t in store.touchpoints} == {"mobile"}
    assert sum(t.revenue or 0 for t in store.touchpoints) == sum(10 + i for i in range(200))


def test_a_gzip_bomb_is_refused_by_its_decompressed_size() -> None:
    store = FakeStore()
    bomb = gzip.compress(b'{"batch":[' + b" " * (64 * 1024 * 1024))  # 64 MiB of blanks
    assert len(bomb) < 128 * 1024

    async def scenario(client: TestClient[Any, Any]) -> int:
        hdrs = {**DEV, "Content-Type": "text/plain", "Content-Encoding": "gzip"}
        resp = await client.post("/v1/b", data=bomb, headers=hdrs)
        return resp.status

    assert run(scenario, store, max_body_bytes=256 * 1024) == 413
    (dead,) = store.rejected
    assert "larger than 262144 bytes" in dead.error and dead.raw.startswith(b'{"batch":[')
    assert len(dead.raw) <= 4096


def test_a_body_that_is_not_gzip_is_a_400_naming_the_encoding() -> None:
    store = FakeStore()

    async def scenario(client: TestClient[Any, Any]) -> tuple[int, Any]:
        hdrs = {**DEV, "Content-Type": "text/plain", "Content-Encoding": "gzip"}
        resp = await client.post("/v1/t", data=b"not gzip at all", headers=hdrs)
        return resp.status, await resp.json()

    status, answer = run(scenario, store)
    assert status == 400 and answer["field"] == "Content-Encoding"
    assert len(store.rejected) == 1 and store.touchpoints == []


# ---- CORS ------------------------------------------------------------------------------


def test_a_preflight_from_an_allowed_origin_is_answered() -> None:
    async def scenario(client: TestClient[Any, Any]) -> tuple[int, dict[str, str]]:
        resp = await client.options(
            "/v1/t",
            headers={
                "Origin": SHOP,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,x-retry-count",
            },
        )
        return resp.status, dict(resp.headers)

    status, headers = run(scenario, FakeStore())
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == SHOP
    allowed = {h.strip().lower() for h in headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type", "x-retry-count"} <= allowed
    assert "POST" in headers["Access-Control-Allow-Methods"]


def test_every_answer_to_a_browser_carries_the_allow_origin_header() -> None:
    store = FakeStore()

    async def scenario(client: TestClient[Any, Any]) -> list[tuple[int, str | None]]:
        out = []
        for body, headers in (
            (json.dumps(message("page")).encode(), BASIC),  # 200
            (b"{", BASIC),  # 400
            (json.dumps(message("page")).encode(), {}),  # 401
        ):
            status, _, hdrs = await text_post(client, "/v1/p", body, {"Origin": SHOP, **headers})
            out.append((status, hdrs.get("Access-Control-Allow-Origin")))
        resp = await client.get("/v1/nowhere", headers={"Origin": SHOP})
        out.append((resp.status, resp.headers.get("Access-Control-Allow-Origin")))
        return out

    answers = run(scenario, store, write_keys=(SecretStr(KEY),))
    assert answers == [(200, SHOP), (400, SHOP), (401, SHOP), (404, SHOP)]


def test_a_preflight_from_an_origin_not_allowed_is_refused_counted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stats = CollectorStats()
    caplog.set_level(logging.WARNING)

    async def scenario(client: TestClient[Any, Any]) -> tuple[int, Any, dict[str, str]]:
        resp = await client.options(
            "/v1/t",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        return resp.status, await resp.json(), dict(resp.headers)

    async def main() -> tuple[int, Any, dict[str, str]]:
        from aiohttp.test_utils import TestServer

        from connectors.collector import CollectorConfig, create_collector

        config = CollectorConfig(allowed_origins=(SHOP, "https://*.shop.example"))
        app = create_collector(config, FakeStore(), stats)
        async with TestClient(TestServer(app)) as client:
            return await scenario(client)

    import asyncio

    status, answer, headers = asyncio.run(main())
    assert status == 403 and answer["field"] == "Origin"
    assert "Access-Control-Allow-Origin" not in headers
    assert stats.cors_refused == {"preflight": 1}
    series = collector_metrics(stats).render()
    assert 'journeys_collector_cors_refused_total{kind="preflight"} 1' in series
    assert 'journeys_collector_requests_total{route="preflight",code="403"} 1' in series
    assert any(
        "https://evil.example" in r.getMessage() and "/v1/t" in r.getMessage()
        for r in caplog.records
    )


def test_a_post_from_an_origin_not_allowed_is_a_403_and_a_dead_letter() -> None:
    store = FakeStore()
    body = json.dumps(message("track")).encode()
    status, answer, headers = run(
        lambda c: text_post(c, "/v1/t", body, {**DEV, "Origin": "https://evil.example"}),
        store,
        allowed_origins=(SHOP,),
    )
    assert status == 403 and answer["field"] == "Origin"
    assert store.touchpoints == [] and len(store.rejected) == 1
    assert "Origin" in store.rejected[0].error


def test_origin_patterns() -> None:
    policy = CorsPolicy(("https://shop.example", "https://*.shop.example"))
    assert policy.allows("https://shop.example")
    assert policy.allows("https://SHOP.example/")
    assert policy.allows("https://www.shop.example")
    assert not policy.allows("http://www.shop.example")
    assert not policy.allows("https://evilshop.example")
    assert not policy.allows("https://www.shop.example:8443")
    assert not policy.allows("null")
    assert CorsPolicy().allows("https://anything.example")
    assert origins_setting(" https://a.example, ,https://b.example ") == (
        "https://a.example",
        "https://b.example",
    )
    assert origins_setting("") == ("*",)


def test_vendor_webhooks_get_no_cors() -> None:
    async def scenario(client: TestClient[Any, Any]) -> tuple[int, str | None]:
        resp = await client.options(
            "/webhooks/shopify",
            headers={"Origin": SHOP, "Access-Control-Request-Method": "POST"},
        )
        return resp.status, resp.headers.get("Access-Control-Allow-Origin")

    status, allow = run(scenario, FakeStore())
    assert status == 405 and allow is None


# ---- settings, metrics, unknown routes -------------------------------------------------


@pytest.mark.parametrize("prefix", ["/v1", ""])
def test_the_settings_name_this_collector(prefix: str) -> None:
    async def scenario(client: TestClient[Any, Any]) -> tuple[int, Any, int]:
        resp = await client.get(f"{prefix}/projects/{KEY}/settings", headers={"Origin": SHOP})
        unknown = await client.get(f"{prefix}/projects/nope/settings")
        assert resp.headers["Access-Control-Allow-Origin"] == SHOP
        return resp.status, await resp.json(), unknown.status

    status, doc, unknown = run(
        scenario,
        FakeStore(),
        write_keys=(SecretStr(KEY),),
        public_url="https://collect.shop.example",
    )
    assert (status, unknown) == (200, 404)
    segment = doc["integrations"]["Segment.io"]
    assert segment["apiKey"] == KEY
    assert segment["apiHost"] == "collect.shop.example/v1"
    assert segment["protocol"] == "https"
    assert list(doc["integrations"]) == ["Segment.io"]


def test_without_a_public_url_the_settings_name_the_request_host() -> None:
    async def scenario(client: TestClient[Any, Any]) -> tuple[Any, str]:
        resp = await client.get(f"/v1/projects/{KEY}/settings")
        return await resp.json(), f"{client.host}:{client.port}"

    doc, host = run(scenario, FakeStore(), write_keys=(SecretStr(KEY),))
    assert doc["integrations"]["Segment.io"]["apiHost"] == f"{host}/v1"
    assert doc["integrations"]["Segment.io"]["protocol"] == "http"


def test_sdk_metrics_are_acknowledged_counted_and_never_dead_letters() -> None:
    store = FakeStore()
    stats = CollectorStats()
    series = {"series": [{"type": "Counter", "metric": "analytics_js.invoke", "value": 1}]}

    async def main() -> list[int]:
        from aiohttp.test_utils import TestServer

        from connectors.collector import CollectorConfig, create_collector

        app = create_collector(CollectorConfig(), store, stats)
        async with TestClient(TestServer(app)) as client:
            out = []
            for body in (json.dumps(series).encode(), b"garbage"):
                status, _, _ = await text_post(client, "/v1/m", body, {"Origin": SHOP})
                out.append(status)
            return out

    import asyncio

    assert asyncio.run(main()) == [200, 200]
    assert stats.sdk_metrics == 2
    assert store.rejected == [] and store.touchpoints == []
    assert "journeys_collector_sdk_metrics_total 2" in collector_metrics(stats).render()


def test_unknown_routes_are_logged_with_path_and_origin(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)

    async def scenario(client: TestClient[Any, Any]) -> int:
        resp = await client.post(
            "/v2/track?email=ana@example.com", data=b"{}", headers={"Origin": SHOP}
        )
        return resp.status

    assert run(scenario, FakeStore()) == 404
    (line,) = [r.getMessage() for r in caplog.records if "no route" in r.getMessage()]
    assert "/v2/track" in line and SHOP in line and "ana@example.com" not in line


def test_the_log_of_unknown_routes_is_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    noise = RateLimitedLog(per_minute=3)
    sent = [noise.warning("no route for %s", f"/x/{i}") for i in range(10)]
    assert sent == [True] * 3 + [False] * 7
    assert len(caplog.records) == 3
