"""The example agent of docs/extending.md, run in Faust's test context: it posts to a
local HTTP server when a person enters abandoned_cart, and for nothing else."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import faust
import pytest

from pipeline.agents.webhook_example import register
from pipeline.serde import AvroSerde
from pipeline.settings import REPO_ROOT, Settings
from pipeline.topics import Topics

AT = datetime(2026, 9, 2, 9, 5, tzinfo=UTC)


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A local webhook receiver: its URL and the JSON bodies it was sent."""
    bodies: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            length = int(self.headers.get("Content-Length", 0))
            bodies.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            return

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hooks/cart", bodies
    finally:
        server.shutdown()
        server.server_close()


def test_the_example_agent_posts_when_a_person_enters_abandoned_cart(
    receiver: tuple[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, bodies = receiver
    monkeypatch.setenv("ABANDONED_CART_WEBHOOK_URL", url)
    serde = AvroSerde.from_dir(REPO_ROOT / "schemas")
    settings = Settings(topic_prefix="unit")
    app = faust.App("webhook-example-test", broker="kafka://127.0.0.1:9", store="memory://")
    agent = register(app, settings, serde, Topics.from_settings(settings))

    def change(person: str, segment: str, kind: str) -> bytes:
        rec = {
            "person_id": person, "segment": segment, "change": kind, "at": AT,
            "entered_at": AT, "reason": "time", "version": 3,
        }  # fmt: skip
        return serde.encode("AudienceChange", rec)

    async def run() -> None:
        async with agent.test_context() as ctx:
            await ctx.put(change("p-1", "abandoned_cart", "ENTERED"))
            await ctx.put(change("p-1", "abandoned_cart", "EXITED"))
            await ctx.put(change("p-2", "loyal", "ENTERED"))
            await ctx.put(change("p-3", "abandoned_cart", "ENTERED"))
            for _ in range(100):  # put() returns once the agent took the event
                if len(bodies) >= 2:
                    break
                await asyncio.sleep(0.05)

    asyncio.run(run())
    assert bodies == [
        {"event": "abandoned_cart.entered", "person_id": "p-1", "at": AT.isoformat(),
         "reason": "time"},
        {"event": "abandoned_cart.entered", "person_id": "p-3", "at": AT.isoformat(),
         "reason": "time"},
    ]  # fmt: skip


def test_the_example_needs_its_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ABANDONED_CART_WEBHOOK_URL", raising=False)
    settings = Settings(topic_prefix="unit")
    app = faust.App("webhook-example-test-2", broker="kafka://127.0.0.1:9", store="memory://")
    serde = AvroSerde.from_dir(REPO_ROOT / "schemas")
    with pytest.raises(ValueError, match="ABANDONED_CART_WEBHOOK_URL"):
        register(app, settings, serde, Topics.from_settings(settings))
