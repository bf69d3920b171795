"""PairSampler: mask honoured, probabilities consistent, informative pairs favoured."""

from __future__ import annotations

import numpy as np
import pytest

import ranking
from ranking import InvalidComparisons, NoEligiblePair, PairSampler
from ranking.simulate import simulate_comparisons


def test_probabilities_sum_to_one_and_match_the_log() -> None:
    rng = np.random.default_rng(0)
    sampler = PairSampler(10, seed=1)
    a, b, y = simulate_comparisons(rng.normal(0, 1, 10), 200, rng)
    sampler.update_many(a, b, y)
    probabilities = sampler.pair_probabilities()
    assert probabilities.sum() == pytest.approx(1.0)
    assert np.all(probabilities[~np.eye(10, dtype=bool)] > 0)
    np.testing.assert_allclose(probabilities, probabilities.T)  # both slot orders equally likely
    i, j = sampler.next_pair()
    assert sampler.last_probability == pytest.approx(probabilities[i, j] + probabilities[j, i])
    choice = sampler.log[-1]
    assert (choice.i, choice.j, choice.n_eligible) == (i, j, 45)
    assert choice.ipw_weight == pytest.approx(1 / (45 * sampler.last_probability))


def test_mask_is_honoured_strictly() -> None:
    rng = np.random.default_rng(1)
    sampler = PairSampler(8, seed=2)
    mask = np.zeros((8, 8), dtype=bool)
    mask[0, 3] = mask[5, 2] = mask[2, 5] = mask[6, 6] = True  # (0, 3) only in that slot order
    for _ in range(200):
        i, j = sampler.next_pair(mask)
        assert mask[i, j] and i != j
        assert sampler.log[-1].n_eligible == 2
        sampler.update(i, j, float(rng.random() < 0.5))
    assert {(c.i, c.j) for c in sampler.log} == {(0, 3), (5, 2), (2, 5)}
    probabilities = sampler.pair_probabilities(mask)
    assert probabilities.sum() == pytest.approx(1.0) and np.all(probabilities[~mask] == 0)


def test_no_eligible_pair_raises() -> None:
    sampler = PairSampler(4, seed=0)
    with pytest.raises(NoEligiblePair):
        sampler.next_pair(np.eye(4, dtype=bool))
    with pytest.raises(NoEligiblePair):
        sampler.next_pair(np.zeros((4, 4), dtype=bool))
    with pytest.raises(InvalidComparisons):
        sampler.next_pair(np.ones((3, 3), dtype=bool))
    with pytest.raises(InvalidComparisons):
        PairSampler(1)


def test_uniform_without_sharpness_or_data() -> None:
    fresh = PairSampler(6, seed=0).pair_probabilities()
    np.testing.assert_allclose(fresh[~np.eye(6, dtype=bool)], 1 / 30)
    rng = np.random.default_rng(3)
    flat = PairSampler(6, seed=0, sharpness=0.0)
    flat.update_many(*simulate_comparisons(rng.normal(0, 2, 6), 300, rng))
    flat.next_pair()
    assert flat.log[-1].ipw_weight == pytest.approx(1.0)


def test_update_many_equals_repeated_updates() -> None:
    rng = np.random.default_rng(4)
    a, b, y = simulate_comparisons(rng.normal(0, 1, 5), 50, rng, nu=1.0)
    one_by_one, batched = PairSampler(5, seed=9), PairSampler(5, seed=9)
    for row in zip(a, b, y, strict=True):
        one_by_one.update(int(row[0]), int(row[1]), float(row[2]))
    batched.update_many(a, b, y)
    np.testing.assert_allclose(one_by_one.pair_probabilities(), batched.pair_probabilities())
    assert one_by_one.next_pair() == batched.next_pair()


def test_prefers_close_pairs() -> None:
    theta = np.array([0.0, 0.05, 3.0, -3.0])
    rng = np.random.default_rng(5)
    sampler = PairSampler(4, seed=0)
    sampler.update_many(*simulate_comparisons(theta, 2_000, rng))
    pair = sampler.pair_probabilities() * 2
    assert pair[0, 1] > 0.5 and pair[0, 1] > 20 * pair[2, 3]  # near-equal pair beats a settled one


def test_explores_new_items_first() -> None:
    rng = np.random.default_rng(5)
    sampler = PairSampler(5, seed=0)
    a, b, y = simulate_comparisons(np.array([0.0, 0.05, 3.0, -3.0]), 2_000, rng)  # item 4 is new
    sampler.update_many(a, b, y)
    pair = sampler.pair_probabilities() * 2
    assert pair[4].sum() > 0.9


def test_adaptive_design_fits_with_and_without_ipw_weights() -> None:
    rng = np.random.default_rng(60)  # not the sampler's seed: identical streams would correlate draws
    theta = np.linspace(-1.5, 1.5, 8)
    sampler = PairSampler(8, seed=6)
    rows = []
    for _ in range(600):
        i, j = sampler.next_pair()
        outcome = float(rng.random() < 1 / (1 + np.exp(theta[j] - theta[i])))
        sampler.update(i, j, outcome)
        rows.append((i, j, outcome, sampler.log[-1].ipw_weight))
    a, b, y, w = (np.array(c) for c in zip(*rows, strict=True))
    # the plain fit is consistent under an adaptive design when the model holds; the inverse-propensity
    # weighted fit is design-unbiased but noisier; weights average 1 (E[1/(pK)] = 1 for every draw)
    plain = ranking.fit(a.astype(int), b.astype(int), y, 8)
    weighted = ranking.fit(a.astype(int), b.astype(int), y, 8, weights=w)
    assert np.corrcoef(plain.scores, theta)[0, 1] > 0.95
    assert np.corrcoef(weighted.scores, theta)[0, 1] > 0.8
    assert w.mean() == pytest.approx(1.0, rel=0.35)
