"""What a running job writes about itself and listens to: environment and git state, size-capped log files,
progress on its run row, stop signals, whether a process is alive.

Everything here is written through store verbs (``update_run``, ``update_progress``); this module
holds the plumbing so ``train/loop.py`` reads as a training loop.
"""

from __future__ import annotations

import io
import logging
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from importlib import metadata
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any

from core.store import LabelStore

PACKAGES = ("torch", "torchvision", "timm", "numpy", "pandas", "scikit-learn", "safetensors", "pillow")
LOG_BYTES = 2_000_000  # per log file; two rotated files are kept beside it


def git_state(directory: str | os.PathLike[str] | None = None) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the code's repository; (None, None) where git or the repository is absent."""
    directory = Path(directory or Path(__file__).resolve().parent)
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True,
                                timeout=10)
        if commit.returncode != 0:
            return None, None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=directory,
                                capture_output=True, text=True, timeout=10)
        return commit.stdout.strip(), bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None, None


def environment(world_size: int = 1) -> dict[str, Any]:
    """Python, platform, package versions and the compute a run used (JSON-ready)."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    import torch  # here: log files, progress and signals load without torch (a dashboard job reads them)

    cuda = torch.cuda.is_available()
    return {"python": sys.version.split()[0], "platform": platform.platform(), "packages": versions,
            "cuda": torch.version.cuda if cuda else None,
            "device": torch.cuda.get_device_name(0) if cuda else platform.processor() or "cpu",
            "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "world_size": world_size}


def run_logger(log_path: Path | None, *, echo: bool = True) -> logging.Logger:
    """A logger writing to ``log_path`` (rotated at LOG_BYTES, 2 backups) and, if ``echo``, the console."""
    logger = logging.getLogger(f"train.run.{log_path}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        handler = RotatingFileHandler(log_path, maxBytes=LOG_BYTES, backupCount=2, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        logger.addHandler(handler)
    if echo:
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(logging.Formatter("%(message)s"))
        console.addFilter(_no_traceback)  # the log file keeps it; the command line prints one error line
        logger.addHandler(console)
    return logger


def _no_traceback(record: logging.LogRecord) -> bool:
    """Console filter: a logged traceback stays in the run's log file (unless ``$LABELFIX_DEBUG`` is set)."""
    return bool(os.environ.get("LABELFIX_DEBUG")) or "Traceback (most recent call last)" not in str(record.msg)


class CappedLog(io.TextIOBase):
    """A text stream appending to ``path`` that rotates like the run logs: past ``max_bytes`` the file
    becomes ``path.1`` (``path.1`` becomes ``path.2``, ...; ``backups`` kept) and a new one starts.

    A dashboard job's stdout and stderr go through one of these (``python -m train`` installs it when
    ``$TRAIN_JOB_LOG`` names the file), so a long or chatty job cannot fill the disk.
    """

    def __init__(self, path: str | os.PathLike[str], max_bytes: int = LOG_BYTES, backups: int = 2):
        self.path, self.max_bytes, self.backups = Path(path), int(max_bytes), int(backups)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8", errors="replace")
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            # The size on disk, not our position: another handle (the launcher's) may append to the file too.
            size = os.fstat(self._file.fileno()).st_size
            if size and size + len(text.encode("utf-8", errors="replace")) > self.max_bytes:
                self._rotate()
            self._file.write(text)
            self._file.flush()
        return len(text)

    def _rotate(self) -> None:
        self._file.close()
        for index in range(self.backups, 0, -1):
            source = self.path if index == 1 else self.path.with_name(f"{self.path.name}.{index - 1}")
            if source.exists():
                os.replace(source, self.path.with_name(f"{self.path.name}.{index}"))
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
        self._file = open(self.path, "a", encoding="utf-8", errors="replace")

    def flush(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.flush()

    def fileno(self) -> int:
        return self._file.fileno()

    def isatty(self) -> bool:
        return False

    def close(self) -> None:
        with self._lock:
            self._file.close()
        super().close()


def close_logger(logger: logging.Logger) -> None:
    """Detach and close a run logger's handlers (the log file is released when the run ends)."""
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


class Progress:
    """Writes (epoch, step, total, eta_s, images_per_s) to the run row at most every ``every_s`` seconds."""

    def __init__(self, store: LabelStore | None, run_id: int | None, total_epochs: int,
                 start_epoch: int | None = None, every_s: float = 3.0):
        self.store, self.run_id, self.total_epochs, self.every_s = store, run_id, total_epochs, every_s
        self.start_epoch = start_epoch  # a resumed run's rate counts from where it resumed (default: first update)
        self.last_write = 0.0
        self.started = time.monotonic()
        self.epoch_started = (-1, self.started)

    def update(self, epoch: int, step: int, total: int, images: int, *, phase: str = "train",
               force: bool = False) -> None:
        """epoch is 0-based; step/total count batches in this epoch; images counts this epoch's images."""
        now = time.monotonic()
        if self.start_epoch is None:
            self.start_epoch = epoch
        if self.epoch_started[0] != epoch:
            self.epoch_started = (epoch, now)
        if self.store is None or self.run_id is None or (not force and now - self.last_write < self.every_s):
            return
        self.last_write = now
        elapsed = now - self.started
        done = (epoch - self.start_epoch) * total + step  # batches done in this session
        remaining = (self.total_epochs - epoch) * total - step
        rate = done / elapsed if elapsed > 0 and done > 0 else 0.0
        epoch_seconds = now - self.epoch_started[1]
        self.store.update_progress(self.run_id, epoch=epoch + 1, epochs=self.total_epochs, step=step, total=total,
                                   phase=phase, eta_s=round(remaining / rate, 1) if rate else None,
                                   images_per_s=round(images / epoch_seconds, 1) if epoch_seconds > 0 else None)


class StopRequested(Exception):
    """SIGTERM or SIGINT arrived; the run stops at the next step boundary and is marked cancelled."""


class SignalFlag:
    """Context manager: SIGTERM/SIGINT set ``self.raised`` instead of killing the process mid-write."""

    def __init__(self) -> None:
        self.raised: int | None = None
        self.previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.raised = signum

    def __enter__(self) -> SignalFlag:
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                self.previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread (e.g. called from a worker thread): leave signals alone
                pass
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


