"""Person verdicts across model calibrations: the calibration axis of "Person level across regimes", and the demo
table across the trainer's score options.

    PYTHONPATH=. .venv/bin/python bench/calibration.py [--seeds 5] [--write] [--only design|held-out]
    PYTHONPATH=. .venv/bin/python bench/demo_options.py table       # the demo part (needs its score runs)

Every regime of ``bench.label_issues.REGIMES`` (and three held-out regimes below) is scored with its
probabilities as they come and transformed the ways a model's calibration differs from the label prior:

* ``as-is``        the logistic regression's out-of-fold probabilities (calibrated to the noisy labels' prior);
* ``prior removed`` each column divided by its class's label frequency, rows renormalised (class-balanced training);
* ``T=0.5`` / ``T=2`` probabilities raised to 1/T and renormalised (an over- / under-confident model);
* ``smoothed 0.1`` ``0.9 p + 0.1 / k`` (label smoothing);
* ``simulated, no prior`` the same setting drawn by ``person_regimes.direct``: probabilities around the true class,
  no model, no prior in them at all.

Per cell: person-level F1 of the flags and AP of the ranking over seeds, for ``group_scores`` (today's verdict,
which fits ``core.calibration`` first), the previous round's verdict (``calibrate=False``) and the three
cleanlab baselines of ``bench.label_issues.person_regime``; target: F1 and AP >= the best baseline's - 0.005.
"""

from __future__ import annotations

import argparse
import hashlib
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
from cleanlab.filter import find_label_issues
from sklearn.metrics import average_precision_score
from threadpoolctl import threadpool_limits

from bench import common
from bench.person_regimes import Regime, Setting, make
from core.scoring import class_prior, group_scores

CACHE = Path(__file__).resolve().parent.parent / ".cache" / "bench-calibration"

# Held out: written down (this list, commit before the method was chosen) and run once after the choice.
HELD_OUT = [
    Setting("direct: 4 classes 55/25/15/5, 3-9 a person, photos share much, 6 % lean, 5 % flipped", data="direct",
            balance=(0.55, 0.25, 0.15, 0.05), sizes=(3, 9), person_sd=0.8, lean=0.06, flip=0.05),
    Setting("direct: binary 85/15, 1-6 a person, 10 % lean, 3 % flipped", data="direct", balance=(0.85, 0.15),
            sizes=(1, 6), person_sd=0.3, lean=0.10, flip=0.03),
    Setting("direct: 3 ordered classes 50/35/15, 7 a person, 8 % lean, 6 % flipped", data="direct",
            balance=(0.50, 0.35, 0.15), ordered=True, person_sd=0.5, lean=0.08, flip=0.06),
]

CALIBRATIONS = ["as-is", "prior removed", "T=0.5", "T=2", "smoothed 0.1", "simulated, no prior"]
OURS, PREVIOUS = "group_scores (calibrated)", "previous round (calibrate=False)"
BASELINES = ["cleanlab per image + majority vote", "cleanlab on person-mean probabilities",
             "any image flagged (cleanlab per image)"]


def regime(setting: Setting, seed: int) -> Regime:
    """``person_regimes.make`` cached on disk (the logistic regressions are the slow part)."""
    key = hashlib.sha1(repr((sorted(asdict(setting).items()), seed)).encode()).hexdigest()[:16]
    path = CACHE / f"{key}.npz"
    if path.exists():
        data = np.load(path)
        return Regime(data["labels"], data["pred_probs"], data["groups"], data["wrong"])
    made = make(setting, seed)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, labels=made.labels, pred_probs=made.pred_probs, groups=made.groups, wrong=made.wrong)
    tmp.replace(path)
    return made


def transformed(setting: Setting, seed: int, calibration: str) -> Regime:
    """The regime's probabilities under one calibration of ``CALIBRATIONS``."""
    if calibration == "simulated, no prior":
        data = "direct-digits" if setting.data in ("digits", "direct-digits") else "direct"
        return regime(replace(setting, data=data), seed)
    base = regime(setting, seed)
    p, k = base.pred_probs, base.pred_probs.shape[1]
    if calibration == "prior removed":
        p = p / class_prior(base.labels, k)
    elif calibration.startswith("T="):
        p = np.clip(p, 1e-300, 1.0) ** (1.0 / float(calibration[2:]))
    elif calibration == "smoothed 0.1":
        p = 0.9 * p + 0.1 / k
    return Regime(base.labels, p / p.sum(axis=1, keepdims=True), base.groups, base.wrong)


