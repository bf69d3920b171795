"""Would modelling the 0-100 progress scores help the ranking? A joint (composite) likelihood, measured.

Board: 30 policies, log-strengths ``theta`` ~ N(0, 1), uniform pairs, Davidson outcomes (nu = 0.8). Every
comparison also carries each slot's episode progress, ``progress = 50 + 15 * s + N(0, 20^2)`` clipped to
[0, 100], where ``s`` is the policy's *progress strength*:

- ``aligned``: ``s = theta`` (progress tracks what evaluators prefer);
- ``partial``: ``s = 0.5 theta + sqrt(0.75) z`` (correlation 0.5);
- ``misaligned``: ``s = z``, independent of ``theta`` (progress measures something else).

Fits: ``pairs`` is :func:`ranking.fit` (the public board, preferences only). ``joint`` maximises the composite
log-likelihood that shares one strength vector: Bradley-Terry-Davidson on the preferences plus
``sum log N(progress | mu + beta * theta_policy, sigma^2)`` with ``mu, beta, sigma`` free (so ``beta`` can
drop to 0 when progress does not track preference) and the same N(0, tau^2) prior scale as the board
(from the ``pairs`` fit). Reported over boards (mean ± s.e.): Kendall tau with the true ``theta`` at each
number of comparisons, and the comparisons each fit needs before its mean tau reaches 0.9.

Decision rule of issue 14 item 6: adopt the joint view only if it needs >= 1.3x fewer comparisons when
aligned and loses <= 0.02 tau when not.

Run: ``python -m benchmarks.progress_joint [--quick] [--boards N]``.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
from scipy.optimize import minimize
from scipy.stats import kendalltau

import ranking
from ranking.simulate import simulate_outcomes

N_POLICIES = 30
NU = 0.8
GRID = (300, 1200, 4800)
SCENARIOS = {"aligned": 1.0, "partial": 0.5, "misaligned": 0.0}


def board(m: int, correlation: float, rng: np.random.Generator):
    theta = rng.normal(0.0, 1.0, N_POLICIES)
    s = correlation * theta + math.sqrt(1.0 - correlation**2) * rng.normal(0.0, 1.0, N_POLICIES)
    a = rng.integers(0, N_POLICIES, m)
    b = (a + rng.integers(1, N_POLICIES, m)) % N_POLICIES
    y = simulate_outcomes(theta[a] - theta[b], rng, NU)
    progress = np.clip(50.0 + 15.0 * s[np.concatenate([a, b])] + rng.normal(0.0, 20.0, 2 * m), 0.0, 100.0)
    return theta, a, b, y, progress


def joint_fit(a, b, y, progress, prior_sd: float, start: np.ndarray) -> np.ndarray:
    """Composite MAP: Davidson preferences + Gaussian progress sharing ``theta``; returns theta."""
    n = N_POLICIES
    who = np.concatenate([a, b])
    win, tie = (y == 1.0).astype(float), (y == 0.5).astype(float)
    loss = 1.0 - win - tie

    def objective(x: np.ndarray) -> tuple[float, np.ndarray]:
        theta, log_nu, mu, beta, log_sigma = x[:n], x[n], x[n + 1], x[n + 2], x[n + 3]
        d = theta[a] - theta[b]
        nu, sigma = math.exp(log_nu), math.exp(log_sigma)
        up, down = np.exp(d / 2), np.exp(-d / 2)
        total = up + down + nu
        ll_pref = win * d / 2 - loss * d / 2 + tie * log_nu - np.log(total)
        g_d = win / 2 - loss / 2 - (up - down) / (2 * total)
        g_lognu = float(np.sum(tie - nu / total))
        resid = progress - mu - beta * theta[who]
        ll_prog = -0.5 * resid**2 / sigma**2 - log_sigma
        value = -(ll_pref.sum() + ll_prog.sum()) + 0.5 * float(theta @ theta) / prior_sd**2
        grad = np.zeros_like(x)
        grad[:n] = -(np.bincount(a, g_d, n) - np.bincount(b, g_d, n))
        grad[:n] -= np.bincount(who, resid * beta / sigma**2, n)
        grad[:n] += theta / prior_sd**2
        grad[n] = -g_lognu
        grad[n + 1] = -float(np.sum(resid)) / sigma**2
        grad[n + 2] = -float(np.sum(resid * theta[who])) / sigma**2
        grad[n + 3] = -float(np.sum(resid**2 / sigma**2 - 1.0))
        return value, grad

    x0 = np.concatenate([start, [math.log(NU), 50.0, 0.0, math.log(20.0)]])
    result = minimize(objective, x0, jac=True, method="L-BFGS-B")
    return result.x[:n]


def run(boards: int, seed: int) -> dict[str, dict[str, list[list[float]]]]:
    out: dict[str, dict[str, list[list[float]]]] = {}
    for name, correlation in SCENARIOS.items():
        taus: dict[str, list[list[float]]] = {"pairs": [], "joint": []}
        for k in range(boards):
            rng = np.random.default_rng(seed + 1000 * k)
            theta, a, b, y, progress = board(max(GRID), correlation, rng)
            row_pairs, row_joint = [], []
            for m in GRID:
                idx = np.arange(m)
                pairs = ranking.fit(a[idx], b[idx], y[idx], N_POLICIES)
                start = np.nan_to_num((pairs.scores - pairs.scores.mean()) / ranking.ELO_SCALE)
                prog = np.concatenate([progress[:m], progress[max(GRID) : max(GRID) + m]])
                joint = joint_fit(a[idx], b[idx], y[idx], prog, pairs.prior_sd, start)
                row_pairs.append(kendalltau(pairs.scores, theta).statistic)
                row_joint.append(kendalltau(joint, theta).statistic)
            taus["pairs"].append(row_pairs)
            taus["joint"].append(row_joint)
        out[name] = taus
    return out


def _needed(mean_tau: np.ndarray, target: float = 0.9) -> float:
    """Comparisons at which the mean tau first reaches ``target``, interpolated in log m (inf if never)."""
    for k, value in enumerate(mean_tau):
        if value >= target:
            if k == 0:
                return float(GRID[0])
            lo, hi = mean_tau[k - 1], value
            frac = (target - lo) / (hi - lo)
            return float(math.exp(math.log(GRID[k - 1]) + frac * (math.log(GRID[k]) - math.log(GRID[k - 1]))))
    return math.inf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 boards per scenario")
    parser.add_argument("--boards", type=int, default=0, help="boards per scenario (default 10, quick 3)")
    args = parser.parse_args()
    boards = args.boards or (3 if args.quick else 10)
    results = run(boards, seed=0)
    print(
        f"Kendall tau with the truth, mean ± s.e. over {boards} boards; 'to 0.9': comparisons to mean tau 0.9"
    )
    print(f"{'scenario':<11}{'fit':<7}" + "".join(f"{m:>13}" for m in GRID) + f"{'to 0.9':>9}")
    for name, taus in results.items():
        for fit_name, rows in taus.items():
            x = np.asarray(rows)
            mean, se = (
                x.mean(axis=0),
                x.std(axis=0, ddof=1) / math.sqrt(x.shape[0]) if x.shape[0] > 1 else 0 * x[0],
            )
            cells = "".join(f"{mu:>8.3f}±{s:.3f}" for mu, s in zip(mean, se, strict=True))
            print(f"{name:<11}{fit_name:<7}{cells}{_needed(mean):>9.0f}")
        pairs, joint = np.asarray(taus["pairs"]).mean(axis=0), np.asarray(taus["joint"]).mean(axis=0)
        ratio = _needed(pairs) / _needed(joint)
        print(
            f"{'':<11}{'':<7}joint - pairs tau: {np.round(joint - pairs, 3).tolist()}; comparisons ratio {ratio:.2f}x"
        )


if __name__ == "__main__":
    main()
