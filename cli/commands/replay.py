"""``journeys replay``: publish log files of a source to Kafka."""

from __future__ import annotations

import argparse
import time

from cli.commands._common import console, fail, ingest_with_rules, settings, stop_on_signals
from cli.commands._help import HelpFormatter

EPILOG = """\
examples:
  journeys replay var/sample/segment.jsonl --source segment
  journeys replay 'logs/2026-10-*.jsonl.gz' --source segment --rate 5000
  journeys replay stores.csv --source pos
  journeys replay var/sample/*.jsonl var/sample/pos.csv var/sample/ads.csv --source auto

--source auto takes each file's source from its name and merges the files of several
sources in event time, as they happened. Files replayed one after another give the
same answers (events up to 30 days late join their journeys), with more revisions.

Every line becomes touchpoints or a dead letter (journeys.dead-letters) whose error
names the file, the line and the field. The exit code is 1 when any line was rejected.
"""


def register(sub: argparse._SubParsersAction) -> None:
    from connectors.registry import SOURCES

    p = sub.add_parser(
        "replay",
        help="publish log files (JSONL or CSV, gzip too) to Kafka",
        description="Read log files of one source, map each record to touchpoints and "
        "publish them to journeys.touchpoints (Avro).",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or globs (.jsonl, .csv, .gz)")
    p.add_argument(
        "--source",
        required=True,
        choices=[*sorted(SOURCES), "auto"],
        help="the format of the files; auto: each file's name starts with its source "
        "(pos.csv, sendgrid-2026-10.jsonl.gz) and files of several sources are merged in "
        "event time",
    )
    p.add_argument("--rate", type=float, default=None, help="at most N events per second")
    p.add_argument(
        "--follow", action="store_true", help="keep reading the last file as it grows (Ctrl-C)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from connectors.base import ConnectorError
    from connectors.publisher import Publisher, PublishError
    from connectors.registry import get_source
    from connectors.replay import expand_paths, replay_files
    from pipeline.broker import kafka_answers
    from pipeline.rules import RulesFileError
    from pipeline.serde import AvroSerde
    from pipeline.topics import ensure_topics

    cfg = settings()
    try:
        ingest_with_rules(cfg)
    except RulesFileError as exc:
        return fail(str(exc))
    from connectors.base import Source
    from connectors.registry import SOURCES
    from connectors.replay import source_of_file

    try:
        paths = expand_paths(args.paths)
        source: Source | list[Source] = (
            [get_source(source_of_file(p, SOURCES)) for p in paths]
            if args.source == "auto"
            else get_source(args.source)
        )
    except ConnectorError as exc:
        return fail(str(exc), 2)
    if not kafka_answers(cfg.kafka_bootstrap, client_config=cfg.kafka_config()):
        return fail(
            f"no Kafka broker answers on {cfg.kafka_bootstrap}; start `journeys run` "
            "(or `journeys broker`) first"
        )
    ensure_topics(cfg)
    publisher = Publisher(cfg, AvroSerde.from_dir(cfg.schemas_dir, cfg.schema_registry_url))
    total = sum(p.stat().st_size for p in paths)
    started = time.monotonic()
    progress = Progress(
        TextColumn("[bold]replay[/] {task.description}"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[records]:,} records · {task.fields[rate]:,.0f}/s"),
        TimeElapsedColumn(),
        console=console,
        disable=args.quiet,
        transient=False,
    )

    def on_progress(done: int, records: int) -> None:
        elapsed = max(time.monotonic() - started, 1e-6)
        progress.update(task, completed=done, records=records, rate=records / elapsed)

    with progress, stop_on_signals() as stop:
        task = progress.add_task(args.source, total=total, records=0, rate=0.0)
        try:
            stats = replay_files(
                paths,
                source,
                publisher.touchpoint,
                lambda rej: publisher.rejected(rej, "replay"),
                rate=args.rate,
                follow=args.follow,
                on_progress=on_progress,
                should_stop=stop.is_set,
            )
            publisher.flush()
        except ConnectorError as exc:
            return fail(str(exc), 2)
        except PublishError as exc:
            return fail(str(exc))
    elapsed = time.monotonic() - started
    console.print(
        f"{stats.records:,} records from {stats.files} file(s) in {elapsed:.1f}s: "
        f"[green]{stats.touchpoints:,} touchpoints[/], "
        f"[{'red' if stats.rejected else 'green'}]{stats.rejected:,} dead letters[/]"
    )
    for line in stats.errors:
        console.print(f"  [red]rejected[/] {line}", highlight=False)
    if stats.rejected > len(stats.errors):
        console.print(
            f"  ... and {stats.rejected - len(stats.errors):,} more (journeys.dead_letters)"
        )
    return 1 if stats.rejected else 0
