"""ranking.fit: agreement with choix, recovery of known strengths, invariances and degenerate inputs."""

from __future__ import annotations

import json

import choix
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import kendalltau

import ranking
from ranking import ELO_SCALE, InvalidComparisons, RankingError
from ranking.simulate import simulate_comparisons


def _theta(ratings: ranking.Ratings) -> np.ndarray:
    return (ratings.scores - 1000.0) / ELO_SCALE


@pytest.mark.parametrize("alpha", [1e-3, 0.05, 1.0])
def test_matches_choix_opt_pairwise(alpha: float) -> None:
    # choix penalises alpha * |theta|^2, our ridge / 2 * |theta|^2: ridge = 2 * alpha
    rng = np.random.default_rng(0)
    theta = rng.normal(0, 1, 12)
    a, b, y = simulate_comparisons(theta, 600, rng)
    data = np.column_stack([np.where(y == 1, a, b), np.where(y == 1, b, a)])
    expected = choix.opt_pairwise(12, data, alpha=alpha, tol=1e-10)
    ours = _theta(ranking.fit(a, b, y, 12, ties="half", order="ignore", ridge=2 * alpha))
    np.testing.assert_allclose(ours, expected - expected.mean(), atol=2e-5)


def test_dense_and_conjugate_gradient_paths_agree() -> None:
    rng = np.random.default_rng(1)
    theta = rng.normal(0, 1, 450)
    a, b, y = simulate_comparisons(theta, 10_000, rng)
    large = ranking.fit(
        a, b, y, 450, ties="half", order="ignore", ridge=ranking.DEFAULT_RIDGE
    )  # more than DIRECT_SOLVE_MAX parameters: CG Newton steps
    data = np.column_stack([np.where(y == 1, a, b), np.where(y == 1, b, a)])
    expected = choix.opt_pairwise(450, data, alpha=ranking.DEFAULT_RIDGE / 2, tol=1e-10)
    np.testing.assert_allclose(_theta(large), expected - expected.mean(), atol=1e-4)


def test_recovers_known_strengths() -> None:
    rng = np.random.default_rng(2)
    theta = np.linspace(-2, 2, 20)
    a, b, y = simulate_comparisons(theta, 20_000, rng)
    ratings = ranking.fit(a, b, y, 20)
    assert kendalltau(_theta(ratings), theta).statistic > 0.9
    np.testing.assert_allclose(_theta(ratings), theta - theta.mean(), atol=0.15)
    assert abs(ratings.scores.mean() - 1000.0) < 1e-9
    assert np.all(ratings.ci_low < ratings.scores) and np.all(ratings.scores < ratings.ci_high)


def test_aggregated_weights_equal_repeated_rows() -> None:
    rng = np.random.default_rng(3)
    a, b, y = simulate_comparisons(rng.normal(0, 1, 6), 400, rng)
    rows = np.column_stack([a, b, y])
    unique, counts = np.unique(rows, axis=0, return_counts=True)
    grouped = ranking.fit(unique[:, 0].astype(int), unique[:, 1].astype(int), unique[:, 2], 6, weights=counts)
    for ci in ("sandwich", "hessian"):
        raw = ranking.fit(a, b, y, 6, ci=ci)
        agg = ranking.fit(
            unique[:, 0].astype(int), unique[:, 1].astype(int), unique[:, 2], 6, weights=counts, ci=ci
        )
        np.testing.assert_allclose(agg.scores, raw.scores, atol=1e-9)
        np.testing.assert_allclose(agg.ci_high, raw.ci_high, atol=1e-9)
    assert grouped.n_total == 400


def test_sandwich_equals_hessian_without_misspecification_on_average() -> None:
    rng = np.random.default_rng(4)
    a, b, y = simulate_comparisons(rng.normal(0, 1, 10), 50_000, rng)
    sandwich = ranking.fit(a, b, y, 10, ci="sandwich")
    hessian = ranking.fit(a, b, y, 10, ci="hessian")
    width_ratio = (sandwich.ci_high - sandwich.ci_low) / (hessian.ci_high - hessian.ci_low)
    np.testing.assert_allclose(width_ratio, 1.0, atol=0.05)


def test_sandwich_narrower_when_ties_counted_half() -> None:
    # a tie carries less outcome variance than the Bernoulli model assumes; the robust interval knows it
    rng = np.random.default_rng(5)
    a, b, y = simulate_comparisons(rng.normal(0, 0.5, 8), 20_000, rng, nu=2.0)
    fixed = {"ties": "half", "ridge": ranking.DEFAULT_RIDGE}
    sandwich = ranking.fit(a, b, y, 8, ci="sandwich", **fixed)
    hessian = ranking.fit(a, b, y, 8, ci="hessian", **fixed)
    assert np.all(sandwich.ci_high - sandwich.ci_low < 0.9 * (hessian.ci_high - hessian.ci_low))