def prf(flagged: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    hits = float((flagged & truth).sum())
    precision, recall = hits / max(int(flagged.sum()), 1), hits / max(int(truth.sum()), 1)
    return precision, recall, 2 * precision * recall / max(precision + recall, 1e-12)


def evaluate(data: Regime) -> dict[str, tuple[float, float]]:
    """(F1, AP) at person level per method on one grouped set (baselines as ``label_issues.person_regime``)."""
    groups, wrong, probs, labels = data.groups, data.wrong, data.pred_probs, data.labels
    n_people, k = len(wrong), probs.shape[1]
    sizes = np.bincount(groups, minlength=n_people)
    person_labels = np.zeros(n_people, int)
    person_labels[groups] = labels
    image_flags = find_label_issues(labels, probs, n_jobs=1)
    unsure = 1 - probs[np.arange(len(groups)), labels]
    share = np.bincount(groups, weights=image_flags, minlength=n_people) / sizes
    worst = np.zeros(n_people)
    np.maximum.at(worst, groups, unsure)
    mean = np.zeros((n_people, k))
    np.add.at(mean, groups, probs)
    mean /= sizes[:, None]
    methods = {}
    for name, calibrate in ((OURS, True), (PREVIOUS, False)):
        table = group_scores(labels, probs, groups, calibrate=calibrate,
                             folds=data.folds if calibrate else None).set_index("group").loc[np.arange(n_people)]
        methods[name] = (table["is_issue"].to_numpy(), table["score"].to_numpy())
    methods[BASELINES[0]] = (share > 0.5, share + 1e-3 * np.bincount(groups, weights=unsure) / sizes)
    methods[BASELINES[1]] = (find_label_issues(person_labels, mean, n_jobs=1), 1 - mean[np.arange(n_people),
                                                                                          person_labels])
    methods[BASELINES[2]] = (share > 0, worst)
    return {name: (prf(flags, wrong)[2], average_precision_score(wrong, score))
            for name, (flags, score) in methods.items()}


def judged(sets: Iterable[Regime]) -> dict[str, np.ndarray]:
    """{method: (sets, 2) F1 and AP}: ``evaluate`` on each grouped set (one a seed)."""
    runs = [evaluate(data) for data in sets]
    return {name: np.array([run[name] for run in runs]) for name in runs[0]}


def cell(setting: Setting, calibration: str, seeds: range) -> dict[str, np.ndarray]:
    """{method: (seeds, 2) F1 and AP}."""
    return judged(transformed(setting, seed, calibration) for seed in seeds)


MARGIN = 0.005  # the issue's "within 0.005" of the best baseline


def against_best(values: dict[str, np.ndarray], metric: int) -> tuple[str, np.ndarray, bool]:
    """(the best baseline by mean of ``metric`` (0 F1, 1 AP), ours − it per seed, ours within ``MARGIN`` of it)."""
    best = max(BASELINES, key=lambda name: values[name][:, metric].mean())
    ours = values[OURS][:, metric]
    return best, ours - values[best][:, metric], bool(ours.mean() >= values[best][:, metric].mean() - MARGIN)


def short(name: str) -> str:
    """A baseline's name without its parenthesis and "cleanlab ", for table cells."""
    return name.split(" (")[0].replace("cleanlab ", "")


def evidence(diff: np.ndarray) -> tuple[float, float, str]:
    """(low, high, reading) of the 95 % paired-t interval of per-seed differences: reading " (below 0)" (a loss at
    these seeds), " (above 0)" (a gain), " (no evidence: covers 0)", or "" with under two seeds."""
    from bench.cleaning_loop import paired_interval
    _, low, high = paired_interval(diff)
    if np.isnan(high):
        return low, high, ""
    return low, high, " (below 0)" if high < 0 else " (above 0)" if low > 0 else " (no evidence: covers 0)"


def interval_text(diff: np.ndarray) -> str:
    low, high, reading = evidence(diff)
    return f"[{low:+.3f}, {high:+.3f}]{reading}"


def verdict(values: dict[str, np.ndarray]) -> tuple[str, bool]:
    """Markdown cells: ours, the best baseline (by mean, per metric), paired difference mean ± SD; met or not."""
    ours = values[OURS]
    cells, met = [], True
    for m in range(2):  # F1, AP
        best, diff, ok = against_best(values, m)
        met &= ok
        cells.append(f"{ours[:, m].mean():.3f} ± {ours[:, m].std():.3f} | {values[best][:, m].mean():.3f} "
                     f"({short(best)}) | {diff.mean():+.3f} ± {diff.std():.3f}"
                     f"{'' if ok else ' **miss** ' + interval_text(diff)} | {values[PREVIOUS][:, m].mean():.3f}")
    return " | ".join(cells), met


def section(seeds: range, settings: list[tuple[Setting, bool]]) -> tuple[str, list[str]]:
    head = ("| regime | probabilities | F1 ours | F1 best baseline | F1 ours − best (paired, ± SD) | F1 previous "
            "round | AP ours | AP best baseline | AP ours − best | AP previous round |")
    lines, misses, total = [head, "|" + "---|" * 10], [], 0
    for setting, held_out in settings:
        for calibration in CALIBRATIONS:
            values = cell(setting, calibration, seeds)
            cells, met = verdict(values)
            total += 1
            label = setting.name + (" **(held out)**" if held_out else "")
            if not met:
                misses.append(f"{setting.name} / {calibration}")
            lines.append(f"| {label} | {calibration} | {cells} |")
            print(lines[-1], flush=True)
    return "\n".join(lines), misses + [f"{total - len(misses)} of {total} cells met"]


def settings() -> list[tuple[Setting, bool]]:
    """(setting, held out) of this bench: the regimes of ``bench/label_issues.py``, then ``HELD_OUT``."""
    from bench.label_issues import REGIMES
    return [(s, h) for s, h in REGIMES] + [(s, True) for s in HELD_OUT]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    common.add_write_flag(parser, "Person level across calibrations")
    parser.add_argument("--only", choices=["design", "held-out", "all"], default="all")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="May not flag all label issues")
    threadpool_limits(1)
    chosen = [(s, h) for s, h in settings() if args.only == "all" or h == (args.only == "held-out")]
    started = time.perf_counter()
    table, misses = section(range(args.seeds), chosen)
    print("\n".join(misses))
    if args.write:
        text = calibration_text(table, misses, args.seeds, time.perf_counter() - started)
        common.write_section("Person level across calibrations", text)


