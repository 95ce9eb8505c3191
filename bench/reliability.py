"""The reliability figures for BENCHMARKS.md: writes held, conflicts refused, faults survived, bad inputs tried.

``PYTHONPATH=. python -m bench.reliability [--write]`` runs
1. the concurrent-annotator stress (8 processes x 250 corrections, collisions, a live reader),
2. SIGKILL during a 400-person import at random moments (all or nothing each time),
3. the trainer fault suite (SIGKILL before each checkpoint replace, mid-epoch, SIGTERM) via pytest,
4. the bad-input corpus via pytest,
5. the hostile-input suite (``tests/test_attacks.py``: each test parameter is one attack) via pytest,
and prints one table; ``--write`` replaces the "## Reliability" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import add_write_flag, write_section
from bench.stress_store import run as stress_run
from core.store import LabelStore
from core.synthetic import child_command, ingest_frames

REPO = Path(__file__).resolve().parent.parent

ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def import_kills(trials: int, seed: int = 0) -> tuple[int, int, int]:
    """SIGKILL a 400-row import at random moments; returns (trials, all-or-nothing outcomes, whole imports)."""
    rng = random.Random(seed)
    intact = whole = 0
    for trial in range(trials):
        with tempfile.TemporaryDirectory() as directory:
            store = LabelStore(Path(directory) / "labels.db")
            ingest_frames(store, Path(directory), n_persons=400)
            store.close()
            process = subprocess.Popen(child_command("import_ages", str(store.path)), cwd=REPO, env=ENV,
                                       stdout=subprocess.PIPE, text=True)
            process.stdout.readline()
            time.sleep(rng.uniform(0.0, 1.5))
            process.send_signal(signal.SIGKILL)
            process.wait()
            reopened = LabelStore(store.path)
            n = reopened.n_corrections()
            ok = n in (0, 400) and not reopened.verify_current() and \
                reopened.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            intact += int(ok)
            whole += int(ok and n == 400)
            reopened.close()
        print(f"import kill {trial + 1}/{trials}: {'intact' if ok else 'HALF-WRITTEN'} ({n} corrections)")
    return trials, intact, whole


def kills_in_transaction() -> tuple[int, int]:
    """SIGKILL injected between the last row and COMMIT of an import and of a person-scope correction."""
    held = 0
    for write in ("import", "person"):
        with tempfile.TemporaryDirectory() as directory:
            store = LabelStore(Path(directory) / "labels.db")
            ingest_frames(store, Path(directory), n_persons=400)
            before = store.current_labels()
            store.close()
            done = subprocess.run(child_command("write_killed_before_commit", str(store.path), write), cwd=REPO,
                                  env=ENV, capture_output=True, text=True)
            reopened = LabelStore(store.path)
            ok = (done.returncode == -signal.SIGKILL and reopened.n_corrections() == 0
                  and reopened.current_labels().equals(before) and not reopened.verify_current()
                  and reopened.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok")
            held += int(ok)
            reopened.close()
        print(f"kill before COMMIT of a {write}: {'nothing landed' if ok else 'HALF-WRITTEN'}")
    return 2, held


def pytest_counts(*args: str) -> tuple[int, int]:
    """Run pytest on a selection; returns (passed, failed)."""
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=REPO, env=ENV,
                          capture_output=True, text=True)
    tail = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    passed = int(m.group(1)) if (m := re.search(r"(\d+) passed", tail)) else 0
    failed = int(m.group(1)) if (m := re.search(r"(\d+) failed", tail)) else 0
    return passed, failed


def pytest_ids(*args: str) -> list[str]:
    """The test ids pytest collects from a selection (one per parametrized case)."""
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider", *args],
                          cwd=REPO, env=ENV, capture_output=True, text=True)
    return [line for line in done.stdout.splitlines() if "::" in line]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--per-worker", type=int, default=250)
    parser.add_argument("--import-trials", type=int, default=10)
    add_write_flag(parser, "Reliability")
    args = parser.parse_args()

    started = time.perf_counter()
    stress = stress_run(args.workers, args.per_worker)
    trials, intact, whole = import_kills(args.import_trials)
    in_tx, in_tx_held = kills_in_transaction()
    train_passed, train_failed = pytest_counts("tests/test_train_faults.py", "tests/test_train.py", "-k",
                                               "sigkill or killed or sigterm or disk or pickle")
    bad_passed, bad_failed = pytest_counts("tests/test_bad_inputs.py")
    kinds = len(pytest_ids("tests/test_bad_inputs.py", "-k", "test_bad_input_gets_one_clear_line"))
    attacks_held, attacks_failed = pytest_counts("tests/test_attacks.py")
    disk_passed, disk_failed = pytest_counts("tests/test_train_cache.py", "tests/test_train_logs.py",
                                             "tests/test_train_units.py", "-k", "cache or log or retention")
    rows = [
        ("concurrent writers", f"{stress['workers']} processes x {args.per_worker} corrections (image + person scope)"),
        ("writes accepted / in the log", f"{stress['accepted']} / {stress['logged']}"),
        ("collisions refused as conflicts", f"{stress['conflicts_refused']} (max winners per contested label: "
                                            f"{stress['max_winners_per_contested_label']})"),
        ("replayed log vs current table", f"{stress['replay_mismatches']} mismatches; integrity_check "
                                          f"{stress['integrity']}"),
        ("dashboard reads meanwhile", f"{stress['dashboard_reads']} reads, {stress['read_failures']} failures"),
        ("write latency p95 under contention", f"{stress['write_p95_ms']} ms"),
        ("SIGKILL during an import, at random moments", f"{intact} of {trials} all-or-nothing ({whole} whole, {intact - whole} "
                                                         "nothing: a kill often lands after the COMMIT)"),
        ("SIGKILL inside the transaction (before COMMIT) of an import / a person-scope correction",
         f"{in_tx_held} of {in_tx}: nothing landed, labels of the person's images unchanged"),
        ("trainer faults (kill in save x4, kill mid-epoch, SIGTERM, disk full, pickle)",
         f"{train_passed} survived, {train_failed} failed"),
        ("disk budgets (image-cache LRU budget, caches in use kept, truncated cache rebuilt, capped rotating "
         "logs, checkpoint retention never deletes the best)", f"{disk_passed} passed, {disk_failed} failed"),
        ("bad inputs tried", f"{kinds} kinds + a bad corrections CSV: {bad_passed} passed, {bad_failed} failed"),
        ("hostile inputs (tests/test_attacks.py): data strings as markdown/HTML on pages and in plotly, formula "
         "cells in every CSV written, hub/local-dir model names from checkpoints and the CLI, pickles and damaged "
         "checkpoints/weights, decompression bombs swapped in after ingest, symlinks out of the root, stores that "
         "are not SQLite / read-only / disk full, malformed ?filter= links, non-UTF-8 and newline file names, "
         "line numbers of multi-line records, failed first ingest",
         f"{attacks_held + attacks_failed} tried: {attacks_held} held, {attacks_failed} failed"),
    ]
    table = "| check | result |\n|---|---|\n" + "\n".join(f"| {a} | {b} |" for a, b in rows)
    print(table)
    print(f"total {time.perf_counter() - started:.0f} s")
    ok = (stress["accepted"] == stress["logged"] and stress["replay_mismatches"] == 0 and intact == trials
          and in_tx_held == in_tx
          and train_failed == 0 and bad_failed == 0 and disk_failed == 0 and attacks_failed == 0 and attacks_held > 0)
    if args.write:
        write_section("Reliability",
                      f"`PYTHONPATH=. python -m bench.reliability --write` on {time.strftime('%Y-%m-%d %H:%M')} "
                      f"(2 cores, {os.cpu_count()} visible; load average {os.getloadavg()[0]:.1f} at the end).\n\n"
                      f"{table}\n\nVerdict: {'all guarantees held' if ok else 'A GUARANTEE FAILED (see above)'}.")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
