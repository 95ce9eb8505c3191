"""Does ``core patterns`` stay quiet where there is no pattern, and find shapes it was not designed on?

    PYTHONPATH=. .venv/bin/python bench/pattern_checks.py --out /tmp/pattern-checks.json [--write]

Each case is a real dataset on disk, ingested with ``core.ingest`` and scored with ``train.score.score`` (a small
model, cross-validated out-of-fold probabilities), then scanned with ``core.pattern_actions.scan`` -- exactly
what ``python -m core patterns --json`` prints. Cases (written down before looking at any result):

* ``clean``: the demo with noise 0 (480 people): no error, so nothing may be suspected; top-coding at 60 (the
  demo's oldest people are all exactly 60) must be reported, suspecting no one.
* ``random``: the demo's random profile, noise 0.2 (independent errors): at most 3 % of people suspected.
* ``csv_run``: a CSV dataset (one row per image, no person column, a ``site`` column) built from a clean demo's
  photos, its label ``gender`` per image, with a run of gender flips over 60 consecutive rows (70 % flipped).
* ``csv_site``: the same CSV with flips in one of five sites (40 % of that site's rows), in shuffled row order.
* ``folder_slice``: a folder-per-class dataset (``ROOT/<mask>/<source>/x.jpg``) where one of six source folders
  has incorrect and not_wear exchanged for 60 % of its photos.
* ``heap_40_50``: the clean demo with ages 38-42 entered as 40 and 48-52 as 50 for 70 % of people (rounding that
  stays inside the 30-59 group: a heap each, and no one suspected since no task label changes).

Reported per case: patterns (kind, summary), units suspected, their share of all units, and, where the truth is
known, how many suspected units are real errors (precision) and how many planted errors were suspected (recall).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench import common  # noqa: E402
from core import pattern_actions  # noqa: E402
from core import patterns as P  # noqa: E402
from core.store import LabelStore  # noqa: E402

SECTION = "Patterns: quiet where there is none, found in shapes not designed on"
SCORE = {"model": "test_resnet", "img_size": (32, 40), "epochs": 4, "batch_size": 32, "threads": 1}


def _demo(work: Path, name: str, persons: int, noise: float, profile: str = "random", seed: int = 0) -> Path:
    from core.demo import generate

    out = work / name
    if not (out / "train" / "train.csv").exists():
        generate(out, persons=persons, noise=noise, seed=seed, eval_images=0, image_size=(48, 64), profile=profile)
    return out


def _score(work: Path, name: str, root: Path, fmt: str | None = None, folds: int = 2) -> tuple[Path, int]:
    from core.ingest import ingest
    from train.score import score

    db = work / f"{name}.db"
    for path in work.glob(f"{name}.db*"):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    with LabelStore(db) as store:
        ingest(root, store, fmt=fmt)
    result = score(db=str(db), folds=folds, echo=False, seed=0, cache_dir=str(work / "cache"),
                   out=str(work / "runs"), **SCORE)
    if result["status"] != "done":
        raise RuntimeError(f"{name}: score run ended {result['status']}")
    return db, int(result["run_id"])


def csv_from_demo(demo: Path, out: Path, *, run: tuple[int, int] | None, site: str | None, seed: int = 0) -> set[str]:
    """A CSV dataset over a demo's photos: path, gender (per image), site; returns the paths whose gender is wrong."""
    truth = pd.read_csv(demo / "truth.csv", dtype={"person": str})
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    images = out / "images"
    if images.exists():
        shutil.rmtree(images)
    shutil.copytree(demo / "train" / "images", images)
    table = pd.DataFrame({"path": "images/" + truth["path"].str.removeprefix("train/images/"),
                          "gender": truth["true_gender"],
                          "site": rng.choice(["north", "south", "east", "west", "central"], len(truth))})
    if site is not None:
        table = table.iloc[rng.permutation(len(table))].reset_index(drop=True)
    flip = np.zeros(len(table), dtype=bool)
    if run is not None:
        flip[run[0]:run[1]] = rng.random(run[1] - run[0]) < 0.7
    if site is not None:
        flip |= (table["site"] == site).to_numpy() & (rng.random(len(table)) < 0.4)
    table.loc[flip, "gender"] = np.where(table.loc[flip, "gender"] == "male", "female", "male")
    table.to_csv(out / "labels.csv", index=False)
    return set(table["path"][flip])


def folder_from_demo(demo: Path, out: Path, seed: int = 0) -> set[str]:
    """ROOT/<mask>/<source>/<file>: six sources by person; in ``source-3`` 60 % of incorrect/not_wear photos swapped."""
    truth = pd.read_csv(demo / "truth.csv", dtype={"person": str})
    rng = np.random.default_rng(seed)
    if out.exists():
        shutil.rmtree(out)
    people = truth["person"].unique()
    source = dict(zip(people, [f"source-{k % 6}" for k in range(len(people))]))
    wrong = set()
    for row in truth.itertuples(index=False):
        label = row.true_mask
        src = source[row.person]
        if src == "source-3" and label in ("incorrect", "not_wear") and rng.random() < 0.6:
            label = "not_wear" if label == "incorrect" else "incorrect"
        name = f"{row.person}_{Path(row.path).name}"
        target = out / label / src / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(demo / row.path, target)
        if label != row.true_mask:
            wrong.add(f"{label}/{src}/{name}")
    return wrong


