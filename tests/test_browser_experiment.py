"""Real-browser test of "Did cleaning help?": Chromium reviews a few units on the Review page (keyboard A:
accept the suggestion), then on the Train page fills the form with a tiny model, clicks "Did cleaning help?" (3 pairs) and
waits for the verdict and the power line of the background experiment; no exception box anywhere. Screenshots
go to ``$LABELFIX_SCREENSHOTS`` (default: the test's temp folder)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from core.store import LabelStore
from tests.test_browser import CHROMIUM, review_page, scored_demo, wait_for
from tests.test_browser_train import TINY, fill_fields

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium at /usr/bin/chromium (apt-get install chromium)"),
]


def test_review_then_did_cleaning_help_shows_the_verdict_and_the_power_line(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # inherited by the server and its job
    shots = Path(os.environ.get("LABELFIX_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    db, flagged = scored_demo(tmp_path, persons=12, noise=0.2)
    assert len(flagged) >= 3

    with review_page(db, tmp_path / "streamlit.log") as (url, page):
        with LabelStore(db) as store:
            for done in (1, 2, 3):  # review three units: accept the suggestion, the page moves on
                page.locator("h1:has-text('Review queue')").click()
                page.keyboard.press("a")
                assert wait_for(lambda n=done: store.n_corrections() >= n, 30), f"review {done} not written"
                page.locator("text=correction #").first.wait_for(timeout=20_000)
        page.screenshot(path=str(shots / "experiment_review.png"))

        page.goto(f"{url}/train?annotator=browser-test")
        fill_fields(page, TINY)
        button = page.locator("button:visible:has-text('Did cleaning help?')")
        assert wait_for(lambda: button.count() == 1, 30)  # not a stale copy mid-rerun
        button.click()
        page.locator("text=as run #").first.wait_for(timeout=30_000)  # "Started ... as run #N"
        page.screenshot(path=str(shots / "experiment_running.png"))
        verdict = page.locator("text=/Experiment #\\d+, \\d+ pairs: /").first
        assert wait_for(lambda: verdict.count() > 0 and verdict.is_visible(), 420), \
            (tmp_path / "streamlit.log").read_text()[-3000:]
        text = verdict.inner_text()
        power = page.locator("text=/^Power: /").first
        power.wait_for(timeout=20_000)
        power_text = power.inner_text()
        page.screenshot(path=str(shots / "experiment_verdict.png"), full_page=True)
        assert page.locator('[data-testid="stException"]').count() == 0
    assert re.search(r"(cleaning helped|cleaning hurt|no evidence yet): macro F1 [+-]\d\.\d{3} \[", text), text
    # A 1-epoch model of 12 people may learn nothing (every pair's difference 0): the power line then says so.
    assert re.match(r"Power: (with 3 pairs \(SD of a pair's difference \d\.\d{3}\) this experiment sees a difference "
                    r"of ±\d\.\d{3} or more 80 % of the time|unknown: all 3 pairs differed by exactly)",
                    power_text), power_text
    with LabelStore(db) as store:
        experiment = store.runs("experiment").iloc[0]
        assert experiment["status"] == "done" and experiment["metrics"]["pairs"] == 3
        assert experiment["config"]["model"] == "test_resnet" and experiment["config"]["epochs"] == 1
        assert f"Experiment #{experiment['id']}, 3 pairs: " in text
