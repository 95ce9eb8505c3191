"""How the command lines report errors: one line ``error: <file>[:<row>]: <reason>``, a non-zero exit, no traceback.

``run_command(func, args, db=...)`` wraps every ``python -m core`` / ``python -m train`` command. Known errors
(``StoreError``, ``SchemaError``, ``CheckpointError``, ``ValueError``) print their own message, which names the
file or row; OS and SQLite errors are turned into the file and the reason (``disk full``, ``read-only``, ``not a
label store``); anything else prints its type and first line. ``LABELFIX_DEBUG=1`` re-raises instead, so the
traceback is there when debugging. ``printable(text)`` makes any text from a dataset safe for one terminal line
(control characters and undecodable file-name bytes escaped).
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import sqlite3
import sys
from collections.abc import Callable
from typing import Any

DEBUG_ENV = "LABELFIX_DEBUG"
ROWS = re.compile(r"^\d+ bad row\(s\)")
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x00, 0x09), *range(0x0a, 0x20), 0x7f)}


def printable(text: object) -> str:
    """``text`` as one printable line: control characters (newlines included) and surrogate-escaped bytes of
    non-UTF-8 file names shown as escapes, so a hostile name can neither break a line nor crash the print."""
    return str(text).translate(_CONTROL).encode("utf-8", "backslashreplace").decode("utf-8")


def printable_frame(frame: Any) -> Any:
    """A copy of a DataFrame whose text cells went through ``printable`` (for ``to_string`` on a terminal: a
    reason or note holding ANSI escapes or newlines cannot repaint the screen or forge rows)."""
    return frame.map(lambda v: printable(v) if isinstance(v, str) else v)


def describe(error: BaseException, *, db: str | os.PathLike[str] | None = None) -> str:
    """One line (or, for the known errors that list bad rows, one line per row) saying which file and why."""
    from core.schema import SchemaError
    from core.store import StoreError

    if isinstance(error, StoreError | SchemaError | ValueError | KeyError) and not isinstance(error, UnicodeError):
        text = f"missing key {error.args[0]!r}" if isinstance(error, KeyError) and error.args else str(error)
        if ROWS.match(text):  # "3 bad row(s), nothing applied:" then one line per bad row, each naming it
            return "\n".join(printable(line) for line in text.splitlines())
        return printable(text.strip() or type(error).__name__)  # a newline inside data cannot start a line
    if isinstance(error, sqlite3.Error):
        return f"{printable(db or 'label store')}: {sqlite_reason(error)}"
    if isinstance(error, OSError):
        name = error.filename if error.filename is not None else db
        reason = "disk full (no space left on the device)" if error.errno == errno.ENOSPC else \
            "read-only file or folder (permission denied)" if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS) \
            else (error.strerror or str(error))
        return f"{printable(name)}: {reason}" if name is not None else printable(reason)
    if type(error).__name__ == "CheckpointError":
        return printable(str(error))
    lines = str(error).strip().splitlines()
    return printable(f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")) + \
        f" (set {DEBUG_ENV}=1 for the traceback)"


def sqlite_reason(error: sqlite3.Error) -> str:
    """SQLite's message in the user's words."""
    text = str(error)
    lower = text.lower()
    if "file is not a database" in lower or "malformed" in lower:
        return f"not a labelfix label store, or a damaged one ({text})"
    if "readonly" in lower or "read-only" in lower:
        return "the label store (or its folder) is read-only; nothing was written"
    if "disk is full" in lower or "disk full" in lower:
        return "disk full; nothing was written"
    if "unable to open" in lower:
        return "cannot open the label store file (missing folder, no permission, or a read-only folder)"
    return text


def run_command(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """``func(args)``; every error becomes ``error: ...`` on stderr and exit code 2 (130 when interrupted)."""
    try:
        return func(args)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"error: {describe(error, db=getattr(args, 'db', None))}", file=sys.stderr)
        return 2