def calibration_text(table: str, misses: list[str], seeds: int, seconds: float) -> str:
    return f"""`PYTHONPATH=. .venv/bin/python bench/calibration.py` ({seeds} seeds a cell; {seconds:.0f} s on this machine,
2 shared cores under other jobs). The regimes of "Person level across regimes" (their probabilities from
`bench/person_regimes.py`), plus three held-out regimes drawn directly (no model), each with its probabilities
transformed the ways a model's calibration can differ from the label prior (`bench/calibration.py` docstring): as
they come, prior removed (class-balanced training), temperature 0.5 and 2, label-smoothed 0.1, and drawn directly
around the true class with no prior. "ours": `group_scores` today (it fits one temperature and a per-class offset
to the out-of-fold probabilities first, removes each class's floor and fits them again, `core.calibration`);
"previous round": the same with `calibrate=False`. Best baseline: the best by mean of cleanlab per image + majority
vote, cleanlab on person-mean probabilities and any image flagged, on the same probabilities. Differences are
paired by seed (mean ± SD over seeds); a miss also shows the 95 % paired-t interval of the difference ("below 0":
a loss at these seeds; "covers 0": no evidence either way). Target: F1 and AP ≥ best baseline − 0.005 in every cell.

{table}

Cells missed: {'; '.join(misses)}.
"""


if __name__ == "__main__":
    main()


# ---- the demo across the trainer's score options ------------------------------------------------------------------
DEMO_KINDS = {"gender_flip": "gender", "mask_swap": "mask", "age": "age_group"}
DEMO_METHODS = ["ours (score job's verdicts today)", "previous round (calibrate=False)", "cleanlab per image (any image)",
                "cleanlab per image + majority vote", "cleanlab on person means"]