def test_bootstrap_intervals_resemble_sandwich() -> None:
    rng = np.random.default_rng(6)
    a, b, y = simulate_comparisons(rng.normal(0, 1, 8), 5_000, rng, nu=0.5)
    sandwich = ranking.fit(a, b, y, 8, ci="sandwich")
    boot = ranking.fit(a, b, y, 8, ci="bootstrap", n_bootstrap=200, seed=1)
    ratio = (boot.ci_high - boot.ci_low) / (sandwich.ci_high - sandwich.ci_low)
    assert np.all((ratio > 0.75) & (ratio < 1.3))
    assert "bootstrap(200)" in boot.method
    default_rounds = ranking.fit(a, b, y, 8, ci="bootstrap")
    assert "bootstrap(100)" in default_rounds.method


def test_outputs_and_json() -> None:
    a = np.array([0, 0, 1, 2, 0])
    b = np.array([1, 2, 2, 1, 1])
    y = np.array([1.0, 0.5, 0.0, 1.0, 0.0])
    r = ranking.fit(a, b, y, 4, ties="half")
    np.testing.assert_array_equal(r.counts[:3, :3], [[0, 2, 1], [2, 0, 2], [1, 2, 0]])
    np.testing.assert_array_equal(r.wins[:3, :3], [[0, 1, 0.5], [1, 0, 0], [0.5, 2, 0]])
    np.testing.assert_array_equal(r.wins + r.wins.T, r.counts)
    np.testing.assert_array_equal(r.n_comparisons, [3, 4, 3, 0])
    np.testing.assert_allclose(r.win_rate[:3], [1.5 / 3, 1 / 4, 2.5 / 3])
    assert np.isnan(r.win_rate[3]) and np.isnan(r.win_fraction[0, 0]) and np.isnan(r.win_fraction[0, 3])
    assert r.win_fraction[1, 0] == pytest.approx(1 / 2) and r.win_fraction[2, 1] == 1.0
    assert r.ci_low[3] == -np.inf and r.ci_high[3] == np.inf  # item 3 never played: unrated, never ranked
    assert np.isnan(r.scores[3]) and (r.rank[3], r.rank_low[3], r.rank_high[3], r.group[3]) == (0, 0, 0, -1)
    assert r.tie_param is None and r.n_total == 5
    payload = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert payload["ci_low"][3] is None and payload["win_fraction"][0][0] is None
    assert payload["rank"] == [int(x) for x in r.rank] and payload["scores"][3] is None
    assert payload["rank_high"] == [3, 3, 3, 0] and payload["order_effect_ci"] == [
        pytest.approx(v) for v in r.order_effect_ci
    ]


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"a": [0], "b": [0], "outcome": [1.0]}, InvalidComparisons),
        ({"a": [0], "b": [3], "outcome": [1.0]}, InvalidComparisons),
        ({"a": [0], "b": [1], "outcome": [0.7]}, InvalidComparisons),
        ({"a": [0, 1], "b": [1], "outcome": [1.0]}, InvalidComparisons),
        ({"a": [0.0], "b": [1.0], "outcome": [1.0]}, InvalidComparisons),
        ({"a": [0], "b": [1], "outcome": [1.0], "weights": [-1.0]}, InvalidComparisons),
        ({"a": [0], "b": [1], "outcome": [1.0], "ties": "draw"}, RankingError),
        ({"a": [0], "b": [1], "outcome": [1.0], "ci": "profile"}, RankingError),
        ({"a": [0], "b": [1], "outcome": [1.0], "n_bootstrap": 10}, RankingError),
        ({"a": [0], "b": [1], "outcome": [1.0], "ridge": 0.0}, RankingError),
    ],
)
def test_rejects_malformed_input(kwargs: dict, error: type[Exception]) -> None:
    with pytest.raises(error):
        ranking.fit(n_items=3, **kwargs)


games = st.lists(
    st.tuples(st.integers(0, 5), st.integers(1, 5), st.sampled_from([0.0, 0.5, 1.0]), st.integers(1, 3)),
    max_size=40,
)


def _arrays(rows: list[tuple[int, int, float, int]], n: int = 6):
    a = np.array([r[0] for r in rows], dtype=np.int64)
    b = (a + np.array([r[1] for r in rows], dtype=np.int64)) % n
    return a, b, np.array([r[2] for r in rows]), np.array([r[3] for r in rows], dtype=float)


