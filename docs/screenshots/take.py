"""Take a screenshot of every dashboard page into docs/screenshots/ (Chromium through Playwright).

    PYTHONPATH=. .venv/bin/python docs/screenshots/take.py [--persons 120] [--real-scores]

Builds a demo store in a temporary folder (generated images, data checks, a few corrections by two
annotators), scores it (``--real-scores`` runs ``python -m train score``; by default a synthetic
score run from ``tests/app_data.py`` so the script needs no model), starts ``streamlit run`` on a
free port and saves ``<page>.png`` for each page.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from core.checks import run_data_checks  # noqa: E402
from core.demo import generate  # noqa: E402
from core.ingest import ingest  # noqa: E402
from core.store import LabelStore  # noqa: E402
from tests.app_data import add_score_run, serve  # noqa: E402

OUT = Path(__file__).resolve().parent
# page url -> (file name, text that shows the page has drawn)
PAGES = {"distributions": ("distributions", "Click a bar"), "review": ("review", "Reviewed"),
         "browse": ("browse", "image(s)"), "history": ("history", "Import corrections"),
         "health": ("health", "Image issues")}
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def build(folder: Path, persons: int, real_scores: bool) -> Path:
    """A demo store with data checks, a score run and a few corrections; returns its path."""
    generate(folder / "demo", persons=persons)
    db = folder / "labels.db"
    with LabelStore(db) as store:
        ingest(folder / "demo", store)
        run_data_checks(store, workers=2)  # stores its issues for the Data health page
        if real_scores:
            subprocess.run([sys.executable, "-m", "train", "score", "--db", str(db)], cwd=REPO, check=True)
        else:
            add_score_run(store)
        labels = store.current_labels()
        first = labels.iloc[0]
        store.correct(first["person"], "gender", "male" if first["gender"] == "female" else "female",
                      expected=first["gender"], annotator="ana", reason="beard, short hair in all 7 photos")
        third = labels.iloc[15]
        store.correct(third["path"], "mask", "incorrect" if third["mask"] != "incorrect" else "wear",
                      expected=third["mask"], annotator="ben", reason="mask below the nose")
        store.mark_reviewed(labels.iloc[30]["path"], "mask", annotator="ben")
    return db


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=120, help="demo size in people (default 120)")
    parser.add_argument("--real-scores", action="store_true", help="score with `python -m train score`")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as folder:
        db = build(Path(folder), args.persons, args.real_scores)
        with serve(db, log=Path(folder) / "streamlit.log") as url, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1440, "height": 1100})
            for path, (name, marker) in PAGES.items():
                page.goto(f"{url}/{path}?annotator=ana")
                page.locator(f"text={marker}").first.wait_for(timeout=120_000)
                page.wait_for_load_state("networkidle")
                time.sleep(3)  # plotly draws after the elements arrive
                target = OUT / f"{name}.png"
                page.screenshot(path=str(target), full_page=True)
                print(f"wrote {target.relative_to(REPO)}")
            browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
