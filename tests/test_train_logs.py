"""Log files stay within their caps: rotating run/job logs, a dashboard job's output through the capped log, and
old job logs pruned; their disk use is shown."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from core.store import LabelStore
from train import jobs
from train.disk import disk_usage
from train.logs import LOG_BYTES, CappedLog, close_logger, run_logger


def test_capped_log_rotates_and_keeps_two_older_parts(tmp_path: Path):
    path = tmp_path / "job-1.log"
    log = CappedLog(path, max_bytes=1000, backups=2)
    for index in range(20):
        print(f"line {index:02d} " + "x" * 290, file=log)  # 300 bytes a line: 3 lines a file
    log.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job-1.log", "job-1.log.1", "job-1.log.2"]
    assert all(p.stat().st_size <= 1000 for p in tmp_path.iterdir())
    newest, older, oldest = (path.read_text(), (tmp_path / "job-1.log.1").read_text(),
                             (tmp_path / "job-1.log.2").read_text())
    assert newest.startswith("line 18") and "line 19" in newest  # the tail (what a failed job's row shows) is kept
    assert older.startswith("line 15") and oldest.startswith("line 12")


def test_run_logs_rotate_at_the_cap(tmp_path: Path):
    path = tmp_path / "train.log"
    log = run_logger(path, echo=False)
    for index in range(2 * LOG_BYTES // 1000 + 100):
        log.info(f"{index:06d} " + "y" * 1000)
    close_logger(log)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.log", "train.log.1", "train.log.2"]
    assert all(p.stat().st_size <= LOG_BYTES for p in tmp_path.iterdir())
    assert logging.getLogger(f"train.run.{path}").handlers == []


def test_a_dashboard_job_writes_through_its_capped_log(tmp_path: Path):
    db = tmp_path / "labels.db"
    with LabelStore(db) as store:  # an empty store: the job fails at once, cheaply, with a message
        run_id = jobs.start(store, "predict", options={"checkpoint": [str(tmp_path / "none.safetensors")]})
        run = jobs.wait(store, run_id, timeout_s=120)
        usage = disk_usage(store).set_index("category")
    log = Path(run["log_path"])
    assert log == tmp_path / "runs" / f"job-{run_id}.log"
    text = log.read_text()
    assert text.startswith(f"python -m train predict --db {db.resolve()} --run-id {run_id}")
    assert "this log rotates at 2 MB" in text and "error:" in text and "holds no dataset yet" in text
    assert run["status"] == "failed" and "holds no dataset yet" in run["error_tail"]
    assert usage.loc["job logs", "files"] == 1 and usage.loc["job logs", "bytes"] == log.stat().st_size


def test_only_the_newest_job_logs_are_kept(tmp_path: Path):
    old = time.time() - 2 * 3600
    for job in range(1, 61):
        for name in (f"job-{job}.log", f"job-{job}.log.1"):
            (tmp_path / name).write_text("x")
            os.utime(tmp_path / name, (old, old))
    (tmp_path / "job-3.log").write_text("still written to")  # recent: kept whatever its number
    (tmp_path / "train.log").write_text("not a job log")
    deleted = jobs.prune_job_logs(tmp_path, keep=50)
    assert len(deleted) == 2 * 9
    left = {p.name for p in tmp_path.iterdir()}
    assert "job-1.log" not in left and "job-2.log.1" not in left and "job-11.log" in left and "job-60.log.1" in left
    assert {"job-3.log", "job-3.log.1", "train.log"} <= left
