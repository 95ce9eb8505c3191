"""How many people to flag, and in which order: the person verdict against alternatives, on the calibration axis and
on the demo across score options.

    PYTHONPATH=. .venv/bin/python -m bench.count_rules [--seeds 5] [--demo WORKDIR:SEEDS ...] [--skip-axis]

``core.scoring.group_scores`` ranks people by 1 - P(given) and flags the top N, N = the median of three estimates
(``issue_counts``: cleanlab on person means, per-image votes, the posterior sum). This script keeps everything else
and swaps one part at a time:

* **count rules** (the ranking kept): other third estimates in the median (cleanlab's confident-joint count on the
  person probabilities, the sum of 1 - P(given), a mixture-proportion count, the F1-optimal cut of the posterior),
  the mean of the two cleanlab counts, and the true number of wrong people (the ranking's ceiling);
* **variants**: a calibration with a label-noise term fitted jointly (``noise_calibration``), and a person ranking
  by the mean per-image posterior (a soft vote) with today's count.

Judged on every cell of ``bench/calibration.py`` (its regimes and calibrations, cached in ``.cache/bench-calibration``;
a cell is met when the rule's mean person F1 is at least the best cleanlab baseline's - 0.005) and, with ``--demo``,
on the stored out-of-fold probabilities of ``bench/demo_options.py``'s score runs (gender flips and age, every score
option; the demo table's baselines and its 0.005 margin). Nothing here trains.
"""

from __future__ import annotations

import argparse
import collections
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from cleanlab.count import compute_confident_joint
from cleanlab.filter import find_label_issues
from scipy.optimize import minimize

from bench.calibration import BASELINES, CALIBRATIONS, HELD_OUT, demo_stores, evaluate, prf, transformed
from core.calibration import FLOOR, Calibration
from core.scoring import class_prior, group_scores, image_scores, top_n, wrong_posterior

DEMO_TARGETS = {"gender": "gender_flip", "age_group": "age"}  # attribute -> the noise kind that corrupts it
DEMO_OPTIONS = ["defaults", "balanced", "focal", "smooth"]


# ---- third estimates for the median ------------------------------------------------------------------------------
def confident_joint_count(given: np.ndarray, probs: np.ndarray) -> int:
    """Off-diagonal sum of cleanlab's calibrated confident joint of the person probabilities."""
    joint = compute_confident_joint(given, probs, calibrate=True)
    return int(joint.sum() - np.trace(joint))


def unsure_sum(given: np.ndarray, probs: np.ndarray) -> int:
    """The sum over people of 1 - P(given)."""
    return int(round(float((1.0 - probs[np.arange(len(given)), given]).sum())))


def matched_count(given: np.ndarray, probs: np.ndarray, quantile: float = 0.5) -> int:
    """Mixture-proportion count: a person labelled i whose evidence for its likeliest other class j (log P(j) -
    log P(i)) reaches the ``quantile`` of that evidence among people labelled j counts 1 / (1 - quantile) (flipped
    people look like the class they truly are)."""
    g, k = probs.shape
    logs = np.log(np.clip(probs, 1e-300, 1.0))
    other = logs.copy()
    other[np.arange(g), given] = -np.inf
    likeliest = other.argmax(axis=1)
    evidence = other[np.arange(g), likeliest] - logs[np.arange(g), given]
    total = 0.0
    for i in range(k):
        for j in range(k):
            reference = given == j
            if i == j or reference.sum() < 2:
                continue
            threshold = np.quantile(logs[reference, j] - logs[reference, i], quantile)
            total += ((given == i) & (likeliest == j) & (evidence >= threshold)).sum() / (1.0 - quantile)
    return int(round(total))


def f1_optimal_cut(wrong_posterior: np.ndarray) -> int:
    """The N that maximises the expected F1 of flagging the N most probable, if the posteriors were calibrated."""
    ordered = np.sort(wrong_posterior)[::-1]
    expected = 2 * np.cumsum(ordered) / (np.arange(1, len(ordered) + 1) + ordered.sum())
    return int(np.argmax(expected) + 1)


def counts(table: pd.DataFrame, labels: np.ndarray) -> dict[str, int]:
    c = dict(table.attrs["counts"])
    probs, given = np.stack(table["probs"].to_numpy()), table["given"].to_numpy()
    c.update(confident_joint=confident_joint_count(given, probs), unsure=unsure_sum(given, probs),
             matched=matched_count(given, probs),
             f1_cut=f1_optimal_cut(wrong_posterior(given, probs, class_prior(labels, probs.shape[1]))))
    return c


def _median(c: dict[str, int], third: str) -> float:
    return float(np.median([c["person_mean"], c["image_vote"], c[third]]))