@settings(max_examples=40, deadline=None)
@given(games, st.sampled_from(["half", "davidson"]), st.sampled_from(["sandwich", "hessian"]))
def test_swapping_sides_changes_nothing(rows, ties, ci) -> None:
    a, b, y, w = _arrays(rows)
    r1 = ranking.fit(a, b, y, 6, weights=w, ties=ties, ci=ci)
    r2 = ranking.fit(b, a, 1.0 - y, 6, weights=w, ties=ties, ci=ci)
    np.testing.assert_allclose(r1.scores, r2.scores, atol=1e-7)
    np.testing.assert_allclose(r1.ci_low, r2.ci_low, atol=1e-6)
    # slot A is now the other side: the order effect changes sign (ranks are not compared exactly: a
    # difference sitting on Holm's critical value may fall either side of it at the last digits)
    np.testing.assert_allclose(r1.order_effect, -r2.order_effect, atol=1e-7)
    np.testing.assert_array_equal(r1.group, r2.group)
    np.testing.assert_array_equal(r1.wins, r2.wins)


@settings(max_examples=40, deadline=None)
@given(games, st.integers(0, 5), st.sampled_from(["half", "davidson"]))
def test_item_that_always_wins_ranks_first(rows, champion, ties) -> None:
    a, b, y, w = _arrays(rows)
    # every game involving the champion is won by it; add one win over each other item
    others = np.array([i for i in range(6) if i != champion])
    a = np.concatenate([a, np.full(5, champion)])
    b = np.concatenate([b, others])
    y = np.concatenate([y, np.ones(5)])
    w = np.concatenate([w, np.ones(5)])
    y = np.where(a == champion, 1.0, np.where(b == champion, 0.0, y))
    # order ignored: when the champion always runs first, a slot-A advantage would explain its wins equally
    r = ranking.fit(a, b, y, 6, weights=w, ties=ties, order="ignore")
    assert r.scores[champion] == r.scores.max()
    assert r.rank[champion] == 1


@settings(max_examples=40, deadline=None)
@given(games, st.sampled_from(["half", "davidson"]), st.sampled_from(["sandwich", "hessian", "bootstrap"]))
def test_arbitrary_graphs_do_not_crash(rows, ties, ci) -> None:
    a, b, y, w = _arrays(rows)
    r = ranking.fit(a, b, y, 6, weights=w, ties=ties, ci=ci, n_bootstrap=5 if ci == "bootstrap" else 0)
    rated = r.n_comparisons > 0
    assert np.all(np.isfinite(r.scores[rated])) and np.all(np.isnan(r.scores[~rated]))
    for g in np.unique(r.group[rated]):  # each comparison group is centred on 1000 on its own
        assert abs(r.scores[r.group == g].mean() - 1000.0) < 1e-6
    assert np.all(r.ci_low <= r.ci_high)
    assert np.all((1 <= r.rank_low[rated]) & (r.rank_low[rated] <= r.rank_high[rated]))
    if ci != "bootstrap":  # percentile intervals need not contain the point estimate
        assert np.all(r.ci_low[rated] <= r.scores[rated] + 1e-9)
        assert np.all(r.scores[rated] <= r.ci_high[rated] + 1e-9)
    json.dumps(r.to_dict(), allow_nan=False)


def test_disconnected_graph_single_item_and_empty_data() -> None:
    a = np.array([0, 0, 2, 3])
    b = np.array([1, 1, 3, 2])
    y = np.array([1.0, 1.0, 1.0, 0.5])
    r = ranking.fit(a, b, y, 5)
    assert r.scores[0] > r.scores[1] and r.scores[2] > r.scores[3]
    assert abs(r.scores[:2].mean() - 1000) < 1e-6 and abs(r.scores[2:4].mean() - 1000) < 1e-6
    assert np.isnan(r.scores[4]) and r.ci_high[4] == np.inf and r.rank[4] == 0
    # two groups, each ranked on its own; no claim across them
    assert r.group.tolist() == [0, 0, 1, 1, -1]
    assert r.rank_high.tolist() == [2, 2, 2, 2, 0]
    single = ranking.fit([], [], [], 1)
    assert np.isnan(single.scores[0]) and single.rank.tolist() == [0]
    empty = ranking.fit(np.array([], dtype=int), np.array([], dtype=int), [], 4, ties="davidson")
    assert np.all(np.isnan(empty.scores)) and empty.n_total == 0
    assert np.all(empty.rank == 0) and np.all(empty.group == -1)


def test_large_boards_estimate_the_prior_scale_inside_newton() -> None:
    # beyond DIRECT_SOLVE_MAX parameters the empirical-Bayes fixed point runs inside one Newton fit
    rng = np.random.default_rng(17)
    theta = rng.normal(0, 1.0, 450)
    a, b, y = simulate_comparisons(theta, 40_000, rng, nu=0.8)
    r = ranking.fit(a, b, y, 450)
    assert r.prior_sd == pytest.approx(np.std(theta), rel=0.1)
    truth = 1000 + ELO_SCALE * (theta - theta.mean())
    assert 0.92 <= np.mean((r.ci_low <= truth) & (truth <= r.ci_high)) <= 0.98
