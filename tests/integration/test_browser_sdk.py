"""analytics.js in a real browser: Segment's ``@segment/analytics-next`` from npm, pinned
in ``tests/browser/package.json`` and loaded unchanged, on a shop page served from
another origin than the collector, in headless Chromium driven over the DevTools
protocol. Every call it makes lands in ``touchpoints`` (matched by ``messageId``),
unflagged, and the browser blocks no request. It runs twice: with the settings given to
``load()``, and with only ``cdnURL`` pointing at the collector (the SDK then loads its
settings from ``/v1/projects/{writeKey}/settings``).

Skipped, saying why, where no Chromium is installed or the pinned SDK cannot be
installed (``npm ci`` in ``tests/browser``; ``.ci/run`` does it).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import itertools
import json
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cli.stack import SinkService, spawn, stop_process
from pipeline.broker import free_port
from pipeline.settings import Settings
from pipeline.topics import ensure_topics
from tests.conftest import REPO, settings_env
from tests.unit.test_report_render import BROWSER

SDK_DIR = REPO / "tests" / "browser"
UMD = SDK_DIR / "node_modules" / "@segment" / "analytics-next" / "dist" / "umd"
WRITE_KEY = "wk-browser-test-5f2d9c"
#: A shopper's Chrome: HeadlessChrome is on the bot list (rightly: it is automation), so
#: the visits of this test present the user agent of the same Chromium, not headless.
DESKTOP_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/{version} Safari/537.36"
)
SHOP_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Trail shop</title>
<script src="/sdk/index.js"></script></head>
<body><h1>Trail runner 2</h1>
<script>
(async () => {
  const q = new URLSearchParams(location.search);
  const writeKey = q.get("key"), api = q.get("api"), mode = q.get("mode");
  // The two ways a site points analytics.js at Journeys: its API host in the settings,
  // or its CDN (the settings' source) and nothing else.
  const settings = mode === "settings"
    ? {writeKey, cdnSettings: {integrations: {"Segment.io": {
        apiKey: writeKey, apiHost: api + "/v1", protocol: "http"}}}}
    : {writeKey, cdnURL: "http://" + api};
  const out = {ids: [], failed: [], calls: 0, ua: navigator.userAgent};
  try {
    const [analytics] = await AnalyticsNext.AnalyticsBrowser.load(settings);
    const order = "o-" + mode;
    const calls = [
      () => analytics.page("Product", "Trail runner 2", {category: "shoes"}),
      () => analytics.track("Product Viewed", {product_id: "trail-runner-2", price: 89}),
      () => analytics.track("Product Added", {product_id: "trail-runner-2", price: 89}),
      () => analytics.identify("shopper-" + mode, {email: "Ana.Browser@Example.com"}),
      () => analytics.track("Checkout Started", {order_id: order, value: 89}),
      () => analytics.track("Order Completed",
                            {order_id: order, revenue: 89, total: 95.5, currency: "EUR"}),
      () => analytics.group("household-" + mode, {name: "Ana's"}),
      () => analytics.alias("shopper-" + mode + "-new", "shopper-" + mode),
      () => analytics.page("Checkout", "Thank you"),
    ];
    for (const call of calls) {
      const ctx = await call();
      out.calls += 1;
      out.ids.push(ctx.event.messageId);
      if (ctx.failedDelivery()) out.failed.push(String(ctx.failedDelivery().reason));
    }
  } catch (e) {
    out.error = String(e && e.stack || e);
  }
  window.__journeys = out;
})();
</script></body></html>
"""


# ---- what the test needs -----------------------------------------------------------------