def heaped_demo(demo: Path, out: Path, seed: int = 0) -> set[str]:
    """The demo with ages 38-42 -> 40 and 48-52 -> 50 for 70 % of people (folders renamed to match)."""
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(demo, out)
    table = pd.read_csv(out / "train" / "train.csv", dtype={"id": str})
    rng = np.random.default_rng(seed)
    moved = set()
    for i, row in table.iterrows():
        for low, high, to in ((38, 42, 40), (48, 52, 50)):
            if low <= row.age <= high and row.age != to and rng.random() < 0.7:
                folder = f"{row.id}_{row.gender}_{row.race}_{to}"
                (out / "train" / "images" / row.path).rename(out / "train" / "images" / folder)
                table.loc[i, ["age", "path"]] = [to, folder]
                moved.add(folder)
    table.to_csv(out / "train" / "train.csv", index=False)
    return moved


def check(name: str, db: Path, run_id: int, wrong: set[str] | None) -> dict[str, Any]:
    with LabelStore(db) as store:
        tests: list[dict[str, Any]] = []
        started = time.monotonic()
        _, found = pattern_actions.scan(store, run_id, tests=tests)
        seconds = time.monotonic() - started
        labels = store.current_labels(derived=False)
    units = len(pd.unique(P.unit_groups(labels)))
    suspected = {u for p in found for u in p.units}
    targets = {t for p in found for t in p.suspected["target"].astype(str)}
    out = {"case": name, "tests": len(tests), "seconds": round(seconds, 1), "units": int(units),
           "suspected": len(suspected), "share": round(P.suspected_share(found, labels), 4),
           "patterns": [{"kind": p.kind, "attribute": p.attribute, "summary": p.summary, "q_value": p.q_value,
                         "n_suspected": len(p.units)} for p in found]}
    if wrong is not None:
        hit = targets & wrong
        out.update(planted=len(wrong), suspected_targets=len(targets), true_suspects=len(hit),
                   precision=round(len(hit) / max(len(targets), 1), 3), recall=round(len(hit) / max(len(wrong), 1), 3))
    return out


def demo_wrong(demo: Path) -> set[str]:
    truth = pd.read_csv(demo / "truth.csv", dtype={"person": str})
    bad = truth[(truth["true_gender"] != truth["given_gender"]) | (truth["true_mask"] != truth["given_mask"])
                | (truth["true_age"] // 30 != truth["given_age"] // 30)]
    return set(bad["person"]) | set(bad["path"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/pattern-checks"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--cases", nargs="+", default=["clean", "random", "csv_run", "csv_site", "folder_slice",
                                                       "heap_40_50"])
    parser.add_argument("--persons", type=int, default=480)
    parser.add_argument("--report", type=Path, help="print (and with --write record) an existing results JSON")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)
    if args.report:
        text = report(json.loads(args.report.read_text()))
        print(text)
        if args.write:
            common.write_section(SECTION, text)
        return 0
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    out = args.out or work / "results.json"
    results = json.loads(out.read_text()) if out.exists() else {"cases": {}, "load": []}
    clean = _demo(work, "demo-clean", args.persons, 0.0)
    for case in args.cases:
        if case in results["cases"]:
            continue
        started = time.monotonic()
        load = os.getloadavg()[0]
        if case == "clean":
            db, run = _score(work, case, clean)
            row = check(case, db, run, set())
        elif case == "random":
            demo = _demo(work, "demo-random", args.persons, 0.2)
            db, run = _score(work, case, demo)
            row = check(case, db, run, demo_wrong(demo))
        elif case in ("csv_run", "csv_site"):
            wrong = csv_from_demo(clean, work / case, run=(900, 960) if case == "csv_run" else None,
                                  site="east" if case == "csv_site" else None)
            db, run = _score(work, case, work / case / "labels.csv", fmt="csv")
            row = check(case, db, run, wrong)
        elif case == "folder_slice":
            wrong = folder_from_demo(clean, work / case)
            db, run = _score(work, case, work / case, fmt="folder")
            row = check(case, db, run, wrong)
        elif case == "heap_40_50":
            moved = heaped_demo(clean, work / case)
            db, run = _score(work, case, work / case)
            row = check(case, db, run, moved)
        else:
            raise SystemExit(f"unknown case {case}")
        row.update(wall_s=round(time.monotonic() - started), load=round(load, 1))
        results["cases"][case] = row
        out.write_text(json.dumps(results, indent=1, default=str))
        print(json.dumps(row, default=str), flush=True)
    text = report(results)
    print(text)
    if args.write:
        common.write_section(SECTION, text)
    return 0


def report(results: dict[str, Any]) -> str:
    lines = ["| case | units | patterns found (kind: suspected) | suspected units (share) | precision / recall of "
             "suspects | tests run | load at start |", "|---|---|---|---|---|---|---|"]
    for case, row in results["cases"].items():
        found = "; ".join(f"{p['kind']} {p['attribute']}: {p['n_suspected']}" for p in row["patterns"]) or "none"
        pr = (f"{row['precision']:.0%} / {row['recall']:.0%} of {row['planted']}" if row.get("planted")
              else "— (nothing planted)")
        lines.append(f"| {case} | {row['units']:,} | {found} | {row['suspected']} ({row['share']:.1%}) | {pr} | "
                     f"{row['tests']} | {row['load']} |")
    lines.append("")
    for case, row in results["cases"].items():
        for p in row["patterns"]:
            lines.append(f"* {case}: {p['summary']} (q = {p['q_value']:.2g})")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