RULES: dict[str, Callable[[dict[str, int], int], float]] = {
    "today: median of (person means, per-image votes, posterior sum)": lambda c, w: _median(c, "expected"),
    "median with the confident-joint count on person probabilities": lambda c, w: _median(c, "confident_joint"),
    "median with the sum of 1 - P(given)": lambda c, w: _median(c, "unsure"),
    "median with a mixture-proportion count (evidence beyond the other class's median, x2)":
        lambda c, w: _median(c, "matched"),
    "median with the F1-optimal cut of the posterior": lambda c, w: _median(c, "f1_cut"),
    "mean of the two cleanlab counts": lambda c, w: round((c["person_mean"] + c["image_vote"]) / 2),
    "truth (the ranking's ceiling)": lambda c, w: w,
}


# ---- variants ----------------------------------------------------------------------------------------------------
def noise_calibration(labels: np.ndarray, pred_probs: np.ndarray, e_max: float = 0.5) -> tuple[np.ndarray, Calibration]:
    """``core.calibration.recalibrate`` with a label-noise term: maximum likelihood of the given labels under
    P(given | x) = (1 - e) softmax(a log p + b) + e / k, (a, b, e) fitted together; returns softmax(a log p + b)."""
    given = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(pred_probs, dtype=np.float64)
    n, k = probs.shape
    logs = np.log(np.clip(probs, FLOOR, 1.0))
    logs -= logs.mean(axis=1, keepdims=True)
    onehot = np.zeros((n, k))
    onehot[np.arange(n), given] = 1.0

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        scale, bias, e = np.exp(theta[0]), theta[1:k + 1], e_max / (1 + np.exp(-theta[k + 1]))
        logits = scale * logs + bias
        q = np.exp(logits - logits.max(axis=1, keepdims=True))
        q /= q.sum(axis=1, keepdims=True)
        qy = q[np.arange(n), given]
        mix = (1 - e) * qy + e / k
        d_logits = ((1 - e) * qy / mix)[:, None] * (q - onehot)
        d_e = -((1.0 / k - qy) / mix).sum() / n
        return float(-np.log(mix).sum() / n), np.concatenate([[(d_logits * logs).sum() * scale / n],
                                                              d_logits.sum(axis=0) / n, [d_e * e * (1 - e / e_max)]])

    fitted = minimize(loss, np.concatenate([[0.0], np.zeros(k), [-3.0]]), jac=True, method="L-BFGS-B",
                      options={"maxiter": 500, "gtol": 1e-10, "ftol": 1e-14})
    bias = fitted.x[1:k + 1] - fitted.x[1:k + 1].mean()
    calibration = Calibration(float(np.exp(fitted.x[0])), tuple(float(b) for b in bias))
    return calibration.apply(probs), calibration


