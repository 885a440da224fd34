"""A local S3 endpoint on plain files: where the persistent embedded broker keeps its data.

Tansu's ``s3://`` storage keeps every record batch, watermark and its metadata as
objects, and relies on conditional writes: ``If-None-Match: *`` to create an object
only if it does not exist, ``If-Match: <etag>`` to replace only the version it read.
``rclone serve s3`` ignores both, so after a restart Tansu's first writes replaced the
partitions' watermarks and overwrote their first record batches (measured: offsets
started at 0 again). This endpoint implements the few calls Tansu makes (PUT, GET, HEAD,
DELETE, ListObjectsV2, DeleteObjects) with those conditions, one object per file,
written atomically (temporary file, then rename). It binds loopback and has no
authentication: run it with ``python -m pipeline.s3files ROOT --port N``.
"""

from __future__ import annotations

import argparse
import bisect
import os
import re
import sys
import threading
import uuid
from datetime import UTC, datetime
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

_LOCKS = [threading.Lock() for _ in range(64)]
_KEY_RE = re.compile(r"<Key>(.*?)</Key>", re.S)


def _etag(stat: os.stat_result) -> str:
    return f'"{stat.st_ino:x}-{stat.st_mtime_ns:x}-{stat.st_size:x}"'


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class Store:
    """Objects of every bucket as files under *root*/<bucket>/<key>.

    Tansu lists a partition's whole ``records/`` folder on every fetch, so the sorted
    names of folders without subfolders are cached, and kept up to date by this
    process's own writes and deletes (nothing else writes there while it runs).
    """

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.tmp = self.root / ".tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        for leftover in self.tmp.iterdir():  # writes a kill interrupted: never renamed
            leftover.unlink()
        self._names: dict[Path, list[str]] = {}
        self._names_lock = threading.Lock()

    def path(self, bucket: str, key: str) -> Path:
        if not bucket or bucket.startswith(".") or ".." in key.split("/"):
            raise ValueError(f"bad object name {bucket}/{key}")
        return self.root / bucket / key

    @staticmethod
    def lock(path: Path) -> threading.Lock:
        return _LOCKS[hash(path) % len(_LOCKS)]

    def write(self, path: Path, body: bytes) -> os.stat_result:
        tmp = self.tmp / uuid.uuid4().hex
        with tmp.open("wb") as handle:
            handle.write(body)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, path)
        with self._names_lock:
            names = self._names.get(path.parent)
            if names is not None:
                at = bisect.bisect_left(names, path.name)
                if at == len(names) or names[at] != path.name:
                    names.insert(at, path.name)
            self._names.pop(path.parent.parent, None)  # it may have a new subfolder
        return path.stat()

    def delete(self, path: Path) -> None:
        with self._names_lock:
            names = self._names.get(path.parent)
            if names is not None:
                at = bisect.bisect_left(names, path.name)
                if at < len(names) and names[at] == path.name:
                    del names[at]
        try:
            path.unlink()
        except FileNotFoundError:
            return

    def _flat_names(self, folder: Path) -> list[str] | None:
        """The sorted file names of *folder* if it has no subfolder, else None."""
        with self._names_lock:
            cached = self._names.get(folder)
            if cached is not None:
                return cached
        names = []
        for item in os.scandir(folder):
            if item.is_dir():
                return None
            names.append(item.name)
        names.sort()
        with self._names_lock:
            return self._names.setdefault(folder, names)

    def listing(
        self, bucket: str, prefix: str, delimiter: str, after: str, limit: int
    ) -> tuple[list[tuple[str, os.stat_result]], list[str], str | None]:
        """(objects, common prefixes, next token) of *bucket* under *prefix*, in key order."""
        base = self.root / bucket
        folder = base / prefix.rpartition("/")[0] if "/" in prefix else base
        if not folder.is_dir():
            return [], [], None
        rel = folder.relative_to(base).as_posix()
        start = "" if rel == "." else rel + "/"
        keys: list[str] = []  # sorted; common prefixes end with "/"
        names = self._flat_names(folder)
        if names is not None:
            # The matching names are one run of the sorted list: no copy of all of them.
            want = prefix[len(start) :]
            with self._names_lock:
                at = bisect.bisect_left(names, want)
                if after.startswith(start):
                    at = max(at, bisect.bisect_right(names, after[len(start) :]))
                elif after > start:
                    at = len(names)
                page = [start + n for n in names[at : at + limit + 1] if n.startswith(want)]
            return self._page(base, page[:limit], len(page) > limit)
        if delimiter == "/":
            for item in os.scandir(folder):
                key = start + item.name + ("/" if item.is_dir() else "")
                if key.startswith(prefix):
                    keys.append(key)
            keys.sort()
        else:
            for dirpath, _dirs, files in os.walk(folder):
                sub = Path(dirpath).relative_to(base).as_posix()
                head = "" if sub == "." else sub + "/"
                keys += [head + name for name in files if (head + name).startswith(prefix)]
            keys.sort()
        first = bisect.bisect_right(keys, after) if after else 0
        return self._page(base, keys[first : first + limit], first + limit < len(keys))

    @staticmethod
    def _page(
        base: Path, page: list[str], more: bool
    ) -> tuple[list[tuple[str, os.stat_result]], list[str], str | None]:
        objects: list[tuple[str, os.stat_result]] = []
        prefixes: list[str] = []
        for key in page:
            if key.endswith("/"):
                prefixes.append(key)
                continue
            try:
                objects.append((key, (base / key).stat()))
            except FileNotFoundError:
                continue
        return objects, prefixes, (page[-1] if more and page else None)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # small responses: no 40 ms delayed-ACK stalls
    server: Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        return

    # -- plumbing --------------------------------------------------------------------

    def _target(self) -> tuple[str, str, dict[str, list[str]]]:
        parts = urlsplit(self.path)
        bucket, _, key = unquote(parts.path).lstrip("/").partition("/")
        return bucket, key, parse_qs(parts.query, keep_blank_values=True)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _reply(
        self,
        status: int,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        content_length: int | None = None,
    ) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header(
            "Content-Length", str(len(body) if content_length is None else content_length)
        )
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str) -> None:
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
            f"<Message>{escape(message)}</Message></Error>"
        ).encode()
        if status in (HTTPStatus.NOT_MODIFIED, HTTPStatus.NO_CONTENT):
            body = b""
        self._reply(status, body, {"Content-Type": "application/xml"})

    def _meta(self, stat: os.stat_result) -> dict[str, str]:
        return {
            "ETag": _etag(stat),
            "Last-Modified": formatdate(stat.st_mtime, usegmt=True),
        }

    # -- verbs -----------------------------------------------------------------------

    def do_PUT(self) -> None:  # noqa: N802 - http.server's naming
        bucket, key, _query = self._target()
        body = self._body()
        try:
            path = self.server.store.path(bucket, key)
        except ValueError as exc:
            return self._error(400, "InvalidArgument", str(exc))
        if_none = self.headers.get("If-None-Match")
        if_match = self.headers.get("If-Match")
        with self.server.store.lock(path):
            try:
                current: os.stat_result | None = path.stat()
            except FileNotFoundError:
                current = None
            if if_none == "*" and current is not None:
                return self._error(412, "PreconditionFailed", f"{key} exists")
            if if_match is not None and (current is None or _etag(current) != if_match):
                return self._error(412, "PreconditionFailed", f"{key} changed")
            stat = self.server.store.write(path, body)
        return self._reply(200, b"", {"ETag": _etag(stat)})

    def do_GET(self) -> None:  # noqa: N802
        bucket, key, query = self._target()
        if not key:
            return self._list(bucket, query)
        try:
            path = self.server.store.path(bucket, key)
            stat = path.stat()
            data = b"" if self.command == "HEAD" else path.read_bytes()
        except (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return self._error(404, "NoSuchKey", key)
        etag = _etag(stat)
        if self.headers.get("If-None-Match") == etag:
            return self._reply(304, b"", {"ETag": etag}, content_length=0)
        match = self.headers.get("If-Match")
        if match is not None and match != etag:
            return self._error(412, "PreconditionFailed", key)
        headers = {**self._meta(stat), "Content-Type": "application/octet-stream"}
        wanted = self.headers.get("Range")
        if wanted and self.command == "GET":
            found = re.fullmatch(r"bytes=(\d*)-(\d*)", wanted.strip())
            if found:
                first = int(found[1] or 0)
                last = int(found[2]) if found[2] else stat.st_size - 1
                data = data[first : last + 1]
                headers["Content-Range"] = f"bytes {first}-{first + len(data) - 1}/{stat.st_size}"
                return self._reply(206, data, headers)
        return self._reply(200, data, headers, content_length=stat.st_size)

    do_HEAD = do_GET  # noqa: N815

    def do_DELETE(self) -> None:  # noqa: N802
        bucket, key, _query = self._target()
        try:
            path = self.server.store.path(bucket, key)
        except ValueError as exc:
            return self._error(400, "InvalidArgument", str(exc))
        with self.server.store.lock(path):
            self.server.store.delete(path)
        return self._reply(204)

    def do_POST(self) -> None:  # noqa: N802
        bucket, _key, query = self._target()
        body = self._body()
        if "delete" not in query:
            return self._error(501, "NotImplemented", "only DeleteObjects is served")
        for key in _KEY_RE.findall(body.decode()):
            path = self.server.store.path(bucket, unescape_xml(key))
            with self.server.store.lock(path):
                self.server.store.delete(path)
        out = b'<?xml version="1.0" encoding="UTF-8"?><DeleteResult></DeleteResult>'
        return self._reply(200, out, {"Content-Type": "application/xml"})

    def _list(self, bucket: str, query: dict[str, list[str]]) -> None:
        if not bucket:
            return self._error(400, "InvalidArgument", "no bucket")

        def arg(name: str) -> str:
            return query.get(name, [""])[0]

        prefix, delimiter = arg("prefix"), arg("delimiter")
        after = max(arg("continuation-token"), arg("start-after"))
        limit = int(arg("max-keys") or 1000)
        objects, prefixes, token = self.server.store.listing(
            bucket, prefix, delimiter, after, limit
        )
        parts = [
            '<?xml version="1.0" encoding="UTF-8"?>',
            '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">',
            f"<Name>{escape(bucket)}</Name><Prefix>{escape(prefix)}</Prefix>",
            f"<KeyCount>{len(objects) + len(prefixes)}</KeyCount><MaxKeys>{limit}</MaxKeys>",
            f"<IsTruncated>{'true' if token else 'false'}</IsTruncated>",
        ]
        if token:
            parts.append(f"<NextContinuationToken>{escape(token)}</NextContinuationToken>")
        for key, stat in objects:
            parts.append(
                f"<Contents><Key>{escape(key)}</Key>"
                f"<LastModified>{_iso(stat.st_mtime)}</LastModified>"
                f"<ETag>{escape(_etag(stat))}</ETag><Size>{stat.st_size}</Size>"
                "<StorageClass>STANDARD</StorageClass></Contents>"
            )
        for key in prefixes:
            parts.append(f"<CommonPrefixes><Prefix>{escape(key)}</Prefix></CommonPrefixes>")
        parts.append("</ListBucketResult>")
        return self._reply(200, "".join(parts).encode(), {"Content-Type": "application/xml"})


def unescape_xml(text: str) -> str:
    return (
        text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"').replace("&amp;", "&")
    )


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, port: int) -> None:
        self.store = Store(root)
        super().__init__(("127.0.0.1", port), Handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.s3files", description=__doc__)
    parser.add_argument("root", type=Path, help="folder of the buckets")
    parser.add_argument("--port", type=int, required=True, help="loopback port")
    args = parser.parse_args(argv)
    server = Server(args.root, args.port)
    print(f"S3 endpoint on http://127.0.0.1:{server.server_port}/ for {args.root}", flush=True)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
