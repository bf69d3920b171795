r"""Bradley-Terry ratings with confidence intervals: :func:`fit` and :func:`fit_groups`.

Model: item ``i`` has log-strength :math:`\theta_i` and beats ``j`` with probability
:math:`\sigma(\theta_i - \theta_j)` (given the game is decisive); ties follow :mod:`ranking.likelihood`.
Scores are reported on an Elo-like scale, ``1000 + 400 * log10(odds)``, i.e. ``1000 + 400 / ln(10) * theta``:
100 points apart means odds of 10**0.25 = 1.78 to 1, 400 points means 10 to 1. Scores average 1000.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import norm

from ranking.errors import RankingError
from ranking.newton import Solution, Ties, covariance, newton_fit
from ranking.pairs import FloatArray, IntArray, PairTable, aggregate

CiMethod = Literal["sandwich", "hessian", "bootstrap"]

DEFAULT_RIDGE = 0.01
"""Default L2 penalty on log-strengths: a N(0, 1/0.01) = N(0, 10**2) prior, i.e. a prior standard deviation of
10 nats (about 1,700 Elo points). Negligible once an item has a few comparisons (it shifts a score by about
``ridge * theta / information``), yet it makes the fit unique and finite for undefeated or winless items and
on disconnected comparison graphs (each connected component is then centred at 1000)."""

ELO_SCALE = 400.0 / math.log(10.0)
"""Score points per nat of log-strength."""

BASE_SCORE = 1000.0
DEFAULT_BOOTSTRAP_ROUNDS = 100
_Z95 = float(norm.ppf(0.975))


@dataclass(frozen=True, eq=False)
class Ratings:
    """A fitted leaderboard. Arrays are indexed by item.

    Attributes:
        scores: (n,) float64, Elo-like scale (1000 + 400 * log10 odds), mean 1000.
        ci_low, ci_high: (n,) float64, 95% confidence interval of each score; -inf / +inf for items without
            comparisons (unrated).
        rank: (n,) int64, 1 + the number of items whose ci_low exceeds this item's ci_high.
        n_comparisons: (n,) float64, total comparison weight per item.
        win_rate: (n,) float64, wins / comparisons with ties counted half; nan without comparisons.
        wins: (n, n) float64, wins[i, j] = wins of i over j, ties counted half.
        counts: (n, n) float64, symmetric, comparisons between i and j.
        win_fraction: (n, n) float64, wins / counts; nan where no games.
        tie_param: Davidson's tie parameter nu (P(tie) = nu / (2 + nu) at equal strengths); None for "half".
        method: description of model, tie handling, interval method and ridge.
        n_total: total comparison weight.
    """

    scores: FloatArray
    ci_low: FloatArray
    ci_high: FloatArray
    rank: IntArray
    n_comparisons: FloatArray
    win_rate: FloatArray
    wins: FloatArray
    counts: FloatArray
    win_fraction: FloatArray
    tie_param: float | None
    method: str
    n_total: float

    @property
    def n_items(self) -> int:
        return int(self.scores.size)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict: arrays as (nested) lists, non-finite numbers as None."""
        return {
            "scores": _json_list(self.scores),
            "ci_low": _json_list(self.ci_low),
            "ci_high": _json_list(self.ci_high),
            "rank": [int(r) for r in self.rank],
            "n_comparisons": _json_list(self.n_comparisons),
            "win_rate": _json_list(self.win_rate),
            "wins": _json_list(self.wins),
            "counts": _json_list(self.counts),
            "win_fraction": _json_list(self.win_fraction),
            "tie_param": self.tie_param,
            "method": self.method,
            "n_total": self.n_total,
        }


def _json_list(values: FloatArray) -> list[Any]:
    as_object = values.astype(object)
    as_object[~np.isfinite(values)] = None
    return as_object.tolist()


def theta_to_score(theta: FloatArray) -> FloatArray:
    """Log-strengths (nats) to the Elo-like scale."""
    return BASE_SCORE + ELO_SCALE * theta


def score_to_theta(scores: FloatArray) -> FloatArray:
    """Elo-like scores to log-strengths (nats), centred to mean zero."""
    theta = (np.asarray(scores, dtype=np.float64) - BASE_SCORE) / ELO_SCALE
    return theta - theta.mean()


