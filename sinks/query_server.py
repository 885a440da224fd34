"""Read-only queries against a chDB path that another process owns.

chDB lets one process open a data path. The process that owns it (``journeys run``
or ``journeys sink``) serves read-only SQL on a loopback port and writes an owner
file beside the path; ``journeys query`` and the report find it there and send
their SQL to it, so analysts can query while the pipeline runs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sinks.clickhouse import LockedClient, SinkError

log = logging.getLogger(__name__)

MAX_SQL_BYTES = 1_000_000


def owner_file(chdb_url: str) -> Path | None:
    if not chdb_url.startswith("chdb://"):
        return None
    path = Path(chdb_url[len("chdb://") :]).expanduser().resolve()
    return path.with_name(path.name + ".owner.json")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def find_owner(chdb_url: str) -> int | None:
    """The query port of the live process that owns *chdb_url*, if any."""
    path = owner_file(chdb_url)
    if path is None or not path.exists():
        return None
    try:
        info = json.loads(path.read_text())
        pid, port = int(info["pid"]), int(info["port"])
    except (ValueError, KeyError, OSError):
        return None
    return port if _alive(pid) and pid != os.getpid() else None


def remote_query(port: int, sql: str, timeout: float = 120.0) -> bytes:
    req = urllib.request.Request(  # noqa: S310 - loopback URL built here
        f"http://127.0.0.1:{port}/query", data=sql.encode("utf-8"), method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            body: bytes = resp.read()
            return body
    except urllib.error.HTTPError as exc:
        raise SinkError(exc.read().decode("utf-8", "replace").strip()) from exc
    except OSError as exc:
        raise SinkError(f"the process that owns the ClickHouse data did not answer: {exc}") from exc


class QueryServer:
    """Serves ``POST /query`` (SQL in the body, result as ClickHouse formats it)."""

    def __init__(self, client: LockedClient, chdb_url: str, port: int = 0) -> None:
        self.client = client
        self.settings = client.analyst_settings()  # the read-only profile, one place
        self.owner = owner_file(chdb_url)
        server_self = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                length = int(self.headers.get("Content-Length") or 0)
                if self.path != "/query" or length > MAX_SQL_BYTES:
                    self.send_error(404 if self.path != "/query" else 413)
                    return
                sql = self.rfile.read(length).decode("utf-8", "replace")
                try:
                    body = server_self.client.raw_query(sql, settings=server_self.settings)
                    status = 200
                except Exception as exc:  # noqa: BLE001 - report any engine error to the caller
                    body, status = str(exc).encode(), 400
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                log.debug(format, *args)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()
        if self.owner is not None:
            self.owner.write_text(json.dumps({"pid": os.getpid(), "port": self.port}))
        log.info("read-only query endpoint on 127.0.0.1:%d", self.port)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self.owner is not None:
            with contextlib.suppress(FileNotFoundError):
                self.owner.unlink()
