"""Five reviewers at once: five real-Chromium sessions decide the same Review queue against one server.

    PYTHONPATH=. .venv/bin/python bench/five_reviewers.py [--reviewers 5] [--decisions 50] [--persons 60]
                                                         [--max-minutes 15] [--write]

One Streamlit server on 127.0.0.1 and one Chromium with a browser context (its own session and tab) per
annotator, all on the Review page at 1280x800 of one store (a generated demo, a synthetic score run with
every second unit flagged). Each reviewer starts a few units apart, sometimes skips ahead (N), and decides
with the keyboard: A (accept; not on age groups, which ask for an age), K (label is correct), S (skip), and
U (undo) after every tenth decision. Latency is the time from the key press to the page having drawn the
outcome (the message at the top of the page, the script idle). First one reviewer alone decides on a copy
of the store (the baseline), then all of them at once; the table gives both and their ratio.

Checked against the store afterwards: every decision the page reported applied is in the store under its
reviewer and appears on the History page (its counts); none lost; no write the page did not report;
each overlap (a unit decided by another reviewer while shown) was either refused as a conflict or applied
by exactly one of them (a write from a stale view is a violation); each undo took back a decision of the
same reviewer, made in the same tab. ``--write`` replaces BENCHMARKS.md's "Five reviewers at once".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import stop_server, write_section  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
IDLE = """() => !document.querySelector('[data-testid="stStatusWidget"]')
    && document.querySelectorAll('[data-stale="true"]').length === 0"""
# The outcome message differs from the one before and the script run is over.
DRAWN = """prev => { const a = document.querySelector('.st-key-flash [data-testid="stAlert"]');
    return a !== null && a.innerText !== prev && !document.querySelector('[data-testid="stStatusWidget"]')
        && document.querySelectorAll('[data-stale="true"]').length === 0; }"""
FLASH = """() => { const a = document.querySelector('.st-key-flash [data-testid="stAlert"]'); return a ? a.innerText : ''; }"""
HEADING = """() => { const s = Array.from(document.querySelectorAll('[data-testid="stMain"] strong'))
    .find(e => /^(Person|Image) /.test(e.innerText)); return s ? s.innerText : ''; }"""
RECORD = re.compile(r"(correction|verdict) #(\d+)")


def build_store(folder: Path, persons: int) -> Path:
    from core.demo import generate
    from core.ingest import ingest
    from core.store import LabelStore
    from core.synthetic import add_score_run

    generate(folder / "demo", persons=persons, image_size=(96, 128))
    db = folder / "labels.db"
    with LabelStore(db) as store:
        ingest(folder / "demo", store)
        add_score_run(store, flag_every=2)
    return db


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(db: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "LABELS_DB": str(db), "LABELS_AUTO_DEMO": "0", "PYTHONPATH": str(REPO)}
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app/Home.py", "--server.headless", "true", "--server.port",
         str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    return server, f"http://127.0.0.1:{port}"


async def press(page: Any, key: str, timeout_s: float) -> tuple[float, str]:
    """Press ``key`` with nothing focused; (seconds until the outcome is drawn, its text)."""
    before = await page.evaluate(FLASH)
    await page.evaluate("() => document.activeElement && document.activeElement.blur()")
    started = time.perf_counter()
    await page.keyboard.press(key)
    await page.wait_for_function(DRAWN, arg=before, timeout=timeout_s * 1000, polling=25)
    return time.perf_counter() - started, await page.evaluate(FLASH)


async def settle(page: Any) -> None:
    await page.wait_for_function(IDLE, timeout=120_000, polling=50)


async def next_unit(page: Any) -> None:
    """N: move on, and wait until the next unit is drawn (its heading changed, the script idle)."""
    before = await page.evaluate(HEADING)
    await page.evaluate("() => document.activeElement && document.activeElement.blur()")
    await page.keyboard.press("n")
    try:
        await page.wait_for_function(f"prev => ({HEADING})() !== prev", arg=before, timeout=30_000, polling=50)
    except Exception:  # noqa: BLE001  (the last unit: nothing after it)
        pass
    await settle(page)


async def reviewer(browser: Any, url: str, name: str, index: int, decisions: int, deadline: float,
                   log: list[dict[str, Any]]) -> None:
    """One annotator's session: ``decisions`` keyboard decisions (and an undo after every tenth)."""
    rng = random.Random(1000 + index)
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    await page.goto(f"{url}/review?annotator={name}")
    await page.locator("button:has-text('Accept')").first.wait_for(timeout=180_000)
    await settle(page)
    tab = (await page.evaluate("() => new URL(location.href).searchParams.get('tab')")) or ""
    for _ in range(2 * index):  # start a few units apart
        await next_unit(page)
    done = 0
    while done < decisions and time.monotonic() < deadline:
        if rng.random() < 0.15:  # skip ahead now and then: paths cross
            await next_unit(page)
        heading = await page.evaluate(HEADING)
        if not heading:
            break  # nothing left to review
        drawn_at = time.time()
        attribute = heading.rsplit(": ", 1)[-1]
        key = rng.choice("kks" if attribute == "age_group" else "aakks")
        try:
            seconds, text = await press(page, key, 60)
        except Exception as error:  # noqa: BLE001  (a timeout is a result: recorded, not fatal)
            log.append({"reviewer": name, "tab": tab, "kind": "decision", "key": key, "unit": heading,
                        "drawn_at": drawn_at, "seconds": None, "text": f"timeout: {type(error).__name__}"})
            await settle(page)
            done += 1
            continue
        found = RECORD.search(text)
        log.append({"reviewer": name, "tab": tab, "kind": "decision", "key": key, "unit": heading,
                    "drawn_at": drawn_at, "seconds": seconds, "text": text,
                    "conflict": "Conflict" in text, "record": (found.group(1), int(found.group(2)))
                    if found and "Conflict" not in text else None})
        done += 1
        if done % 10 == 0:
            caption = await page.evaluate("() => { const c = Array.from(document.querySelectorAll('[data-testid=\"stCaptionContainer\"]'))"
                                          ".find(e => e.innerText.startsWith('Undo (this tab)')); return c ? c.innerText : ''; }")
            try:
                seconds, text = await press(page, "u", 60)
            except Exception as error:  # noqa: BLE001
                seconds, text = None, f"timeout: {type(error).__name__}"
            log.append({"reviewer": name, "tab": tab, "kind": "undo", "seconds": seconds, "text": text,
                        "expected": caption.split("takes back: ", 1)[-1]})
    await context.close()


