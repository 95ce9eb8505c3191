"""Atomic file writes (a reader sees the old file or the whole new one, never half of one) and CSV cells that
spreadsheets cannot run as formulas (``csv_safe``)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd


@contextlib.contextmanager
def replacing(path: str | os.PathLike[str], *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temp path beside ``path`` to write; on success it is fsynced and renamed onto ``path``.

    The temp name is ``.<name>.<pid>.tmp`` (what the cleanup of a killed process's leftovers looks for); on
    an error it is removed and ``path`` is left as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # gone already after a successful replace


# ---- CSV cells a spreadsheet would run (OWASP "CSV injection") ---------------------------------------------
# Every CSV the product writes goes through ``csv_safe``: a text cell starting with one of these characters gets
# a leading apostrophe, so Excel, LibreOffice and Sheets show it as text instead of running it as a formula.
# A cell that already starts with an apostrophe gets one too, which makes the escape reversible: the product's
# own readers of its CSVs call ``csv_unescape`` and get every value back exactly.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_ESCAPED_START = (*FORMULA_START, "'")


def csv_cell(value: object) -> object:
    """One cell as written: text starting with ``= + - @ TAB CR`` (or ``'``) prefixed with ``'``."""
    return f"'{value}" if isinstance(value, str) and value.startswith(_ESCAPED_START) else value


def csv_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` with every text cell (and column name) passed through ``csv_cell``; numbers are kept."""
    safe = frame.copy()
    for column in safe.columns:
        if _texts_starting(safe[column], _ESCAPED_START).any():
            safe[column] = [csv_cell(v) for v in safe[column]]
    safe.columns = [csv_cell(c) if isinstance(c, str) else c for c in safe.columns]
    return safe


def _texts_starting(values: pd.Series, prefixes: tuple[str, ...]) -> pd.Series:
    """Boolean mask of the text cells starting with one of ``prefixes`` (vectorised; numbers never do)."""
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return pd.Series(False, index=values.index)
    try:
        return values.str.startswith(prefixes, na=False).astype(bool)
    except (AttributeError, TypeError):  # not a text column after all
        return values.map(lambda v: isinstance(v, str) and v.startswith(prefixes)).astype(bool)


def csv_unescape(frame: pd.DataFrame) -> pd.DataFrame:
    """Undo ``csv_safe`` on a frame read back from one of the product's own CSVs (in place; returns it)."""
    frame.columns = [c[1:] if isinstance(c, str) and c.startswith("'") and c[1:].startswith(_ESCAPED_START) else c
                     for c in frame.columns]
    for column in frame.columns:
        values = frame[column]
        if _texts_starting(values, ("'",)).any():
            frame[column] = [v[1:] if isinstance(v, str) and v.startswith("'") and v[1:].startswith(_ESCAPED_START)
                             else v for v in values]
    return frame
