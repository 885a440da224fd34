"""Imports run downward only: the CLI (``cli/``) over connectors, the pipeline and sinks,
all of them over a core that knows no Faust, Kafka or ClickHouse. Every import in the
project's source is read (function-level ones too), so a new upward or sideways arrow
fails here with the file and line that drew it."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("cli", "connectors", "pipeline", "sinks")
#: Third-party I/O the core must never import.
IO_LIBRARIES = (
    "faust",
    "mode",
    "confluent_kafka",
    "aiokafka",
    "clickhouse_connect",
    "chdb",
    "fastavro",
    "avro",
)
#: The top layer: the command line and the process supervisor behind ``journeys run``.
TOP = ("cli",)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """Every module *path* imports, with its line; relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package.pop()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                yield node.lineno, ".".join([*base, node.module or ""]).rstrip(".")
            else:
                yield node.lineno, node.module or ""


def under(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def source_files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def arrow_breaks(path: Path) -> list[str]:
    """Why each import of *path* runs against the layers, as ``file:line: reason``."""
    me = module_name(path)
    where = path.relative_to(ROOT)
    out: list[str] = []
    for line, target in imports(path):
        reason = ""
        if under(me, "pipeline.core"):
            if under(target, *IO_LIBRARIES):
                reason = f"the core imports {target}"
            elif under(target, *PACKAGES) and not under(target, "pipeline.core"):
                reason = f"the core imports {target}, above it"
        elif under(me, *TOP):
            continue
        elif under(target, *TOP):
            reason = f"{me} imports the top layer's {target}"
        elif under(me, "pipeline") and under(target, "connectors", "sinks"):
            reason = f"the pipeline imports {target}, beside it"
        elif under(me, "connectors") and under(target, "sinks", "pipeline.agents"):
            reason = f"a connector imports {target}, beside it"
        elif under(me, "sinks") and under(target, "connectors", "pipeline.agents"):
            reason = f"a sink imports {target}, beside it"
        if reason:
            out.append(f"{where}:{line}: {reason}")
    return out


def test_every_import_runs_downward() -> None:
    files = source_files()
    assert len(files) > 50, "the project's source was not found"
    breaks = [b for path in files for b in arrow_breaks(path)]
    assert breaks == [], "\n".join(breaks)


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("pipeline/core/x.py", "import faust\n", "the core imports faust"),
        ("pipeline/core/x.py", "from sinks.clickhouse import connect\n", "above it"),
        ("pipeline/core/x.py", "from ..agents import engine\n", "pipeline.agents, above it"),
        ("pipeline/agents/x.py", "from connectors.publisher import P\n", "beside it"),
        ("pipeline/x.py", "from sinks.clickhouse import connect\n", "beside it"),
        ("sinks/x.py", "def f():\n    from cli.commands import run\n", "top layer"),
        ("connectors/x.py", "from sinks.runner import R\n", "beside it"),
    ],
)
def test_a_wrong_arrow_is_named_with_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str, source: str, expected: str
) -> None:
    path = tmp_path / module
    path.parent.mkdir(parents=True)
    path.write_text(source)
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    (found,) = arrow_breaks(path)
    assert found.startswith(f"{module}:{source.count(chr(10))}:")
    assert expected in found


def test_a_downward_import_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "pipeline/agents/x.py"
    path.parent.mkdir(parents=True)
    path.write_text("from pipeline.core.model import Touchpoint\nimport faust\n")
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    assert arrow_breaks(path) == []