def soft_vote(table: pd.DataFrame, labels: np.ndarray, pred_probs: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Each person's mean per-image posterior score (``image_scores`` on the recalibrated probabilities)."""
    recalibrated = table.attrs["calibration"].apply(np.asarray(pred_probs, dtype=np.float64))
    image = image_scores(labels, recalibrated, calibrate=False)["score"].to_numpy()
    g = len(table)
    return np.bincount(groups, weights=image, minlength=g) / np.bincount(groups, minlength=g) + 1e-6 * table["score"].to_numpy()


def scored(labels: np.ndarray, pred_probs: np.ndarray, groups: np.ndarray, variant: str) -> pd.DataFrame:
    """``group_scores`` in people order 0..g-1, under a variant's calibration."""
    if variant == "noise-term calibration":  # group_scores on the variant's calibration instead of its own
        table = group_scores(labels, noise_calibration(labels, pred_probs)[0], groups, calibrate=False)
    else:
        table = group_scores(labels, pred_probs, groups)
    return table.set_index("group").loc[np.arange(int(groups.max()) + 1)]


def methods(labels: np.ndarray, pred_probs: np.ndarray, groups: np.ndarray, wrong: np.ndarray) -> dict[str, float]:
    """Person F1 of every rule and variant on one grouped set."""
    table = scored(labels, pred_probs, groups, "today")
    c, score = counts(table, labels), table["score"].to_numpy()
    out = {name: prf(top_n(score, int(rule(c, int(wrong.sum())))), wrong)[2] for name, rule in RULES.items()}
    noisy = scored(labels, pred_probs, groups, "noise-term calibration")
    out["variant: calibration with a label-noise term fitted jointly"] = prf(noisy["is_issue"].to_numpy(), wrong)[2]
    out["variant: ranking by the mean per-image posterior (soft vote), today's count"] = prf(
        top_n(soft_vote(table, labels, pred_probs, groups), int(table["is_issue"].sum())), wrong)[2]
    return out


# ---- the two judges ---------------------------------------------------------------------------------------------
def axis(seeds: int) -> dict[str, tuple[int, int, float]]:
    """{method: (cells met, cells, mean person F1)} over the calibration axis."""
    from bench.label_issues import REGIMES

    cells: dict[str, dict[tuple[str, str], list[float]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    best: dict[tuple[str, str], dict[str, list[float]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    for setting in [s for s, _ in REGIMES] + list(HELD_OUT):
        for calibration in CALIBRATIONS:
            for seed in range(seeds):
                data = transformed(setting, seed, calibration)
                baselines = evaluate(data)
                for baseline in BASELINES:
                    best[(setting.name, calibration)][baseline].append(baselines[baseline][0])
                for name, f1 in methods(data.labels, data.pred_probs, data.groups, data.wrong).items():
                    cells[name][(setting.name, calibration)].append(f1)
        print(f"axis: {setting.name}", flush=True)
    return {name: (sum(np.mean(v) >= max(np.mean(b) for b in best[k].values()) - 0.005 for k, v in values.items()),
                   len(values), float(np.mean([np.mean(v) for v in values.values()]))) for name, values in cells.items()}


def demo_arrays(db: Path, root: Path) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """{attribute: (labels, out-of-fold probabilities, person codes, wrong people)} of a store's newest score run."""
    from core.schema import Schema
    from core.store import LabelStore, read_snapshot
    from train.oof import load_oof

    with LabelStore(db) as store:
        run = store.run(int(store.runs("score")["id"].iloc[0]))
    labels, snap = read_snapshot(run["config"]["snapshot"])
    schema = Schema.from_dict(snap["schema"])
    order, probs = load_oof(run["run_dir"])
    assert list(order["path"]) == list(labels["path"])
    truth = pd.read_csv(root / "truth.csv")
    kinds = labels[["path", "person"]].merge(truth[["path", "noise_kind"]], on="path", how="left", validate="one_to_one")
    codes, _ = pd.factorize(kinds["person"])
    person_kind = kinds.groupby(codes)["noise_kind"].first().fillna("").to_numpy()
    given = schema.codes(labels)
    return {a: (given[a], probs[a].astype(np.float64), codes, person_kind == kind) for a, kind in DEMO_TARGETS.items()}


def demo(workdirs: list[tuple[Path, list[int]]]) -> dict[str, dict[tuple[str, str], float]]:
    """{method: {(attribute, option): mean F1 - the best baseline's mean}} over the demo seeds."""
    f1: dict[str, dict[tuple[str, str], list[float]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    best: dict[tuple[str, str], dict[str, list[float]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    for seed, option, db, root in demo_stores(workdirs, DEMO_OPTIONS):
        for attribute, (labels, probs, groups, wrong) in demo_arrays(db, root).items():
            g = len(wrong)
            flags = find_label_issues(labels, probs, n_jobs=1)
            share = np.bincount(groups, weights=flags, minlength=g) / np.bincount(groups, minlength=g)
            mean = np.zeros((g, probs.shape[1]))
            np.add.at(mean, groups, probs)
            mean /= np.bincount(groups, minlength=g)[:, None]
            person_given = np.zeros(g, int)
            person_given[groups] = labels
            for name, flagged in (("vote", share > 0.5), ("any", share > 0),
                                  ("means", find_label_issues(person_given, mean, n_jobs=1))):
                best[(attribute, option)][name].append(prf(flagged, wrong)[2])
            for name, value in methods(labels, probs, groups, wrong).items():
                f1[name][(attribute, option)].append(value)
        print(f"demo: seed {seed} {option}", flush=True)
    return {name: {k: float(np.mean(v) - max(np.mean(b) for b in best[k].values())) for k, v in cells.items()}
            for name, cells in f1.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="calibration axis: seeds a cell")
    parser.add_argument("--demo", nargs="*", default=[], metavar="WORKDIR:SEEDS",
                        help="demo_options workdirs with their seeds, e.g. .cache/bench-demo-options:7,8,9")
    parser.add_argument("--skip-axis", action="store_true")
    args = parser.parse_args(argv)
    on_axis = {} if args.skip_axis else axis(args.seeds)
    on_demo = demo([(Path(w.split(":")[0]), [int(s) for s in w.split(":")[1].split(",")]) for w in args.demo]) \
        if args.demo else {}
    shown = [("gender", "defaults"), ("gender", "focal"), ("age_group", "focal")]
    print("| count rule or variant | calibration axis: cells met (mean person F1) | demo: ours − best baseline, "
          "gender defaults / gender focal / age focal | demo cells missed |")
    print("|---|---|---|---|")
    for name in on_axis or on_demo:
        met = f"{on_axis[name][0]} of {on_axis[name][1]} ({on_axis[name][2]:.4f})" if name in on_axis else "not run"
        cells = on_demo.get(name, {})
        diffs = " / ".join(f"{cells[k]:+.3f}" for k in shown if k in cells) or "not run"
        missed = f"{sum(v < -0.005 for v in cells.values())} of {len(cells)}" if cells else "not run"
        print(f"| {name} | {met} | {diffs} | {missed} |")


if __name__ == "__main__":
    main()
