"""Real-browser test of the Train page: Chromium (Debian's, through Playwright) fills the retrain form
with a tiny configuration, clicks Retrain, and watches the live progress bar (a fragment that
re-reads the database every 2 s, no clicks) until it reports the run done."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from core.demo import generate
from core.ingest import ingest
from core.store import LabelStore
from tests.app_data import serve
from tests.test_browser import ARGS, CHROMIUM

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium at /usr/bin/chromium (apt-get install chromium)"),
]

# Form field (its label) -> value typed: a tiny model that trains one epoch in seconds.
TINY = {"Other timm model name": "test_resnet", "Image width": "32", "Image height": "40", "Epochs": "1",
        "Batch size": "16"}


def fill_fields(page: Any, values: dict[str, str]) -> None:
    """Type ``values`` into the inputs labelled by their keys (Tab after each, as a person does). CSS locators:
    role queries walk the accessibility tree and take seconds on a big page."""
    for label, value in values.items():
        field = page.locator(f'input[aria-label="{label}"]')
        field.wait_for(timeout=90_000)
        field.fill(value)
        field.press("Tab")


def test_retrain_from_the_browser_and_watch_the_progress_bar_reach_done(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # inherited by the server and its job
    generate(tmp_path / "demo", persons=12, noise=0.1, image_size=(48, 64))
    db = tmp_path / "labels.db"
    with LabelStore(db) as store:
        ingest(tmp_path / "demo", store)

    with serve(db, log=tmp_path / "streamlit.log") as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/train?annotator=browser-test")
            fill_fields(page, TINY)
            page.locator("button:has-text('Retrain on cleaned labels')").click()

            bar = page.locator('[data-testid="stProgress"]').first
            seen: list[str] = []
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                text = bar.inner_text(timeout=30_000) if bar.count() else ""
                if text and (not seen or seen[-1] != text):
                    seen.append(text)
                if " done" in text or "failed" in text:
                    break
                time.sleep(0.5)
            assert seen and " done · macro F1 " in seen[-1], seen
            assert bar.locator('[role="progressbar"]').get_attribute("aria-valuenow") == "100"
            assert any("train run #1" in t and " done" not in t for t in seen), seen  # it was watched while running
        finally:
            browser.close()
    with LabelStore(db) as store:
        run = store.run(1)
    assert run["status"] == "done" and run["config"]["model"] == "test_resnet"
    assert run["config"]["img_size"] == [32, 40] and run["config"]["epochs"] == 1
