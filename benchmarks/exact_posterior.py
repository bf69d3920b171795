"""Is the public fit's coverage the best a posterior can do? The exact posterior under the true prior, same boards.

For one condition of :mod:`benchmarks.coverage` (default ``adaptive n=30 m=3000 sd=1.0``, issue 14 item 1) this
simulates the same boards as that benchmark (same seed, same order of draws) and prints, per board set, the item
coverage of

- ``fit``: ``ranking.fit`` with the public defaults (the benchmark's ``items`` column);
- ``exact``: the posterior of the strengths under the true prior (``theta ~ N(0, spread^2)``, Davidson's
  ``nu = 0.8`` and no order effect, all known), by self-normalised importance sampling from a multivariate t
  (8 degrees of freedom) around its Laplace approximation, interval ``mean +/- 1.96 sd`` of each centred
  strength; ``laplace``: that Laplace approximation alone; ``ess``: mean effective sample size.

An exact posterior under the true prior covers 95% on average over boards for any design that depends only on
past outcomes (such as :class:`ranking.PairSampler`), so ``exact`` is the benchmark's noise floor: where ``fit``
matches ``exact`` on the same boards, a shortfall of both is the spread of the board set, not the method.
Only for the ``normal`` layout with ``spread > 0`` (the prior is the truth there).

Run: ``python -m benchmarks.exact_posterior [--condition NAME] [--boards N] [--seed S] [--draws D]``.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

import ranking
from benchmarks.coverage import NU, Z95, conditions, draw_board, true_strengths


def laplace_mode(
    n: int, a: np.ndarray, b: np.ndarray, y: np.ndarray, spread: float
) -> tuple[tuple[np.ndarray, ...], np.ndarray, np.ndarray]:
    """Cells ``(A, B, wins, ties, losses)`` per ordered pair and the mode and covariance of the log posterior."""
    key = a * n + b
    wins = np.bincount(key[y == 1.0], minlength=n * n)
    ties = np.bincount(key[y == 0.5], minlength=n * n)
    losses = np.bincount(key[y == 0.0], minlength=n * n)
    cells = np.flatnonzero(wins + ties + losses)
    A, B = cells // n, cells % n
    W, T, L = wins[cells], ties[cells], losses[cells]
    total = W + T + L
    precision = 1.0 / spread**2
    theta = np.zeros(n)
    for _ in range(100):
        d = theta[A] - theta[B]
        up, down = np.exp(d / 2), np.exp(-d / 2)
        z = up + down + NU
        dlz = 0.5 * (up - down) / z
        g_d = 0.5 * (W - L) - total * dlz
        h_d = total * (0.25 * (up + down) / z - dlz**2)
        gradient = np.bincount(A, g_d, n) - np.bincount(B, g_d, n) - precision * theta
        hessian = precision * np.eye(n)
        np.add.at(hessian, (A, A), h_d)
        np.add.at(hessian, (B, B), h_d)
        np.add.at(hessian, (A, B), -h_d)
        np.add.at(hessian, (B, A), -h_d)
        step = np.linalg.solve(hessian, gradient)
        theta += step
        if np.abs(step).max() < 1e-10:
            break
    return (A, B, W, T, L), theta, np.linalg.inv(hessian)


def log_posterior(x: np.ndarray, cells: tuple[np.ndarray, ...], spread: float) -> np.ndarray:
    A, B, W, T, L = cells
    d = x[:, A] - x[:, B]
    log_z = np.logaddexp(np.logaddexp(d / 2, -d / 2), math.log(NU))
    loglik = np.sum(W * (d / 2 - log_z) + T * (math.log(NU) - log_z) + L * (-d / 2 - log_z), axis=1)
    return loglik - 0.5 * np.sum(x**2, axis=1) / spread**2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--condition", default="adaptive n=30 m=3000 sd=1.0")
    parser.add_argument("--boards", type=int, default=150)
    parser.add_argument("--seed", type=int, default=None, help="default: the coverage benchmark's seed")
    parser.add_argument("--draws", type=int, default=4000, help="importance samples per board")
    args = parser.parse_args()
    grid = conditions(False)
    index = [c.name for c in grid].index(args.condition)
    condition = grid[index]
    if condition.layout != "normal" or condition.spread <= 0:
        parser.error("only normal layouts with a positive spread have a known true prior")
    rng = np.random.default_rng(1000 + index if args.seed is None else args.seed)
    sampler = np.random.default_rng(5)
    n, df = condition.n_items, 8
    centre = np.eye(n) - 1.0 / n
    cover: dict[str, list[float]] = {"fit": [], "laplace": [], "exact": []}
    ess = []
    for _ in range(args.boards):
        theta = true_strengths(condition, rng)
        a, b, y = draw_board(condition, theta, rng)
        truth = theta - theta.mean()
        r = ranking.fit(a, b, y, n)
        low, high = (r.ci_low - 1000.0) / ranking.ELO_SCALE, (r.ci_high - 1000.0) / ranking.ELO_SCALE
        cover["fit"].append(float(np.mean((low <= truth) & (truth <= high))))
        cells, mode, cov = laplace_mode(n, a, b, y, condition.spread)
        sd = np.sqrt(np.diag(centre @ cov @ centre))
        cover["laplace"].append(float(np.mean(np.abs(centre @ mode - truth) <= Z95 * sd)))
        normal = sampler.standard_normal((args.draws, n))
        chi = sampler.chisquare(df, args.draws) / df
        x = mode + (normal @ np.linalg.cholesky(cov).T) / np.sqrt(chi)[:, None]
        log_proposal = -0.5 * (df + n) * np.log1p(np.sum(normal**2, axis=1) / chi / df)
        log_w = log_posterior(x, cells, condition.spread) - log_proposal
        w = np.exp(log_w - log_w.max())
        w /= w.sum()
        ess.append(1.0 / float(np.sum(w**2)))
        xc = x @ centre
        mean = w @ xc
        sd = np.sqrt(w @ (xc - mean) ** 2)
        cover["exact"].append(float(np.mean(np.abs(mean - truth) <= Z95 * sd)))
    print(
        f"{condition.name}, {args.boards} boards, {args.draws} draws (mean effective sample {np.mean(ess):.0f})"
    )
    for name, values in cover.items():
        v = np.array(values)
        print(f"{name:<8}{v.mean():>8.3f} +/- {Z95 * v.std(ddof=1) / math.sqrt(v.size):.3f}")


if __name__ == "__main__":
    main()
