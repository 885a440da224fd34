"""The help formatter of every command: the description's long lines wrapped to the
terminal, the epilog's indented examples and lists printed as written."""

from __future__ import annotations

import argparse
import textwrap


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the line breaks of the text as written, and wraps a line that starts at the
    margin and is wider than the terminal; indented lines (examples, settings) are kept."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        lines: list[str] = []
        for line in text.splitlines():
            if len(line) > width and not line[:1].isspace():
                lines.extend(textwrap.wrap(line, width) or [""])
            else:
                lines.append(line)
        return "\n".join(indent + line for line in lines)
