"""Command line for the trainer: ``python -m train {fit,score,experiment,evaluate,runs,diff,cache,predict,model-info}
--help``.

Thin argument parsing over ``train.fit``, ``train.score``, ``train.predict`` and the store's journal. Every ``--db``
defaults to ``$LABELS_DB``, else ``labels.db``. ``fit`` also runs under
``torchrun --nproc_per_node N -m train fit ...`` (DDP).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from core.errors import printable, printable_frame, run_command
from core.store import LabelStore, default_db, now
from train.config import DEFAULT_FOLDS, TrainConfig, add_options
from train.config import from_args as config_from_args
from train.jobs import JOB_LOG_ENV
from train.logs import LOG_BYTES, CappedLog


def _db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", default=default_db(), help="label store (default: $LABELS_DB, else labels.db)")


def _config(args: argparse.Namespace, command: str) -> TrainConfig:
    """The run's config from ``fit``/``score`` options; --pretrained without --img-size takes the model's own
    input size (timm's registry, no network; ``fit``/``score`` then fetch the weights before writing a run row)."""
    if args.pretrained and args.img_size is None and args.resume is None:
        from train.model import pretrained_info

        args.img_size = tuple(pretrained_info(args.model)["img_size"])
    return config_from_args(args, command)


def cmd_model_info(args: argparse.Namespace) -> int:
    from train.model import pretrained_info

    info = pretrained_info(args.model)
    if args.json:
        print(json.dumps(info))
    else:
        print(f"{info['model']}: input {info['img_size'][0]}x{info['img_size'][1]}, mean {info['mean']}, "
              f"std {info['std']}, pretrained weights: {info['source'] or 'none'}")
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    from train.loop import fit

    config = _config(args, "fit")
    if args.repeats != 1:
        from train.repeats import fit_repeats

        if args.resume is not None:
            raise ValueError("--resume continues one run; it does not take --repeats")
        results = fit_repeats(config, args.repeats, db=args.db, run_id=args.run_id, echo=not args.quiet)
        result = results[-1]
        ids = ", ".join(f"#{r['run_id']}" for r in results)
        print(f"repeat group #{results[0]['run_id']}: {len(results)} of {args.repeats} run(s) trained ({ids}); "
              "python -m train runs shows the group's mean and spread")
    else:
        result = fit(config, db=args.db, run_id=args.run_id, resume=args.resume, echo=not args.quiet)
    if result["status"] == "cancelled":
        print(f"run {result['run_id']} cancelled; resume with: python -m train fit --resume {result['run_id']}")
        return 130
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from train.score import score

    result = score(_config(args, "score"), db=args.db, folds=args.folds, run_id=args.run_id,
                   resume=args.resume, echo=not args.quiet)
    if result["status"] == "cancelled":
        print(f"score run {result['run_id']} cancelled; resume with: python -m train score --resume {result['run_id']}")
        return 130
    print(f"score run {result['run_id']} done in {result['seconds']:.0f} s: flagged {result['flagged']}; "
          "review them on the dashboard's Review page")
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    from train.experiment import format_report, run_experiment

    report = run_experiment(_config(args, "fit"), args.repeats, db=args.db, heldout=args.heldout,
                            run_id=args.run_id, echo=not args.quiet, target=args.target)
    print("\n".join(printable(line) for line in format_report(report)))
    if report.get("status") not in (None, "done"):
        print(f"experiment #{report['experiment']} {report['status']}: its finished pairs are kept; run the same "
              "command again to go on (they are reused)")
        return 130
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from train.experiment import evaluate_runs

    with LabelStore(args.db) as store:
        results = evaluate_runs(store, args.runs, labels=args.labels)
    if args.json:
        print(json.dumps(results, indent=1, default=str))
        return 0
    for result in results:
        m = result["metrics"]
        print(f"run #{result['run_id']} on {result['key']}: macro F1 {m.get('macro_f1', float('nan')):.4f}, "
              f"accuracy {m.get('acc_class', float('nan')):.4f}")
    if len(results) >= 2 and args.labels == "current":
        print(f"same answer key: python -m train diff {results[0]['run_id']} {results[1]['run_id']} compares them")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from train.compare import runs_table

    with LabelStore(args.db) as store:
        if args.json:
            runs = store.runs(None if args.kind == "all" else args.kind)
            keep = ["id", "kind", "status", "best_checkpoint", "metrics", "config", "snapshot_hash", "n_corrections",
                    "git_commit", "git_dirty", "seed", "host", "created_at", "started_at", "finished_at", "progress",
                    "run_dir", "log_path", "error_tail"]
            records = [{k: (None if _is_missing(v) else v) for k, v in row.items() if k in keep}
                       for row in runs.to_dict("records")]
            print(json.dumps(records, indent=1, default=str))
            return 0
        table = runs_table(store, None if args.kind == "all" else args.kind)
    if table.empty:
        print("no runs yet: python -m train fit")
        return 0
    with pd.option_context("display.width", 250, "display.max_colwidth", 80, "display.max_columns", 20):
        print(printable_frame(table).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and pd.isna(value))


def cmd_diff(args: argparse.Namespace) -> int:
    from train.compare import AnswerKeyMismatch, compare_runs, diff_runs, format_diff

    with LabelStore(args.db) as store:
        diff = diff_runs(store, args.run_a, args.run_b)  # in run order: before = the lower id
        try:
            verdicts = compare_runs(store, args.run_a, args.run_b)
        except AnswerKeyMismatch:  # the settings and labels still differ as shown; the numbers are refused
            if not args.json:
                print("\n".join(printable(line) for line in format_diff(diff).splitlines()))
            raise
    if args.json:
        print(json.dumps({**diff, "verdicts": verdicts}, indent=1, default=str))
    else:
        if verdicts["swapped"]:
            print(f"(in run order: run {verdicts['before']} is before, run {verdicts['after']} after)")
        print("\n".join(printable(line) for line in format_diff(diff, verdicts).splitlines()))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from train.predict import checkpoints_of_runs, predict

    with LabelStore(args.db) as store:
        if args.run_id is not None:  # a job launcher's queued row: running now, failed with the error if it fails
            store.update_run(args.run_id, status="running", pid=os.getpid(), started_at=now())
        try:
            paths = list(args.checkpoint or []) + (checkpoints_of_runs(store, args.run) if args.run else [])
            submission = predict(paths, args.out, store=store, info=args.info, tta=args.tta,
                                 batch_size=args.batch_size, threads=args.threads, device=args.device,
                                 cache_mb=args.cache_mb, run_id=args.run_id)
        except BaseException as error:
            if args.run_id is not None:
                store.update_run(args.run_id, status="failed", finished_at=now(),
                                 error_tail=f"{type(error).__name__}: {error}")
            raise
    print(f"wrote {args.out}: {len(submission)} rows from {len(paths)} checkpoint(s), tta {args.tta}; "
          f"probabilities in {args.out.rsplit('.', 1)[0]}.probs.csv")
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from train import cache

    if args.cache_dir:
        folder = Path(args.cache_dir)
    elif not Path(args.db).is_file():
        raise FileNotFoundError(f"no label store at {args.db}; pass --db PATH or --cache-dir FOLDER")
    else:
        with LabelStore(args.db) as store:
            folder = store.files_dir / "cache"
    budget = cache.budget_mb(args.cache_mb)
    if args.clear:
        freed, busy = cache.clear(folder)
        print(f"cleared {folder}: {freed / 2**20:.1f} MB freed" +
              (f"; kept {len(busy)} cache(s) in use by a running job: " + ", ".join(p.name for p in busy)
               if busy else ""))
    elif args.trim:
        deleted = cache.evict(folder, budget * 2**20)
        for gone in deleted:
            print(f"deleted {gone.describe()}")
        print(f"trimmed {folder} to its budget of {budget:.0f} MB: {len(deleted)} file(s) deleted")
    table = cache.entries_frame(folder)
    used = cache.folder_bytes(folder) / 2**20
    if args.json:
        print(json.dumps({"folder": str(folder), "budget_mb": budget, "used_mb": round(used, 2),
                          "caches": table.to_dict("records")}, indent=1))
        return 0
    print(f"{folder}: {used:.1f} MB of a {budget:.0f} MB budget (--cache-mb, ${cache.ENV}), "
          f"{len(table)} cache(s), least recently used first")
    if not table.empty:
        with pd.option_context("display.width", 250, "display.max_colwidth", 80):
            print(table.to_string(index=False))
    return 0


def _job_options(p: argparse.ArgumentParser, resume_help: str) -> None:
    """What fit and score share as journaled jobs: --resume, --run-id, --quiet, --db."""
    p.add_argument("--resume", type=int, default=None, metavar="RUN_ID", help=resume_help)
    p.add_argument("--run-id", type=int, default=None,
                   help="adopt this queued journal row instead of creating one (used by job launchers)")
    p.add_argument("--quiet", action="store_true", help="no console output (the run's log file still gets it)")
    _db(p)


def _add_training_commands(sub: Any) -> None:
    """``fit``, ``score``, ``experiment`` and ``evaluate``: what trains or judges models."""
    p = sub.add_parser("fit", help="train on a snapshot of the current labels (journaled, checkpointed)",
                       allow_abbrev=False)
    add_options(p, "fit")
    p.add_argument("--repeats", type=int, default=1, metavar="N",
                   help="train this config N times on one label snapshot with seeds seed, seed+1, ...: one repeat "
                        "group in the journal, whose spread tells Compare what is noise (default: 1)")
    _job_options(p, "continue run RUN_ID from its last checkpoint with its own config (default: start a new run)")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("score", help="cross-validated label-issue scores of the current labels (journaled, resumable)",
                       allow_abbrev=False)
    p.add_argument("--folds", type=int, default=DEFAULT_FOLDS,
                   help=f"person-grouped folds; each image is scored by the model trained on the others "
                        f"(default: {DEFAULT_FOLDS})")
    add_options(p, "score")
    _job_options(p, "continue score run RUN_ID with its own config, skipping its finished folds")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("experiment", help="did cleaning help? train on the original and on the current labels "
                                          "with the same seeds and split, judge both on one answer key",
                       allow_abbrev=False)
    add_options(p, "fit")
    p.add_argument("--repeats", type=int, default=3, metavar="N",
                   help="pairs of runs (one on each labelling per seed: seed, seed+1, ...); running again with a "
                        "larger N reuses the pairs that finished (default: 3)")
    p.add_argument("--heldout", default=None, metavar="CSV",
                   help="also judge every model on this labelled set outside the store: path (relative to the "
                        "CSV), the stored attributes (or true_<name>), optional person (default: none)")
    p.add_argument("--target", type=float, default=0.02,
                   help="the difference the power line asks about: how many pairs would see it (default: 0.02)")
    p.add_argument("--run-id", type=int, default=None,
                   help="adopt this queued journal row instead of creating one (used by job launchers)")
    p.add_argument("--quiet", action="store_true", help="no console output from the trainings (logs still get it)")
    _db(p)
    p.set_defaults(func=cmd_experiment)

    p = sub.add_parser("evaluate", help="judge finished runs from their best checkpoints on one answer key "
                                        "(today's labels of the people none of them trained on), no retraining",
                       allow_abbrev=False)
    p.add_argument("runs", type=int, nargs="+", metavar="RUN")
    p.add_argument("--labels", choices=["current", "own"], default="current",
                   help="current: one key for all, today's labels; own: each run on its own held-out people and "
                        "snapshot labels (reproduces its stored metric) (default: current)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    _db(p)
    p.set_defaults(func=cmd_evaluate)



def _add_journal_commands(sub: Any) -> None:
    """``runs`` and ``diff``: reading the experiment journal."""
    p = sub.add_parser("runs", help="list training runs (the experiment journal)", allow_abbrev=False)
    p.add_argument("--json", action="store_true", help="JSON: id, status, best_checkpoint, metrics, config, ...")
    p.add_argument("--kind", default="train", help="train, score, predict or all (default: train)")
    _db(p)
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("diff", help="which config values and labels differ between two runs (in run order), and "
                                    "whether each metric moved beyond run-to-run noise", allow_abbrev=False)
    p.add_argument("run_a", type=int)
    p.add_argument("run_b", type=int)
    p.add_argument("--json", action="store_true", help="print the diff as JSON")
    _db(p)
    p.set_defaults(func=cmd_diff)


def _add_tool_commands(sub: Any) -> None:
    """``cache``, ``predict``, ``model-info`` and ``slices``."""
    p = sub.add_parser("cache", help="list the decoded image caches (size, images, last use, in use); clear or trim",
                       allow_abbrev=False)
    p.add_argument("--clear", action="store_true", help="delete every cache no running job holds")
    p.add_argument("--trim", action="store_true",
                   help="delete least recently used caches no running job holds until the folder fits --cache-mb")
    p.add_argument("--cache-mb", type=float, default=None,
                   help="budget in MB for --trim and the report (default: $LABELS_CACHE_MB, else 2048)")
    p.add_argument("--cache-dir", default=None, help="cache folder (default: <db>.d/cache)")
    p.add_argument("--json", action="store_true", help="print folder, budget, use and caches as JSON")
    _db(p)
    p.set_defaults(func=cmd_cache)

    p = sub.add_parser("predict", help="predict eval/info.csv in submission format (ensemble, TTA)",
                       allow_abbrev=False)
    p.add_argument("--checkpoint", action="append", help="checkpoint file; repeat to ensemble (default: none)")
    p.add_argument("--run", action="append", type=int, help="use this run's best checkpoint; repeat to ensemble")
    p.add_argument("--tta", choices=["none", "flip"], default="none", help="test-time augmentation (default: none)")
    p.add_argument("--out", default="submission.csv", help="submission file (default: submission.csv)")
    p.add_argument("--info", default=None, help="info.csv to fill (default: <dataset root>/eval/info.csv)")
    p.add_argument("--batch-size", type=int, default=128, help="images per forward pass (default: 128)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (default: 2)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.add_argument("--cache-mb", type=float, default=None,
                   help="image cache budget in MB (default: $LABELS_CACHE_MB, else 2048)")
    p.add_argument("--run-id", type=int, default=None,
                   help="adopt this queued journal row instead of creating one (used by job launchers)")
    _db(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("model-info", help="a timm model's default input size, normalisation and pretrained weights "
                                          "(from timm's registry, no network)", allow_abbrev=False)
    p.add_argument("model", help="timm model name")
    p.add_argument("--json", action="store_true", help="print it as JSON")
    p.set_defaults(func=cmd_model_info)

    p = sub.add_parser("slices", help="rescore the metadata slices a model may have learned with models that never "
                                      "trained on them, then scan for patterns (train/slices.py)", allow_abbrev=False)
    p.add_argument("--run", type=int, default=None, help="score run (default: the current one)")
    p.add_argument("--json", action="store_true", help="print the learned slices and patterns as JSON")
    _db(p)
    p.set_defaults(func=cmd_slices)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__.splitlines()[0], allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_training_commands(sub)
    _add_journal_commands(sub)
    _add_tool_commands(sub)
    return parser


def cmd_slices(args: argparse.Namespace) -> int:
    from train.slices import main_slices

    return main_slices(args)


def main(argv: list[str] | None = None) -> int:
    job_log = os.environ.get(JOB_LOG_ENV)
    if job_log and not isinstance(sys.stdout, CappedLog):  # a dashboard job: output to its capped, rotated log
        sys.stdout = sys.stderr = CappedLog(job_log)
        print(f"python -m train {' '.join(sys.argv[1:] if argv is None else argv)}  (this log rotates at "
              f"{LOG_BYTES / 1e6:.0f} MB, two older parts kept)")
    args = build_parser().parse_args(argv)
    return run_command(args.func, args)  # one line per error, no traceback (LABELFIX_DEBUG=1 shows it)


if __name__ == "__main__":
    sys.exit(main())
