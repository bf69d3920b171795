"""Pearson's r and SimplerEnv's MMRV between two rankings, and their posterior intervals checked by simulation."""

from __future__ import annotations

import numpy as np
import pytest

import ranking
from ranking.errors import RankingError


def simpler_env_mmrv(sim: list[float], real: list[float]) -> float:
    """SimplerEnv's loop, written out as in its paper: each policy's largest misordered real gap, averaged."""
    worst = []
    for i in range(len(sim)):
        m = 0.0
        for j in range(len(sim)):
            if (sim[i] > sim[j]) != (real[i] > real[j]):
                m = max(m, abs(real[i] - real[j]))
        worst.append(m)
    return sum(worst) / len(worst)


def test_mmrv_is_zero_for_the_same_order_and_the_real_gap_for_a_swap():
    real = [0.9, 0.6, 0.3, 0.1]
    assert ranking.mmrv([10, 5, 2, 1], real) == 0.0
    # swapping the two best: each of them has one misordered partner, 0.3 apart; the others none
    assert ranking.mmrv([5, 10, 2, 1], real) == pytest.approx((0.3 + 0.3) / 4)


def test_mmrv_matches_simpler_envs_definition_on_random_inputs():
    rng = np.random.default_rng(1)
    for _ in range(50):
        n = int(rng.integers(2, 9))
        sim, real = rng.normal(size=n).round(1), rng.uniform(size=n).round(2)  # rounding makes ties
        assert ranking.mmrv(sim, real) == pytest.approx(simpler_env_mmrv(sim.tolist(), real.tolist()))
    batch_sim, batch_real = rng.normal(size=(5, 6)), rng.uniform(size=(5, 6))
    assert ranking.mmrv(batch_sim, batch_real) == pytest.approx(
        [ranking.mmrv(s, r) for s, r in zip(batch_sim, batch_real, strict=True)]
    )


def test_pearson_matches_numpy_and_refuses_bad_shapes():
    x, y = [1.0, 2.0, 4.0, 3.0], [2.0, 1.0, 5.0, 4.0]
    assert ranking.pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert np.isnan(ranking.pearson([1.0, 1.0], [1.0, 2.0]))
    with pytest.raises(RankingError):
        ranking.pearson([1.0, 2.0], [1.0])
    with pytest.raises(RankingError):
        ranking.mmrv([], [])


def test_agreement_point_values_are_the_direct_statistics_and_inside_their_intervals():
    theta_real = np.array([1.0, 0.4, 0.0, -0.5, -0.9])
    theta_sim = np.array([0.8, 0.5, -0.2, -0.1, -1.0])
    cov = 0.01 * np.eye(5)
    result = ranking.agreement(theta_real, cov, theta_sim, cov, n_draws=1000, seed=3)
    assert result.pearson == pytest.approx(ranking.pearson(theta_sim, theta_real))
    assert result.mmrv == pytest.approx(ranking.mmrv(theta_sim, ranking.win_probability(theta_real)))
    assert result.pearson_ci[0] <= result.pearson <= result.pearson_ci[1] <= 1.0
    assert 0.0 <= result.mmrv_ci[0] <= result.mmrv_ci[1]
    # shifting either scale changes nothing (each fit anchors its own scale)
    shifted = ranking.agreement(theta_real + 3, cov, theta_sim - 1, cov, n_draws=1000, seed=3)
    assert shifted.pearson == pytest.approx(result.pearson) and shifted.mmrv == pytest.approx(result.mmrv)
    assert shifted.pearson_ci == pytest.approx(result.pearson_ci)
    # more uncertainty, wider intervals
    wide = ranking.agreement(theta_real, 25 * cov, theta_sim, 25 * cov, n_draws=1000, seed=3)
    assert wide.mmrv_ci[1] - wide.mmrv_ci[0] > result.mmrv_ci[1] - result.mmrv_ci[0]
    # when noise swamps the data the interval says so (the reflected interval alone would sit near r = 1)
    noisy = ranking.agreement(theta_real, 100 * cov, theta_sim, 100 * cov, n_draws=1000, seed=3)
    assert noisy.pearson_ci[0] < 0 and noisy.pearson_ci[1] == 1.0


def _play(theta: np.ndarray, n_games: int, rng: np.random.Generator) -> ranking.Ratings:
    n = theta.size
    a = rng.integers(0, n, n_games)
    b = (a + rng.integers(1, n, n_games)) % n
    outcome = (rng.uniform(size=n_games) < 1 / (1 + np.exp(theta[b] - theta[a]))).astype(float)
    return ranking.fit(a, b, outcome, n, ties="half")


def test_posterior_intervals_cover_the_true_statistics_in_simulation():
    """Validation of the parametric bootstrap: true strengths on real robots, a replica whose strengths are
    the real ones plus a distortion, games on both, fits, intervals; the true r and MMRV (of the true
    strengths) fall inside the 95% intervals in most repetitions."""
    rng = np.random.default_rng(11)
    reps, hits_r, hits_m = 40, 0, 0
    for _ in range(reps):
        real = rng.normal(0.0, 1.0, 8)
        sim = real + rng.normal(0.0, 0.5, 8)
        true_r = ranking.pearson(sim, real)
        true_m = ranking.mmrv(sim, ranking.win_probability(real))
        fit_real, fit_sim = _play(real, 400, rng), _play(sim, 400, rng)
        t_real = (fit_real.scores - 1000) / ranking.ELO_SCALE
        t_sim = (fit_sim.scores - 1000) / ranking.ELO_SCALE
        result = ranking.agreement(t_real, fit_real.covariance, t_sim, fit_sim.covariance, n_draws=600)
        hits_r += result.pearson_ci[0] <= true_r <= result.pearson_ci[1]
        hits_m += result.mmrv_ci[0] <= true_m <= result.mmrv_ci[1]
    # measured over 100 repetitions: r 0.98, MMRV 0.95 (see ranking.agreement's docstring for other settings)
    assert hits_r / reps >= 0.9, hits_r
    assert hits_m / reps >= 0.85, hits_m


def test_a_constant_ranking_has_no_correlation_and_stays_json_safe():
    cov = 0.01 * np.eye(3)
    result = ranking.agreement(np.array([1.0, 0.0, -1.0]), cov, np.zeros(3), cov, n_draws=200)
    assert np.isnan(result.pearson)
    stored = result.to_dict()
    assert stored["pearson"] is None and stored["pearson_ci"] == [None, None]
    assert stored["mmrv"] == pytest.approx(
        ranking.mmrv(np.zeros(3), ranking.win_probability([1.0, 0.0, -1.0]))
    )
