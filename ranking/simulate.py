"""Simulated comparisons for tests, benchmarks and power analyses."""

from __future__ import annotations

import numpy as np

from ranking.pairs import FloatArray, IntArray
from ranking.sampler import PairSampler


def outcome_probabilities(d: FloatArray, nu: float = 0.0) -> tuple[FloatArray, FloatArray]:
    """P(a wins) and P(tie) for log-strength differences ``d = theta_a - theta_b`` under Davidson's model.

    ``nu = 0`` is plain Bradley-Terry (no ties): P(a wins) = sigma(d).
    """
    half = 0.5 * np.asarray(d, dtype=np.float64)
    top = np.maximum(half, -half)
    up, down, tie = np.exp(half - top), np.exp(-half - top), nu * np.exp(-top)
    denominator = up + down + tie
    return up / denominator, tie / denominator


def simulate_outcomes(d: FloatArray, rng: np.random.Generator, nu: float = 0.0) -> FloatArray:
    """Outcomes (1 = a won, 0.5 = tie, 0 = b won) for differences ``d`` (R,), Davidson ties if ``nu > 0``."""
    p_win, p_tie = outcome_probabilities(d, nu)
    u = rng.random(np.shape(d))
    return np.where(u < p_win, 1.0, np.where(u < p_win + p_tie, 0.5, 0.0))


def simulate_comparisons(
    theta: FloatArray, n_comparisons: int, rng: np.random.Generator, nu: float = 0.0
) -> tuple[IntArray, IntArray, FloatArray]:
    """``(a, b, outcome)`` for ``n_comparisons`` uniformly drawn pairs of distinct items with log-strengths
    ``theta`` (n,)."""
    n = len(theta)
    a = rng.integers(0, n, n_comparisons)
    b = (a + rng.integers(1, n, n_comparisons)) % n
    return a, b, simulate_outcomes(theta[a] - theta[b], rng, nu)


def simulate_adaptive(
    theta: FloatArray,
    n_comparisons: int,
    rng: np.random.Generator,
    nu: float = 0.0,
    batch: int = 50,
) -> tuple[IntArray, IntArray, FloatArray]:
    """``(a, b, outcome)`` for ``n_comparisons`` pairs chosen by :class:`ranking.PairSampler`, which sees the
    outcomes in batches of ``batch`` (as the arena's sampler sees them between refits); slots are randomised
    per comparison, as the arena does."""
    sampler = PairSampler(len(theta), seed=int(rng.integers(1 << 31)))
    parts = []
    for start in range(0, n_comparisons, batch):
        pairs = np.array([sampler.next_pair() for _ in range(min(batch, n_comparisons - start))])
        swap = rng.random(len(pairs)) < 0.5
        a = np.where(swap, pairs[:, 1], pairs[:, 0])
        b = np.where(swap, pairs[:, 0], pairs[:, 1])
        y = simulate_outcomes(theta[a] - theta[b], rng, nu)
        sampler.update_many(a, b, y)
        parts.append((a, b, y))
    a, b, y = (np.concatenate(column) for column in zip(*parts, strict=True))
    return a, b, y