def demo_flags(db: Path, root: Path) -> tuple[pd.DataFrame, dict[str, dict[str, np.ndarray]]]:
    """(images with person and noise_kind, {method: {target: (n,) bool image flags}}) of a store's current score run.

    Ours: ``train.oof.score_rows`` (what the score job and ``rescore`` store) on the run's saved out-of-fold
    probabilities; previous round: the same with ``core.scoring.recalibrate`` replaced by the identity.
    Baselines per target on the same probabilities: cleanlab's ``find_label_issues`` per image (a person is
    flagged when any image is), + majority vote (more than half of the person's images; for mask, a person's
    incorrect/not_wear pair when both are flagged), and on the person's mean probabilities (person-scope targets;
    mask is decided per image, so there it is cleanlab per image).
    """
    from core.schema import Schema
    from core.store import LabelStore, read_snapshot
    from train.oof import load_oof, score_rows

    with LabelStore(db) as store:
        runs = store.runs("score")
        run = store.run(int(runs["id"].iloc[0]))  # the newest score run (finished, or its finished folds)
        items = store.items()[["path", "item_id"]]
    labels, snap = read_snapshot(run["config"]["snapshot"])
    labels = labels.merge(items, on="path", how="left", validate="one_to_one")
    schema = Schema.from_dict(snap["schema"])
    if run["status"] == "done":
        order, probs = load_oof(run["run_dir"])
    else:  # only the folds finished so far: their people's out-of-fold probabilities
        order, probs = finished_folds(Path(run["run_dir"]), schema, run["config"].get("heads", "multi"))
        labels = labels.set_index("path").loc[order["path"]].reset_index()
    assert list(order["path"]) == list(labels["path"])
    truth = pd.read_csv(root / "truth.csv")
    images = labels[["path", "person", "item_id"]].merge(truth[["path", "noise_kind", "true_mask", "true_gender",
                                                              "true_age"]], on="path", how="left", validate="one_to_one")
    given = schema.codes(labels)
    true = schema.codes(images.rename(columns={"true_mask": "mask", "true_gender": "gender", "true_age": "age"}))
    person = images["person"].to_numpy()
    methods: dict[str, dict[str, np.ndarray]] = {name: {} for name in DEMO_METHODS}
    ours = score_rows(schema, labels, probs, folds=order["fold"].to_numpy())  # as the score job
    previous = score_rows(schema, labels, probs, calibrate=False)
    for target in DEMO_KINDS.values():
        images[f"wrong_{target}"] = given[target] != true[target]
        for name, rows in ((DEMO_METHODS[0], ours), (DEMO_METHODS[1], previous)):
            flagged = rows[rows["attribute"] == target].set_index("item_id")["is_issue"]
            methods[name][target] = flagged.reindex(images["item_id"]).fillna(False).to_numpy(dtype=bool)
        flags = find_label_issues(given[target], probs[target], n_jobs=1)
        if target == "mask":
            pair = np.isin(given[target], (1, 2))
            both = pd.Series(flags & pair).groupby(person).transform("sum").to_numpy() == 2
            vote, means = np.where(pair, both, flags), flags
        else:
            vote = pd.Series(flags).groupby(person).transform("mean").to_numpy() > 0.5
            codes, uniques = pd.factorize(person)
            mean = np.zeros((len(uniques), probs[target].shape[1]))
            np.add.at(mean, codes, probs[target])
            mean /= np.bincount(codes)[:, None]
            person_given = np.zeros(len(uniques), int)
            person_given[codes] = given[target]
            means = find_label_issues(person_given, mean, n_jobs=1)[codes]
        methods[DEMO_METHODS[2]][target] = flags
        methods[DEMO_METHODS[3]][target] = vote
        methods[DEMO_METHODS[4]][target] = means
    return images, methods


def finished_folds(run_dir: Path, schema, heads_mode: str) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """(items of the finished folds, {target: (m, k)}) of a score run still running: ``fold-<i>.npy`` files so far."""
    from core.files import csv_unescape
    from train.model import heads_for
    from train.oof import join_folds

    items = csv_unescape(pd.read_csv(run_dir / "items.csv", dtype={"path": str, "person": str}))
    folds = np.load(run_dir / "folds.npy")
    done = sorted(int(f.stem.split("-")[1]) for f in run_dir.glob("fold-*.npy"))
    rows = np.concatenate([np.flatnonzero(folds == f) for f in done])
    parts = join_folds(run_dir, folds[rows], heads_for(schema, heads_mode), schema)  # rows grouped by fold, in order
    return items.iloc[rows].reset_index(drop=True), {t: p.astype(np.float64) for t, p in parts.items()}


def demo_person_f1(images: pd.DataFrame, methods: dict[str, dict[str, np.ndarray]]) -> dict[tuple[str, str], tuple]:
    """{(noise kind or 'all', method): (precision, recall, F1, wrong people)} at person level."""
    people = images.groupby("person")["noise_kind"].first().fillna("")
    out = {}
    for kind in [*DEMO_KINDS, "all"]:
        targets = list(DEMO_KINDS.values()) if kind == "all" else [DEMO_KINDS[kind]]
        truth = (people != "").to_numpy() if kind == "all" else (people == kind).to_numpy()
        for name, flags in methods.items():
            anywhere = np.any([flags[t] for t in targets], axis=0)
            flagged = pd.Series(anywhere).groupby(images["person"].to_numpy()).any().reindex(people.index).to_numpy()
            out[(kind, name)] = (*prf(flagged, truth), int(truth.sum()))
    return out


