"""PairSampler's blinding options: the cap on any pair's probability, the uniform floor, and the secret
perturbation (given, reproducible; unknown, not reproducible)."""

from __future__ import annotations

import numpy as np
import pytest

from ranking import InvalidComparisons, PairSampler
from ranking.sampler import cap_probabilities
from ranking.simulate import simulate_comparisons


def _concentrated(**options) -> PairSampler:
    """A sampler whose uncapped distribution puts most mass on one close pair."""
    theta = np.array([0.0, 0.02, 2.5, 3.5, -2.5, -3.5, 5.0])
    rng = np.random.default_rng(7)
    sampler = PairSampler(len(theta), seed=1, **options)
    sampler.update_many(*simulate_comparisons(theta, 400, rng))
    return sampler


def _unordered(probabilities: np.ndarray) -> np.ndarray:
    return (probabilities + probabilities.T)[np.triu_indices(len(probabilities), 1)]


def test_the_cap_bounds_every_pair_at_max_ratio_over_uniform():
    uncapped = _unordered(_concentrated().pair_probabilities())
    n_pairs = uncapped.size
    assert uncapped.max() > 0.5  # the design alone would name this pair
    for ratio in (1.0, 2.0, 3.0):
        capped = _unordered(_concentrated(max_ratio=ratio).pair_probabilities())
        assert capped.sum() == pytest.approx(1.0)
        assert capped.max() <= ratio / n_pairs + 1e-12
        assert capped.min() >= 0.05 / n_pairs  # the uniform floor (exploration) stays
    flat = _unordered(_concentrated(max_ratio=1.0).pair_probabilities())
    np.testing.assert_allclose(flat, 1 / n_pairs)


def test_the_cap_keeps_the_order_of_preferences():
    p = np.array([0.7, 0.2, 0.06, 0.04])
    capped = cap_probabilities(p, 0.3)
    np.testing.assert_allclose(capped.sum(), 1.0)
    assert capped.max() <= 0.3 + 1e-12
    assert list(np.argsort(-capped, kind="stable")) == [0, 1, 2, 3]
    np.testing.assert_allclose(capped[2] / capped[3], 0.06 / 0.04)  # uncapped entries keep their ratios
    with pytest.raises(InvalidComparisons):
        cap_probabilities(p, 0.2)
    with pytest.raises(InvalidComparisons):
        PairSampler(3, max_ratio=0.5)


def test_a_given_perturbation_is_reproducible_and_an_unknown_one_is_not():
    sampler = _concentrated(max_ratio=3.0, jitter=0.3)
    n = sampler.n_items
    secret = np.random.default_rng(123).standard_normal((n, n))
    first = sampler.pair_probabilities(perturbation=secret)
    np.testing.assert_array_equal(first, sampler.pair_probabilities(perturbation=secret))
    public = sampler.pair_probabilities(perturbation=np.zeros((n, n)))
    assert np.abs(first - public).max() > 1e-3  # without the secret, the probabilities are not reproduced
    unperturbed = _concentrated(max_ratio=3.0).pair_probabilities()
    np.testing.assert_allclose(public, unperturbed)
    with pytest.raises(InvalidComparisons):
        sampler.pair_probabilities(perturbation=np.zeros((2, 2)))
