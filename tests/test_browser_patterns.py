"""The Patterns page in real Chromium (Debian's, through Playwright), on a small systematic demo with a score run
whose model sees the truth: open it from the sidebar, read a pattern's summary and evidence chart, tick fix on the
page, Apply (one bulk step lands in the store), Undo it from the page (one logged revert); screenshots of each
state in the test's folder (``PATTERNS_SHOTS`` names another folder to keep them); no text cut, no request leaves
127.0.0.1."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.demo import generate
from core.ingest import ingest
from core.store import LabelStore
from tests.app_data import serve
from tests.pattern_data import truth_score_run
from tests.test_browser import ARGS, CHROMIUM, wait_for
from tests.test_browser_workspace import CUT, IDLE, watch_requests

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium at /usr/bin/chromium (apt-get install chromium)"),
]
NAME = "walker"


def test_patterns_page_in_a_real_browser(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    generate(tmp_path / "demo", persons=60, noise=0.3, profile="systematic", image_size=(96, 128), eval_images=0)
    db = tmp_path / "labels.db"
    with LabelStore(db) as store:
        ingest(tmp_path / "demo", store)
        truth_score_run(store, tmp_path / "demo" / "truth.csv")
    shots = Path(os.environ.get("PATTERNS_SHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    with serve(db, log=tmp_path / "streamlit.log") as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            outside = watch_requests(page)

            def settled() -> None:
                page.wait_for_function(IDLE, timeout=90_000)

            page.goto(f"{url}/?annotator={NAME}")
            # the first run keeps the name in the session; a click before it ends would open the page without it
            page.locator(f'input[aria-label="Annotator"][value="{NAME}"]').wait_for(timeout=60_000)
            settled()
            page.locator('[data-testid="stSidebarNav"] a:has-text("Patterns")').click()
            page.locator("text=survive a 5 % false discovery rate").first.wait_for(timeout=120_000)
            page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
            settled()
            page.screenshot(path=str(shots / "patterns.png"), full_page=True)
            assert not page.evaluate(CUT), page.evaluate(CUT)
            assert page.locator("text=Run in upload order").count() + page.locator("text=Slice ").count() > 0

            first_unit = page.locator('[data-testid="stRadio"]').first
            first_unit.scroll_into_view_if_needed()
            page.screenshot(path=str(shots / "patterns_units.png"))
            page.locator("button:has-text('Fix all on this page')").click()
            settled()
            apply = page.locator("button:has-text('Apply (')")
            apply.wait_for(timeout=30_000)
            assert wait_for(lambda: apply.is_enabled() and "(0 ticked)" not in apply.inner_text(), 60)
            apply.click()
            with LabelStore(db) as store:
                assert wait_for(lambda: len(store.bulks()) == 1, 60), "Apply wrote no bulk step"
                bulk = store.bulks().iloc[0]
                assert bulk["annotator"] == NAME and bulk["n_corrected"] > 0
            page.locator("text=Applied bulk #").first.wait_for(timeout=60_000)
            settled()
            page.locator("h3:has-text('Bulk steps')").scroll_into_view_if_needed()
            page.screenshot(path=str(shots / "patterns_applied.png"), full_page=True)

            page.locator(f"button:has-text('Undo bulk #{int(bulk['id'])}')").click()
            with LabelStore(db) as store:
                assert wait_for(lambda: store.bulks().iloc[0]["kind"] == "revert", 60), "Undo wrote no revert"
                assert store.verify_current() == []
            page.locator("text=Undone: bulk #").first.wait_for(timeout=60_000)
            settled()
            page.screenshot(path=str(shots / "patterns_undone.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(tmp_path / "failed.png"))
            raise
        finally:
            browser.close()
    assert not outside, f"requests left the machine: {outside}"
