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

The package is split by concept; ``LabelStore`` is the one facade callers use, and every SQL statement of the
project lives in these modules. Each part is a class in the file of its concept, built on the parts it uses
(``class CorrectionsMixin(LabelsMixin)``), and calls only their public verbs and the connection plumbing of
``StoreBase`` (``tests/test_structure.py`` checks it). Where a verb lives:

==============  ===================================================================================================
``base``        ``StoreBase``: the connection, ``transaction()``, migrations, ``_query``/``_meta``; errors, ``quote``,
                ``count_sql``
``dataset``     ``schema``, ``root``, ``files_dir``, ``version``, ``ingest``, ``problems``, ``last_ingest_id``,
                ``ingest_aggregate``, ``person_image_counts``, ``count_items``, ``data_checks_ingest``,
                ``record_data_checks``
``labels``      ``items``, ``persons``, ``current_labels``, ``resolve_target``, ``label_of``, ``count_by``,
                ``label_counts``, ``changed_counts``, ``correction_counts``, ``select_items``
``corrections`` ``correct`` (the one place a label is written), ``revert``, ``history``, ``n_corrections``,
                ``mark_reviewed``, ``reviews``, ``import_corrections``, ``verify_current``
``snapshots``   ``snapshot``, ``snapshots``, ``read_snapshot``
``journal``     ``create_run``, ``update_run``, ``update_progress``, ``record_epoch``, ``run``, ``runs``,
                ``run_states``, ``current_score_run``, ``repeat_group``, ``repeat_group_pending``, ``epochs``, locks
``bulks``       ``apply_bulk`` / ``undo_bulk`` (one reviewed step over many units, one transaction), ``bulks``,
                ``item_meta`` (store v4)
``evaluations`` answer keys, re-evaluations of runs on another answer key, experiment pairs (store v5)
``scores``      ``save_scores``, ``scores``, ``review_units`` (the one review queue), ``review_unit_position``,
                ``review_summary``, ``score_detail``, ``save_data_issues``, ``data_issues``, ``data_issue_kinds``
==============  ===================================================================================================
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
from core.store.bulks import BulkResult, BulksMixin
from core.store.corrections import CorrectionsMixin
from core.store.dataset import DatasetMixin
from core.store.evaluations import EvaluationsMixin
from core.store.journal import JournalMixin
from core.store.labels import LabelsMixin
from core.store.scores import ScoresMixin
from core.store.snapshots import SnapshotsMixin, read_snapshot


class LabelStore(SnapshotsMixin, JournalMixin, ScoresMixin, BulksMixin, EvaluationsMixin):
    """A dataset's label store in one SQLite file. Safe to open from several processes at once.

    The parts, each built on the ones below it: ``SnapshotsMixin`` -> ``CorrectionsMixin`` -> ``LabelsMixin``
    -> ``DatasetMixin`` -> ``StoreBase``; ``BulksMixin`` -> ``CorrectionsMixin``; ``ScoresMixin`` -> ``DatasetMixin``; ``JournalMixin`` -> ``StoreBase``; ``EvaluationsMixin`` -> ``StoreBase``."""


__all__ = ['LabelStore', 'BulkResult', 'BulksMixin', 'CorrectionsMixin', 'DatasetMixin', 'EvaluationsMixin', 'JournalMixin', 'LabelsMixin', 'ScoresMixin',
           'SnapshotsMixin', 'read_snapshot', 'SCHEMA_VERSION', 'ConflictError', 'IngestReport', 'RANK_OF_SCORE', 'Snapshot', 'StoreError', 'default_db', 'now', 'quote', 'remove_store_files']
