"""Confidence intervals cover the true scores about 95% of the time in simulation."""

from __future__ import annotations

import numpy as np
import pytest

import ranking
from ranking.fit import theta_to_score
from ranking.simulate import simulate_comparisons


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
