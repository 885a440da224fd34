"""The HTML report in a real browser: headless Chromium parses it, draws every chart and
fetches nothing. Skipped, with the reason, where no Chromium is installed
(``apt-get install chromium``); the structural checks in test_report.py always run."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from sinks.report.html import render_html
from tests.unit.test_report import sample_data

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _browser() -> str | None:
    for name in (os.environ.get("JOURNEYS_TEST_BROWSER"), *BROWSERS):
        if name and (found := shutil.which(name)):
            return found
    return None


BROWSER = _browser()
pytestmark = pytest.mark.skipif(
    BROWSER is None,
    reason="no headless Chromium on PATH (apt-get install chromium, "
    "or JOURNEYS_TEST_BROWSER=/path/to/chrome); the structural tests still run",
)


def headless(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert BROWSER is not None
    return subprocess.run(  # noqa: S603 - a browser found on PATH, fixed arguments
        [
            BROWSER,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--disable-extensions",
            f"--user-data-dir={cwd / 'profile'}",
            *args,
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def test_chromium_renders_every_chart_of_the_report(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(render_html(sample_data()), encoding="utf-8")
    dom = headless("--dump-dom", page.as_uri(), cwd=tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    # the browser's own DOM: five inline SVG charts with their bands, bars and cells
    assert dom.stdout.count("<svg") == 5
    assert dom.stdout.count('class="link"') > 0
    assert dom.stdout.count('class="bar"') > 0
    assert dom.stdout.count('class="cell"') == 6 * 8

    shot = tmp_path / "report.png"
    done = headless(f"--screenshot={shot}", "--window-size=1100,2300", page.as_uri(), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.exists() and shot.stat().st_size > 20_000
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(shot) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50  # drawn charts, not a blank page
