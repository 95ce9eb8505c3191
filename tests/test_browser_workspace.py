"""The review loop as a person walks it, in real Chromium (Debian's, through Playwright), on a tiny demo
with a tiny score run: type the annotator name once, click a chart bar, relabel on the Browse page it
opens, go to Review, accept with A, undo with U and land on the undone unit, open a person and check
the size of the strip's photos; at 1400×1000 no visible decision label is cut with an ellipsis, the
name survives every navigation, and no request leaves 127.0.0.1."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pytest

from core import review
from core.demo import generate
from core.ingest import ingest
from core.store import LabelStore
from core.synthetic import add_score_run
from tests.app_data import serve
from tests.test_browser import ARGS, CHROMIUM, wait_for

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium at /usr/bin/chromium (apt-get install chromium)"),
]
NAME = "walker"
# Elements in the main area whose text the browser cuts with an ellipsis (CSS text-overflow), as text.
CUT = """() => Array.from(document.querySelectorAll('[data-testid="stMain"] *'))
    .filter(e => e.offsetParent !== null && e.textContent.trim() && getComputedStyle(e).textOverflow === 'ellipsis')
    .filter(e => { const text = document.createRange(); text.selectNodeContents(e);
                   return e.scrollWidth > e.clientWidth
                       || text.getBoundingClientRect().width > e.getBoundingClientRect().width + 0.5; })
    .map(e => e.textContent.trim())"""
IDLE = """() => !document.querySelector('[data-testid="stStatusWidget"]')
    && document.querySelectorAll('[data-testid="stSkeleton"]').length === 0
    && document.querySelectorAll('[data-stale="true"]').length === 0"""


def test_the_review_loop_in_a_real_browser(tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    generate(tmp_path / "demo", persons=6, image_size=(48, 64))
    db = tmp_path / "labels.db"
    with LabelStore(db) as store:
        ingest(tmp_path / "demo", store)
        run_id = add_score_run(store)
        first = review.queue_units(store, run_id, review.statuses(store), flagged_only=True,
                                   status="unreviewed").iloc[0].to_dict()

    outside: list[str] = []

    def note(url: str) -> None:
        if urlparse(url).hostname not in ("127.0.0.1", None) and not url.startswith(("data:", "blob:")):
            outside.append(url)

    with serve(db, log=tmp_path / "streamlit.log") as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("request", lambda request: note(request.url))
            page.on("websocket", lambda socket: note(socket.url))
            name = page.locator('input[aria-label="Annotator"]')

            def settled() -> None:
                page.wait_for_function(IDLE, timeout=60_000)

            # 1. Open the app without a name in the URL and type it once, in the sidebar.
            page.goto(url)
            page.locator("text=Click a bar").first.wait_for(timeout=90_000)
            name.fill(NAME)
            name.press("Enter")
            page.wait_for_url(f"**annotator={NAME}**", timeout=30_000)

            # 2. A chart bar opens exactly its images in Browse, and the name is still there.
            bar = page.locator(".js-plotly-plot .barlayer .point path:visible").first
            bar.wait_for(timeout=60_000)
            bar.click(force=True)
            page.locator("text=Chart selection:").first.wait_for(timeout=60_000)
            settled()
            assert name.input_value() == NAME
            assert not page.locator("text=Type your name to enable relabeling").count()

            # 3. Relabel the focused image there (its mask, through the select box and the Set button).
            set_mask = page.locator("button:has-text('Set mask (image)')")
            set_mask.wait_for(timeout=30_000)
            assert set_mask.is_enabled()
            choice = page.locator('input[role="combobox"][aria-label="New mask"]')
            choice.click()
            choice.press("ArrowDown")  # opens the list
            page.locator('[role="option"][aria-selected="false"]').first.click()
            settled()
            set_mask.click()
            with LabelStore(db) as store:
                assert wait_for(lambda: store.n_corrections() == 1), "Set mask did not write a correction"
                entry = store.history(limit=1).iloc[0]
                assert (entry["annotator"], entry["source"], entry["attribute"]) == (NAME, "browse", "mask")

            # 4. Review, through the sidebar link: accept the first unit with A.
            page.locator('[data-testid="stSidebarNav"] a:has-text("Review queue")').click()
            accept = page.locator("button:has-text('Accept')").first
            accept.wait_for(timeout=60_000)
            settled()
            assert name.input_value() == NAME
            # The focused unit names its target and attribute in its heading (a person) or its path under its image.
            focused = page.locator(f"h3:has-text('Person {first['target']}: {first['attribute']}')"
                                   if first["scope"] == "person" else
                                   f"[data-testid='stText']:has-text('{first['target']}')")
            assert focused.first.is_visible()
            assert not page.evaluate(CUT), page.evaluate(CUT)  # no decision label cut at 1400×1000
            page.locator("h1:has-text('Review queue')").click()  # focus the page, not a text field
            page.keyboard.press("a")
            with LabelStore(db) as store:
                assert wait_for(lambda: store.n_corrections() == 2), "pressing A did not write a correction"
                assert store.history(limit=1).iloc[0]["target"] == first["target"]
            page.locator("text=correction #").first.wait_for(timeout=30_000)
            settled()
            expect(focused).to_have_count(0, timeout=30_000)  # moved on to the next unit

            # 5. U takes it back and shows the unit taken back.
            page.locator("h1:has-text('Review queue')").click()
            page.keyboard.press("u")
            with LabelStore(db) as store:
                assert wait_for(lambda: store.history(limit=1).iloc[0]["source"] == "revert"), "U did not undo"
            page.locator("text=Undone:").first.wait_for(timeout=30_000)
            focused.first.wait_for(timeout=30_000)  # back on the undone unit

            # 6. A person entry: the seven photos are the evidence, each at least 160 px wide.
            page.locator('input[role="combobox"][aria-label="Attribute"]').click()
            page.locator('input[role="combobox"][aria-label="Attribute"]').press("ArrowDown")
            page.locator('[role="option"]:has-text("gender")').first.click()
            strip = page.locator(".st-key-person_strip img")
            strip.first.wait_for(timeout=60_000)
            settled()
            heading = page.locator("h3:has-text('Person ')").first.inner_text()  # "Person <key>: gender"
            with LabelStore(db) as store:
                _, n_photos = store.select_items(person=heading[len("Person "):].rsplit(":", 1)[0], limit=0)
            page.wait_for_function("n => { const images = document.querySelectorAll('.st-key-person_strip img');"
                                   " return images.length === n && Array.from(images).every(i => i.complete"
                                   " && i.naturalWidth > 0); }", arg=n_photos, timeout=30_000)
            widths = page.evaluate("() => Array.from(document.querySelectorAll('.st-key-person_strip img'))"
                                   ".map(i => i.getBoundingClientRect().width)")
            assert n_photos >= 5 and min(widths) >= 160, (n_photos, widths)
            assert page.locator("text=photos").first.is_visible()
            assert not page.evaluate(CUT), page.evaluate(CUT)
            assert name.input_value() == NAME
        except Exception:
            page.screenshot(path=str(tmp_path / "failed.png"))  # kept with the test's tmp_path, for a look
            raise
        finally:
            browser.close()
    assert not outside, f"requests left the machine: {outside}"
