"""Every command's ``--help`` reads in an 80-column terminal: the description wraps, the
examples keep their lines, and no formatting escape (``%%``, a joined continuation
line) leaks into the text."""

from __future__ import annotations

import argparse

import pytest

from cli.main import COMMANDS, build_parser


def help_text(command: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("COLUMNS", "80")
    parser = build_parser(command)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command].format_help()


@pytest.mark.parametrize("command", COMMANDS)
def test_help_wraps_its_prose_and_keeps_its_examples(
    command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = help_text(command, monkeypatch)
    wide = [line for line in text.splitlines() if len(line) > 80 and not line[:1].isspace()]
    assert wide == [], f"journeys {command} --help: unwrapped prose {wide}"
    assert "%%" not in text
    assert '"       --' not in text, "a shell continuation line was joined"


def test_the_query_example_keeps_its_continuation(monkeypatch: pytest.MonkeyPatch) -> None:
    text = help_text("query", monkeypatch)
    assert '{since:Date}" \\\n      --param since=2026-10-01' in text
