"""``journeys status``: where the local data lives, how big it is, and what runs."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from rich.table import Table

from cli.commands._common import console, settings
from pipeline.settings import Settings

#: ``journeys demo``'s own folder (its --out default): sample logs and a separate state.
DEMO_DIR = Path("var/demo")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "status",
        help="show the local data folders, their size, and whether the stack runs",
        description="Show where the embedded stack keeps its data (broker topics, worker "
        "state, ClickHouse tables, logs, the demo's folder), the disk each uses, whether "
        "a broker answers on JOURNEYS_KAFKA_BOOTSTRAP and which broker the worker state "
        "belongs to. `journeys reset` removes the data.",
    )
    p.set_defaults(func=run)


def chdb_path(cfg: Settings) -> Path | None:
    url = cfg.clickhouse_url
    return Path(url[len("chdb://") :]).expanduser() if url.startswith("chdb://") else None


def data_folders(cfg: Settings) -> list[tuple[str, Path]]:
    """(what, folder) of every local data folder of *cfg* (``journeys reset`` removes them)."""
    folders = [("broker topics and offsets", cfg.broker_dir), ("worker state", cfg.data_dir)]
    chdb = chdb_path(cfg)
    if chdb is not None:
        folders.append(("ClickHouse tables", chdb))
    folders.append(("demo (its own state)", DEMO_DIR))
    return folders


def disk_usage(path: Path) -> int:
    """Bytes of disk that *path* uses (allocated blocks, as ``du``), 0 if absent."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                continue
    return total


def human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"  # pragma: no cover - the loop returns


def folders_table(cfg: Settings) -> Table:
    table = Table(title="Local data (survives restarts; `journeys reset` removes it)")
    for col in ("data", "folder", "disk"):
        table.add_column(col, justify="right" if col == "disk" else "left", no_wrap=True)
    for what, path in [*data_folders(cfg), ("logs", cfg.log_dir)]:
        size = human(disk_usage(path)) if path.exists() else "-"
        table.add_row(what, str(path), size)
    return table


def run(_args: argparse.Namespace) -> int:
    from pipeline.broker import DataLock, cluster_id
    from pipeline.state_guard import StateGuardError, recorded_cluster

    cfg = settings()
    console.print(folders_table(cfg))
    current = cluster_id(cfg.kafka_bootstrap, client_config=cfg.kafka_config())
    owned = cfg.broker_storage == "s3" and DataLock.held(cfg.broker_dir)
    if current is None:
        console.print(f"broker: nothing answers on {cfg.kafka_bootstrap}", highlight=False)
    else:
        whose = f"the embedded one, data in {cfg.broker_dir}" if owned else "running"
        console.print(
            f"broker: cluster {current!r} on {cfg.kafka_bootstrap} ({whose})", highlight=False
        )
    try:
        recorded = recorded_cluster(cfg.data_dir)
    except StateGuardError as exc:
        console.print(f"worker state: {exc}", highlight=False)
        return 1
    if recorded is None:
        console.print("worker state: not bound to a broker yet")
    elif current is not None and recorded != current:
        console.print(
            f"[bold red]worker state: built with broker {recorded!r}, not the one that "
            "answers[/]; see docs/persistence.md (`journeys reset` starts over)",
            highlight=False,
        )
        return 1
    else:
        console.print(f"worker state: built with broker {recorded!r}", highlight=False)
    return 0
