"""The review loop as a person walks it, in real Chromium (Debian's, through Playwright), on a tiny demo
with a tiny score run: type the annotator name once, click a chart bar, relabel on the Browse page it
opens, go to Review, accept an age group with A (nothing written until an age is typed; then exactly that
age), undo with U and land on the undone unit, open a person at 1280×800 (first photo and Accept both on
screen, full-size zoom), mark it correct from further down (back at the top, filters as left), check that
another tab has its own undo and that the verdict survives a rescore; at 1400×1000 no visible decision
label is cut with an ellipsis, the name survives every navigation, and no request leaves 127.0.0.1."""

from __future__ import annotations

from pathlib import Path
from typing import Any
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
# The first photo of the person strip and the Accept button: (top, bottom, right) each; the photo's natural width
# (what the full-screen zoom shows) and its width on the page.
IN_VIEW = """() => { const photo = document.querySelector('.st-key-person_strip img');
    const accept = Array.from(document.querySelectorAll('button')).find(b => b.innerText.includes('Accept'));
    const box = e => { if (!e) return null; const r = e.getBoundingClientRect(); return [r.top, r.bottom, r.right]; };
    return {photo: box(photo), accept: box(accept), natural: photo ? photo.naturalWidth : 0,
            shown: photo ? photo.getBoundingClientRect().width : 0}; }"""
SCROLLED = """() => document.querySelector('[data-testid="stMain"]').scrollTop > 100"""
AT_TOP = """() => document.querySelector('[data-testid="stMain"]').scrollTop === 0"""
IDLE = """() => !document.querySelector('[data-testid="stStatusWidget"]')
    && document.querySelectorAll('[data-testid="stSkeleton"]').length === 0
    && document.querySelectorAll('[data-stale="true"]').length === 0"""


def watch_requests(page: Any) -> list[str]:
    """The list every request or websocket of ``page`` that leaves 127.0.0.1 is appended to (data: and blob:
    URLs stay in the page)."""
    outside: list[str] = []

    def note(url: str) -> None:
        if urlparse(url).hostname not in ("127.0.0.1", None) and not url.startswith(("data:", "blob:")):
            outside.append(url)

    page.on("request", lambda request: note(request.url))
    page.on("websocket", lambda socket: note(socket.url))
    return outside


