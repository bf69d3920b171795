"""The order effect (advantage of slot A, which runs first): EPL home advantage and slot-correlated designs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import log_expit

import ranking
from ranking import ELO_SCALE
from ranking.simulate import simulate_comparisons, simulate_outcomes
from tests.ranking.test_davidson import _epl


def _independent_home_advantage(a: np.ndarray, b: np.ndarray, y: np.ndarray, n: int, ties: str) -> float:
    """The same penalised likelihood with one home-advantage parameter, coded per match, by L-BFGS-B."""
    ridge = ranking.DEFAULT_RIDGE

    def objective(x: np.ndarray) -> float:
        theta, h = x[:n], x[n]
        d = theta[a] - theta[b] + h
        if ties == "half":
            loglik = y * log_expit(d) + (1 - y) * log_expit(-d)
            penalty = theta @ theta + h**2
        else:
            log_nu = x[n + 1]
            log_den = np.logaddexp(np.logaddexp(d / 2, -d / 2), log_nu)
            loglik = np.where(y == 1, d / 2, np.where(y == 0, -d / 2, log_nu)) - log_den
            penalty = theta @ theta + h**2 + log_nu**2
        return -loglik.sum() + ridge / 2 * penalty

    size = n + (1 if ties == "half" else 2)
    result = minimize(objective, np.zeros(size), method="L-BFGS-B", options={"ftol": 1e-15, "gtol": 1e-10})
    return float(result.x[n])


@pytest.mark.parametrize("ties, quoted", [("davidson", 0.668), ("half", 0.456)])
def test_epl_home_advantage_matches_an_independent_fit(ties: str, quoted: float) -> None:
    a, b, y, teams = _epl()  # a = home team: it "runs first"
    n = len(teams)
    reference = _independent_home_advantage(a, b, y, n, ties)
    assert reference == pytest.approx(quoted, abs=0.005)
    same_model = ranking.fit(a, b, y, n, ties=ties, ridge=ranking.DEFAULT_RIDGE)
    assert same_model.order_effect == pytest.approx(reference, abs=2e-4)
    assert "order=fitted" in same_model.method
    public = ranking.fit(a, b, y, n, ties=ties)  # the public default: hierarchical prior on the strengths
    low, high = public.order_effect_ci
    assert low < reference < high and low > 0.3  # clearly positive: home advantage is real
    assert public.order_effect == pytest.approx(reference, abs=0.02)


def test_one_slot_order_only_estimates_nothing() -> None:
    # item 0 always in slot A against 1 and 2, and 3 always in slot A against 1: the slots can be explained
    # by layers (0 and 3 above 1 and 2), so h is confounded with the strengths
    a, b, y = np.array([0, 0, 3]), np.array([1, 2, 1]), np.array([1.0, 0.0, 0.5])
    r = ranking.fit(np.repeat(a, 10), np.repeat(b, 10), np.repeat(y, 10), 4)
    assert np.isnan(r.order_effect) and np.all(np.isnan(r.order_effect_ci))
    assert "order=not identified" in r.method
    # one comparison the other way round (or any cycle whose orientations do not cancel) identifies it
    cycle = ranking.fit(
        np.append(np.repeat(a, 10), 1), np.append(np.repeat(b, 10), 0), np.append(np.repeat(y, 10), 1.0), 4
    )
    assert np.isfinite(cycle.order_effect) and "order=fitted" in cycle.method
    triangle = ranking.fit([0, 1, 0], [1, 2, 2], [1.0, 1.0, 0.0], 3)  # 0 -> 1 -> 2 and 0 -> 2
    assert np.isfinite(triangle.order_effect)


def _slotted(theta: np.ndarray, m: int, h: float, rng: np.random.Generator):
    """Uniform pairs; item 0 always takes slot A, the others take either slot at random."""
    a, b, _ = simulate_comparisons(theta, m, rng)
    swap = (b == 0) | ((a != 0) & (rng.random(m) < 0.5))
    a, b = np.where(swap, b, a), np.where(swap, a, b)
    return a, b, simulate_outcomes(theta[a] - theta[b] + h, rng, 0.8)


def test_always_first_policy_gains_nothing() -> None:
    # the case: without an order term an always-first policy gained 47 Elo and its interval
    # covered 27.5% of the time
    rng = np.random.default_rng(21)
    theta = np.linspace(1.0, -1.0, 10)
    truth = 1000.0 + ELO_SCALE * theta[0]
    hits, hits_order, errors, leaks = [], [], [], []
    for _ in range(30):
        a, b, y = _slotted(theta, 1500, 0.4, rng)
        r = ranking.fit(a, b, y, 10)
        hits.append(r.ci_low[0] <= truth <= r.ci_high[0])
        low, high = r.order_effect_ci
        hits_order.append(low <= 0.4 <= high)
        errors.append(r.scores[0] - truth)
        ignored = ranking.fit(a, b, y, 10, order="ignore")
        leaks.append(ignored.scores[0] - truth)
    assert np.mean(hits) >= 0.85 and np.mean(hits_order) >= 0.85
    assert abs(np.mean(errors)) < 15  # Elo points, on average over boards
    assert np.mean(leaks) > 40  # what the order term removes
