"""One real-browser test: Chromium (Debian's, through Playwright) relabels an image on the running
dashboard with a keyboard shortcut, and the store changes. CI installs /usr/bin/chromium."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from core import review
from core.demo import generate
from core.ingest import ingest
from core.store import LabelStore
from core.synthetic import add_score_run
from tests.app_data import serve

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium at /usr/bin/chromium (apt-get install chromium)"),
]


def wait_for(condition, timeout: float = 30.0) -> bool:
    """Poll ``condition()`` until it is truthy or ``timeout`` seconds pass. A page mid-rerun can briefly hold a
    stale copy of an element beside the new one (Playwright's strict-mode error): that counts as "not yet"."""
    from playwright.sync_api import Error as PlaywrightError

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return True
        except PlaywrightError:
            pass
        time.sleep(0.2)
    return False


def scored_demo(folder: Path, persons: int, noise: float = 0.05) -> tuple[Path, pd.DataFrame]:
    """A small demo ingested into ``folder/labels.db`` with a synthetic score run; its flagged age-group units are
    marked reviewed (an age group's A asks for the age), so A accepts the rest. Returns the store and those units."""
    generate(folder / "demo", persons=persons, noise=noise, image_size=(48, 64))
    db = folder / "labels.db"
    with LabelStore(db) as store:
        ingest(folder / "demo", store)
        run_id = add_score_run(store)
        units = review.queue_units(store, run_id, review.statuses(store), flagged_only=True, status="unreviewed")
        for row in units[units["attribute"] == "age_group"].itertuples():
            store.mark_reviewed(row.target, row.stored, annotator="setup")
    return db, units[units["attribute"] != "age_group"].reset_index(drop=True)


@contextlib.contextmanager
def review_page(db: Path, log: Path, annotator: str = "browser-test") -> Iterator[tuple[str, Any]]:
    """The app served on ``db`` and a 1400x1000 Chromium page on its Review queue, drawn (its Accept button shown);
    yields (base url, page). The browser and the server stop on exit."""
    from playwright.sync_api import sync_playwright

    with serve(db, log=log) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/review?annotator={annotator}")
            # CSS/text locators: role queries walk the accessibility tree and take seconds on this page.
            page.locator("button:has-text('Accept')").first.wait_for(timeout=60_000)
            yield url, page
        finally:
            browser.close()


def test_relabel_with_a_keyboard_shortcut_changes_the_store(tmp_path: Path) -> None:
    db, units = scored_demo(tmp_path, persons=6)
    with LabelStore(db) as store:
        unit = units.iloc[0]
        before = store.label_of(unit["target"], unit["stored"])
        expected = review.suggestion_value(store.schema, unit["attribute"], unit["suggested"], before)

    with review_page(db, tmp_path / "streamlit.log") as (_, page):
        page.locator("h1:has-text('Review queue')").click()  # focus the page, not a text field
        page.keyboard.press("a")
        with LabelStore(db) as store:
            changed = wait_for(lambda: store.n_corrections() > 0)
            assert changed, "pressing A did not write a correction"
            entry = store.history(limit=1).iloc[0]
            assert (entry["target"], entry["attribute"], entry["annotator"], entry["source"]) == (
                unit["target"], unit["stored"], "browser-test", "review")
            assert str(store.label_of(unit["target"], unit["stored"])) == str(expected) != str(before)
        page.locator("text=correction #").first.wait_for(timeout=20_000)  # the page confirms it
