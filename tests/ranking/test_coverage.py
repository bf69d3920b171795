"""Intervals cover the true scores about 95% of the time in simulation, where the arena runs: adaptive pairs,
~25% ties, few comparisons per policy, several spreads (fast versions of ``benchmarks.coverage``)."""

from __future__ import annotations

import numpy as np
import pytest

import ranking
from ranking.fit import theta_to_score
from ranking.simulate import simulate_adaptive, simulate_comparisons

NU = 0.8  # about 25% ties among close pairs


def _coverage(ci: str, ties: str, nu: float, n_datasets: int, n_bootstrap: int = 0) -> float:
    rng = np.random.default_rng(123)
    hits = []
    for _ in range(n_datasets):
        theta = rng.normal(0, 0.8, 8)
        truth = theta_to_score(theta - theta.mean())
        a, b, y = simulate_comparisons(theta, 400, rng, nu=nu)
        r = ranking.fit(
            a, b, y, 8, ties=ties, ci=ci, n_bootstrap=n_bootstrap, seed=int(rng.integers(1 << 30))
        )
        hits.append((r.ci_low <= truth) & (truth <= r.ci_high))
    return float(np.mean(hits))


@pytest.mark.parametrize("ci", ["sandwich", "hessian"])
def test_bradley_terry_coverage(ci: str) -> None:
    assert 0.90 <= _coverage(ci, "half", 0.0, 200) <= 0.99


@pytest.mark.parametrize("ci", ["sandwich", "hessian"])
def test_davidson_coverage(ci: str) -> None:
    assert 0.90 <= _coverage(ci, "davidson", 1.0, 200) <= 0.99


def test_bootstrap_coverage() -> None:
    assert 0.88 <= _coverage("bootstrap", "half", 0.0, 60, n_bootstrap=100) <= 0.99


def _board_coverage(
    n: int, spread: float, m: int, boards: int, *, adaptive: bool, seed: int, **fit_kwargs: object
) -> tuple[float, float]:
    """Item and pair coverage of the public default fit over ``boards`` simulated boards."""
    rng = np.random.default_rng(seed)
    items, pairs = [], []
    for _ in range(boards):
        theta = rng.normal(0.0, spread, n)
        theta -= theta.mean()
        draw = simulate_adaptive if adaptive else simulate_comparisons
        a, b, y = draw(theta, m, rng, nu=NU)
        r = ranking.fit(a, b, y, n, **fit_kwargs)
        assert np.all(r.n_comparisons > 0)
        est = (r.scores - 1000.0) / ranking.ELO_SCALE
        low, high = (r.ci_low - 1000.0) / ranking.ELO_SCALE, (r.ci_high - 1000.0) / ranking.ELO_SCALE
        items.append(np.mean((low <= theta) & (theta <= high)))
        i, j = np.triu_indices(n, 1)
        sd = np.sqrt(r.covariance[i, i] + r.covariance[j, j] - 2 * r.covariance[i, j])
        pairs.append(np.mean(np.abs(est[i] - est[j] - (theta[i] - theta[j])) <= 1.96 * sd))
    return float(np.mean(items)), float(np.mean(pairs))


@pytest.mark.parametrize("spread", [0.5, 2.0])
def test_coverage_under_the_adaptive_sampler(spread: float) -> None:
    # with the sandwich and ties as half wins the audit measured 0.92 at n = 10 and 0.59 with 20% ties
    items, pairs = _board_coverage(10, spread, 1000, 30, adaptive=True, seed=31)
    assert 0.90 <= items <= 0.99 and 0.90 <= pairs <= 0.99


@pytest.mark.parametrize("spread, per_policy", [(1.0, 10), (2.0, 20)])
def test_coverage_with_few_comparisons_per_policy(spread: float, per_policy: int) -> None:
    # the audit measured 0.67-0.82 at 10 comparisons per policy
    items, pairs = _board_coverage(30, spread, 15 * per_policy, 20, adaptive=False, seed=32)
    assert 0.90 <= items <= 0.99 and 0.90 <= pairs <= 0.99


def test_coverage_under_the_adaptive_sampler_at_30_policies() -> None:
    # issue 14 item 1 at n = 30, m = 3000, spread 1 nat (benchmarks.coverage: 0.932 +/- 0.011 over 150 boards,
    # where the exact posterior under the true prior, by importance sampling, also gave 0.932). 30 boards:
    # 1.96 standard errors of the item coverage are about 0.03, so this catches gross failures (ties as half
    # wins: 0.63 here) but not a shortfall of 0.02 (the robust sandwich: 0.94 here, 0.91 over 150 boards)
    items, pairs = _board_coverage(30, 1.0, 3000, 30, adaptive=True, seed=33)
    assert 0.90 <= items <= 0.99 and 0.90 <= pairs <= 0.99


def test_adaptive_posterior_matches_the_exact_posterior() -> None:
    # The sharp check at n = 30 under the adaptive sampler: an exact posterior under the true prior covers 95%
    # on average whatever the (outcome-dependent) design, so the public fit should reproduce it. On 6 seeded
    # boards the fit's interval widths are 1.04x the exact posterior's on average (min 0.96; it estimates the
    # prior scale, nu and the order effect instead of knowing them) and its centres are 0.14 posterior sd away
    # on average; the robust sandwich gives widths of 0.92x (min 0.65), which fails here
    from benchmarks.exact_posterior import laplace_mode, log_posterior

    rng = np.random.default_rng(34)
    draws = np.random.default_rng(5)
    n, df = 30, 8
    ratios, shifts = [], []
    for _ in range(6):
        theta = rng.normal(0.0, 1.0, n)
        theta -= theta.mean()
        a, b, y = simulate_adaptive(theta, 3000, rng, nu=NU)
        r = ranking.fit(a, b, y, n)
        sd_fit = (r.ci_high - r.ci_low) / (2 * 1.959963984540054 * ranking.ELO_SCALE)
        cells, mode, cov = laplace_mode(n, a, b, y, 1.0)
        z = draws.standard_normal((4000, n))
        chi = draws.chisquare(df, 4000) / df
        x = mode + (z @ np.linalg.cholesky(cov).T) / np.sqrt(chi)[:, None]
        log_w = log_posterior(x, cells, 1.0) + 0.5 * (df + n) * np.log1p(np.sum(z**2, axis=1) / chi / df)
        w = np.exp(log_w - log_w.max())
        w /= w.sum()
        assert 1.0 / np.sum(w**2) > 1000  # the importance sample is informative
        centred = x - x.mean(axis=1, keepdims=True)
        mean = w @ centred
        sd = np.sqrt(w @ (centred - mean) ** 2)
        ratios.append(sd_fit / sd)
        shifts.append(((r.scores - 1000.0) / ranking.ELO_SCALE - mean) / sd)
    ratio, shift = np.concatenate(ratios), np.abs(np.concatenate(shifts))
    assert 0.97 <= ratio.mean() <= 1.10 and ratio.min() >= 0.90
    assert shift.mean() <= 0.25
