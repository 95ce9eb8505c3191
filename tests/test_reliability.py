"""Fault suite: concurrent annotators, SIGKILL during writes, hostile text, safe server defaults."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import tomllib
from pathlib import Path

import pandas as pd
import pytest

from bench.stress_store import run as stress_run
from core.store import LabelStore
from core.synthetic import child_command, ingest_frames

REPO = Path(__file__).resolve().parent.parent


def test_reduced_stress_run_loses_nothing_and_refuses_every_collision(tmp_path):
    result = stress_run(workers=3, per_worker=30, n_persons=24, directory=tmp_path)
    assert result["accepted"] == result["logged"]
    assert result["conflicts_refused"] > 0
    assert result["max_winners_per_contested_label"] == 1
    assert result["replay_mismatches"] == 0
    assert result["integrity"] == "ok"
    assert result["read_failures"] == 0 and result["dashboard_reads"] > 0


@pytest.mark.parametrize("delay_s", [0.05, 0.2, 0.5])
def test_sigkill_during_an_import_is_all_or_nothing(tmp_path, delay_s):
    store = LabelStore(tmp_path / "labels.db")
    ingest_frames(store, tmp_path, n_persons=400)
    before = store.current_labels()
    process = subprocess.Popen(child_command("import_ages", str(store.path)), cwd=REPO,
                               env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"
    time.sleep(delay_s)
    process.send_signal(signal.SIGKILL)
    process.wait()
    reopened = LabelStore(store.path)
    n = reopened.n_corrections()
    assert n in (0, 400), f"half-written import: {n} of 400 corrections landed"
    after = reopened.current_labels()
    changed = int((after["age"] != before["age"]).sum())
    assert changed == (0 if n == 0 else len(after))
    assert reopened.verify_current() == []
    assert reopened.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# The same writes with a SIGKILL injected between the last row and COMMIT (core.store's LABELFIX_FAULT hook):
# the kill lands inside the transaction every time, not merely before or after it.
@pytest.mark.parametrize("write", ["import", "person-scope correction"])
def test_sigkill_inside_the_transaction_leaves_nothing(tmp_path, write):
    store = LabelStore(tmp_path / "labels.db")
    ingest_frames(store, tmp_path, n_persons=40)
    before = store.current_labels()
    store.close()
    done = subprocess.run(child_command("write_killed_before_commit", str(store.path), write.split()[0]), cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert "SIGKILL before COMMIT" in done.stdout and "committed" not in done.stdout
    reopened = LabelStore(store.path)
    assert reopened.n_corrections() == 0
    pd.testing.assert_frame_equal(reopened.current_labels(), before)  # every image of the person unchanged too
    assert reopened.verify_current() == []
    assert reopened.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    reopened.close()


def test_hostile_text_is_stored_verbatim(make_store):
    store = make_store()
    person = store.persons()["person"].iloc[0]
    name = "Robert'); DROP TABLE corrections;-- <script>alert(1)</script>"
    store.correct(person, "age", 44, expected=store.label_of(person, "age"), annotator=name, reason=name)
    log = store.history()
    assert log.iloc[0]["annotator"] == name and log.iloc[0]["reason"] == name
    assert store.n_corrections() == 1


def test_server_defaults_are_local_only_with_xsrf():
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"
    assert config["server"]["enableXsrfProtection"] is True
    assert config["browser"]["gatherUsageStats"] is False
    makefile = (REPO / "Makefile").read_text()
    assert "--server.address 127.0.0.1" in makefile


def test_app_never_renders_html_from_data():
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "app").rglob("*.py")
                 if "unsafe_allow_html=True" in p.read_text()]
    assert offenders == []


def test_no_sql_outside_the_store_module():
    sql_markers = ("SELECT ", "INSERT INTO", "UPDATE ", "DELETE FROM", "CREATE TABLE", ".execute(")
    offenders = []
    for folder in ("core", "train", "app"):
        for path in (REPO / folder).rglob("*.py"):
            if path.relative_to(REPO).parts[:2] == ("core", "store"):  # the store package
                continue
            text = path.read_text()
            offenders += [f"{path.relative_to(REPO)}: {m.strip()}" for m in sql_markers if m in text]
    assert offenders == []


def test_store_handles_a_frame_with_no_rows(make_store):
    store = make_store()
    plan = store.import_corrections(pd.DataFrame(columns=["target", "attribute", "value"]))
    assert len(plan) == 0 and store.n_corrections() == 0
