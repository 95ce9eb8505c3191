"""BENCHMARKS.md sections: every bench's ``--record`` / ``--write`` replaces its own section and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

from core.files import replacing

BENCHMARKS = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def write_section(title: str, body: str, path: Path = BENCHMARKS) -> None:
    """Replace the section ``## title`` in place (or append it), leaving the other sections alone; atomic."""
    heading = f"## {title}"
    current = path.read_text() if path.exists() else "# Benchmarks\n"
    section = f"{heading}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(current):
        updated = pattern.sub(lambda _: section + "\n", current, count=1).rstrip() + "\n"
    else:
        updated = current.rstrip() + "\n\n" + section
    with replacing(path, fsync=False) as tmp:
        tmp.write_text(updated)
