"""Real Chromium on the running dashboard with a real (tiny) score run and its embeddings: confirm a label on the
Review page, open "More like this" on the next unit, decide the similar units together; then draw a box on the
Map and open exactly the selected images in Browse. Screenshots go to ``$LABELFIX_SHOTS`` (default: the test's
temporary folder)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from core.store import LabelStore
from tests.app_data import serve
from tests.fixtures import demo_db
from tests.test_browser import ARGS, CHROMIUM, wait_for

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium at /usr/bin/chromium"),
]


def fresh(key: str, inner: str = "button") -> str:
    """The CSS selector of the widget with ``key``, leaving out copies Streamlit keeps marked stale during a rerun."""
    return f".st-key-{key}:not([data-stale='true']) {inner}"


def click_when_settled(page, selector: str) -> None:
    """Click the element ``selector`` names once it is there (a button with a help tooltip renders twice in the
    DOM: the first is the visible one)."""
    assert wait_for(lambda: page.locator(selector).count() >= 1, timeout=120), selector
    page.locator(selector).first.click()


def test_confirm_more_like_this_bulk_decide_and_map_selection(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    from train.score import score

    os.environ.setdefault("TQDM_DISABLE", "1")
    shots = Path(os.environ.get("LABELFIX_SHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    db = demo_db(tmp_path, persons=10, noise=0.2, image_size=(32, 40))
    run = score(db=str(db), folds=2, echo=False, model="test_resnet", img_size=(32, 40), epochs=1, batch_size=16,
                threads=1)
    assert run["status"] == "done"

    with serve(db, log=tmp_path / "streamlit.log") as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.set_default_timeout(120_000)  # a shared, loaded machine: a rerun can take a while
            page.goto(f"{url}/review?annotator=walker")
            page.locator("button:has-text('Label is correct')").first.wait_for(timeout=90_000)
            click_when_settled(page, fresh("review_act_keep"))
            with LabelStore(db) as store:
                assert wait_for(lambda: len(store.reviews()) == 1), "the confirmation was not stored"
            page.locator("text=marked").first.wait_for(timeout=30_000)
            page.screenshot(path=str(shots / "learning-01-review-confirmed.png"), full_page=True)

            click_when_settled(page, fresh("review_similar"))
            page.locator("text=Decide the").first.wait_for(timeout=60_000)
            page.screenshot(path=str(shots / "learning-02-more-like-this.png"), full_page=True)
            assert wait_for(lambda: page.locator(fresh("similar_set")).count() >= 1, timeout=120)
            button = page.locator(fresh("similar_set")).first
            label = button.inner_text()
            n = int(re.search(r"Set (\d+) to", label).group(1))
            assert n > 0
            button.click()
            with LabelStore(db) as store:
                assert wait_for(lambda: (store.history()["reason"] == "more like this (bulk)").sum() == n), label
                bulk = store.history()
                assert (bulk.loc[bulk["reason"] == "more like this (bulk)", "annotator"] == "walker").all()
            page.locator("text=set to").first.wait_for(timeout=30_000)
            page.screenshot(path=str(shots / "learning-03-bulk-decided.png"), full_page=True)

            page.goto(f"{url}/map?annotator=walker")
            plot = page.locator(".st-key-map_chart .js-plotly-plot").first
            plot.wait_for(timeout=90_000)
            page.locator(".st-key-map_chart [data-title='Box Select']").first.click()
            box = page.locator(".st-key-map_chart .nsewdrag").first.bounding_box()
            page.mouse.move(box["x"] + 2, box["y"] + 2)
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.6, steps=12)
            page.mouse.up()
            page.locator("text=image(s) selected").first.wait_for(timeout=60_000)
            selected = int(re.search(r"([\d,]+) image\(s\) selected",
                                     page.locator("text=image(s) selected").first.inner_text()).group(1).replace(",", ""))
            assert selected > 0
            page.screenshot(path=str(shots / "learning-04-map-selected.png"), full_page=True)
            click_when_settled(page, fresh("map_open"))
            page.locator(f"text=Map selection: {selected:,} image(s)").first.wait_for(timeout=60_000)
            assert page.locator(f"text={selected:,} image(s) ·").count() >= 1  # the gallery holds exactly those
            page.screenshot(path=str(shots / "learning-05-browse-selection.png"), full_page=True)

            page.goto(f"{url}/review?annotator=walker")  # the learning queue's switch and what it says
            page.locator(".st-key-review_learning").first.wait_for()
            click_when_settled(page, fresh("review_learning", "label"))
            page.locator("text=decision(s)").first.wait_for()
            page.screenshot(path=str(shots / "learning-06-review-learning-on.png"), full_page=True)
        finally:
            browser.close()
