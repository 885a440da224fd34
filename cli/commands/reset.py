"""``journeys reset``: remove the local data of the embedded stack, after confirmation."""

from __future__ import annotations

import argparse
import shutil

from cli.commands._common import console, fail, settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reset",
        help="remove all local data (broker topics, worker state, ClickHouse tables, demo)",
        description="Delete the embedded stack's data folders (see `journeys status`): the "
        "persistent broker's topics and offsets (JOURNEYS_BROKER_DIR), the worker state "
        "(JOURNEYS_DATA_DIR), the chDB tables (JOURNEYS_CLICKHOUSE_URL=chdb://...) and "
        "var/demo. Logs stay. It asks for confirmation unless --yes, and refuses while the "
        "stack runs. An external Kafka or ClickHouse server is not touched.",
    )
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cli.commands.status import data_folders, disk_usage, human
    from pipeline.broker import DataLock
    from sinks.query_server import find_owner

    cfg = settings()
    if DataLock.held(cfg.broker_dir):
        return fail(f"a Journeys broker runs on {cfg.broker_dir}; stop `journeys run` first")
    if cfg.clickhouse_url.startswith("chdb://") and find_owner(cfg.clickhouse_url) is not None:
        return fail("a Journeys process owns the ClickHouse data; stop `journeys run` first")
    present = [(what, path) for what, path in data_folders(cfg) if path.exists()]
    if not present:
        console.print("nothing to remove")
        return 0
    for what, path in present:
        console.print(f"  {path}  ({what}, {human(disk_usage(path))})", highlight=False)
    if not args.yes:
        try:
            answer = input("Remove these folders for good? Type 'yes': ")
        except EOFError:
            answer = ""
        if answer.strip().lower() != "yes":
            return fail("nothing removed (answer 'yes', or pass --yes)")
    for _what, path in present:
        shutil.rmtree(path)
    console.print(f"removed {len(present)} folders; the next `journeys run` starts empty")
    return 0
