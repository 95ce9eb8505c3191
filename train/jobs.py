"""Background jobs: the dashboard's only way to start training, scoring or prediction.

A job is ``python -m train <command> --run-id N ...`` started as a detached subprocess in its own
process group, from a ``TrainConfig`` and named options (``start(store, "fit", config)``): the command-line
form is ``train.config``'s alone, so pages never assemble flags. Its state lives in the store (the ``runs`` row and a ``job`` lock), never in the
browser session, so a page reload or a second tab sees the same truth. One job at a time: the lock
names the run and process holding it; a lock whose process is gone is stale and is recovered
(its run is marked failed with the tail of its log). Job logs (``runs/job-N.log``) rotate at 2 MB
(two older parts kept) and only the newest 50 jobs' logs are kept.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from core.processes import pid_alive
from core.store import LabelStore, StoreError, now
from train.config import TrainConfig, options_argv, to_argv

JOB_LOCK = "job"
JOB_LOG_ENV = "TRAIN_JOB_LOG"  # python -m train sends its stdout/stderr to this file, size-capped and rotated
JOB_LOGS_KEPT = 50  # job logs of older jobs are deleted when a job starts
COMMANDS = {"fit": "train", "score": "score", "predict": "predict", "experiment": "experiment"}  # -> runs.kind
CONFIG_COMMANDS = ("fit", "score", "experiment")  # the jobs whose settings are a TrainConfig
REPO_ROOT = Path(__file__).resolve().parent.parent


class JobBusy(StoreError):
    """Another job holds the lock."""


def process_alive(pid: int | None) -> bool:
    """True while ``pid`` runs (reaps it first if it is our finished child, so zombies count as gone)."""
    if not pid:
        return False
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)
        if finished == pid:
            return False
    except ChildProcessError:
        pass  # not our child: fall through to the signal probe
    if not pid_alive(pid):
        return False
    try:  # a zombie of another parent is gone for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def log_tail(path: str | None, lines: int = 30) -> str:
    if not path or not Path(path).exists():
        return ""
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(0, handle.tell() - 16_384))
        return "\n".join(handle.read().decode(errors="replace").splitlines()[-lines:])


def recover_stale(store: LabelStore) -> str | None:
    """Release the job lock if its process is gone; fail its run if that never finished. Returns a note."""
    holder = store.lock_holder(JOB_LOCK)
    if holder is None:
        return None
    same_host = holder["host"] == socket.gethostname()
    # A run that recorded its end is over, even while its process still exits (closing files, freeing memory).
    # A repeat group (fit --repeats) is one job: it is not over while a later run of the group is queued.
    holder_run = store.run(holder["run_id"]) if holder["run_id"] is not None else None
    ended = holder_run is not None and holder_run["status"] not in ("queued", "running") and not (
        holder_run.get("repeat_group") is not None and store.repeat_group_pending(int(holder_run["repeat_group"])))
    if holder["pid"] and not ended and (not same_host or process_alive(holder["pid"])):
        return None
    if holder["pid"] is None and holder["run_id"] is None:
        return None  # being taken right now by a starter
    note = None
    if holder["run_id"] is not None:
        run = store.run(holder["run_id"])
        if run["status"] in ("queued", "running"):
            tail = log_tail(run.get("log_path")) or "the job's process ended without recording a result"
            store.update_run(run["id"], status="failed", finished_at=now(), error_tail=tail)
            note = f"run #{run['id']} had stopped without finishing; marked failed"
        if run["kind"] == "experiment":  # a training run it had started died with it
            for rid in store.experiment_runs(int(run["id"])).query("status in ('queued', 'running')")["run_id"]:
                store.update_run(int(rid), status="failed", finished_at=now(),
                                 error_tail=f"the job of experiment #{run['id']} stopped")
        if run.get("repeat_group") is not None:  # the rest of its repeat group will not start either
            group = store.repeat_group(int(run["repeat_group"]))
            for rid in group.loc[group["status"] == "queued", "id"] if len(group) else []:
                store.update_run(int(rid), status="failed", finished_at=now(),
                                 error_tail=f"the job of repeat group #{run['repeat_group']} stopped")
    store.release_lock(JOB_LOCK, run_id=holder["run_id"]) if holder["run_id"] is not None else \
        store.release_lock(JOB_LOCK)
    return note


def running_job(store: LabelStore) -> dict | None:
    """The run that holds the job lock (after stale-lock recovery), or None."""
    recover_stale(store)
    holder = store.lock_holder(JOB_LOCK)
    if holder is None or holder["run_id"] is None:
        return None
    return store.run(holder["run_id"])


def start(store: LabelStore, command: str, config: TrainConfig | None = None, *,
          options: Mapping[str, Any] | None = None, env: dict[str, str] | None = None) -> int:
    """Start ``python -m train <command> --db <store> --run-id N ...`` detached; returns N.

    ``config`` (fit, score) is the run's TrainConfig, passed as every option it sets (``train.config.to_argv``);
    None is the command's defaults (score: the scorer's own small settings). ``options`` are the command's other
    options by name: ``{"folds": 3}`` for score, ``{"run": [4], "out": "submission.csv"}`` for predict
    (``train.config.options_argv``). Raises ``JobBusy`` (nothing started, no run row written) when another job
    runs.
    """
    if command not in COMMANDS:
        raise StoreError(f"unknown job {command!r}; choose one of {', '.join(COMMANDS)}")
    if config is not None and command not in CONFIG_COMMANDS:
        raise StoreError(f"a {command} job takes options, not a TrainConfig")
    if isinstance(options, list | tuple | str):  # the old form: argument strings assembled by the caller
        raise TypeError("jobs.start takes a TrainConfig and named options, not command-line strings")
    argv = (to_argv(config, command) if config is not None else []) + options_argv(options or {})
    if command in CONFIG_COMMANDS:
        argv.append("--quiet")  # the job log gets the output anyway; the console copy would double it
    journal = {**(asdict(config) if config is not None else {}), **(options or {})}
    recover_stale(store)
    holder = store.acquire_lock(JOB_LOCK, run_id=None, pid=os.getpid())
    if holder is not None:
        raise JobBusy(f"run #{holder['run_id']} is still running (one job at a time); wait or cancel it")
    try:
        run_id = store.create_run(COMMANDS[command], journal, status="queued")
        log_dir = store.path.resolve().parent / "runs"
        log_dir.mkdir(parents=True, exist_ok=True)
        prune_job_logs(log_dir)
        log_path = log_dir / f"job-{run_id}.log"
        argv = [sys.executable, "-m", "train", command, "--db", str(store.path.resolve()), "--run-id", str(run_id),
                *argv]
        child_env = {**os.environ, **(env or {}), "PYTHONPATH": str(REPO_ROOT), "TQDM_DISABLE": "1",
                     "PYTHONUNBUFFERED": "1", JOB_LOG_ENV: str(log_path)}
        # Python's output goes through the child's capped, rotating stream ($TRAIN_JOB_LOG); the file handle
        # below only catches what bypasses Python (a crash in native code).
        with open(log_path, "ab") as log:
            process = subprocess.Popen(argv, cwd=REPO_ROOT, env=child_env, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        store.update_lock(JOB_LOCK, run_id=run_id, pid=process.pid)
        store.update_run(run_id, pid=process.pid, log_path=str(log_path))
    except BaseException:
        store.release_lock(JOB_LOCK)
        raise
    return run_id


def model_info(model: str, timeout_s: float = 120.0) -> dict[str, Any]:
    """``python -m train model-info MODEL --json`` in a subprocess: timm's input size, normalisation and weights
    source for a model, without importing timm here (the dashboard). Raises ValueError for a name timm does
    not know or that does not answer in ``timeout_s``."""
    try:
        done = subprocess.run([sys.executable, "-m", "train", "model-info", model, "--json"], cwd=REPO_ROOT,
                              env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise ValueError(f"python -m train model-info {model} gave no answer in {timeout_s:.0f} s") from None
    if done.returncode != 0:
        last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"model-info {model} failed"
        raise ValueError(last.removeprefix("error: "))
    return json.loads(done.stdout.strip().splitlines()[-1])


def prune_job_logs(log_dir: Path, keep: int = JOB_LOGS_KEPT, min_age_s: float = 3600.0) -> list[Path]:
    """Delete the logs (and rotated parts) of all but the newest ``keep`` jobs in ``log_dir``; a log written
    to in the last ``min_age_s`` seconds stays whatever its number. Returns the files deleted."""
    pattern = re.compile(r"^job-(\d+)\.log(\.\d+)?$")
    by_job: dict[int, list[Path]] = {}
    for path in log_dir.iterdir() if log_dir.is_dir() else []:
        if match := pattern.match(path.name):
            by_job.setdefault(int(match[1]), []).append(path)
    deleted, moment = [], time.time()
    for job in sorted(by_job)[:max(0, len(by_job) - keep)]:
        try:
            if any(moment - f.stat().st_mtime < min_age_s for f in by_job[job]):
                continue
        except FileNotFoundError:
            continue
        for path in by_job[job]:
            path.unlink(missing_ok=True)
            deleted.append(path)
    return deleted


def cancel(store: LabelStore, run_id: int, *, grace_s: float = 20.0) -> str:
    """Stop a job cleanly: SIGTERM to its process group (the trainer saves ``last`` and marks itself
    cancelled), SIGKILL after ``grace_s``. Returns what happened."""
    run = store.run(run_id)
    pid = int(run.get("pid") or 0)
    if run["status"] not in ("queued", "running") or not process_alive(pid):
        recover_stale(store)
        return f"run #{run_id} is not running ({run['status']})"
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    forced = process_alive(pid)
    if forced:
        os.killpg(pid, signal.SIGKILL)
        while process_alive(pid):
            time.sleep(0.1)
    if store.run(run_id)["status"] in ("queued", "running"):
        store.update_run(run_id, status="cancelled", finished_at=now(),
                         error_tail="cancelled" + (" (killed after the grace period)" if forced else ""))
    store.release_lock(JOB_LOCK, run_id=run_id)
    return f"run #{run_id} cancelled" + (" (forced)" if forced else "")


def wait(store: LabelStore, run_id: int, timeout_s: float = 600.0, poll_s: float = 0.5) -> dict:
    """Block until the run leaves queued/running (for tests and scripts); returns the run row."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = store.run(run_id)
        if run["status"] not in ("queued", "running"):
            return run
        if not process_alive(run.get("pid")):
            recover_stale(store)
        time.sleep(poll_s)
    raise TimeoutError(f"run #{run_id} still {store.run(run_id)['status']} after {timeout_s:.0f} s")
