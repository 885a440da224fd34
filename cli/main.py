"""``journeys``: the command line of Journeys. ``journeys COMMAND --help`` explains each."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from cli.commands._help import HelpFormatter

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


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or of *only* that one (fast start: its imports only)."""
    parser = argparse.ArgumentParser(
        prog="journeys",
        description="Cross-channel customer journeys: stitch identities, build journeys, "
        "attribute conversions, query them in ClickHouse.",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS if only not in COMMANDS else (only,):
        module = importlib.import_module(f"cli.commands.{name}")
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


def _command(argv: list[str]) -> str | None:
    """The command named in *argv*, if the options before it are the global ones."""
    for arg in argv:
        if arg in ("-v", "--verbose"):
            continue
        return arg if arg in COMMANDS else None
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(_command(argv))
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
