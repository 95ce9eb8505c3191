"""Score runs of the demo under the trainer's calibration-changing options, for the person-verdict demo table.

    PYTHONPATH=. .venv/bin/python bench/demo_options.py prepare --seeds 7 8 9      # demos, one store per option
    PYTHONPATH=. .venv/bin/python bench/demo_options.py run --option focal          # its score runs, seed by seed
    PYTHONPATH=. .venv/bin/python bench/demo_options.py run --model test_byobnet --workdir W   # another model
    PYTHONPATH=. .venv/bin/python bench/demo_options.py table [--write]             # verdicts vs truth.csv

``prepare`` generates the demo of each seed once (``<workdir>/seed<s>/demo``) and ingests it into one fresh
store per option (``<workdir>/seed<s>/<option>/labels.db``); ``run`` scores every seed's store of one option
with ``train.score.score`` (the score job's defaults plus the option) and skips a store whose score run is
done and resumes one that was stopped (``score(resume=...)``: its finished folds are kept), so the four options
run as four parallel processes and a killed one goes on where it was. ``table`` re-applies
today's verdicts to every run's stored out-of-fold probabilities (``train.oof.score_rows``, as ``rescore`` does; no
training; a run still going: the folds it finished, whole people) and compares them with truth.csv
(``bench.calibration.demo_options_section``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from bench import common
from core.demo import generate
from core.ingest import ingest
from core.store import LabelStore

WORKDIR = Path(__file__).resolve().parent.parent / ".cache" / "bench-demo-options"
OPTIONS = {"defaults": {}, "balanced": {"balanced": True}, "focal": {"loss": "focal"}, "smooth": {"loss": "smooth"}}


def prepare(workdir: Path, seeds: list[int], persons: int, noise: float) -> None:
    for seed in seeds:
        root = workdir / f"seed{seed}" / "demo"
        marker = root / ".labelfix-demo"
        wanted = {"persons": persons, "noise": noise, "seed": seed}
        if not (root / "train" / "train.csv").exists() or \
                {k: json.loads(marker.read_text()).get(k) for k in wanted} != wanted:
            print(generate(root, persons=persons, noise=noise, seed=seed).summary(), flush=True)
        for option in OPTIONS:
            db = workdir / f"seed{seed}" / option / "labels.db"
            if db.exists():
                continue
            db.parent.mkdir(parents=True, exist_ok=True)
            with LabelStore(db) as store:
                print(seed, option, ingest(root, store).summary(), flush=True)


def run(workdir: Path, seeds: list[int], option: str, model: str | None = None) -> None:
    from train.score import score  # torch only here
    for seed in seeds:
        db = workdir / f"seed{seed}" / option / "labels.db"
        if not db.exists():  # opening would create an empty store, which `prepare` then skips as done
            raise SystemExit(f"{db}: no store; run `bench/demo_options.py prepare --seeds {seed}` first")
        with LabelStore(db) as store:
            if store.current_score_run() is not None:
                print(f"seed {seed} {option}: done already", flush=True)
                continue
            runs = store.runs("score")
            stopped = int(runs["id"].iloc[0]) if len(runs) and runs["status"].iloc[0] in ("cancelled", "failed") \
                else None
        load, started = os.getloadavg()[0], time.perf_counter()
        if stopped is not None:  # a killed run (SIGTERM: cancelled) goes on from its finished folds
            result = score(db=str(db), echo=False, resume=stopped)
        else:
            result = score(db=str(db), echo=False, **OPTIONS[option], **({"model": model} if model else {}))
        print(f"seed {seed} {option}: run {result['run_id']} {result['status']} in "
              f"{time.perf_counter() - started:.0f} s (load {load:.1f} -> {os.getloadavg()[0]:.1f})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["prepare", "run", "table"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[7, 8, 9])
    parser.add_argument("--option", choices=list(OPTIONS), default="defaults")
    parser.add_argument("--model", default=None, help="run: another score model (default: the score job's); use its own "
                        "--workdir")
    parser.add_argument("--persons", type=int, default=480)
    parser.add_argument("--noise", type=float, default=0.1)
    parser.add_argument("--workdir", default=str(WORKDIR))
    parser.add_argument("--table", nargs="+", default=None, metavar="WORKDIR:SEEDS",
                        help="table: workdirs with their seeds, e.g. .cache/a:7 .cache/b:8,9 (default: --workdir, --seeds)")
    common.add_write_flag(parser, "Person verdicts on the demo across score options")
    args = parser.parse_args()
    workdir = Path(args.workdir)
    if args.step == "prepare":
        prepare(workdir, args.seeds, args.persons, args.noise)
    elif args.step == "run":
        run(workdir, args.seeds, args.option, args.model)
    else:
        from bench.calibration import demo_options_section
        workdirs = [(Path(w.split(":")[0]), [int(x) for x in w.split(":")[1].split(",")]) for w in args.table] \
            if args.table else [(workdir, args.seeds)]
        demo_options_section(workdirs, list(OPTIONS), write=args.write)


if __name__ == "__main__":
    main()
