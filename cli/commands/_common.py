"""Helpers shared by the sub-commands (the CLI edge: settings are read here)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console

from pipeline.settings import Settings, load_settings

console = Console(stderr=True)


def settings() -> Settings:
    return load_settings()


def ingest_with_rules(cfg: Settings) -> None:
    """Connectors of this process classify channels with the rules file's ``[channels]``
    (``JOURNEYS_RULES_FILE``); a bad file raises ``RulesFileError`` naming the key."""
    from pipeline.core.channels import use_rules
    from pipeline.rules import load_rules

    use_rules(load_rules(cfg.rules_file).channels)


def fail(message: str, code: int = 1) -> int:
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    return code


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event set by Ctrl-C or SIGTERM, with the previous handlers restored after."""
    stop = threading.Event()

    def handler(_signum: int, _frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