def demo_stores(workdirs: list[tuple[Path, list[int]]], options: list[str]) -> Iterator[tuple[int, str, Path, Path]]:
    """(seed, option, store, demo root) of every store ``bench/demo_options.py`` made that exists, seed by seed."""
    for workdir, seeds in workdirs:
        for seed in seeds:
            for option in options:
                db = workdir / f"seed{seed}" / option / "labels.db"
                if db.exists():
                    yield seed, option, db, workdir / f"seed{seed}" / "demo"


def demo_options_section(workdirs: list[tuple[Path, list[int]]], options: list[str], write: bool = True) -> str:
    """The demo table: per option, per noise kind and overall, person F1 per seed and its mean, ours vs the best
    baseline; rewrites the section "Person verdicts on the demo across score options" of BENCHMARKS.md."""
    results = {}
    for seed, option, db, root in demo_stores(workdirs, options):
        from core.store import LabelStore
        with LabelStore(db) as store:
            runs = store.runs("score")
            if not len(runs) or not list((Path(runs["run_dir"].iloc[0] or ".")).glob("fold-*.npy")):
                print(f"{db}: no finished score run or fold, left out", flush=True)
                continue
        images, methods = demo_flags(db, root)
        people = images["person"].nunique()
        results[(seed, option)] = (people, demo_person_f1(images, methods))
        print(seed, option, {k: round(v[2], 3) for k, v in results[(seed, option)][1].items()
                             if k[1] == DEMO_METHODS[0]}, flush=True)
    lines = ["| option | noise kind | wrong people (per seed) | " + " | ".join(DEMO_METHODS) +
             " | ours − best baseline (mean; per seed) | 95 % paired interval |", "|" + "---|" * (5 + len(DEMO_METHODS))]
    verdicts = []
    for option in options:
        runs = {seed: r for (seed, o), r in results.items() if o == option}
        if not runs:
            continue
        for kind in [*DEMO_KINDS, "all"]:
            f1 = {name: np.array([runs[s][1][(kind, name)][2] for s in sorted(runs)]) for name in DEMO_METHODS}
            wrong = [runs[s][1][(kind, DEMO_METHODS[0])][3] for s in sorted(runs)]
            best = max(DEMO_METHODS[2:], key=lambda name: f1[name].mean())
            diff = f1[DEMO_METHODS[0]] - f1[best]
            if sum(wrong) == 0:  # no person of this kind in the people scored: F1 is undefined, not 0
                lines.append(f"| {option} | {kind} | {', '.join(map(str, wrong))} |" + " — |" * (len(DEMO_METHODS) + 2))
                continue
            met = f1[DEMO_METHODS[0]].mean() >= f1[best].mean() - MARGIN
            cells = " | ".join(f"{f1[name].mean():.3f}" for name in DEMO_METHODS)
            per_seed = ", ".join(f"{d:+.3f}" for d in diff)
            low, high, reading = evidence(diff)
            # below by the mean, but the seeds' spread covers 0: no evidence of a real loss (nor of parity)
            spread = "" if met else reading
            lines.append(f"| {option} | {kind} | {', '.join(map(str, wrong))} | {cells} | {diff.mean():+.3f}"
                         f"{'' if met else ' **miss**'} ({per_seed}) | [{low:+.3f}, {high:+.3f}]{spread} |")
            if not met:
                verdicts.append(f"{option} / {kind}{spread}")
    seeds_people = sorted({(seed, r[0]) for (seed, _), r in results.items()})
    text = f"""`PYTHONPATH=. .venv/bin/python bench/demo_options.py table` on the score runs of `bench/demo_options.py run`:
demo seeds and people {', '.join(f'{s} ({p} people)' for s, p in seeds_people)}, random noise 0.1, one score run
(`train.score.score`, the score job's defaults: 3 person-grouped folds, test_resnet 64×80, 10 epochs) per seed and
option: defaults, `--balanced`, `--loss focal`, `--loss smooth`. Person-level F1 against truth.csv (mean over the
seeds; a person is flagged when any of its images is flagged for the attribute its noise kind corrupts; "all":
any attribute). Ours = the verdicts the score job stores today (`train.oof.score_rows`, which `rescore` also
uses); previous round = the same with the calibration step off; baselines on the same out-of-fold probabilities
(`bench/calibration.py` `demo_flags`). Best baseline: the best by mean of the last three columns.

{chr(10).join(lines)}

Cells missed (ours below the best baseline by more than 0.005): {'; '.join(verdicts) or 'none'}.
"""
    print(text)
    if write:
        common.write_section("Person verdicts on the demo across score options", text)
    return text