def check_options(ties: str, ci: str, n_bootstrap: int, ridge: float) -> None:
    """Validate fit options.

    Raises:
        RankingError: unknown ``ties`` / ``ci``, a negative ``n_bootstrap`` (or one given without
            ``ci="bootstrap"``), or a ridge that is not a positive finite number.
    """
    if ties not in ("half", "davidson"):
        raise RankingError(f"ties must be 'half' or 'davidson', got {ties!r}")
    if ci not in ("sandwich", "hessian", "bootstrap"):
        raise RankingError(f"ci must be 'sandwich', 'hessian' or 'bootstrap', got {ci!r}")
    if int(n_bootstrap) != n_bootstrap or n_bootstrap < 0:
        raise RankingError(f"n_bootstrap must be a non-negative integer, got {n_bootstrap!r}")
    if n_bootstrap and ci != "bootstrap":
        raise RankingError("n_bootstrap applies only to ci='bootstrap'")
    if not (math.isfinite(ridge) and ridge > 0):
        raise RankingError(f"ridge must be a positive finite number, got {ridge!r}")


def fit(
    a: ArrayLike,
    b: ArrayLike,
    outcome: ArrayLike,
    n_items: int,
    *,
    weights: ArrayLike | None = None,
    ties: Ties = "half",
    ci: CiMethod = "sandwich",
    n_bootstrap: int = 0,
    ridge: float = DEFAULT_RIDGE,
    seed: int = 0,
) -> Ratings:
    r"""Fit Bradley-Terry ratings with 95% confidence intervals.

    The rows are first aggregated to unique pairs (:func:`ranking.pairs.aggregate`), then the penalised
    likelihood is maximised by Newton's method (:func:`ranking.newton.newton_fit`): minimise
    ``-loglik(theta, nu) + ridge / 2 * (|theta|^2 + log(nu)^2)``.

    Args:
        a, b: (R,) int item indices of the two sides of each comparison.
        outcome: (R,) float, 1 = ``a`` won, 0 = ``b`` won, 0.5 = tie.
        n_items: number of items (indices lie in ``[0, n_items)``); items without comparisons are unrated.
        weights: (R,) non-negative frequency weights (row multiplicities, e.g. the count of a
            ``GROUP BY a, b, outcome`` row, inverse-propensity weights from :class:`ranking.PairSampler`,
            or the output of :func:`ranking.cap_influence`); default 1 per row.
        ties: "half" counts a tie as half a win for each side (LMArena); "davidson" fits Davidson's tie model
            and reports ``tie_param`` (nu).
        ci: "sandwich" (default): robust Huber-White intervals from per-cell scores, valid when the model is
            misspecified (e.g. ties counted as half wins, heterogeneous evaluators); "hessian": model-based
            intervals from the penalised Fisher information; "bootstrap": percentile intervals from refits on
            multinomial resamples of the aggregated cell counts (an audit; slower).
        n_bootstrap: bootstrap rounds for ``ci="bootstrap"``; 0 means 100.
        ridge: L2 penalty weight on log-strengths (and on log nu), see :data:`DEFAULT_RIDGE`.
        seed: seed of the bootstrap resampling.

    Returns:
        :class:`Ratings`.

    Raises:
        InvalidComparisons: malformed rows (see :func:`ranking.pairs.check_comparisons`).
        RankingError: invalid options.
        ConvergenceError: Newton's method failed to converge (not expected with ``ridge > 0``).
    """
    check_options(ties, ci, n_bootstrap, ridge)
    table = aggregate(a, b, outcome, n_items, weights)
    return fit_table(table, ties=ties, ci=ci, n_bootstrap=n_bootstrap, ridge=ridge, seed=seed)