def sdk_or_skip() -> Path:
    """The pinned SDK's browser build, installed with ``npm ci`` when missing."""
    if BROWSER is None:
        pytest.skip("no headless Chromium on PATH (apt-get install chromium)")
    if not (UMD / "index.js").is_file():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("the pinned @segment/analytics-next is not installed and npm is missing")
        done = subprocess.run(  # noqa: S603 - npm from PATH, fixed arguments
            [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
            cwd=SDK_DIR,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        if done.returncode != 0 or not (UMD / "index.js").is_file():
            pytest.skip(f"npm ci in tests/browser failed (offline?): {done.stderr[-300:]}")
    return UMD


@contextlib.contextmanager
def shop_site(sdk: Path) -> Iterator[str]:
    """The shop: its page and the SDK's files, on a loopback port of their own."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/shop.html":
                self._send(SHOP_PAGE.encode(), "text/html; charset=utf-8")
            elif path.startswith("/sdk/") and "/" not in path[5:] and (sdk / path[5:]).is_file():
                self._send((sdk / path[5:]).read_bytes(), "application/javascript")
            elif path == "/favicon.ico":
                self._send(b"", "image/x-icon")
            else:
                self.send_error(404)

        def _send(self, body: bytes, kind: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{url}: the process exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback
                return json.loads(resp.read() or b"null")
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class DevTools:
    """A minimal Chrome DevTools Protocol client over one page's WebSocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: list[dict[str, Any]] = []
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data and data["id"] in self.pending:
                self.pending.pop(data["id"]).set_result(data)
            elif "method" in data:
                self.events.append(data)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self.ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[ident] = future
        await self.ws.send_json({"id": ident, "method": method, "params": params})
        answer = await asyncio.wait_for(future, 30)
        assert "error" not in answer, answer
        return dict(answer.get("result", {}))


async def visit(debug_port: int, url: str, timeout: float = 40.0) -> tuple[Any, list[Any]]:
    """Open *url* in the browser; (what the page reported, the network events)."""
    targets = wait_http(f"http://127.0.0.1:{debug_port}/json/list", 10)
    page = next(t for t in targets if t["type"] == "page")
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws,
    ):
        tools = DevTools(ws)
        await tools.call("Network.enable")
        await tools.call("Page.enable")
        await tools.call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        result: Any = None
        while time.monotonic() < deadline:
            answer = await tools.call(
                "Runtime.evaluate", expression="JSON.stringify(window.__journeys || null)"
            )
            result = json.loads(answer["result"].get("value") or "null")
            if result is not None:
                break
            await asyncio.sleep(0.2)
        # Retries and the SDK's own metrics may still be under way: let them show.
        await asyncio.sleep(1.0)
        await tools.call("Page.navigate", url="about:blank")
        tools.reader.cancel()
        return result, list(tools.events)


@contextlib.contextmanager
def chromium(tmp: Path) -> Iterator[int]:
    assert BROWSER is not None
    version = subprocess.run(  # noqa: S603 - the browser found on PATH
        [BROWSER, "--version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout
    found = re.search(r"(\d+\.\d+\.\d+\.\d+)", version)
    port = free_port()
    proc = subprocess.Popen(  # noqa: S603 - the browser found on PATH, fixed arguments
        [
            BROWSER,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-extensions",
            "--disable-dev-shm-usage",
            f"--user-agent={DESKTOP_UA.format(version=found.group(1) if found else '131.0.0.0')}",
            f"--user-data-dir={tmp / 'profile'}",
            f"--remote-debugging-port={port}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/json/version", 30, proc)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def collector_calls(events: list[dict[str, Any]], api: str) -> dict[str, list[Any]]:
    """The browser's requests to the collector: their answers and their failures."""
    to_api = {
        e["params"]["requestId"]: e["params"]["request"]
        for e in events
        if e["method"] == "Network.requestWillBeSent"
        and e["params"]["request"]["url"].startswith(f"http://{api}/")
    }
    out: dict[str, list[Any]] = {"answers": [], "failures": []}
    for e in events:
        rid = e["params"].get("requestId")
        if rid not in to_api:
            continue
        if e["method"] == "Network.responseReceived":
            response = e["params"]["response"]
            out["answers"].append((to_api[rid]["method"], response["url"], response["status"]))
        elif e["method"] == "Network.loadingFailed":
            out["failures"].append((to_api[rid]["url"], e["params"]))
    return out


def scalar_rows(service: SinkService, sql: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in service.query(sql)[1]]


# ---- the test ----------------------------------------------------------------------------


@pytest.mark.timeout(150)
def test_analytics_next_in_chromium_lands_every_call(
    stack_settings: Settings, tmp_path: Path
) -> None:
    sdk = sdk_or_skip()
    cfg = stack_settings
    db = cfg.clickhouse_database
    ensure_topics(cfg)
    service = SinkService(cfg, serve_queries=False).start()
    worker = spawn(["worker"], env=settings_env(cfg))
    collector_port = free_port()
    api = f"127.0.0.1:{collector_port}"
    with shop_site(sdk) as shop:
        env = settings_env(cfg) | {
            "JOURNEYS_COLLECTOR_PORT": str(collector_port),
            "JOURNEYS_WRITE_KEYS": WRITE_KEY,
            # the shop's origin only: a refused origin would show as a blocked request
            "JOURNEYS_COLLECTOR_ALLOWED_ORIGINS": shop,
        }
        collector = spawn(["collect"], env=env)
        try:
            wait_http(f"http://{api}/healthz", 30, collector)
            with chromium(tmp_path) as debug_port:
                for mode in ("settings", "cdn"):
                    url = f"{shop}/shop.html?mode={mode}&key={WRITE_KEY}&api={api}"
                    result, events = asyncio.run(visit(debug_port, url))
                    check_visit(service, db, mode, result, events, api)
        finally:
            stop_process(collector)
            stop_process(worker)
            service.stop()


def check_visit(
    service: SinkService,
    db: str,
    mode: str,
    result: Any,
    events: list[dict[str, Any]],
    api: str,
) -> None:
    assert result is not None, f"{mode}: the page never finished"
    assert "error" not in result, (mode, result.get("error"))
    assert result["calls"] == 9 and len(set(result["ids"])) == 9, (mode, result)
    assert result["failed"] == [], (mode, result["failed"])
    assert "HeadlessChrome" not in result["ua"]
    calls = collector_calls(events, api)
    # The browser blocked nothing: no CORS error, no failed request to the collector.
    assert calls["failures"] == [], (mode, calls["failures"])
    paths = {re.sub(r"^http://[^/]+", "", u).split("?")[0] for _m, u, _s in calls["answers"]}
    assert {"/v1/p", "/v1/t", "/v1/i", "/v1/g", "/v1/a"} <= paths, (mode, paths)
    if mode == "cdn":
        assert f"/v1/projects/{WRITE_KEY}/settings" in paths
    assert all(status < 400 for _m, _u, status in calls["answers"]), (mode, calls["answers"])

    ids = ", ".join(f"'{i}'" for i in result["ids"])
    sql = (
        f"SELECT source_event_id, event_type, is_bot, device_type, revenue, "
        f"arrayStringConcat(identifier_types, ',') FROM {db}.touchpoints FINAL "
        f"WHERE source = 'segment' AND source_event_id IN ({ids})"
    )
    deadline = time.monotonic() + 40
    rows: list[tuple[Any, ...]] = []
    while time.monotonic() < deadline:
        rows = scalar_rows(service, sql)
        if len(rows) >= 9:
            break
        time.sleep(0.3)
    assert {r[0] for r in rows} == set(result["ids"]), (mode, rows)
    kinds = sorted(r[1] for r in rows)
    assert kinds == sorted(
        ["page_view", "page_view", "product_viewed", "product_added", "identify",
         "checkout_started", "order_completed", "group", "alias"]
    ), kinds  # fmt: skip
    # Real visits: none flagged as a bot, a desktop browser, the order's revenue kept.
    assert not any(r[2] for r in rows), (mode, rows)
    assert {r[3] for r in rows} == {"desktop"}, (mode, rows)
    assert sum(r[4] for r in rows) == 89.0
    identify = next(r for r in rows if r[1] == "identify")
    assert "email_sha256" in identify[5]
