"""Memory of the identity tables: bytes per million identifiers.

:class:`pipeline.core.identity.IdentityGraph` resolves synthetic customers' events
(anonymous visits from one to three devices, then logins that link the devices to a
user id and a hashed e-mail, sometimes a hashed phone) until ``--identifiers``
distinct identifiers are known. Its five stores are the worker's own state tables
(:class:`pipeline.agents.engine.StateTable`: rocksdict in raw mode, JSON values),
saved every 1,000 events as the engine's checkpoints save them. Reported, each scaled
linearly to one million identifiers:

* on-disk bytes of the five databases after a flush and a full compaction (the
  primary figure, ``identity_bytes_per_million``);
* the resident-set growth of this process while resolving (rocksdict's memtables and
  block cache included);
* for comparison, the Python heap (tracemalloc) of the same graph on plain dicts,
  measured on a quarter of the sample.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import random
import shutil
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import fragment_main

STORES = ("ident_to_person", "persons", "forward", "links", "shapes")
Event = tuple[list[tuple[str, str]], str, int]


def _table(root: Path, name: str) -> Any:
    """The worker's own state table (:class:`pipeline.agents.engine.StateTable`): a
    rocksdict store in raw mode with JSON values, its one partition held here."""
    from pipeline.agents.engine import StateTable

    table = StateTable(name, f"{name}-changelog", 1, root)
    table.open(0)
    return table


def _checkpoint(tables: dict[str, Any], offset: int) -> None:
    """What the engine's checkpoint does to the local stores (no changelog here)."""
    for table in tables.values():
        changes = table.take_changes().get(0)
        if changes:
            table.save(0, changes, offset)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def events(identifiers: int, seed: int = 5) -> Iterator[Event]:
    """Events of synthetic customers until *identifiers* distinct identifiers appeared."""
    rng = random.Random(seed)
    at = 1_790_000_000_000
    seen = 0
    n = 0
    while seen < identifiers:
        devices = [("anonymous_id", f"a-{n}-{d}-{rng.randrange(10**9)}") for d in range(3)]
        devices = devices[: rng.randint(1, 3)]
        known: list[tuple[str, str]] = []
        if rng.random() < 0.6:
            known.append(("user_id", f"u{n:08d}"))
        known.append(("email_sha256", _sha(f"customer{n}@example.net")))
        if rng.random() < 0.3:
            known.append(("phone_sha256", _sha(f"+4477009{n:05d}")))
        for i, device in enumerate(devices):
            for visit in range(rng.randint(1, 3)):
                at += rng.randint(1, 60_000)
                yield [device], f"e-{n}-{i}-{visit}", at
            at += 1000
            yield [device, *known], f"login-{n}-{i}", at
        seen += len(devices) + len(known)
        n += 1


def _rss() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _du(path: Path, pattern: str = "*") -> int:
    return sum(p.stat().st_size for p in path.rglob(pattern) if p.is_file())


def _resolve_all(
    stores: Any, sample: list[Event], tables: dict[str, Any] | None = None
) -> tuple[int, int, float]:
    """(persons, identifiers, seconds) after resolving every event of *sample*; with
    *tables*, checkpointed every 1,000 events."""
    from pipeline.core.identity import IdentityGraph
    from pipeline.core.model import Identifier

    graph = IdentityGraph(stores=stores)
    started = time.perf_counter()
    for n, (idents, event_id, at_ms) in enumerate(sample, 1):
        graph.resolve([Identifier(t, v) for t, v in idents], event_id, at_ms)
        if tables is not None and n % 1000 == 0:
            _checkpoint(tables, n)
    if tables is not None:
        _checkpoint(tables, len(sample))
    seconds = time.perf_counter() - started
    mapped = set(stores.ident_to_person.values())
    return len(mapped), len(stores.ident_to_person), seconds


def _on_rocksdict(sample: list[Event]) -> dict[str, Any]:
    """Resolve *sample* into rocksdict stores; their sizes, RSS growth and speed."""
    from pipeline.core.identity import IdentityStores

    tmp = Path(tempfile.mkdtemp(prefix="bench-identity-"))
    try:
        gc.collect()
        rss0 = _rss()
        dbs = {name: _table(tmp, name) for name in STORES}
        persons, idents, seconds = _resolve_all(IdentityStores(**dbs), sample, dbs)
        rss1 = _rss()
        for table in dbs.values():
            db = table.open(0)
            db.flush()
            db.compact_range(None, None)
        out = {
            "identifiers": idents,
            "persons": persons,
            "seconds": seconds,
            "rss_growth": rss1 - rss0,
            "sst_bytes_by_store": {name: _du(tmp / name, "*.sst") for name in STORES},
            "disk_bytes": sum(_du(tmp / name) for name in STORES),
            "keys_by_store": {name: len(db) for name, db in dbs.items()},
        }
        for table in dbs.values():
            table.close_all()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def measure(identifiers: int) -> dict[str, Any]:
    from pipeline.core.identity import IdentityStores

    sample = list(events(identifiers))
    quarter = list(events(identifiers // 4))
    # -- rocksdict stores (the product's table store), at a quarter and at the full size
    small = _on_rocksdict(quarter)
    full = _on_rocksdict(sample)
    idents, persons, seconds = full["identifiers"], full["persons"], full["seconds"]
    disk, keys = full["sst_bytes_by_store"], full["keys_by_store"]
    scale = 1_000_000 / idents
    per_small = sum(small["sst_bytes_by_store"].values()) / small["identifiers"]

    # -- plain dicts, for comparison (the quarter sample: tracemalloc is slow) -----------
    gc.collect()
    tracemalloc.start()
    dict_stores = IdentityStores()  # plain dicts
    _, dict_idents, _ = _resolve_all(dict_stores, quarter)
    heap, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    total_disk = sum(disk.values())
    return {
        "identifiers": idents,
        "persons": persons,
        "events": len(sample),
        "method": "the worker's state tables (rocksdict, raw mode, JSON values): bytes of "
        "the SST files after flush + full compaction, scaled linearly to 1,000,000 identifiers",
        "bytes_per_million": round(total_disk * scale),
        "sst_bytes_by_store": disk,
        "disk_bytes_total_unscaled": full["disk_bytes"],
        "keys_by_store": keys,
        "bytes_per_identifier": round(total_disk / idents, 1),
        "bytes_per_identifier_at_a_quarter": round(per_small, 1),
        "growth_vs_linear": round(total_disk / idents / per_small, 3),
        "rss_growth_bytes_per_million": round(full["rss_growth"] * scale),
        "python_dict_heap_bytes_per_million": round(heap * 1_000_000 / dict_idents),
        "resolve_events_per_s_rocksdict": round(len(sample) / seconds, 1),
    }


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--identifiers", type=int, default=200_000)


def main() -> int:
    return fragment_main(__doc__ or "", _args, lambda a: measure(a.identifiers))


if __name__ == "__main__":
    raise SystemExit(main())