async def session(db: Path, names: list[str], decisions: int, minutes: float) -> tuple[list[dict[str, Any]], dict]:
    from playwright.async_api import async_playwright

    server, url = start_server(db)
    log: list[dict[str, Any]] = []
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            probe = await browser.new_page()
            for _ in range(600):  # the server's first answer
                try:
                    await probe.goto(f"{url}/_stcore/health", timeout=2000)
                    break
                except Exception:  # noqa: BLE001
                    await asyncio.sleep(0.2)
            await probe.close()
            deadline = time.monotonic() + minutes * 60
            started = time.perf_counter()
            await asyncio.gather(*(reviewer(browser, url, name, i, decisions, deadline, log)
                                   for i, name in enumerate(names)))
            wall = time.perf_counter() - started
            history = await history_counts(browser, url)
            await browser.close()
    finally:
        stop_server(server)
    return log, {"wall_s": wall, "history": history}


async def history_counts(browser: Any, url: str) -> dict[str, int]:
    """What the History page says: logged changes and review decisions."""
    page = await browser.new_page(viewport={"width": 1400, "height": 1000})
    await page.goto(f"{url}/history?annotator=auditor")
    caption = page.locator("text=logged change(s)").first
    await caption.wait_for(timeout=120_000)
    changes = int(re.search(r"of ([\d,]+) logged", await caption.inner_text()).group(1).replace(",", ""))
    label = await page.locator("summary:has-text('Review decisions')").first.inner_text()
    verdicts = int(re.search(r"Review decisions \(([\d,]+)\)", label).group(1).replace(",", ""))
    await page.close()
    return {"corrections": changes, "verdicts": verdicts}


