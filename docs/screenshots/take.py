"""Take a screenshot of every dashboard page into docs/screenshots/ (Chromium through Playwright).

    PYTHONPATH=. .venv/bin/python docs/screenshots/take.py [--persons 120] [--real-scores] [--keep DIR]

Builds a demo store (generated images plus a few planted file problems: an empty file, a copied
image, a darkened one; data checks; a few corrections by two annotators), scores it
(``--real-scores`` runs ``python -m train score``; by default a synthetic score run from
``tests/app_data.py`` so the script needs no model), starts ``streamlit run`` on a free port and
saves ``<page>.png`` for each page, and ``review_person.png`` / ``review_age.png`` (a person's gender and age group
on the Review page, one 1280x800 screen each). ``--keep DIR`` builds in DIR and reuses it on the next run.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from PIL import Image, ImageEnhance  # noqa: E402

from core.checks import run_data_checks  # noqa: E402
from core.demo import generate  # noqa: E402
from core.ingest import ingest  # noqa: E402
from core.store import LabelStore  # noqa: E402
from core.synthetic import add_score_run  # noqa: E402
from tests.app_data import serve  # noqa: E402

OUT = Path(__file__).resolve().parent
# page url -> (file name, text that shows the page has drawn)
PAGES = {"": ("distributions", "Click a bar"), "review": ("review", "Reviewed"),
         "browse": ("browse", "image(s)"), "history": ("history", "Import corrections"),
         "health": ("health", "Image issues")}
# The script run finished (no status widget), no element still loading, every image decoded.
READY = """() => !document.querySelector('[data-testid="stStatusWidget"]')
    && document.querySelectorAll('[data-testid="stSkeleton"]').length === 0
    && Array.from(document.images).every(image => image.complete)"""
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def plant_problems(root: Path) -> None:
    """What real datasets contain: an empty file, an image copied into another person, a dark photo."""
    folders = sorted((root / "train" / "images").iterdir())
    empty = next(folders[3].glob("mask2.*"))
    empty.write_bytes(b"")
    source, target = next(folders[5].glob("mask1.*")), next(folders[9].glob("mask3.*"))
    shutil.copyfile(source, target)
    dark = next(folders[12].glob("normal.*"))
    with Image.open(dark) as image:
        ImageEnhance.Brightness(image.convert("RGB")).enhance(0.08).save(dark, format=image.format or "JPEG")


def build(folder: Path, persons: int, real_scores: bool) -> Path:
    """A demo store with data checks, a score run and a few corrections; returns its path."""
    db = folder / "labels.db"
    if db.exists():
        return db
    generate(folder / "demo", persons=persons)
    plant_problems(folder / "demo")
    with LabelStore(db) as store:
        ingest(folder / "demo", store)
        run_data_checks(store, workers=2)  # stores its issues for the Data health page
        if real_scores:
            subprocess.run([sys.executable, "-m", "train", "score", "--db", str(db), "--quiet"], cwd=REPO, check=True)
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
    parser.add_argument("--keep", type=Path, default=None, help="build the store here and reuse it next time")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        db = build(folder, args.persons, args.real_scores)
        with serve(db, log=folder / "streamlit.log") as url, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            for path, (name, marker) in PAGES.items():
                # Streamlit scrolls inside the page, so a tall window is what shows a whole page.
                height = {"review": 2300, "browse": 2300, "distributions": 2000}.get(name, 1500)
                page = browser.new_page(viewport={"width": 1440, "height": height})
                page.goto(f"{url}/{path}?annotator=ana")
                page.locator(f"text={marker}").first.wait_for(timeout=120_000)
                page.wait_for_function(READY, timeout=300_000)
                time.sleep(3)  # plotly draws after the elements arrive
                target = OUT / f"{name}.png"
                page.screenshot(path=str(target), full_page=True)
                page.close()
                print(f"wrote {target.relative_to(REPO)}")
            # A person on the Review page, and a person's age group, each in one 1280x800 screen (no scrolling):
            # the reason in words, the photos in one row with the model's opinion, the buttons beside them.
            for attribute_name, file_name in (("gender", "review_person"), ("age_group", "review_age")):
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.goto(f"{url}/review?annotator=ana")
                page.locator("button:has-text('Accept')").first.wait_for(timeout=120_000)
                page.locator(".st-key-review_filters_open summary").click()  # collapsed until opened
                attribute = page.locator('input[role="combobox"][aria-label="Attribute"]')
                attribute.wait_for(timeout=120_000)
                attribute.click()
                attribute.press("ArrowDown")  # opens the list
                page.locator(f'[role="option"]:has-text("{attribute_name}")').first.click()
                page.locator(f"strong:has-text(': {attribute_name}')").first.wait_for(timeout=120_000)
                page.wait_for_function(READY, timeout=300_000)
                page.locator(".st-key-review_filters_open summary").click()  # and closed again
                page.wait_for_function(READY, timeout=300_000)
                page.locator(".st-key-person_strip img").first.wait_for(timeout=120_000)
                time.sleep(3)
                target = OUT / f"{file_name}.png"
                page.screenshot(path=str(target))  # the screen as the reviewer sees it
                page.close()
                print(f"wrote {target.relative_to(REPO)}")
            browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
