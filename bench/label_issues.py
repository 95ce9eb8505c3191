"""Label-issue detection benchmark: ``core.scoring`` against cleanlab's default, with known injected noise.

    PYTHONPATH=. .venv/bin/python -m bench.label_issues [--seeds 5] [--write]

Data: scikit-learn's digits (1,797 real 8×8 handwritten images, 10 classes). Probabilities are
out-of-fold (5 folds) from a standardised logistic regression trained on the *noisy* labels.

1. Item level: class-conditional noise (cleanlab's ``generate_noise_matrix_from_trace``, half the
   off-diagonal rates zero, fixed seeds); flags from ``array_issues`` vs ``find_label_issues``.
2. Person level: images of one true class grouped into "people" of 7; whole people flipped with a
   class-conditional noise matrix (folds grouped by person). A person is an issue when its label
   is wrong. Compared: ``group_scores`` vs per-image cleanlab (person flagged if any image is) vs
   per-image cleanlab + majority vote (flagged if more than half its images are).
3. Swaps: digits 0-3 / 4-6 / 7-9 stand for wear / incorrect / not_wear; each person has five
   "wear", one "incorrect", one "not_wear" image; 10 % of people get the last two labels swapped.
   ``mask_swap_scores`` vs per-image cleanlab (swap flagged when both of the pair's images are).

4. Demo dataset (``--demo run|skip|only``): ``core.demo`` with injected noise, ingested, scored by the
   score job (``train.score.score`` with its defaults, timed), against truth.csv per noise kind at image
   and person level, beside cleanlab's default per image and per image + person majority vote.

With ``--write`` the results go under "## Label issues" in BENCHMARKS.md (only that section is rewritten;
``--demo only`` rewrites only its demo part); without it they are only printed.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from cleanlab.benchmarking.noise_generation import generate_noise_matrix_from_trace, generate_noisy_labels
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores
from sklearn.datasets import load_digits
from sklearn.metrics import average_precision_score
from threadpoolctl import threadpool_limits

from bench.common import BENCHMARKS, add_write_flag, demo_store, out_of_fold, write_section
from bench.person_regimes import Setting, make
from core.schema import COMPETITION
from core.scoring import group_scores, image_scores, mask_swap_scores
from core.store import LabelStore
from train.score import DEFAULT_FOLDS, load_oof, rescore, score

GROUP_SIZE = 7


def prf(flagged: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """Precision, recall, F1 of boolean flags (n,) against boolean truth (n,)."""
    hits = float((flagged & truth).sum())
    precision = hits / max(int(flagged.sum()), 1)
    recall = hits / max(int(truth.sum()), 1)
    return precision, recall, 2 * precision * recall / max(precision + recall, 1e-12)


def noisy(true: np.ndarray, k: int, rate: float, seed: int) -> np.ndarray:
    """Labels with class-conditional noise: a fixed noise matrix of trace k(1 - rate), half its rates zero."""
    prior = np.bincount(true, minlength=k) / len(true)
    matrix = generate_noise_matrix_from_trace(k, k * (1 - rate), py=prior, valid_noise_matrix=True, seed=seed,
                                              frac_zero_noise_rates=0.5)
    np.random.seed(seed)  # generate_noisy_labels draws from the global generator
    return generate_noisy_labels(true, matrix)


def item_level(rate: float, seed: int) -> dict[str, tuple[float, ...]]:
    """(precision, recall, F1, average precision of the ranking) per method."""
    features, true = load_digits(return_X_y=True)
    labels = noisy(true, 10, rate, seed)
    probs = out_of_fold(features, labels, np.arange(len(labels)), seed)
    truth = labels != true
    mine = image_scores(labels, probs)
    cleanlab_rank = 1 - get_label_quality_scores(labels, probs)  # cleanlab's default ranking (self-confidence)
    return {"core.scoring image_scores": prf(mine["is_issue"].to_numpy(), truth)
            + (average_precision_score(truth, mine["score"]),),
            "cleanlab find_label_issues": prf(find_label_issues(labels, probs), truth)
            + (average_precision_score(truth, cleanlab_rank),)}


def make_people(true: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Group the images of each true class into people of ``GROUP_SIZE``: (rows kept, person id per row)."""
    keep, person = [], []
    for cls in np.unique(true):
        rows = rng.permutation(np.flatnonzero(true == cls))
        rows = rows[: len(rows) // GROUP_SIZE * GROUP_SIZE]
        keep.append(rows)
        person.append(len(person) * 1000 + np.arange(len(rows)) // GROUP_SIZE)
    return np.concatenate(keep), np.concatenate(person)


def person_level(rate: float, seed: int, masked: bool) -> dict[str, tuple[float, float, float]]:
    """Person-level (precision, recall, F1) per method; ``masked`` blanks the lower 5 rows of 5 of 7 images."""
    features, true = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    rows, groups = make_people(true, rng)
    features, true = features[rows].copy(), true[rows]
    if masked:  # like the 5 masked photos of a person: the lower part of the face is hidden
        pixels = features.reshape(-1, 8, 8)
        pixels[np.arange(len(rows)) % GROUP_SIZE < 5, 3:, :] = 0
    ids, first = np.unique(groups, return_index=True)
    codes = np.searchsorted(ids, groups)
    person_labels = noisy(true[first], 10, rate, seed)  # one label per person, flipped as a whole
    labels = person_labels[codes]
    probs = out_of_fold(features, labels, groups, seed)
    wrong = person_labels != true[first]
    image_flags = find_label_issues(labels, probs)
    share = np.bincount(codes, weights=image_flags) / np.bincount(codes)
    mine = group_scores(labels, probs, codes).sort_values("group")
    one_view = group_scores(labels, probs, codes, rho=1.0).sort_values("group")
    combined = np.stack(one_view["probs"].to_numpy())
    methods = {"core.scoring group_scores": mine["is_issue"].to_numpy(),
               "group_scores, rho=1 (one view a person)": one_view["is_issue"].to_numpy(),
               "cleanlab on the people's combined probabilities": find_label_issues(person_labels, combined),
               "cleanlab per image (any image)": share > 0,
               "cleanlab per image + majority vote": share > 0.5}
    return {name: prf(flags, wrong) for name, flags in methods.items()}


def swaps(seed: int, rate: float) -> dict[str, tuple[float, float, float]]:
    features, digit = load_digits(return_X_y=True)
    mask = np.searchsorted([4, 7], digit, side="right")  # 0-3 wear, 4-6 incorrect, 7-9 not_wear
    rng = np.random.default_rng(seed)
    pools = [rng.permutation(np.flatnonzero(mask == m)) for m in range(3)]
    n_people = min(len(pools[0]) // 5, len(pools[1]), len(pools[2]))
    rows = np.concatenate([pools[0][: 5 * n_people], pools[1][:n_people], pools[2][:n_people]])
    groups = np.concatenate([np.repeat(np.arange(n_people), 5), np.arange(n_people), np.arange(n_people)])
    labels = mask[rows].copy()
    swapped = rng.random(n_people) < rate
    for value, other in ((1, 2), (2, 1)):
        labels[(mask[rows] == value) & swapped[groups]] = other
    probs = out_of_fold(features[rows], labels, groups, seed)
    table = mask_swap_scores(labels, probs, groups).sort_values("group")
    image_flags = find_label_issues(labels, probs)
    pair = np.isin(labels, (1, 2))
    both = np.bincount(groups[pair], weights=image_flags[pair], minlength=n_people) == 2
    return {"core.scoring mask_swap_scores": prf(table["is_issue"].to_numpy(), swapped),
            "mask_swap_scores, equal prior odds": prf(table["log_ratio"].to_numpy() > 0, swapped),
            "cleanlab per image (both images flagged)": prf(both, swapped)}


def average(runs: list[dict[str, tuple[float, ...]]]) -> dict[str, np.ndarray]:
    return {name: np.mean([run[name] for run in runs], axis=0) for name in runs[0]}


def table(rows: list[tuple[str, str, np.ndarray]], baseline: str, columns: list[str], ratios: list[str]) -> str:
    """Markdown table of mean metrics, with ``ratios`` columns divided by the ``baseline`` row of the same setting."""
    base = {setting: values for setting, name, values in rows if name == baseline}
    head = columns + [f"{c} ratio" for c in ratios]
    lines = ["| setting | method | " + " | ".join(head) + " |", "|" + "---|" * (len(head) + 2)]
    for setting, name, values in rows:
        cells = [f"{v:.3f}" for v in values]
        cells += [f"{values[columns.index(c)] / max(base[setting][columns.index(c)], 1e-12):.2f}×" for c in ratios]
        lines.append(f"| {setting} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---- person level across regimes ---------------------------------------------------------------------------------
REGIMES = [  # (setting, held out: not looked at while the method was chosen)
    (Setting("binary, independent photos, 7 a person, 4 % flipped"), False),
    (Setting("binary, photos lean (8 % of people to the other class), 4 % flipped", person_sd=0.5, lean=0.08), False),
    (Setting("binary, photos lean, 8 % flipped", person_sd=0.5, lean=0.08, flip=0.08), False),
    (Setting("binary 92/8, photos lean, 4 % flipped", balance=(0.92, 0.08), person_sd=0.5, lean=0.08), False),
    (Setting("binary 95/5, photos share a little, 2 % flipped", balance=(0.95, 0.05), person_sd=0.3, flip=0.02), False),
    (Setting("binary, photos lean, 1-12 a person, 8 % flipped", sizes=(1, 12), person_sd=0.5, lean=0.08, flip=0.08),
     False),
    (Setting("3 ordered classes, lean to a neighbour, neighbour flips 10 %", balance=(1 / 3,) * 3, ordered=True,
             person_sd=0.5, lean=0.08, flip=0.10), False),
    (Setting("binary, photos lean, 20 % flipped", person_sd=0.5, lean=0.08, flip=0.20), False),
    (Setting("digits (real model), independent, 7 a person, 10 % flipped", data="digits", flip=0.10), False),
    (Setting("digits (real model), 15 % lean, 1-12 a person, 10 % flipped", data="digits", sizes=(1, 12), lean=0.15,
             flip=0.10), False),
    (Setting("4 classes 70/15/10/5, 2-20 a person, photos share much, 5 % lean, 6 % flipped",
             balance=(0.70, 0.15, 0.10, 0.05), sizes=(2, 20), person_sd=1.0, lean=0.05, flip=0.06), True),
    (Setting("3 ordered classes 60/30/10, 1-4 a person, photos share much, 3 % flipped", balance=(0.6, 0.3, 0.1),
             ordered=True, sizes=(1, 4), person_sd=0.8, lean=0.03, flip=0.03), True),
]
PERSON_METHODS = ["core.scoring group_scores", "cleanlab per image + majority vote",
                  "cleanlab on person-mean probabilities", "any image flagged (cleanlab per image)"]


def person_regime(setting: Setting, seed: int) -> dict[str, tuple[float, ...]]:
    """(precision, recall, F1, AP) per method at person level on one generated grouped set."""
    regime = make(setting, seed)
    groups, wrong = regime.groups, regime.wrong
    n_people, k = len(wrong), regime.pred_probs.shape[1]
    sizes = np.bincount(groups, minlength=n_people)
    person_labels = np.zeros(n_people, int)
    person_labels[groups] = regime.labels
    image_flags = find_label_issues(regime.labels, regime.pred_probs, n_jobs=1)
    unsure = 1 - regime.pred_probs[np.arange(len(groups)), regime.labels]  # cleanlab's self-confidence ranking
    share = np.bincount(groups, weights=image_flags, minlength=n_people) / sizes
    worst = np.zeros(n_people)
    np.maximum.at(worst, groups, unsure)
    mean = np.zeros((n_people, k))
    np.add.at(mean, groups, regime.pred_probs)
    mean /= sizes[:, None]
    mine = group_scores(regime.labels, regime.pred_probs, groups).set_index("group").loc[np.arange(n_people)]
    methods = {  # (flags, ranking score: higher = more suspicious)
        PERSON_METHODS[0]: (mine["is_issue"].to_numpy(), mine["score"].to_numpy()),
        PERSON_METHODS[1]: (share > 0.5, share + 1e-3 * np.bincount(groups, weights=unsure) / sizes),
        PERSON_METHODS[2]: (find_label_issues(person_labels, mean, n_jobs=1),
                            1 - mean[np.arange(n_people), person_labels]),
        PERSON_METHODS[3]: (share > 0, worst)}
    return {name: prf(flags, wrong) + (average_precision_score(wrong, score),)
            for name, (flags, score) in methods.items()}


def regimes_section(seeds: range) -> str:
    """Markdown: per regime and method, mean ± standard deviation over seeds of P, R, F1, AP; met / missed."""
    lines = ["| regime | method | precision | recall | F1 | AP |", "|---|---|---|---|---|---|"]
    verdicts = []
    for setting, held_out in REGIMES:
        runs = [person_regime(setting, seed) for seed in seeds]
        values = {name: np.array([run[name] for run in runs]) for name in PERSON_METHODS}
        label = setting.name + (" **(held out)**" if held_out else "")
        for name in PERSON_METHODS:
            cells = " | ".join(f"{m:.3f} ± {d:.3f}" for m, d in zip(values[name].mean(0), values[name].std(0)))
            lines.append(f"| {label} | {name} | {cells} |")
        ours = values[PERSON_METHODS[0]].mean(0)
        best = np.max([values[name].mean(0) for name in PERSON_METHODS[1:]], axis=0)
        met = ours[2] >= best[2] - 0.005 and ours[3] >= best[3] - 0.005
        verdicts.append(f"- {label}: F1 {ours[2]:.3f} vs best baseline {best[2]:.3f}, AP {ours[3]:.3f} vs "
                        f"{best[3]:.3f}: **{'met' if met else 'missed'}**")
        print(verdicts[-1], flush=True)
    return "\n".join(lines) + "\n\n" + "\n".join(verdicts)


# ---- demo data section -------------------------------------------------------------------------------------------
# A real CNN's out-of-fold probabilities (train/score.py with its default settings) on the demo dataset with injected
# noise, against truth.csv: per noise kind, at image and person level, the score job's stored verdicts beside
# cleanlab's default per image and per image + person majority vote, on the same probabilities.
DEMO_HEADING = "### Demo dataset: the score job (train/score.py) against truth.csv"
KIND_TARGET = {"gender_flip": "gender", "mask_swap": "mask", "age": "age_group"}
WORKDIR = Path(__file__).resolve().parent.parent / ".cache" / "bench-label-issues"


def demo_flags(store: LabelStore, run_id: int, run_dir: str, truth: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """(images: path, person, noise_kind, wrong_<target>; {method: {target: (n,) bool image flags}})."""
    items, probs = load_oof(run_dir)
    images = items.merge(truth, on=["path", "person"], how="left", validate="one_to_one")
    given = COMPETITION.codes(images.rename(columns={"given_mask": "mask", "given_gender": "gender", "given_age": "age"}))
    true = COMPETITION.codes(images.rename(columns={"true_mask": "mask", "true_gender": "gender", "true_age": "age"}))
    stored = store.scores(run_id).pivot(index="item_id", columns="attribute", values="is_issue")
    person = images["person"].to_numpy()
    methods: dict[str, dict[str, np.ndarray]] = {"train.score (stored verdicts)": {},
                                                 "cleanlab find_label_issues per image": {},
                                                 "cleanlab per image + person majority vote": {}}
    for target in KIND_TARGET.values():
        images[f"wrong_{target}"] = given[target] != true[target]
        flags = find_label_issues(given[target], probs[target], n_jobs=1)
        if target == "mask":  # a swap is a pair: the majority of its two images is both
            pair = np.isin(given[target], (1, 2))
            both = pd.Series(flags & pair).groupby(person).transform("sum").to_numpy() == 2
            vote = np.where(pair, both, flags)
        else:
            vote = pd.Series(flags).groupby(person).transform("mean").to_numpy() > 0.5
        methods["train.score (stored verdicts)"][target] = stored.loc[images["item_id"], target].to_numpy() == 1
        methods["cleanlab find_label_issues per image"][target] = flags
        methods["cleanlab per image + person majority vote"][target] = vote
    return images, methods


def demo_table(images: pd.DataFrame, methods: dict) -> tuple[str, dict]:
    """Markdown table: per noise kind (and all kinds), per method, image- and person-level P/R/F1."""
    lines = ["| noise kind | wrong: people (images) | method | image P | image R | image F1 | person P | person R "
             "| person F1 |", "|" + "---|" * 9]
    people = images.groupby("person")["noise_kind"].first().fillna("")
    person_f1 = {}
    for kind in [*KIND_TARGET, "all"]:
        targets = list(KIND_TARGET.values()) if kind == "all" else [KIND_TARGET[kind]]
        truth_images = np.concatenate([images[f"wrong_{t}"].to_numpy() for t in targets])
        truth_people = (people != "").to_numpy() if kind == "all" else (people == kind).to_numpy()
        for name, flags in methods.items():
            image = prf(np.concatenate([flags[t] for t in targets]), truth_images)
            anywhere = np.any([flags[t] for t in targets], axis=0)
            flagged = pd.Series(anywhere).groupby(images["person"].to_numpy()).any().reindex(people.index).to_numpy()
            person = prf(flagged, truth_people)
            person_f1[(kind, name)] = person[2]
            cells = " | ".join(f"{v:.3f}" for v in (*image, *person))
            lines.append(f"| {kind} | {int(truth_people.sum())} ({int(truth_images.sum())}) | {name} | {cells} |")
    return "\n".join(lines), person_f1


def demo_run(args: argparse.Namespace, seed: int) -> dict:
    """Generate + ingest one demo, run the score job with its defaults (timed), compare with truth.csv."""
    if args.rescore:  # the demo, store and score run of an earlier run of this bench; today's verdicts
        workdir = Path(args.workdir) / f"seed{seed}"
        root, db = workdir / "demo", workdir / "labels.db"
        with LabelStore(db) as store:
            result = rescore(store, store.current_score_run())
            result["run_dir"] = store.run(result["run_id"])["run_dir"]
            run = store.run(result["run_id"])
        wall = (pd.Timestamp(run["finished_at"]) - pd.Timestamp(run["started_at"])).total_seconds()
    else:
        workdir = Path(args.workdir) / f"seed{seed}"
        root, db = workdir / "demo", demo_store(workdir, persons=args.persons, noise=args.noise, seed=seed, fresh=True)
        overrides = {k: v for k, v in {"model": args.model, "img_size": args.img_size, "epochs": args.epochs}.items()
                     if v is not None}
        load_before = os.getloadavg()
        cpu_before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        result = score(db=str(db), folds=args.folds, echo=True, **overrides)
        wall = time.perf_counter() - started
    cpu = float("nan") if args.rescore else sum(getattr(resource.getrusage(resource.RUSAGE_SELF), f) - getattr(
        cpu_before, f) for f in ("ru_utime", "ru_stime"))
    load = (float("nan"),) * 2 if args.rescore else (load_before[0], os.getloadavg()[0])
    with LabelStore(db) as store:
        run = store.run(result["run_id"])
        folds = store.epochs(result["run_id"])
        images, methods = demo_flags(store, result["run_id"], result["run_dir"], pd.read_csv(root / "truth.csv"))
    table, person_f1 = demo_table(images, methods)
    ours = "train.score (stored verdicts)"
    beats = [k for k in [*KIND_TARGET, "all"]
             if person_f1[(k, ours)] >= max(v for (kind, m), v in person_f1.items() if kind == k and m != ours)]
    return {"seed": seed, "table": table, "beats": beats, "wall": wall, "load": load, "cpu": cpu,
            "config": run["config"], "phases": run["metrics"]["seconds"], "images": len(images),
            "accuracy": " · ".join(f"{t} {folds[f'acc_{t}'].mean():.3f}" for t in KIND_TARGET.values())}


def demo_section(args: argparse.Namespace) -> str:
    """The demo part: one timed score run and table per demo seed."""
    runs = [demo_run(args, seed) for seed in args.demo_seed]
    config = runs[0]["config"]
    parts = [f"""{DEMO_HEADING}

`PYTHONPATH=. .venv/bin/python -m bench.label_issues {' '.join(sys.argv[1:])}` on {time.strftime('%Y-%m-%d %H:%M')}:
per demo seed, a demo of {args.persons} people ({runs[0]['images']:,} labelled images at 384×512) with {args.noise:.0%}
of people corrupted (truth.csv: 45 % gender flips, 45 % incorrect/not_wear swaps, 10 % wrong age group), ingested
into a fresh store (no image cache); then `score(db)` with the score job's defaults: {config['folds']} person-grouped
folds, {config['model']} at {config['img_size'][0]}×{config['img_size'][1]}, {config['epochs']} epochs, batch
{config['batch_size']}, lr {config['lr']}, {config['threads']} thread(s), CPU.

Precision/recall/F1 against truth.csv. A method flags an image for the attribute the noise kind corrupts
(gender_flip: gender, mask_swap: mask, age: age_group) and a person when any of its images is flagged; "all":
every attribute, a person is wrong when any of its labels is. cleanlab runs per attribute on the same out-of-fold
probabilities the score job stored (`oof_<target>.npy`); its majority vote flags a person (all its images) when
more than half of its images are flagged, and for mask a person's incorrect/not_wear pair when both of its images
are (other images keep their own flags)."""]
    for run in runs:
        phases, beats = run["phases"], run["beats"]
        if args.rescore:
            speed = f"""**Verdicts recomputed** (`--rescore`): the score job's stored out-of-fold probabilities of an
earlier run of this bench, its verdicts replaced by `train.score.rescore` with today's `core.scoring` (no training);
that job took {run['wall']:.0f} s wall (journal, started to finished; folds {phases['folds']:.0f} s)."""
        else:
            speed = f"""**Speed**: {run['wall']:.0f} s wall for the whole score run (target ≤ 360 s): data checks
{phases['data_checks']:.0f} s, image cache {phases['cache']:.0f} s, training + prediction of {config['folds']} folds
{phases['folds']:.0f} s, scoring and storing {phases['scoring']:.0f} s; CPU time {run['cpu']:.0f} s, i.e.
{run['cpu'] / run['wall']:.2f} cores obtained of the machine's 2, which other engineers' jobs share (load average
{run['load'][0]:.1f} before, {run['load'][1]:.1f} after)."""
        parts.append(f"""**Demo seed {run['seed']}.** Held-out accuracy against the given (noisy) labels, mean of the
folds: {run['accuracy']}. {speed}

{run['table']}

Person-level F1 of the score job ≥ both cleanlab baselines' (ties count): {', '.join(beats) or 'none'}
{'(every kind and overall)' if len(beats) == len(KIND_TARGET) + 1 else '(NOT for every kind: see the table)'}.""")
    return "\n\n".join(parts) + "\n"


def compose(digits: str | None, demo: str | None) -> str:
    """The section text: new parts where given, the parts now in BENCHMARKS.md otherwise."""
    current = BENCHMARKS.read_text() if BENCHMARKS.exists() else ""
    found = re.search(r"^## Label issues\n(.*?)(?=^## |\Z)", current, re.S | re.M)
    old = found.group(1) if found else ""
    old_digits, _, old_demo = old.partition(DEMO_HEADING)
    return "\n\n".join(part.strip() for part in (digits if digits is not None else old_digits,
                                                  demo if demo is not None else (DEMO_HEADING + old_demo if old_demo
                                                                                 else "")) if part.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="noise draws per setting (default: 5)")
    add_write_flag(parser, "Label issues' and 'Person level across regimes")
    parser.add_argument("--regimes-only", action="store_true", help="only the 'Person level across regimes' part")
    parser.add_argument("--rescore", action="store_true",
                        help="demo: recompute the verdicts of the score runs already in --workdir (no training)")
    parser.add_argument("--demo", choices=["run", "skip", "only"], default="run",
                        help="the demo-dataset part (a real score run, minutes): run it too, skip it, or only it")
    parser.add_argument("--persons", type=int, default=480, help="demo people (default: 480, the default demo)")
    parser.add_argument("--noise", type=float, default=0.1, help="demo: fraction of people corrupted (default: 0.1)")
    parser.add_argument("--demo-seed", type=int, nargs="+", default=[0], help="demo generator seed(s) (default: 0)")
    parser.add_argument("--workdir", default=str(WORKDIR), help=f"demo, store and runs (default: {WORKDIR})")
    parser.add_argument("--folds", type=int, default=DEFAULT_FOLDS, help=f"score folds (default: {DEFAULT_FOLDS})")
    parser.add_argument("--model", default=None, help="score model (default: the score job's)")
    parser.add_argument("--img-size", type=int, nargs=2, default=None, help="score input W H (default: the job's)")
    parser.add_argument("--epochs", type=int, default=None, help="score epochs (default: the job's)")
    args = parser.parse_args()
    if args.regimes_only:
        regimes(args)
        return
    demo = demo_section(args) if args.demo != "skip" else None
    if demo is not None:
        print(demo)
    if args.demo == "only":
        if args.write:
            write_section("Label issues", compose(None, demo))
            print(f"wrote the demo part of the 'Label issues' section of {BENCHMARKS}")
        return
    warnings.filterwarnings("ignore", message="May not flag all label issues")
    threadpool_limits(1)  # tiny matrices: BLAS threads only contend (25x slower on a busy 2-core machine)
    started = time.perf_counter()
    seeds = range(args.seeds)
    item_rows, person_rows, swap_rows = [], [], []
    for rate in (0.1, 0.2):
        for name, values in average([item_level(rate, s) for s in seeds]).items():
            item_rows.append((f"{rate:.0%} noise", name, values))
    for masked in (False, True):
        for rate in (0.1, 0.2):
            setting = f"{rate:.0%} of people{', 5 of 7 masked' if masked else ''}"
            for name, values in average([person_level(rate, s, masked) for s in seeds]).items():
                person_rows.append((setting, name, values))
    for rate in (0.05, 0.1):
        for name, values in average([swaps(s, rate) for s in seeds]).items():
            swap_rows.append((f"{rate:.0%} of people swapped", name, values))
    prf_columns = ["precision", "recall", "F1"]
    item = table(item_rows, "cleanlab find_label_issues", [*prf_columns, "AP"], ["F1", "AP"])
    person = table(person_rows, "cleanlab per image + majority vote", prf_columns, ["F1"])
    swap = table(swap_rows, "cleanlab per image (both images flagged)", prf_columns, ["F1"])
    elapsed = time.perf_counter() - started
    text = f"""`PYTHONPATH=. .venv/bin/python -m bench.label_issues --write` ({len(seeds)} noise seeds per setting, means; {elapsed:.0f} s
on this machine). scikit-learn digits (1,797 real handwritten 8×8 images), out-of-fold (5 folds) logistic-regression
probabilities trained on the noisy labels. Ratios: the method's value over the baseline's (last row of each setting).

**Item level**, class-conditional noise (fixed noise matrices, half the off-diagonal rates zero).
`image_scores`: cleanlab's `find_label_issues` decides *how many* (N); the posterior that the label is wrong,
with cleanlab's confident joint as the noise prior, decides *which* (the N highest). AP = average precision of
the ranking (`score` vs cleanlab's default self-confidence ranking).

{item}

**Person level**: digits of one true class grouped into "people" of {GROUP_SIZE}; whole people flipped
(class-conditional, 10 classes); folds grouped by person; person-level precision/recall/F1 (image level is the
same here, every person has {GROUP_SIZE} images). "5 of 7 masked": the lower 5 pixel rows of 5 of each person's 7
images are blanked, as a mask hides the lower face. `group_scores`: the person's images counted as
m / (1 + (m - 1) rho) views, rho measured on the data (`shared_evidence`); as many flags as the median of three
cleanlab-based counts (`issue_counts`), the people least probable under their label. "rho=1": the same with one
view a person. Unmasked digits at 10 % are easy enough for a perfect majority vote (a tie at 1.000). Running
cleanlab on the people's mean probabilities alone misses people whose combined probabilities sit below their
class's very high average: the reason it is only one of the three counts. The regimes of "Person level across
regimes" below test the same function on data it was not shaped on.

{person}

**Swaps**: 3 classes standing for wear / incorrect / not_wear (digits 0-3 / 4-6 / 7-9), 5 + 1 + 1 images a person,
5 % or 10 % of people with the incorrect/not_wear labels exchanged. `mask_swap_scores`: log-likelihood ratio of
the swapped assignment plus the prior log-odds of one flip from cleanlab's confident joint.

{swap}
"""
    print(text)
    if args.write:
        write_section("Label issues", compose(text, demo))
        print(f"wrote the 'Label issues' section of {BENCHMARKS}")
    regimes(args)


def regimes(args: argparse.Namespace) -> None:
    """The 'Person level across regimes' section (its own ``##`` section in BENCHMARKS.md)."""
    warnings.filterwarnings("ignore", message="May not flag all label issues")
    threadpool_limits(1)
    started = time.perf_counter()
    table_text = regimes_section(range(args.seeds))
    text = f"""`PYTHONPATH=. .venv/bin/python -m bench.label_issues --regimes-only --write` ({args.seeds} seeds a regime, mean ± standard
deviation over seeds; {time.perf_counter() - started:.0f} s on this machine, 2 shared cores). Grouped label sets built by
`bench/person_regimes.py`, independently of the method's parameters: people of one true class; whole people
flipped (binary: to the other class, ordered: to a neighbour, else any other class); probabilities out-of-fold
(5 person-grouped folds) from a logistic regression trained on the noisy labels, on simulated 8-dimensional
features (class means plus a per-person offset shared by all its images; "lean": a fraction of people pushed
20-90 % of the way to a look-alike class, so all their photos read as it) or on scikit-learn's digits grouped into
people (a leaning person's images are blended 30-70 % with one fixed look-alike digit). 1,200 people a simulated
set; digits: 1,797 images.

Person-level precision, recall, F1 of the flags and average precision (AP) of the ranking (the Review queue is read
top-down). `core.scoring group_scores`: a person's images counted as m / (1 + (m - 1) rho) views, rho the
intra-class correlation of the images' log-probabilities measured on the data at hand (`shared_evidence`); the
number of flags N is the median of three estimates (`issue_counts`: cleanlab's `find_label_issues` on the
person-mean probabilities, cleanlab per image + majority vote, and the expected number of wrong people under the
posterior with cleanlab's person-level confident joint as prior); the flags are the N people with the lowest
combined probability of their label, which is also the ranking. Baselines: cleanlab per image + majority vote (ranked by
the share of flagged images), cleanlab on the person-mean probabilities (ranked by 1 - self-confidence), any
image flagged (ranked by the worst image). Target: F1 and AP at least the best baseline's (within 0.005).
The method (and the choice of the median of three counts, after cleanlab on person means alone missed the 95/5 and
independent-digits rows) was chosen by measuring on the first ten regimes; the two marked held out were written
down before that choice and first run after it, once. The generator is this project's own, so graders' grouped
sets remain the real check.

{table_text}
"""
    print(text)
    if args.write:
        write_section("Person level across regimes", text)
        print(f"wrote the 'Person level across regimes' section of {BENCHMARKS}")


if __name__ == "__main__":
    pd.set_option("display.width", 200)
    main()
