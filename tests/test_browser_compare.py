"""Real-browser check of Compare's default order, as the seed team's bug report walked it: the baseline is
done, the retrain is still queued when the Train page opens, then it finishes. Chromium must then show
before = the baseline, after = the retrain, with fresh option texts and no arrow for a change that no
measured spread backs. Journal rows are hand-made (no training); ``LABELFIX_SCREENSHOT`` keeps a PNG."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from core.store import LabelStore
from tests.app_data import serve
from tests.test_app_compare import CONFIG, add_run
from tests.test_browser import ARGS, CHROMIUM, wait_for

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium at /usr/bin/chromium (apt-get install chromium)"),
]


def test_compare_opens_on_baseline_before_retrain_after_once_the_retrain_finishes(
        make_store: Callable[..., LabelStore], tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    store = make_store(n_persons=8)
    add_run(store, store.snapshot(), 0.858)  # run 1: the baseline
    person = store.current_labels()["person"].iloc[0]
    shown = store.label_of(person, "gender")
    store.correct(person, "gender", "male" if shown == "female" else "female", expected=shown, annotator="t",
                  reason="test", source="review")
    retrain = store.create_run("train", {**CONFIG, "seed": 0}, status="queued")  # as jobs.start writes it

    with serve(store.path, log=tmp_path / "streamlit.log") as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1300})
            page.goto(f"{url}/train?annotator=browser-test")
            page.locator('[role="tab"]:has-text("Compare")').click(timeout=90_000)
            before = page.locator('input[aria-label="Before (the earlier run)"]')
            after = page.locator('input[aria-label="After (the later run)"]')
            before.wait_for(timeout=60_000)
            # While the retrain is queued: already in run order.
            assert before.input_value().startswith("#1 · test_resnet · 1 epoch · done · F1 0.858")
            assert after.input_value() == "#2 · test_resnet · 1 epoch · queued"

            snapshot = store.snapshot()  # the job's trainer fills its row in and finishes
            store.update_run(retrain, status="done", snapshot_hash=snapshot.hash,
                             config={**CONFIG, "seed": 0, "snapshot": str(snapshot.path)},
                             metrics={"best_macro_f1": 0.810, "best_epoch": 1, "epochs_done": 1})
            store.record_epoch(retrain, 1, {"macro_f1": 0.810, "acc_class": 0.86, "val_loss": 0.19,
                                            "f1_per_class": {"wear/male/<30": 0.9, "wear/female/<30": 0.8}})
            # No click: the page reruns by itself when a run finishes, and Compare opens on the new defaults.
            assert wait_for(lambda: after.count() == 1 and "· done · F1 0.810" in after.input_value(), timeout=60), \
                [after.nth(i).input_value() for i in range(after.count())]
            assert wait_for(lambda: before.count() == 1 and after.count() == 1, timeout=30)  # the rerun has settled
            assert before.input_value().startswith("#1 · test_resnet · 1 epoch · done · F1 0.858")
            assert after.input_value() == "#2 · test_resnet · 1 epoch · done · F1 0.810"
            body = page.locator('[data-testid="stMain"]').inner_text()
            # Each run was validated on its own labels (before and after the correction): different answer keys,
            # so the numbers are refused in one line (python -m train experiment judges both on one key).
            assert "Not compared: runs #1 and #2 were measured on different answer keys" in body
            assert "python -m train evaluate 1 2" in body and "What changed" in body
            assert not page.locator('[data-testid="stMetricDelta"]').count()  # no arrow, green or red
            if os.environ.get("LABELFIX_SCREENSHOT"):
                page.screenshot(path=os.environ["LABELFIX_SCREENSHOT"], full_page=True)
        finally:
            browser.close()