def audit(db: Path, log: list[dict[str, Any]], history: dict[str, int]) -> dict[str, Any]:
    """Every claim of the pages checked against the store."""
    from core.store import LabelStore

    with LabelStore(db) as store:
        fixes = store.history()
        verdicts = store.reviews()
    fixes_by_id = fixes.set_index("id")
    verdicts_by_id = verdicts.set_index("id")
    decisions = [e for e in log if e["kind"] == "decision"]
    applied = [e for e in decisions if e.get("record")]
    lost = []
    for entry in applied:
        kind, number = entry["record"]
        table = fixes_by_id if kind == "correction" else verdicts_by_id
        if number not in table.index or table.loc[number, "annotator"] != entry["reviewer"]:
            lost.append(entry)
    # No write the pages did not report: the store's decisions per reviewer = the page's applied ones.
    made = {}
    for name in {e["reviewer"] for e in log}:
        made[name] = int(((fixes["annotator"] == name) & (fixes["source"] == "review")).sum()
                         + ((verdicts["annotator"] == name) & verdicts["verdict"].isin(["correct", "skip"])).sum())
    reported = {name: sum(1 for e in applied if e["reviewer"] == name) for name in made}
    # Overlaps: a label decided by two reviewers; the later write must come from a view drawn after the earlier.
    writes = []
    for entry in applied:
        kind, number = entry["record"]
        row = (fixes_by_id if kind == "correction" else verdicts_by_id).loc[number]
        writes.append({"label": (row["target"], row["attribute"]), "at": datetime.fromisoformat(row["created_at"])
                       .timestamp(), "drawn_at": entry["drawn_at"], "reviewer": entry["reviewer"], "id": (kind, number)})
    stale, overlaps = [], 0
    by_label: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for write in writes:
        by_label.setdefault(write["label"], []).append(write)
    for items in by_label.values():
        items.sort(key=lambda w: w["at"])
        for earlier, later in zip(items, items[1:]):
            if earlier["reviewer"] != later["reviewer"]:
                overlaps += 1
                if later["drawn_at"] < earlier["at"] - 0.05:  # shown before the other's write, applied anyway
                    stale.append((earlier["id"], later["id"]))
    conflicts = [e for e in decisions if e.get("conflict")]
    clear = [e for e in conflicts if "meanwhile" not in e["text"]]  # a conflict that does not say what happened
    # Undo: every revert / reopen of a reviewer takes back that reviewer's own decision from the same tab.
    wrong_undo = []
    reverts = fixes[fixes["source"] == "revert"]
    for row in reverts.itertuples():
        original = fixes_by_id.loc[int(row.reverts)]
        if original["annotator"] != row.annotator or original["tab"] != row.tab:
            wrong_undo.append(("revert", int(row.id)))
    for row in verdicts[verdicts["verdict"] == "reopen"].itertuples():
        earlier = verdicts[(verdicts["target"] == row.target) & (verdicts["attribute"] == row.attribute)
                           & (verdicts["id"] < row.id) & (verdicts["verdict"] != "reopen")]
        if earlier.empty or earlier.iloc[0]["annotator"] != row.annotator or earlier.iloc[0]["tab"] != row.tab:
            wrong_undo.append(("reopen", int(row.id)))
    undos = [e for e in log if e["kind"] == "undo"]
    undo_text_mismatch = [e for e in undos if not e["text"].startswith("Undone: " + e["expected"])]
    return {
        "decisions": len(decisions), "applied": len(applied), "conflicts": len(conflicts),
        "other": len(decisions) - len(applied) - len(conflicts), "lost": len(lost),
        "unreported_writes": {n: made[n] - reported[n] for n in made if made[n] != reported[n]},
        "history_corrections": history["corrections"], "store_corrections": len(fixes),
        "history_verdicts": history["verdicts"], "store_verdicts": len(verdicts),
        "overlaps_applied_by_two": overlaps, "stale_writes": len(stale), "undos": len(undos),
        "undo_wrong_owner": len(wrong_undo), "undo_text_mismatch": len(undo_text_mismatch),
        "conflicts_unclear": len(clear),
        "examples": {"conflict": conflicts[0]["text"].split("nothing written: ", 1)[-1] if conflicts else None,
                     "other": next((e["text"] for e in decisions if not e.get("record") and not e.get("conflict")),
                                   None)}}


