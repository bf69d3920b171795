"""fit_groups: one leaderboard per group where the data allow."""

from __future__ import annotations

import numpy as np

import ranking
from ranking.simulate import simulate_comparisons


def test_fits_each_large_enough_group() -> None:
    rng = np.random.default_rng(0)
    theta_pick = np.array([2.0, 0.0, -2.0])
    theta_wipe = -theta_pick
    a1, b1, y1 = simulate_comparisons(theta_pick, 500, rng)
    a2, b2, y2 = simulate_comparisons(theta_wipe, 500, rng)
    a3, b3, y3 = simulate_comparisons(theta_pick, 10, rng)
    groups = np.array(["pick"] * 500 + ["wipe"] * 500 + ["rare"] * 10)
    a, b, y = np.concatenate([a1, a2, a3]), np.concatenate([b1, b2, b3]), np.concatenate([y1, y2, y3])
    result = ranking.fit_groups(a, b, y, 3, groups, min_comparisons=50, ci="hessian")
    assert list(result) == ["pick", "wipe"]
    assert np.argmax(result["pick"].scores) == 0 and np.argmax(result["wipe"].scores) == 2
    assert result["pick"].n_total == 500 and "ci=hessian" in result["pick"].method


def test_weights_travel_with_their_rows() -> None:
    a = np.array([0, 0, 1, 1])
    b = np.array([1, 1, 0, 0])
    y = np.array([1.0, 1.0, 1.0, 1.0])
    groups = np.array([1, 2, 1, 2])
    result = ranking.fit_groups(a, b, y, 2, groups, weights=[30, 5, 10, 40], min_comparisons=20)
    assert result[1].n_total == 40 and result[2].n_total == 45
    assert result[1].scores[0] > result[1].scores[1] and result[2].scores[1] > result[2].scores[0]
    np.testing.assert_array_equal(result[1].wins, [[0, 30], [10, 0]])
