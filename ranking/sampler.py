r"""Adaptive choice of the next pair to compare.

:class:`PairSampler` keeps the aggregated outcomes, refits Bradley-Terry (ties half, ridge penalty) on each
request, warm-started, and scores every pair ``(i, j)`` with :math:`d = \hat\theta_i - \hat\theta_j` and
:math:`s^2 = \mathrm{Var}(d)` (model-based covariance, which includes the ridge prior, so items never compared
have a large variance) by

.. math::
    u_{ij} = \Phi(-|d| / s) \cdot \frac{p(1-p) s^2}{1 + p(1-p) s^2}, \qquad p = \sigma(d):

the probability that the current order of ``i`` and ``j`` is wrong, times the share of the variance of ``d``
one more comparison of the pair would remove (its Fisher information ``p(1-p)`` against the prior precision
``1/s^2``). Pairs of new or under-compared items have ``u`` near its maximum 1/2, so exploration is built in;
well-separated or already well-measured pairs score near 0.

The pair is drawn at random, never taken greedily: with probability ``exploration`` uniformly among the
eligible pairs, otherwise from :math:`q_{ij} \propto \mathrm{softmax}(\mathrm{sharpness} \cdot u / \max u)_{ij}
\exp(\mathrm{jitter} \cdot z_{ij})` capped at ``max_ratio / K`` per pair (``K`` eligible pairs; the excess is
spread over the other pairs in proportion, "water-filling"), where :math:`z_{ij} \sim N(0, 1)` is a
perturbation the caller may draw from a secret generator. So no pair is ever more than ``max_ratio`` times as
likely as under uniform sampling, and someone who knows every outcome and this code, but not ``z``, cannot
compute the probabilities exactly: an evaluator guessing which policy it was given gains at most a factor
``max_ratio`` over chance from the design. Every eligible pair has a known positive probability, recorded per
choice (:attr:`PairChoice.ipw_weight` is ``1 / (p * K)`` for a pair of probability ``p`` among ``K``). Do not
pass those weights to :func:`ranking.fit`: its intervals are posterior intervals whose likelihood already
accounts for a design that depends only on past outcomes (validated by ``benchmarks.coverage`` under this
sampler), while inverse-propensity weights, treated as frequency weights, shrink the effective sample and break
the intervals' coverage. They serve estimands of another kind, e.g. an average win rate against a uniformly
drawn opponent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import expit, ndtr

from ranking.errors import InvalidComparisons, NoEligiblePair
from ranking.fit import DEFAULT_RIDGE
from ranking.newton import covariance, newton_fit
from ranking.pairs import FloatArray, PairTable, aggregate


@dataclass(frozen=True)
class PairChoice:
    """One draw of :meth:`PairSampler.next_pair`.

    Attributes:
        i, j: the returned items, in slot order.
        probability: probability that this unordered pair was drawn.
        n_eligible: number of eligible unordered pairs at the time.
    """

    i: int
    j: int
    probability: float
    n_eligible: int

    @property
    def ipw_weight(self) -> float:
        """Inverse-propensity weight ``1 / (probability * n_eligible)``; 1 under uniform sampling."""
        return 1.0 / (self.probability * self.n_eligible)


class PairSampler:
    """Chooses which pair to compare next (see the module docstring for the criterion).

    Args:
        n_items: number of items, at least 2.
        seed: seed of the sampler's random generator.
        ridge: ridge penalty of the internal fit (see :data:`ranking.fit.DEFAULT_RIDGE`).
        sharpness: softmax inverse temperature on the normalised pair scores; 0 gives uniform sampling.
        exploration: share of draws made uniformly among eligible pairs, in (0, 1].
        max_ratio: no unordered pair is more than this many times as likely as under uniform sampling
            (at least 1; 1 gives uniform sampling); None: no cap.
        jitter: standard deviation of the log-normal perturbation of the pair probabilities (0: none).

    Attributes:
        last_probability: probability of the unordered pair returned by the last :meth:`next_pair`.
        log: every :class:`PairChoice` made, in order.
    """

    def __init__(
        self,
        n_items: int,
        *,
        seed: int | None = None,
        ridge: float = DEFAULT_RIDGE,
        sharpness: float = 12.0,
        exploration: float = 0.05,
        max_ratio: float | None = None,
        jitter: float = 0.0,
    ) -> None:
        if int(n_items) != n_items or n_items < 2:
            raise InvalidComparisons(f"a sampler needs at least 2 items, got {n_items!r}")
        if not 0.0 < exploration <= 1.0:
            raise InvalidComparisons(f"exploration must lie in (0, 1], got {exploration!r}")
        if sharpness < 0:
            raise InvalidComparisons(f"sharpness must be non-negative, got {sharpness!r}")
        if max_ratio is not None and not max_ratio >= 1.0:
            raise InvalidComparisons(f"max_ratio must be at least 1, got {max_ratio!r}")
        if not jitter >= 0:
            raise InvalidComparisons(f"jitter must be non-negative, got {jitter!r}")
        self.n_items = int(n_items)
        self.max_ratio = None if max_ratio is None else float(max_ratio)
        self.jitter = float(jitter)
        self.ridge = ridge
        self.sharpness = sharpness
        self.exploration = exploration
        self.wins = np.zeros((self.n_items, self.n_items))
        self.counts = np.zeros((self.n_items, self.n_items))
        self.last_probability: float | None = None
        self.log: list[PairChoice] = []
        self._rng = np.random.default_rng(seed)
        self._theta: FloatArray | None = None
        self._scores: FloatArray | None = None

    def update(self, i: int, j: int, outcome: float, weight: float = 1.0) -> None:
        """Record one comparison: ``outcome`` 1 = ``i`` won, 0 = ``j`` won, 0.5 = tie."""
        self.update_many([i], [j], [outcome], [weight])

    def update_many(
        self, a: ArrayLike, b: ArrayLike, outcome: ArrayLike, weights: ArrayLike | None = None
    ) -> None:
        """Record comparison rows, e.g. aggregated ``(a, b, outcome, count)`` rows from the database."""
        table = aggregate(a, b, outcome, self.n_items, weights)
        self.wins += table.wins
        self.counts += table.counts
        self._scores = None

    def _pair_scores(self) -> FloatArray:
        """(n, n) symmetric scores u_ij (zero diagonal), cached until the next update."""
        if self._scores is None:
            self._scores = self._compute_pair_scores()
        return self._scores

    def _compute_pair_scores(self) -> FloatArray:
        n = self.n_items
        i, j = np.nonzero(np.triu(self.counts, 1))
        table = PairTable(
            n_items=n,
            i=i.astype(np.int64),
            j=j.astype(np.int64),
            wins_i=self.wins[i, j],
            wins_j=self.wins[j, i],
            ties=np.zeros(i.size),
            wins=self.wins,
            counts=self.counts,
            n_total=float(self.counts[i, j].sum()),
        )
        solution = newton_fit(table, ties="half", ridge=self.ridge, theta0=self._theta)
        self._theta = solution.theta
        cov = covariance(table, solution, ridge=self.ridge, kind="hessian", full=True)
        var = np.diag(cov)
        d = solution.theta[:, None] - solution.theta[None, :]
        var_d = np.maximum(var[:, None] + var[None, :] - 2.0 * cov, 1e-12)
        misorder = ndtr(-np.abs(d) / np.sqrt(var_d))
        p = expit(d)
        information = p * (1.0 - p) * var_d
        scores = misorder * information / (1.0 + information)
        np.fill_diagonal(scores, 0.0)
        return scores

    def _eligible(self, eligible: ArrayLike | None) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
        """The allowed slot orders (n, n) and the allowed unordered pairs (upper triangle)."""
        n = self.n_items
        if eligible is None:
            allowed = ~np.eye(n, dtype=bool)
        else:
            allowed = np.asarray(eligible, dtype=bool)
            if allowed.shape != (n, n):
                raise InvalidComparisons(f"eligible must have shape ({n}, {n}), got {allowed.shape}")
            allowed = allowed & ~np.eye(n, dtype=bool)
        unordered = np.triu(allowed | allowed.T, 1)
        if not unordered.any():
            raise NoEligiblePair("the eligibility mask allows no pair of distinct items")
        return allowed, unordered

    def pair_probabilities(
        self, eligible: ArrayLike | None = None, *, perturbation: ArrayLike | None = None
    ) -> FloatArray:
        """(n, n) probability that :meth:`next_pair` returns ``(i, j)`` in that slot order; sums to 1.

        Args:
            eligible: optional (n, n) boolean mask; ``(i, j)`` may be returned only where it is True (the
                diagonal is ignored). Default: every pair of distinct items.
            perturbation: (n, n) standard-normal draws ``z`` (upper triangle used), scaled by ``jitter``; e.g.
                from a generator seeded with a secret. Default with ``jitter > 0``: fresh draws from the
                sampler's own generator.

        Raises:
            NoEligiblePair: the mask allows no pair.
        """
        n = self.n_items
        allowed, unordered = self._eligible(eligible)
        n_eligible = int(unordered.sum())
        scores = self._pair_scores()[unordered]
        top = scores.max()
        logits = self.sharpness * (scores / top if top > 0 else scores)
        if self.jitter > 0:
            # On the probabilities, not the scores: the softmax would amplify a perturbation of the scores
            # into a near-deterministic choice whenever the scores are close (e.g. before any data).
            z = self._rng.standard_normal((n, n)) if perturbation is None else np.asarray(perturbation, float)
            if z.shape != (n, n):
                raise InvalidComparisons(f"perturbation must have shape ({n}, {n}), got {z.shape}")
            logits = logits + self.jitter * z[unordered]
        softmax = np.exp(logits - logits.max())
        softmax /= softmax.sum()
        if self.max_ratio is not None:
            softmax = cap_probabilities(softmax, self.max_ratio / n_eligible)
        pair_p = (1.0 - self.exploration) * softmax + self.exploration / n_eligible
        unordered_p = np.zeros((n, n))
        unordered_p[unordered] = pair_p
        unordered_p = unordered_p + unordered_p.T
        # split each pair's probability over its allowed slot orders
        orders = allowed.astype(np.float64)
        orders_per_pair = orders + orders.T
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(allowed, unordered_p / orders_per_pair, 0.0)

    def next_pair(
        self, eligible: ArrayLike | None = None, *, perturbation: ArrayLike | None = None
    ) -> tuple[int, int]:
        """Draw the next pair ``(i, j)`` (slot order) among the eligible ones; see :meth:`pair_probabilities`.

        Sets :attr:`last_probability` to the probability of the unordered pair and appends a
        :class:`PairChoice` to :attr:`log`.

        Raises:
            NoEligiblePair: the mask allows no pair.
        """
        probabilities = self.pair_probabilities(eligible, perturbation=perturbation)
        flat = probabilities.ravel()
        index = int(self._rng.choice(flat.size, p=flat / flat.sum()))
        i, j = divmod(index, self.n_items)
        pair_probability = float(probabilities[i, j] + probabilities[j, i])
        n_eligible = int(self._eligible(eligible)[1].sum())
        self.last_probability = pair_probability
        self.log.append(PairChoice(i=i, j=j, probability=pair_probability, n_eligible=n_eligible))
        return i, j


def cap_probabilities(p: ArrayLike, cap: float) -> FloatArray:
    """The distribution closest in proportions to ``p`` with no entry above ``cap``.

    Entries over the cap are set to it and the remaining mass is shared by the others in proportion to ``p``,
    repeatedly until none exceeds the cap (at most ``len(p)`` rounds).

    Args:
        p: (K,) probabilities summing to 1, non-negative.
        cap: largest allowed probability, at least ``1 / K``.

    Returns:
        (K,) probabilities summing to 1, each at most ``cap``.
    """
    p = np.asarray(p, dtype=np.float64)
    if cap * p.size < 1.0 - 1e-12:
        raise InvalidComparisons(f"a cap of {cap!r} on {p.size} entries cannot sum to 1")
    capped = np.zeros(p.size, dtype=bool)
    result = p.copy()
    while True:
        over = ~capped & (result > cap)
        if not over.any():
            return result
        capped |= over
        free = ~capped
        remaining = 1.0 - cap * capped.sum()
        result[capped] = cap
        mass = p[free].sum()
        result[free] = p[free] * remaining / mass if mass > 0 else remaining / max(free.sum(), 1)
