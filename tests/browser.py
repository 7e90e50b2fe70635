"""A real headless browser for the report's tests: Debian's chromium (`apt-get install
chromium`; `.ci/run` and `make test` install it where missing), driven by Playwright, which
cannot download browsers here and is given the installed one's path.

The page is opened from a file:// URL in a context with networking off, and every request it
makes is recorded, so that a test can check the page asked for nothing but itself.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# No first-run work, no background services that would reach out, no GPU: a CI container has none.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]


@dataclass
class OpenedPage:
    page: Any  # playwright.sync_api.Page
    errors: list[str] = field(default_factory=list)  # console errors and uncaught exceptions
    requests: list[str] = field(default_factory=list)  # every URL the page asked for


@contextmanager
def opened(path: Path, width: int = 1280, height: int = 900) -> Iterator[OpenedPage]:
    """The page at `path`, loaded and drawn (it sets window.ftmReport.ready when it is)."""
    from playwright.sync_api import sync_playwright

    if not path.is_file():
        raise FileNotFoundError(f"no page at {path}")
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"no chromium at {CHROMIUM}: apt-get install chromium (make test does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            context = browser.new_context(offline=True, viewport={"width": width, "height": height})
            page = context.new_page()
            opened_page = OpenedPage(page)
            page.on(
                "console", lambda message: message.type == "error" and opened_page.errors.append(message.text)
            )
            page.on("pageerror", lambda error: opened_page.errors.append(str(error)))
            page.on("request", lambda request: opened_page.requests.append(request.url))
            page.goto(path.resolve().as_uri(), wait_until="load")
            page.wait_for_function("window.ftmReport && window.ftmReport.ready", timeout=30_000)
            yield opened_page
        finally:
            browser.close()


def plotted(page: Any, element_id: str) -> list[tuple[list[Any], list[Any]]]:
    """The (x, y) of each trace plotly drew in the element: what the chart shows, as plotted."""
    script = "(id) => document.getElementById(id).data.map((trace) => [trace.x, trace.y])"
    return [(x, y) for x, y in page.evaluate(script, element_id)]
