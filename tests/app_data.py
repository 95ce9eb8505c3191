"""A real ``streamlit run`` server on a free port for browser tests and screenshots. Stores with a score
run and no model (``synthetic_store``, ``add_score_run``) come from ``core.synthetic``."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def serve(db: Path, *, timeout: float = 60.0, log: Path | None = None) -> Iterator[str]:
    """``streamlit run app/Home.py`` on a free local port with ``LABELS_DB=db``; yields the base URL.

    The server is stopped (its process group) on exit; the first-start demo is off.
    """
    port = free_port()
    env = {**os.environ, "LABELS_DB": str(db), "LABELS_AUTO_DEMO": "0", "PYTHONPATH": str(REPO)}
    output = open(log or os.devnull, "wb")  # noqa: SIM115  (closed below, after the server)
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "app" / "Home.py"), "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],
        cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"streamlit did not start on port {port} (exit code {server.poll()})")
            time.sleep(0.2)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        output.close()
