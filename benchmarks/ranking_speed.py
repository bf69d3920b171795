"""Fit speed with confidence intervals: ranking.fit vs choix vs a FastChat-style bootstrap pipeline.

Data: n_items with log-strengths ~ N(0, 1), uniformly drawn pairs, Bradley-Terry outcomes (no ties, so every
method fits the same likelihood). Times are the best of ``--repeats`` runs after one warm-up (the machine is
shared; best-of is the least noisy estimate of the cost), in seconds; tau is Kendall's tau of the point
estimates against the true strengths.

- ``ours``: ``ranking.fit(a, b, outcome, n)`` with the public defaults (Davidson ties, order effect,
  hierarchical prior, posterior 95% intervals and rank bands; aggregation included).
- ``base`` (with ``--baseline DIR``): the same call, same data, timed the same way, in a subprocess that imports
  ``ranking`` from another checkout DIR (e.g. the previous release), and ``ratio`` = ours / base.
- ``ilsr``, ``opt``: ``choix.ilsr_pairwise`` / ``choix.opt_pairwise`` (point estimates only, no intervals),
  fed (winner, loser) pairs; ``alpha`` = our ridge / 2 so all fit the same penalised likelihood.
- ``fastchat``: FastChat's leaderboard recipe: collapse to unique (a, b, outcome) rows with counts, fit a
  logistic regression with scipy L-BFGS-B, then 100 bootstrap rounds that resample the rows and refit
  (percentile intervals). When a full run would take long, ``k`` rounds are timed and the total is
  extrapolated as ``fit + 100 * round`` (marked ``*``).

Combinations where a baseline would take minutes are skipped (``skip``): choix's ``opt_pairwise`` when
n_items * comparisons > 5e7 (it took 117 s at 1,000 x 10^6), ``ilsr_pairwise`` when > 1e9 (9 s at 1,000 x
10^6, and it grows with both).

Run: ``python -m benchmarks.ranking_speed [--quick] [--repeats R] [--baseline DIR]``.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import choix
import numpy as np
import scipy.sparse
from scipy.optimize import minimize
from scipy.special import expit
from scipy.stats import kendalltau

import ranking
from ranking.simulate import simulate_comparisons

FULL_ITEMS = (50, 500, 1000, 5000)
FULL_COMPARISONS = (10_000, 100_000, 1_000_000)
QUICK_GRID = ((50, 10_000), (1000, 100_000), (1000, 1_000_000))
BOOTSTRAP_ROUNDS = 100
FASTCHAT_BUDGET_S = 10.0
OPT_LIMIT = 5e7
ILSR_LIMIT = 1e9


def _best_time(function: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    result = function()  # warm-up
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - started)
    return best, result


def _fastchat_fit(a: np.ndarray, b: np.ndarray, y: np.ndarray, n: int) -> np.ndarray:
    """One FastChat-style fit: unique rows with counts, weighted logistic regression by L-BFGS-B."""
    rows, counts = np.unique(np.column_stack([a, b, y]), axis=0, return_counts=True)
    ua, ub, uy = rows[:, 0].astype(np.int64), rows[:, 1].astype(np.int64), rows[:, 2]
    m = len(rows)
    design = scipy.sparse.csr_matrix(
        (np.concatenate([np.ones(m), -np.ones(m)]), (np.tile(np.arange(m), 2), np.concatenate([ua, ub]))),
        shape=(m, n),
    )
    weights = counts.astype(np.float64)
    alpha = ranking.DEFAULT_RIDGE / 2

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        z = design @ theta
        value = np.dot(weights, np.logaddexp(0.0, z) - uy * z) + alpha * theta @ theta
        grad = design.T @ (weights * (expit(z) - uy)) + 2 * alpha * theta
        return float(value), grad

    return minimize(loss, np.zeros(n), jac=True, method="L-BFGS-B", options={"maxiter": 1000}).x


def _fastchat_round(a, b, y, n, rng) -> np.ndarray:
    index = rng.integers(0, len(a), len(a))
    return _fastchat_fit(a[index], b[index], y[index], n)


def _fastchat(a, b, y, n) -> tuple[float, float, bool, np.ndarray]:
    """(total seconds for fit + 100 rounds, seconds per round, extrapolated?, point estimate)."""
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    theta = _fastchat_fit(a, b, y, n)
    fit_time = time.perf_counter() - started
    rounds, spent = 0, 0.0
    while rounds < BOOTSTRAP_ROUNDS and (rounds < 2 or spent + spent / rounds < FASTCHAT_BUDGET_S):
        started = time.perf_counter()
        _fastchat_round(a, b, y, n, rng)
        spent += time.perf_counter() - started
        rounds += 1
    per_round = spent / rounds
    return fit_time + BOOTSTRAP_ROUNDS * per_round, per_round, rounds < BOOTSTRAP_ROUNDS, theta


def _tau(estimate: np.ndarray, truth: np.ndarray) -> float:
    return float(kendalltau(estimate, truth).statistic)


BASELINE_SCRIPT = """
import sys, time, math
sys.path.insert(0, sys.argv[1])
import numpy as np
import ranking
from ranking.simulate import simulate_comparisons
n, m, repeats = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(n * 7 + m)
theta = rng.normal(0, 1, n)
a, b, y = simulate_comparisons(theta, m, rng)
ranking.fit(a, b, y, n)
best = math.inf
for _ in range(repeats):
    started = time.perf_counter()
    ranking.fit(a, b, y, n)
    best = min(best, time.perf_counter() - started)