def latency(log: list[dict[str, Any]], kind: str = "decision") -> dict[str, float | int]:
    values = sorted(e["seconds"] for e in log if e["kind"] == kind and e.get("seconds") is not None)
    if not values:
        return {"n": 0}
    p95 = values[min(len(values) - 1, int(round(0.95 * (len(values) - 1))))]
    return {"n": len(values), "median_s": round(statistics.median(values), 3), "p95_s": round(p95, 3),
            "max_s": round(values[-1], 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reviewers", type=int, default=5)
    parser.add_argument("--decisions", type=int, default=50, help="decisions per reviewer (default 50)")
    parser.add_argument("--baseline-decisions", type=int, default=30, help="decisions of the lone reviewer")
    parser.add_argument("--persons", type=int, default=60)
    parser.add_argument("--max-minutes", type=float, default=15.0, help="stop deciding after this long")
    parser.add_argument("--write", action="store_true", help="replace BENCHMARKS.md's section")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="five-reviewers-"))
    try:
        db = build_store(folder, args.persons)
        alone = folder / "alone.db"
        shutil.copyfile(db, alone)
        load_before = os.getloadavg()
        base_log, base_info = asyncio.run(session(alone, ["solo"], args.baseline_decisions, args.max_minutes))
        names = [f"reviewer{i + 1}" for i in range(args.reviewers)]
        log, info = asyncio.run(session(db, names, args.decisions, args.max_minutes))
        load_after = os.getloadavg()
        result = {"baseline": {"latency": latency(base_log), "audit": audit(alone, base_log, base_info["history"]),
                               "wall_s": round(base_info["wall_s"], 1)},
                  "five": {"latency": latency(log), "undo_latency": latency(log, "undo"),
                           "audit": audit(db, log, info["history"]), "wall_s": round(info["wall_s"], 1)},
                  "load": {"before": [round(v, 2) for v in load_before], "after": [round(v, 2) for v in load_after]},
                  "cpus": os.cpu_count(), "machine": platform.machine(), "reviewers": args.reviewers,
                  "decisions_each": args.decisions}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(result, indent=1, default=str))
    if args.json:
        args.json.write_text(json.dumps({**result, "log": log}, indent=1, default=str))
    if args.write:
        write_section("Five reviewers at once", render(result))
    return 0 if ok(result) else 1


def ok(result: dict[str, Any]) -> bool:
    five = result["five"]["audit"]
    return (five["lost"] == 0 and not five["unreported_writes"] and five["stale_writes"] == 0
            and five["undo_wrong_owner"] == 0 and five["history_corrections"] == five["store_corrections"]
            and five["history_verdicts"] == five["store_verdicts"])


def render(result: dict[str, Any]) -> str:
    base, five = result["baseline"], result["five"]
    a = five["audit"]
    ratio = (five["latency"]["p95_s"] / base["latency"]["p95_s"]) if base["latency"].get("p95_s") else float("nan")
    return f"""`bench/five_reviewers.py` ({datetime.now(UTC):%Y-%m-%d}): {result['reviewers']} real-Chromium sessions
(one browser context each, 1280x800, keyboard A/K/S and U after every tenth decision), {result['decisions_each']}
decisions each, one Streamlit server on 127.0.0.1, one store (60 generated people, synthetic score run, every
second unit flagged); first one reviewer alone on a copy of the store (the baseline). Machine: {result['cpus']} cores
shared with other jobs, load average {result['load']['before'][0]} before, {result['load']['after'][0]} after.

| | decisions | median (s) | p95 (s) | max (s) | wall (s) |
|---|---:|---:|---:|---:|---:|
| 1 reviewer alone (baseline) | {base['latency']['n']} | {base['latency']['median_s']} | {base['latency']['p95_s']} | {base['latency']['max_s']} | {base['wall_s']} |
| {result['reviewers']} reviewers at once | {five['latency']['n']} | {five['latency']['median_s']} | {five['latency']['p95_s']} | {five['latency']['max_s']} | {five['wall_s']} |
| ratio (p95, five / one) | | | {ratio:.2f}x | | |

Latency: key press to the outcome drawn (message at the top, script idle). Undo: {five['undo_latency'].get('n', 0)}
undos, p95 {five['undo_latency'].get('p95_s')} s.

Checked against the store: {a['decisions']} decisions: {a['applied']} applied, {a['conflicts']} refused as conflicts
(e.g. "{a['examples']['conflict']}"; each says who or what changed it meanwhile: {a['conflicts'] - a['conflicts_unclear']}
of {a['conflicts']}), {a['other']} other; lost: {a['lost']}; writes the pages did not report:
{sum(a['unreported_writes'].values()) if a['unreported_writes'] else 0}; History lists {a['history_corrections']} corrections
and {a['history_verdicts']} review decisions = the store's {a['store_corrections']} and {a['store_verdicts']};
labels decided by two reviewers one after the other: {a['overlaps_applied_by_two']}, of them written from a stale view:
{a['stale_writes']}; {a['undos']} undos, taking back another reviewer's or another tab's decision: {a['undo_wrong_owner']}
(message not naming the decision the page announced: {a['undo_text_mismatch']})."""


if __name__ == "__main__":
    sys.exit(main())
