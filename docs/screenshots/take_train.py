"""Screenshots of the Train page (clean, retrain, compare) into docs/screenshots/ (Chromium through Playwright).

    PYTHONPATH=. .venv/bin/python docs/screenshots/take_train.py [--persons 80] [--model resnet10t]

Builds a noisy demo store in a temporary folder and plays the README walkthrough with real jobs
(``train.jobs``, as the page's buttons do): a baseline run on the given labels; a second run that
is screenshotted mid-training (live progress) and then cancelled; the demo's gender flips and mask
swaps corrected from its ``truth.csv`` as a reviewer would; a run on the cleaned labels. Then it
saves ``train_progress.png`` (taken during the second run), ``train_runs.png``, ``train_compare.png``,
``train_detail.png`` and ``train_disk.png``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import pandas as pd  # noqa: E402

from core.demo import generate  # noqa: E402
from core.ingest import ingest  # noqa: E402
from core.store import LabelStore  # noqa: E402
from tests.app_data import serve  # noqa: E402
from train import jobs  # noqa: E402
from train.config import TrainConfig  # noqa: E402

OUT = Path(__file__).resolve().parent
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
# tab -> (file name, text that shows the tab has drawn)
TABS = {"Runs": ("train_runs", "Download CSV"), "Compare": ("train_compare", "Did it help"),
        "Run detail": ("train_detail", "Misclassified validation images"), "Disk": ("train_disk", "Delete a run")}


def fit(store: LabelStore, config: TrainConfig, note: str) -> int:
    """One training job to the end, with its journal note; returns the run id."""
    run_id = jobs.start(store, "fit", config)
    run = jobs.wait(store, run_id, timeout_s=1800)
    if run["status"] != "done":
        raise RuntimeError(f"run #{run_id} {run['status']}: {run.get('error_tail')}")
    store.update_run(run_id, note=note)
    while jobs.running_job(store) is not None:  # the lock goes once the process has exited
        time.sleep(0.2)
    return run_id


def clean_from_truth(store: LabelStore, root: Path) -> tuple[int, int]:
    """Correct the demo's gender flips (per person) and mask swaps (per image) as a reviewer would."""
    truth = pd.read_csv(root / "truth.csv", dtype=str, keep_default_na=False)
    flips = truth[truth["true_gender"] != truth["given_gender"]].drop_duplicates("person")
    for row in flips.itertuples(index=False):
        store.correct(row.person, "gender", row.true_gender, expected=row.given_gender, annotator="ana",
                      reason="face and hair say otherwise in all 7 photos", source="review")
    swaps = truth[truth["true_mask"] != truth["given_mask"]]
    for row in swaps.itertuples(index=False):
        store.correct(row.path, "mask", row.true_mask, expected=row.given_mask, annotator="ben",
                      reason="incorrect_mask and normal exchanged", source="review")
    return len(flips), len(swaps)


def shoot(page, name: str) -> None:
    page.wait_for_load_state("networkidle")
    time.sleep(3)  # plotly draws after the elements arrive
    deadline = time.monotonic() + 30
    while page.locator('[data-stale="true"]').count() and time.monotonic() < deadline:
        time.sleep(0.2)  # between two refreshes of the live progress, not dimmed mid-rerun
    target = OUT / f"{name}.png"
    page.screenshot(path=str(target), full_page=True)
    print(f"wrote {target.relative_to(REPO)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=80, help="demo size in people (default 80)")
    parser.add_argument("--model", default="resnet10t", help="timm model of the runs (default resnet10t)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run (default 4)")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    config = TrainConfig(model=args.model, img_size=(64, 80), batch_size=32, epochs=args.epochs)
    with tempfile.TemporaryDirectory() as folder:
        root, db = Path(folder) / "demo", Path(folder) / "labels.db"
        generate(root, persons=args.persons, noise=0.15, image_size=(96, 128))
        store = LabelStore(db)
        ingest(root, store)
        fit(store, config, "baseline: the labels as given")
        with serve(db, log=Path(folder) / "streamlit.log") as url, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1440, "height": 1500})
            # A second run, watched live, then cancelled (its last finished epoch stays on disk).
            running = jobs.start(store, "fit", replace(config, epochs=args.epochs * 3, lr=0.01))
            store.update_run(running, note="does a higher learning rate help? (stopped: cleaning first)")
            page.goto(f"{url}/train?annotator=ana")
            page.locator("text=epoch 2/").first.wait_for(timeout=600_000)
            shoot(page, "train_progress")
            jobs.cancel(store, running)
            flips, swaps = clean_from_truth(store, root)
            fit(store, config, f"cleaned: {flips} gender flips and {swaps} mask swaps fixed in review")
            page.goto(f"{url}/train?annotator=ana")
            for tab, (name, marker) in TABS.items():
                page.locator(f"[role=tab]:has-text('{tab}')").first.click()
                page.locator(f"text={marker}").first.wait_for(timeout=120_000)
                shoot(page, name)
            browser.close()
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
