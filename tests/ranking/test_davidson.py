"""Davidson's tie model: recovery of nu in simulation, and the real EPL 2008-2013 results."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.stats import kendalltau

import ranking
from ranking import ELO_SCALE
from ranking.simulate import simulate_comparisons

EPL = Path(__file__).resolve().parents[1] / "data" / "epl-2008-2013.csv"  # see tests/data/README.md


@pytest.mark.parametrize("nu", [0.3, 1.0, 3.0])
def test_recovers_tie_parameter(nu: float) -> None:
    rng = np.random.default_rng(7)
    theta = rng.normal(0, 1, 15)
    a, b, y = simulate_comparisons(theta, 20_000, rng, nu=nu)
    r = ranking.fit(a, b, y, 15, ties="davidson")
    assert r.tie_param == pytest.approx(nu, rel=0.08)
    assert kendalltau(r.scores, theta).statistic > 0.85
    assert "ties=davidson" in r.method


def test_no_ties_gives_tiny_nu_and_bradley_terry_scores() -> None:
    rng = np.random.default_rng(8)
    a, b, y = simulate_comparisons(rng.normal(0, 1, 6), 3_000, rng)
    davidson = ranking.fit(a, b, y, 6, ties="davidson")
    half = ranking.fit(a, b, y, 6)
    assert davidson.tie_param < 1e-2
    np.testing.assert_allclose(davidson.scores, half.scores, atol=1.0)


def _epl() -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    with EPL.open() as f:
        rows = list(csv.DictReader(f))
    teams = sorted({r["home"] for r in rows} | {r["away"] for r in rows})
    index = {t: k for k, t in enumerate(teams)}
    a = np.array([index[r["home"]] for r in rows])
    b = np.array([index[r["away"]] for r in rows])
    y = np.array([{1.0: 1.0, 0.0: 0.5, -1.0: 0.0}[float(r["result"])] for r in rows])
    return a, b, y, teams


def _independent_davidson(a: np.ndarray, b: np.ndarray, y: np.ndarray, n: int, ridge: float) -> np.ndarray:
    """Same penalised likelihood, coded per match (no aggregation), maximised by L-BFGS-B."""

    def objective(x: np.ndarray) -> float:
        theta, log_nu = x[:n], x[n]
        d = theta[a] - theta[b]
        log_den = np.log(np.exp(d / 2) + np.exp(-d / 2) + np.exp(log_nu))
        loglik = np.where(y == 1, d / 2, np.where(y == 0, -d / 2, log_nu)) - log_den
        return -loglik.sum() + ridge / 2 * (theta @ theta + log_nu**2)

    result = minimize(objective, np.zeros(n + 1), method="L-BFGS-B", options={"ftol": 1e-14, "gtol": 1e-9})
    return result.x


def test_epl_results_fit_sensibly() -> None:
    a, b, y, teams = _epl()
    n = len(teams)
    assert (len(y), n, int((y == 0.5).sum())) == (1900, 29, 505)
    r = ranking.fit(a, b, y, n, ties="davidson", order="ignore", ridge=ranking.DEFAULT_RIDGE)
    reference = _independent_davidson(a, b, y, n, ranking.DEFAULT_RIDGE)
    assert r.tie_param == pytest.approx(np.exp(reference[n]), rel=1e-4)
    np.testing.assert_allclose((r.scores - 1000) / ELO_SCALE, reference[:n] - reference[:n].mean(), atol=1e-4)
    # sensible: Manchester United (champions in three of the five seasons) on top, order close to points
    # per game, tie share about 27%, intervals narrower for teams with five seasons than with one
    assert np.argmax(r.scores) == teams.index("MnU") and r.rank[teams.index("MnU")] == 1
    points = np.bincount(a, 3.0 * (y == 1) + (y == 0.5), n) + np.bincount(b, 3.0 * (y == 0) + (y == 0.5), n)
    assert kendalltau(r.scores, points / r.n_comparisons).statistic > 0.9
    assert 0.5 < r.tie_param < 1.0  # P(tie | equal strengths) = nu / (2 + nu)
    width = r.ci_high - r.ci_low
    assert width.max() < 350 and width[r.n_comparisons == 190].max() < width[r.n_comparisons == 38].min()
    half = ranking.fit(a, b, y, n, ties="half")
    assert kendalltau(half.scores, r.scores).statistic > 0.9
