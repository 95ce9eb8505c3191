"""How many people to flag: the person verdict's count rule against others, on the calibration axis.

    PYTHONPATH=. .venv/bin/python -m bench.count_rules [--seeds 5]

``core.scoring.group_scores`` ranks people by 1 - P(given) and flags the top N, N = the median of three estimates
(``issue_counts``: cleanlab on person means, per-image votes, the posterior sum). The demo table across score
options ("Person verdicts on the demo across score options") misses by the count, not the order. This script keeps
the ranking and swaps the count rule, on every cell of ``bench/calibration.py`` (its regimes and calibrations, cached
in ``.cache/bench-calibration``), and counts the cells where the rule's person F1 is at least the best cleanlab
baseline's (within 0.005, as there). ``truth`` (N = the number of wrong people) is the ceiling of the ranking.
"""

from __future__ import annotations

import argparse
import collections
from collections.abc import Callable
from typing import Any

import numpy as np

from bench.calibration import BASELINES, CALIBRATIONS, HELD_OUT, OURS, evaluate, prf, transformed
from core.scoring import group_scores, top_n

RULES: dict[str, Callable[[dict[str, int], int], float]] = {
    "median of three (today)": lambda c, w: float(np.median(list(c.values()))),
    "mean of three": lambda c, w: round(float(np.mean(list(c.values())))),
    "mean of the two cleanlab counts": lambda c, w: round((c["person_mean"] + c["image_vote"]) / 2),
    "max of the two cleanlab counts": lambda c, w: max(c["person_mean"], c["image_vote"]),
    "truth (the ranking's ceiling)": lambda c, w: w,
}


def rule_f1(score: np.ndarray, wrong: np.ndarray, n: float) -> float:
    """Person F1 of flagging the ``n`` highest scores (``core.scoring.top_n``, what ``group_scores`` does)."""
    return prf(top_n(score, int(n)), wrong)[2]


def main(argv: list[str] | None = None) -> None:
    from bench.label_issues import REGIMES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args(argv)
    settings = [s for s, _ in REGIMES] + list(HELD_OUT)
    cells: dict[str, dict[tuple[str, str], list[float]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    best: dict[tuple[str, str], dict[str, list[float]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    for setting in settings:
        for calibration in CALIBRATIONS:
            for seed in range(args.seeds):
                data = transformed(setting, seed, calibration)
                scores: dict[str, Any] = evaluate(data)
                for baseline in BASELINES:
                    best[(setting.name, calibration)][baseline].append(scores[baseline][0])
                table = group_scores(data.labels, data.pred_probs, data.groups)
                ordered = table.set_index("group").loc[np.arange(len(data.wrong))]
                for name, rule in RULES.items():
                    n = rule(table.attrs["counts"], int(data.wrong.sum()))
                    cells[name][(setting.name, calibration)].append(rule_f1(ordered["score"].to_numpy(), data.wrong, n))
                assert abs(cells[next(iter(RULES))][(setting.name, calibration)][-1] - scores[OURS][0]) < 1e-9 \
                    or table["inconsistent"].any()  # today's rule reproduces group_scores' own flags
    # the best baseline by mean over seeds, as bench/calibration.py judges a cell
    print("| count rule | cells met (F1 >= best baseline - 0.005) | mean person F1 |")
    print("|---|---|---|")
    for name in RULES:
        met = sum(np.mean(v) >= max(np.mean(b) for b in best[k].values()) - 0.005 for k, v in cells[name].items())
        print(f"| {name} | {met} of {len(cells[name])} | {np.mean([np.mean(v) for v in cells[name].values()]):.4f} |")


if __name__ == "__main__":
    main()