print(best)
"""


def _baseline_time(directory: str, n: int, m: int, repeats: int) -> float:
    """Best-of-``repeats`` seconds of ``ranking.fit`` imported from the checkout ``directory``, same data."""
    done = subprocess.run(
        [sys.executable, "-c", BASELINE_SCRIPT, directory, str(n), str(m), str(repeats)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout.strip())


def bench(n: int, m: int, repeats: int, baseline: str | None = None) -> dict[str, str]:
    rng = np.random.default_rng(n * 7 + m)
    theta = rng.normal(0, 1, n)
    a, b, y = simulate_comparisons(theta, m, rng)
    row: dict[str, str] = {"n": str(n), "m": f"{m:.0e}"}
    ours_time, ratings = _best_time(lambda: ranking.fit(a, b, y, n), repeats)
    row["ours"] = f"{ours_time:.3f}"
    if baseline:
        base_time = _baseline_time(baseline, n, m, repeats)
        row["base"] = f"{base_time:.3f}"
        row["ratio"] = f"{ours_time / base_time:.2f}"
    row["tau"] = f"{_tau(ratings.scores, theta):.3f}"
    pairs = np.column_stack([np.where(y == 1, a, b), np.where(y == 1, b, a)])
    alpha = ranking.DEFAULT_RIDGE / 2
    if n * m <= ILSR_LIMIT:
        started = time.perf_counter()
        ilsr = choix.ilsr_pairwise(n, pairs, alpha=alpha, tol=1e-6)
        row["ilsr"] = f"{time.perf_counter() - started:.2f}"
        row["tau_ilsr"] = f"{_tau(ilsr, theta):.3f}"
    else:
        row["ilsr"] = row["tau_ilsr"] = "skip"
    if n * m <= OPT_LIMIT:
        started = time.perf_counter()
        opt = choix.opt_pairwise(n, pairs, alpha=alpha)
        row["opt"] = f"{time.perf_counter() - started:.2f}"
        row["tau_opt"] = f"{_tau(opt, theta):.3f}"
    else:
        row["opt"] = row["tau_opt"] = "skip"
    total, per_round, extrapolated, fc_theta = _fastchat(a, b, y, n)
    row["fastchat"] = f"{total:.1f}{'*' if extrapolated else ''}"
    row["tau_fc"] = f"{_tau(fc_theta, theta):.3f}"
    row["speedup"] = f"{total / ours_time:.0f}x"
    return row


COLUMNS = [
    ("n", 5),
    ("m", 6),
    ("ours", 7),
    ("base", 7),
    ("ratio", 6),
    ("tau", 6),
    ("ilsr", 7),
    ("tau_ilsr", 8),
    ("opt", 7),
    ("tau_opt", 7),
    ("fastchat", 9),
    ("tau_fc", 6),
    ("speedup", 8),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="three combinations only")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats of our fit (best is shown)")
    parser.add_argument("--baseline", help="another checkout whose ranking.fit is timed on the same data")
    args = parser.parse_args()
    grid = QUICK_GRID if args.quick else [(n, m) for n in FULL_ITEMS for m in FULL_COMPARISONS]
    print("Seconds (ours: best of repeats, public defaults with intervals; choix: point estimates only;")
    print(f"fastchat: 1 fit + {BOOTSTRAP_ROUNDS} bootstrap refits, * = extrapolated from timed rounds)")
    header = " ".join(f"{name:>{width}}" for name, width in COLUMNS)
    print(header)
    print("-" * len(header))
    for n, m in grid:
        row = bench(n, m, args.repeats, args.baseline)
        print(" ".join(f"{row.get(name, '-'):>{width}}" for name, width in COLUMNS), flush=True)


if __name__ == "__main__":
    main()