def test_the_review_loop_in_a_real_browser(tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    generate(tmp_path / "demo", persons=6, image_size=(48, 64))
    db = tmp_path / "labels.db"
    with LabelStore(db) as store:
        ingest(tmp_path / "demo", store)
        run_id = add_score_run(store)
        first = review.queue_units(store, run_id, review.statuses(store), flagged_only=True,
                                   status="unreviewed").iloc[0].to_dict()

    with serve(db, log=tmp_path / "streamlit.log") as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            outside = watch_requests(page)
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

            # 4. Review, through the sidebar link. The first unit is a person's age group: A alone writes nothing
            #    (a group never gives an age); the age typed is exactly what is written.
            page.locator('[data-testid="stSidebarNav"] a:has-text("Review queue")').click()
            accept = page.locator("button:has-text('Accept')").first
            accept.wait_for(timeout=60_000)
            settled()
            assert name.input_value() == NAME
            assert first["attribute"] == "age_group"
            focused = page.locator(f"strong:has-text('Person {first['target']}: {first['attribute']}')")
            assert focused.first.is_visible()
            assert not page.evaluate(CUT), page.evaluate(CUT)  # no decision label cut at 1400×1000
            page.locator("h1:has-text('Review queue')").click()  # focus the page, not a text field
            page.keyboard.press("a")
            page.locator("text=never invents").first.wait_for(timeout=30_000)
            settled()
            with LabelStore(db) as store:
                assert store.n_corrections() == 1  # only Browse's
                before = store.label_of(first["target"], "age")
                low, high = review.group_range(store.schema, "age_group", first["suggested"])
            typed = low + 2 if low is not None else high - 2
            page.locator(f'input[aria-label*="{first["suggested"]}"]').first.fill(str(typed))
            page.locator(f'input[aria-label*="{first["suggested"]}"]').first.press("Enter")
            settled()
            accept.click()
            with LabelStore(db) as store:
                assert wait_for(lambda: store.n_corrections() == 2), "Accept with a typed age wrote nothing"
                entry = store.history(limit=1).iloc[0]
                assert (entry["target"], entry["attribute"], entry["old_value"], entry["new_value"]) == (
                    first["target"], "age", str(before), str(typed))  # the reviewer's age, nothing else
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

            # 6. A person unit at 1280×800: the first photo and Accept are both on screen, no scrolling; the
            #    filters stay as left (collapsed by default); the zoom gets the photo at full size.
            page.set_viewport_size({"width": 1280, "height": 800})
            filters = page.locator(".st-key-review_filters_open details")
            assert filters.get_attribute("open") is None  # collapsed by default
            page.locator(".st-key-review_filters_open summary").click()
            page.locator('input[role="combobox"][aria-label="Attribute"]').click()
            page.locator('input[role="combobox"][aria-label="Attribute"]').press("ArrowDown")
            page.locator('[role="option"]:has-text("gender")').first.click()
            strip = page.locator(".st-key-person_strip img")
            strip.first.wait_for(timeout=60_000)
            settled()
            page.locator(".st-key-review_filters_open summary").click()  # closed again by the reviewer
            settled()
            heading = page.locator("strong:has-text('Person ')").first.inner_text()  # "Person <key>: gender"
            person = heading[len("Person "):].rsplit(":", 1)[0]
            with LabelStore(db) as store:
                _, n_photos = store.select_items(person=person, limit=0)
            page.wait_for_function("n => { const images = document.querySelectorAll('.st-key-person_strip img');"
                                   " return images.length === n && Array.from(images).every(i => i.complete"
                                   " && i.naturalWidth > 0); }", arg=n_photos, timeout=30_000)
            boxes = page.evaluate(IN_VIEW)
            assert boxes["photo"] and boxes["accept"], boxes
            for what in ("photo", "accept"):
                top, bottom, right = boxes[what]
                assert top >= 0 and bottom <= 800 and right <= 1280, (what, boxes)  # both inside 1280×800
            assert boxes["natural"] >= 384 > boxes["shown"], boxes  # the zoom shows the full-size file
            assert not page.evaluate(CUT), page.evaluate(CUT)

            # 7. "Label is correct" on the person, from further down the page: the view is back at the top of
            #    the next unit, the filters still as left (closed).
            page.mouse.move(640, 500)
            page.mouse.wheel(0, 2000)
            page.wait_for_function(SCROLLED, timeout=10_000)
            page.evaluate("() => document.activeElement && document.activeElement.blur()")  # no scrolling back up
            page.keyboard.press("k")
            with LabelStore(db) as store:
                assert wait_for(lambda: len(store.reviews()) == 1), "K did not record a verdict"
                verdict = store.reviews().iloc[0]
                assert (verdict["target"], verdict["attribute"], verdict["verdict"], verdict["score_run"]) == (
                    person, "gender", "correct", run_id)
            page.locator("text=label is correct (verdict").first.wait_for(timeout=30_000)
            settled()
            page.wait_for_function(AT_TOP, timeout=10_000)  # back at the top
            assert filters.get_attribute("open") is None
            assert name.input_value() == NAME

            # 8. Another tab has its own undo: nothing of this tab's to take back there.
            other = browser.new_page(viewport={"width": 1280, "height": 800})
            other.goto(f"{url}/review?annotator={NAME}")
            other.locator("button:has-text('Accept')").first.wait_for(timeout=60_000)
            other.wait_for_function(IDLE, timeout=60_000)
            assert other.locator("button:has-text('Undo')").first.is_disabled()
            assert "tab=" in other.url and other.url.split("tab=")[1][:8] != page.url.split("tab=")[1][:8]
            other.close()

            # 9. A rescore: the person's "label is correct" carries over (same label), said with who and which run.
            with LabelStore(db) as store:
                rescored = add_score_run(store, seed=1)
                statuses = review.statuses(store)
                kept = statuses[(statuses["target"] == person) & (statuses["attribute"] == "gender")]
                assert kept["status"].tolist() == ["reviewed"] and kept["score_run"].tolist() == [run_id]
                reviewed, _ = review.queue_progress(store, rescored, statuses)
                assert reviewed >= 1
            page.reload()
            page.locator(f"text=Reviewed {reviewed} of").first.wait_for(timeout=60_000)
            page.locator(f"text=score run #{rescored}").first.wait_for(timeout=30_000)
        except Exception:
            page.screenshot(path=str(tmp_path / "failed.png"))  # kept with the test's tmp_path, for a look
            raise
        finally:
            browser.close()
    assert not outside, f"requests left the machine: {outside}"
