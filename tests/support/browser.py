"""Chromium for the browser tests: Debian's ``/usr/bin/chromium`` driven by Playwright (no
browser download). Missing, the tests skip saying how to install it, except where
``PREDSTREAM_REQUIRE_BROWSER=1`` (CI), where they fail."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

__all__ = ["CHROMIUM", "chromium_browser"]

CHROMIUM = os.environ.get("PREDSTREAM_CHROMIUM", "/usr/bin/chromium")


def chromium_browser() -> Iterator[Any]:
    """A launched headless Chromium (generator for a fixture)."""
    if not os.path.exists(CHROMIUM):
        message = (f"Chromium is not installed at {CHROMIUM}: "
                   "apt-get install chromium (as root) to run the browser tests")
        if os.environ.get("PREDSTREAM_REQUIRE_BROWSER") == "1":
            pytest.fail(message + " (PREDSTREAM_REQUIRE_BROWSER=1: they must run here)")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)
        try:
            yield browser
        finally:
            browser.close()
