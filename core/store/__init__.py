"""The label store: every SQL statement of the project lives in this module.

One SQLite file (WAL) holds a dataset's items, its immutable original labels, the append-only
corrections log, review verdicts, ingest problems, snapshots, the experiment journal (runs, epochs),
scores and job locks. Callers speak in domain verbs::

    store = LabelStore("labels.db")
    store.correct("000001_female_Asian_45", "gender", "male", expected="female", annotator="ana")
    labels = store.current_labels()          # pandas DataFrame, one row per labelled image
    snap = store.snapshot()                  # frozen CSV + content hash, the trainer's input

Labels are kept wide (one column per schema attribute) in ``original`` (immutable, enforced by
triggers) and ``current`` (originals overlaid by the corrections log, maintained in the same
transaction as each correction). ``verify_current()`` replays the log to prove the overlay.

The package is split by concept (``base``, ``dataset``, ``labels``, ``corrections``, ``snapshots``, ``journal``, ``scores``); ``LabelStore``
is the one facade callers use, and every SQL statement of the project lives in these modules.
"""

from __future__ import annotations

from core.store.base import (
    RANK_OF_SCORE,
    SCHEMA_VERSION,
    ConflictError,
    IngestReport,
    Snapshot,
    StoreError,
    default_db,
    now,
    quote,
    remove_store_files,
)
from core.store.corrections import CorrectionsMixin
from core.store.dataset import DatasetMixin
from core.store.evaluations import EvaluationsMixin
from core.store.journal import JournalMixin
from core.store.labels import LabelsMixin
from core.store.scores import ScoresMixin
from core.store.snapshots import SnapshotsMixin, read_snapshot


class LabelStore(DatasetMixin, LabelsMixin, CorrectionsMixin, SnapshotsMixin, JournalMixin, ScoresMixin,
                 EvaluationsMixin):
    """A dataset's label store in one SQLite file. Safe to open from several processes at once."""


__all__ = ['LabelStore', 'read_snapshot', 'SCHEMA_VERSION', 'ConflictError', 'IngestReport', 'RANK_OF_SCORE', 'Snapshot', 'StoreError', 'default_db', 'now', 'quote', 'remove_store_files']
