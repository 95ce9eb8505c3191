"""Command line for the label library: ``python -m core COMMAND --help``.

Thin argument parsing over the Python functions in ``core``; every command's ``--db`` defaults to
``$LABELS_DB``, else ``labels.db``. Errors print one line to stderr and exit non-zero.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from core.errors import printable, printable_frame, run_command
from core.files import csv_safe
from core.store import LabelStore, default_db, remove_store_files


def _db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", default=default_db(), help="label store (default: $LABELS_DB, else labels.db)")


def cmd_demo(args: argparse.Namespace) -> int:
    from core.demo import generate

    info = generate(Path(args.out), persons=args.persons, noise=args.noise, seed=args.seed,
                    eval_images=args.eval_images, profile=args.noise_profile)
    print(info.summary() if hasattr(info, "summary") else info)
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from core.ingest import ingest

    created = not Path(args.db).exists()
    try:
        with LabelStore(args.db) as store:
            result = ingest(Path(args.root), store, fmt=args.format, label_columns=args.label_columns,
                            path_column=args.path_column, person_column=args.person_column,
                            meta_columns=args.meta_columns)
    except BaseException:
        if created:  # a failed first ingest leaves no empty store behind
            remove_store_files(args.db)
        raise
    for path, reason in result.problems:
        print(printable(f"{path}: {reason}"))
    print(printable(result.summary()))
    return 0


def cmd_patterns(args: argparse.Namespace) -> int:
    import json

    from core.pattern_actions import scan

    with LabelStore(args.db) as store:
        run_id, found = scan(store, args.run, alpha=args.fdr)
    if args.json:
        print(json.dumps([p.to_dict() for p in found], indent=1, ensure_ascii=False))
        return 0
    if not found:
        print(f"score run {run_id}: no pattern survives the false discovery rate {args.fdr:g}")
    for n, p in enumerate(found, 1):
        print(printable(f"{n}. [{p.kind}, {p.attribute}, q={p.q_value:.2g}] {p.summary}"))
        for unit in p.units[:10]:
            rows = p.suspected[p.suspected["unit"] == unit]
            fixes = ", ".join(f"{t if t != unit else ''}{' ' if t != unit else ''}{a} {c} -> {v}".strip()
                              for t, a, c, v in zip(rows["target"], rows["attribute"], rows["current"], rows["proposed"]))
            print(printable(f"   {unit}: {fixes}"))
        if len(p.units) > 10:
            print(f"   ... and {len(p.units) - 10} more suspected units (--json lists them all)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from core.export import export

    with LabelStore(args.db) as store:
        snapshot = export(store, Path(args.out))
    print(f"wrote {args.out}: {snapshot.n_items} images, {snapshot.n_corrections} corrections, snapshot {snapshot.hash}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from core.export import read_table

    frame = read_table(Path(args.csv))
    with LabelStore(args.db) as store:
        plan = store.import_corrections(frame, annotator=args.annotator, dry_run=args.dry_run, file=args.csv)
    verb = "would apply" if args.dry_run else "applied"
    for row in plan.itertuples(index=False):
        print(printable(f"line {row.line}: {row.target} {row.attribute}: {row.old_value} -> {row.new_value}"))
    print(f"{verb} {len(plan)} correction(s) from {args.csv}")
    return 0


def cmd_correct(args: argparse.Namespace) -> int:
    with LabelStore(args.db) as store:
        expected = args.expected if args.expected is not None else store.label_of(args.target, args.attribute)
        correction_id = store.correct(args.target, args.attribute, args.value, expected=expected,
                                      annotator=args.annotator, reason=args.reason, source="cli")
    print(f"correction #{correction_id}: {args.target} {args.attribute}: {expected} -> {args.value}")
    return 0


def cmd_revert(args: argparse.Namespace) -> int:
    with LabelStore(args.db) as store:
        correction_id = store.revert(args.correction, annotator=args.annotator, reason=args.reason)
    print(f"correction #{correction_id} reverts #{args.correction}")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    with LabelStore(args.db) as store:
        log = store.history(target=args.target, attribute=args.attribute, limit=args.limit)
    print(printable_frame(log).to_string(index=False) if len(log) else "no corrections yet")
    return 0


def cmd_snapshot(args: argparse.Namespace) -> int:
    with LabelStore(args.db) as store:
        snapshot = store.snapshot(args.dir)
    print(f"{snapshot.path}  {snapshot.hash}  ({snapshot.n_items} images, {snapshot.n_corrections} corrections)")
    return 0


def cmd_issues(args: argparse.Namespace) -> int:
    import numpy as np

    from core.scoring import array_issues

    labels = np.load(args.labels)
    pred_probs = np.load(args.pred_probs)
    groups = np.load(args.groups, allow_pickle=False) if args.groups else None
    folds = np.load(args.folds, allow_pickle=False) if args.folds else None
    if folds is not None and len(folds) != len(labels):
        raise ValueError(f"{args.folds}: {len(folds)} folds but {args.labels} has {len(labels)} labels")
    table = array_issues(labels, pred_probs, groups=groups, folds=folds)
    csv_safe(table).to_csv(args.out, index=False)
    print(f"wrote {args.out}: {len(table)} rows, {int(table['is_issue'].sum())} flagged")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from core.checks import run_data_checks

    with LabelStore(args.db) as store:
        issues = run_data_checks(store)
    counts = issues["kind"].value_counts().to_dict() if len(issues) else {}
    print(f"{len(issues)} data issue(s): " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with LabelStore(args.db) as store:
        if store.is_empty:
            print(f"{args.db}: empty (run `python -m core ingest ROOT`)")
            return 0
        items = store.items()
        print(f"{args.db}: dataset {store.root} ({store.dataset_format}, schema {store.schema.name})")
        print(f"  images: {len(items)} ({(items['split'] == 'train').sum()} labelled), people: {items['person'].nunique()}")
        print(f"  corrections: {store.n_corrections()}, ingest problems: {len(store.problems())}")
    return 0


def cmd_queue(args: argparse.Namespace) -> int:
    from core.queue_export import write_queue

    if not Path(args.db).exists():
        raise FileNotFoundError(f"{args.db}: no such label store (give --db or set $LABELS_DB)")
    with LabelStore(args.db) as store:
        if store.is_empty:
            raise ValueError(f"{args.db}: empty store, nothing scored (run `python -m core ingest ROOT`)")
        table = write_queue(store, Path(args.out), run_id=args.run, attribute=args.attribute)
    print(printable(f"wrote {args.out}: {len(table)} unit(s), {int(table['flagged'].sum())} flagged"))
    return 0


def _add_dataset_commands(sub: Any) -> None:
    """``demo`` and ``ingest``: making a dataset and scanning it into the store."""
    p = sub.add_parser("demo", help="generate the demo dataset (competition layout + truth.csv)")
    p.add_argument("--out", default="data/demo", help="output folder (default: data/demo)")
    p.add_argument("--persons", type=int, default=480, help="number of people, 7 images each (default: 480)")
    p.add_argument("--noise", type=float, default=0.05, help="label-noise rate to inject (default: 0.05)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--eval-images", type=int, default=None, help="eval images (default: persons / 2)")
    p.add_argument("--noise-profile", choices=["random", "systematic"], default="random",
                   help="random: independent errors (default); systematic: errors that repeat a pattern (a swapped "
                        "upload batch, rounded ages, a look-alike annotator; see core/demo.py)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("ingest", help="scan a dataset root into the label store")
    p.add_argument("root", help="dataset root (competition layout, a CSV, or a folder per class)")
    p.add_argument("--format", choices=["competition", "csv", "folder"], default=None,
                   help="dataset layout (default: detect the competition layout)")
    p.add_argument("--label-columns", nargs="+", default=None,
                   help="csv: label columns (default: all but path, person and metadata columns)")
    p.add_argument("--path-column", default="path", help="csv: image path column (default: path)")
    p.add_argument("--person-column", default=None, help="csv: column grouping images of one person/subject")
    p.add_argument("--meta-columns", nargs="+", default=None,
                   help="csv: metadata columns, kept per image for patterns (default: every column that is not a "
                        "label; columns named annotator, site, batch, source, ... are metadata unless --label-columns "
                        "names them)")
    _db(p)
    p.set_defaults(func=cmd_ingest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_dataset_commands(sub)

    p = sub.add_parser("patterns", help="errors that repeat: runs in upload order, metadata slices, heaping (core.patterns)")
    p.add_argument("--run", type=int, default=None, help="score run (default: the current one)")
    p.add_argument("--json", action="store_true", help="print a JSON list of patterns")
    p.add_argument("--fdr", type=float, default=0.05, help="false discovery rate over every test run (default 0.05)")
    _db(p)
    p.set_defaults(func=cmd_patterns)

    p = sub.add_parser("export", help="write the cleaned label table (CSV, or .parquet)")
    p.add_argument("--out", required=True, help="output file (.csv or .parquet)")
    _db(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("import", help="apply a corrections CSV in one transaction (target,attribute,value[,expected,reason,annotator])")
    p.add_argument("csv")
    p.add_argument("--annotator", default="import", help="annotator for rows without one (default: import)")
    p.add_argument("--dry-run", action="store_true", help="validate and show the plan, change nothing")
    _db(p)
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("correct", help="correct one label (image path or person folder)")
    p.add_argument("target")
    p.add_argument("attribute")
    p.add_argument("value")
    p.add_argument("--expected", default=None, help="value you expect to replace (default: the current one)")
    p.add_argument("--annotator", required=True)
    p.add_argument("--reason", default="")
    _db(p)
    p.set_defaults(func=cmd_correct)

    p = sub.add_parser("revert", help="undo a correction (logged as a revert)")
    p.add_argument("correction", type=int)
    p.add_argument("--annotator", required=True)
    p.add_argument("--reason", default="")
    _db(p)
    p.set_defaults(func=cmd_revert)

    p = sub.add_parser("history", help="show the corrections log")
    p.add_argument("--target", default=None)
    p.add_argument("--attribute", default=None)
    p.add_argument("--limit", type=int, default=50)
    _db(p)
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("snapshot", help="freeze the current labels to a hashed file (the trainer's input)")
    p.add_argument("--dir", default=None, help="folder (default: <db>.d/snapshots)")
    _db(p)
    p.set_defaults(func=cmd_snapshot)

    p = sub.add_parser("issues", help="rank label issues from arrays (any dataset)")
    p.add_argument("--labels", required=True, help=".npy of int labels, shape (n,)")
    p.add_argument("--pred-probs", required=True, help=".npy of out-of-sample probabilities, shape (n, k)")
    p.add_argument("--groups", default=None, help=".npy of group ids, shape (n,): one verdict per group")
    p.add_argument("--folds", default=None, help=".npy of the cross-validation fold each row was predicted in, "
                   "shape (n,): folds whose models differ in temperature are evened first")
    p.add_argument("--out", required=True, help="output CSV: index,score,is_issue,suggested[,group]")
    p.set_defaults(func=cmd_issues)

    p = sub.add_parser("check", help="data checks: duplicates, near-duplicates, dark or blurry images")
    _db(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("queue", help="export a score run's ranked review queue (the Review page's units, order, flags) "
                                     "as CSV: unit,attribute,given,suggested,score,flagged,rank,status")
    p.add_argument("--out", required=True, help="output CSV")
    p.add_argument("--run", type=int, default=None, help="score run id (default: the current one)")
    p.add_argument("--attribute", default=None, help="only this attribute as scored, e.g. age_group (default: all)")
    _db(p)
    p.set_defaults(func=cmd_queue)

    p = sub.add_parser("status", help="what the store holds")
    _db(p)
    p.set_defaults(func=cmd_status)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(args.func, args)  # one line per error, no traceback (LABELFIX_DEBUG=1 shows it)


if __name__ == "__main__":
    pd.set_option("display.width", 200)
    sys.exit(main())
