"""``journeys``: the command line of Journeys. ``journeys COMMAND --help`` explains each."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMANDS = (
    "run",
    "demo",
    "broker",
    "status",
    "reset",
    "worker",
    "collect",
    "sink",
    "migrate",
    "replay",
    "generate",
    "query",
    "report",
    "attribute",
    "evaluate",
    "forget",
    "rechannel",
)

EPILOG = """\
The embedded default needs nothing running: `journeys demo` starts a local broker
(Tansu), the worker and the sink, replays sample data and prints the result.
Settings come from JOURNEYS_* environment variables; see README.md.

examples:
  journeys demo
  journeys run                                  # broker + worker + sink, Ctrl-C stops all
  journeys replay logs/segment-*.jsonl.gz --source segment
  journeys query "SELECT channel, count() FROM journeys.touchpoints FINAL GROUP BY channel"
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="journeys",
        description="Cross-channel customer journeys: stitch identities, build journeys, "
        "attribute conversions, query them in ClickHouse.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"pipeline.commands.{name}")
        module.register(sub)
    return parser


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("aiokafka", "faust", "mode", "kafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