def fit_table(
    table: PairTable,
    *,
    ties: Ties = "half",
    ci: CiMethod = "sandwich",
    n_bootstrap: int = 0,
    ridge: float = DEFAULT_RIDGE,
    seed: int = 0,
) -> Ratings:
    """:func:`fit` on already aggregated comparisons."""
    check_options(ties, ci, n_bootstrap, ridge)
    solution = newton_fit(table, ties=ties, ridge=ridge)
    scores = theta_to_score(solution.theta)
    if ci == "bootstrap":
        rounds = n_bootstrap or DEFAULT_BOOTSTRAP_ROUNDS
        replicates = theta_to_score(
            bootstrap_thetas(table, solution, ties=ties, ridge=ridge, rounds=rounds, seed=seed)
        )
        ci_low, ci_high = np.percentile(replicates, [2.5, 97.5], axis=0)
        method_ci = f"bootstrap({rounds})"
    else:
        variance = covariance(table, solution, ridge=ridge, kind=ci)
        half_width = _Z95 * ELO_SCALE * np.sqrt(np.maximum(variance, 0.0))
        ci_low, ci_high = scores - half_width, scores + half_width
        method_ci = ci
    n_comparisons = table.counts.sum(axis=1)
    unrated = n_comparisons == 0
    ci_low = np.where(unrated, -np.inf, ci_low)
    ci_high = np.where(unrated, np.inf, ci_high)
    with np.errstate(invalid="ignore", divide="ignore"):
        win_rate = np.where(unrated, np.nan, table.wins.sum(axis=1) / n_comparisons)
        win_fraction = np.where(table.counts > 0, table.wins / table.counts, np.nan)
    return Ratings(
        scores=scores,
        ci_low=ci_low,
        ci_high=ci_high,
        rank=rank_from_intervals(ci_low, ci_high),
        n_comparisons=n_comparisons,
        win_rate=win_rate,
        wins=table.wins,
        counts=table.counts,
        win_fraction=win_fraction,
        tie_param=None if solution.phi is None else math.exp(solution.phi),
        method=f"bradley-terry(ties={ties}, ci={method_ci}, ridge={ridge:g})",
        n_total=table.n_total,
    )


def rank_from_intervals(ci_low: FloatArray, ci_high: FloatArray) -> IntArray:
    """(n,) int64: 1 + the number of items whose ``ci_low`` exceeds this item's ``ci_high``."""
    sorted_low = np.sort(ci_low)
    below_or_equal = np.searchsorted(sorted_low, ci_high, side="right")
    return (1 + ci_low.size - below_or_equal).astype(np.int64)


def bootstrap_thetas(
    table: PairTable, solution: Solution, *, ties: Ties, ridge: float, rounds: int, seed: int
) -> FloatArray:
    """(rounds, n_items) log-strengths refitted on multinomial resamples of the aggregated cells.

    Each round draws ``round(n_total)`` comparisons from the (pair, outcome) cells with probability
    proportional to their weight, rescaled to the original total weight, and refits warm-started from
    ``solution``.
    """
    rng = np.random.default_rng(seed)
    cells = np.concatenate([table.wins_i, table.wins_j, table.ties])
    total = float(cells.sum())
    out = np.tile(solution.theta, (rounds, 1))
    if total == 0.0:
        return out
    n_draws = max(1, round(total))
    probabilities = cells / total
    e = table.n_pairs
    for r in range(rounds):
        resampled = rng.multinomial(n_draws, probabilities) * (total / n_draws)
        replicate = table.with_cells(resampled[:e], resampled[e : 2 * e], resampled[2 * e :])
        out[r] = newton_fit(replicate, ties=ties, ridge=ridge, theta0=solution.theta, phi0=solution.phi).theta
    return out


def fit_groups(
    a: ArrayLike,
    b: ArrayLike,
    outcome: ArrayLike,
    n_items: int,
    groups: ArrayLike,
    *,
    min_comparisons: float = 30.0,
    **fit_kwargs: Any,
) -> dict[Hashable, Ratings]:
    """Separate ratings per group (task category, lab subset, ...), where the data allow.

    Args:
        a, b, outcome, n_items: as for :func:`fit`.
        groups: (R,) group label per row (any sortable values, e.g. strings or ints).
        min_comparisons: groups with less total weight than this are skipped.
        **fit_kwargs: passed to :func:`fit`; ``weights`` (R,) is split by group with the rows.

    Returns:
        ``{label: Ratings}`` for every group with at least ``min_comparisons`` weight, in label order.
    """
    labels = np.asarray(groups)
    outcome_arr = np.asarray(outcome)
    if labels.shape != outcome_arr.shape:
        raise RankingError(f"groups has shape {labels.shape}, expected {outcome_arr.shape}")
    a_arr, b_arr = np.asarray(a), np.asarray(b)
    weights = fit_kwargs.pop("weights", None)
    w = np.ones(labels.size) if weights is None else np.asarray(weights, dtype=np.float64)
    unique, inverse = np.unique(labels, return_inverse=True)
    totals = np.bincount(inverse, weights=w, minlength=unique.size)
    result: dict[Hashable, Ratings] = {}
    for index, label in enumerate(unique):
        if totals[index] < min_comparisons:
            continue
        rows = inverse == index
        key = label.item() if isinstance(label, np.generic) else label
        result[key] = fit(a_arr[rows], b_arr[rows], outcome_arr[rows], n_items, weights=w[rows], **fit_kwargs)
    return result
