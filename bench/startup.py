"""Dashboard start-up: seconds from ``streamlit run`` to a page drawn in Chromium, and whether torch was loaded.

    PYTHONPATH=. .venv/bin/python -m bench.startup [--repeats 5] [--compare before=/tmp/labelfix-67cf285] [--write]

Each measurement starts a fresh Streamlit server on a small demo store (12 people, 48x64 images, ingested
once), opens one page in headless Chromium (the browser is already running; its start is not counted) and
stops the clock when the page's last element is visible: the Train page's "Retrain on cleaned labels"
button, the Distributions page's first chart. ``--compare NAME=REPO`` adds another checkout of the code
(e.g. ``git archive 67cf285 | tar -x -C /tmp/labelfix-67cf285``), measured alternately with this one so
that load on a shared machine hits both alike. ``--write`` replaces BENCHMARKS.md's "Dashboard start-up".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.common import add_write_flag, demo_store, stop_server, write_section

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# page -> (URL path, the element whose appearance means the page is drawn)
PAGES = {"Train": ("/train", "button:has-text('Retrain on cleaned labels')"),
         "Distributions": ("/", "[data-testid='stPlotlyChart']")}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def time_page(browser, repo: Path, db: Path, page: str, timeout_s: float = 120.0) -> float:
    """Seconds from starting the server to ``page``'s last element visible in a new browser tab."""
    url_path, selector = PAGES[page]
    port = free_port()
    env = {**os.environ, "LABELS_DB": str(db), "LABELS_AUTO_DEMO": "0", "PYTHONPATH": str(repo)}
    argv = [sys.executable, "-m", "streamlit", "run", "app/Home.py", "--server.headless", "true",
            "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
            "--server.fileWatcherType", "none"]
    tab = browser.new_page()
    started = time.perf_counter()
    server = subprocess.Popen(argv, cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = started + timeout_s
        while True:  # the first request that the server answers
            try:
                tab.goto(f"http://127.0.0.1:{port}{url_path}", timeout=timeout_s * 1000)
                break
            except Exception:
                if time.perf_counter() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.05)
        tab.wait_for_selector(selector, state="visible", timeout=timeout_s * 1000)
        return time.perf_counter() - started
    finally:
        tab.close()
        stop_server(server)


def imports_torch(repo: Path) -> dict[str, bool]:
    """Whether importing the Train page's modules loads torch / timm (a fresh interpreter per repo)."""
    code = ("import sys, json; import app.train_views, app.run_views; "
            "print(json.dumps({m: m in sys.modules for m in ('torch', 'timm')}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)},
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def summary(values: list[float]) -> dict[str, float]:
    return {"median_s": round(statistics.median(values), 2), "min_s": round(min(values), 2),
            "max_s": round(max(values), 2), "n": len(values)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="measurements per page and checkout (default: 5)")
    parser.add_argument("--compare", action="append", default=[], metavar="NAME=REPO",
                        help="another checkout to measure alternately with this one")
    parser.add_argument("--name", default="this commit", help="name of this checkout in the table")
    add_write_flag(parser, "Dashboard start-up")
    parser.add_argument("--json", default=None, help="also write the raw timings here")
    parser.add_argument("--load", default=None, help="no measuring: tabulate (and --write) a --json file instead")
    args = parser.parse_args()
    if args.load:
        saved = json.loads(Path(args.load).read_text())
        return report(saved["times"], saved["torch"], args.write)
    from playwright.sync_api import sync_playwright

    repos = dict(item.split("=", 1) for item in args.compare)
    repos = {**{name: Path(path).resolve() for name, path in repos.items()}, args.name: REPO}
    times: dict[str, dict[str, list[float]]] = {name: {page: [] for page in PAGES} for name in repos}
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright:
        db = demo_store(Path(tmp), persons=12, noise=0.1, image_size=(48, 64), quiet=True)
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        for repo in repos.values():  # warm-up, not counted: the first start reads every file from disk
            time_page(browser, repo, db, "Train")
        for repeat in range(args.repeats):
            for page in PAGES:
                for name, repo in repos.items():
                    seconds = time_page(browser, repo, db, page)
                    times[name][page].append(seconds)
                    print(f"{repeat + 1}/{args.repeats} {name:12s} {page:14s} {seconds:6.2f} s", flush=True)
        browser.close()
    torch_loaded = {name: imports_torch(repo) for name, repo in repos.items()}
    if args.json:
        Path(args.json).write_text(json.dumps({"times": times, "torch": torch_loaded}, indent=1))
    return report(times, torch_loaded, args.write)


def report(times: dict[str, dict[str, list[float]]], torch_loaded: dict[str, dict[str, bool]], write: bool) -> int:
    """Print the table of medians and spreads; with ``write``, replace BENCHMARKS.md's section with it."""
    result = {name: {page: summary(v) for page, v in pages.items()} for name, pages in times.items()}
    rows = ["| code | page | median s | min–max s | runs | torch/timm loaded by the Train page's imports |",
            "|---|---|---:|---:|---:|---|"]
    for name, pages in result.items():
        loaded = ", ".join(m for m, on in torch_loaded[name].items() if on) or "neither"
        for page, s in pages.items():
            rows.append(f"| {name} | {page} | {s['median_s']:.2f} | {s['min_s']:.2f}–{s['max_s']:.2f} | {s['n']} "
                        f"| {loaded} |")
    table = "\n".join(rows)
    print(table)
    if write:
        body = (f"Seconds from `streamlit run app/Home.py` to the page drawn in headless Chromium (Train: the "
                f"Retrain button visible; Distributions: the first chart), a fresh server per measurement on a "
                f"12-person demo store, checkouts measured alternately, after one untimed warm-up start each. "
                f"{datetime.now(UTC):%Y-%m-%d}, {platform.processor() or platform.machine()}, "
                f"{os.cpu_count()} CPU cores shared with other jobs (spread is load, not the code). "
                f"`PYTHONPATH=. .venv/bin/python -m bench.startup --compare NAME=REPO --write`\n\n{table}")
        write_section("Dashboard start-up", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
