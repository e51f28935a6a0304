"""A real browser for the console tests: Debian's chromium driven by Playwright (no browser download),
and where screenshots go (MODELHOST_TEST_OUTPUT, default test-output/ in the checkout)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("MODELHOST_CHROMIUM", "/usr/bin/chromium")
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}  # an iPhone 12-14's CSS pixels


def output_dir(name: str) -> Path:
    root = Path(os.environ.get("MODELHOST_TEST_OUTPUT", Path(__file__).resolve().parents[1] / "test-output"))
    path = root / name
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.fail(f"chromium is not installed at {CHROMIUM}: run scripts/setup-system (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()
