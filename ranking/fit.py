r"""Bradley-Terry ratings with 95% intervals and rank bands: :func:`fit` and :func:`fit_groups`.

Model: item ``i`` has log-strength :math:`\theta_i`; in a comparison of ``a`` (slot A, ran first) with ``b``,
``a`` wins with probability :math:`\sigma(\theta_a - \theta_b + h)` given the game is decisive, where ``h`` is
the order effect (the log-odds advantage of running first; fitted whenever the design identifies it, i.e.
both orders occur, and removed from the scores); ties follow :mod:`ranking.likelihood` (Davidson's model by
default, which keeps these odds for decisive outcomes).

Small samples and adaptive designs. The strengths get an exchangeable normal prior
:math:`\theta_i \sim N(0, \tau^2)` whose scale is estimated from the data (empirical Bayes, type-II maximum
likelihood by MacKay's fixed point :math:`\tau^2 = |\hat\theta|^2 / \gamma`, :math:`\gamma = n - \tau^{-2}
\operatorname{tr}\Sigma`, the effective number of parameters). Intervals are the Laplace approximation of the
posterior, :math:`\Sigma = (H + I / \tau^2)^{-1}` (``ci="hessian"``, the default). The posterior depends on the
data only through the likelihood, and a design that chooses the next pair from past outcomes (the arena's
:class:`ranking.PairSampler`) multiplies the likelihood by factors free of :math:`\theta`, so these intervals
need no propensity weights: adaptivity cannot bias them, whereas it does bias the small-sample maximum
likelihood estimate and its sandwich. The prior also keeps one lucky win from making an item significantly best:
a single comparison moves the posterior little.

Rank bands. ``rank_low``/``rank_high`` bound each item's rank with family-wise error 5% over the whole board:
every pair of items in one connected component of the comparison graph is tested
(:math:`z = |\hat\theta_i - \hat\theta_j| / \sqrt{\Sigma_{ii} + \Sigma_{jj} - 2\Sigma_{ij}}`, two-sided) and
Holm's step-down procedure, valid under any dependence, decides which differences are significant. Then
``rank_low = 1 + #(items significantly above)`` and ``rank_high = size of the component - #(items
significantly below)``. Items in different components are never compared (each component is a ``group`` with
its own ranks); items without comparisons are unrated (``rank == 0``, score nan, group -1).

Scores are reported on an Elo-like scale, ``1000 + 400 * log10(odds)``, i.e. ``1000 + 400 / ln(10) * theta``:
100 points apart means odds of 10**0.25 = 1.78 to 1, 400 points means 10 to 1. Rated scores average 1000
unless an ``anchor`` is given.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.sparse
from numpy.typing import ArrayLike
from scipy.sparse.csgraph import breadth_first_order, connected_components
from scipy.stats import norm

from ranking.errors import RankingError
from ranking.newton import (
    DIRECT_SOLVE_MAX,
    STEP_TOL,
    Solution,
    Ties,
    lifted_inverse,
    lifted_inverse_logdet,
    newton_fit,
    parameter_covariance,
    performance_start,
)
from ranking.pairs import FloatArray, IntArray, PairTable, check_comparisons, outcome_cells, table_from_cells

CiMethod = Literal["sandwich", "hessian", "bootstrap"]
OrderMode = Literal["auto", "ignore"]

DEFAULT_RIDGE = 0.01
"""The fixed L2 penalty of ``ridge=`` fits and of the sampler: a N(0, 1/0.01) = N(0, 10**2) prior, i.e. a
prior standard deviation of 10 nats (about 1,700 Elo points). Negligible once an item has a few comparisons,
yet it makes the fit unique and finite for undefeated or winless items and on disconnected graphs."""

PRIOR_SD_RANGE = (0.02, 10.0)
"""Bounds of the empirical-Bayes prior standard deviation, in nats (0.02 nats = 3.5 Elo points)."""

EB_TOLERANCE = 1e-2
"""Convergence of the empirical-Bayes fixed point: relative change of the prior precision. Its effect on
the scores is of order ``tolerance * ridge / information``, far below their standard errors."""

EB_MAX_ITER = 30

PILOT_STEP_TOL = 1e-2
"""Newton convergence of the first (pilot) fit of the empirical-Bayes iteration, nats; every later fit, and so
the returned one, converges to :data:`ranking.newton.STEP_TOL`."""

TAU_GRID_STEP = 0.1
"""Grid step of the integration over the prior scale, in log tau."""

TAU_GRID_DROP = 7.0
"""The grid extends until the log posterior of log tau is this far below its maximum (a weight of 1e-3)."""

MAX_TAU_GRID = 60

TAU_PRIOR_POWER = 2.0
"""Hyperprior ``p(tau) ∝ tau**2`` on the prior scale (on [0.02, 10] nats). Chosen by simulation
(``benchmarks.coverage``): it leans toward less shrinkage where the data say little about ``tau``. With
``p(tau)`` uniform, intervals at 10 comparisons per item covered 0.91 (extreme items shrunk past their
truth); with this prior 0.94-0.95, while conditions where the data pin ``tau`` down are unaffected."""

FAMILY_ALPHA = 0.05
"""Family-wise error rate of the rank bands over the whole board."""

ELO_SCALE = 400.0 / math.log(10.0)
"""Score points per nat of log-strength."""

BASE_SCORE = 1000.0
DEFAULT_BOOTSTRAP_ROUNDS = 100
_Z95 = float(norm.ppf(0.975))


@dataclass(frozen=True, eq=False)
class Ratings:
    """A fitted leaderboard. Arrays are indexed by item.

    Attributes:
        scores: (n,) float64, Elo-like scale (1000 + 400 * log10 odds), rated items average 1000 (or the
            anchor's score is fixed); nan for unrated items (no comparisons).
        ci_low, ci_high: (n,) float64, 95% interval of each score; -inf / +inf for unrated items.
        rank: (n,) int64, ``rank_low`` (the best rank the data allow); 0 for unrated items.
        rank_low, rank_high: (n,) int64, 95% rank band within the item's group, family-wise over the board
            (see the module docstring); 0 for unrated items.
        group: (n,) int64, connected component of the comparison graph (0 = the largest); -1 for unrated
            items. Items in different groups are not comparable.
        n_comparisons: (n,) float64, total comparison weight per item.
        win_rate: (n,) float64, wins / comparisons with ties counted half; nan without comparisons.
        wins: (n, n) float64, wins[i, j] = wins of i over j, ties counted half.
        counts: (n, n) float64, symmetric, comparisons between i and j.
        win_fraction: (n, n) float64, wins / counts; nan where no games.
        tie_param: Davidson's tie parameter nu (P(tie) = nu / (2 + nu) at equal strengths); None for "half".
        order_effect: log-odds advantage of slot A (ran first), nats; nan when not estimated (one order only,
            or ``order="ignore"``).
        order_effect_ci: 95% interval of ``order_effect``, nats; (nan, nan) when not estimated.
        prior_sd: standard deviation of the normal prior on log-strengths, nats (estimated, or 1/sqrt(ridge)).
        covariance: (n, n) float64, covariance of the log-strengths, nats^2 (the rank bands' input): a
            difference ``i - j`` has variance ``C[i, i] + C[j, j] - 2 C[i, j]``. Not in :meth:`to_dict`.
        method: description of model, tie handling, order effect, interval method and prior.
        n_total: total comparison weight.
    """

    scores: FloatArray
    ci_low: FloatArray
    ci_high: FloatArray
    rank: IntArray
    rank_low: IntArray
    rank_high: IntArray
    group: IntArray
    n_comparisons: FloatArray
    win_rate: FloatArray
    wins: FloatArray
    counts: FloatArray
    win_fraction: FloatArray
    tie_param: float | None
    order_effect: float
    order_effect_ci: tuple[float, float]
    prior_sd: float
    covariance: FloatArray
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
            "rank_low": [int(r) for r in self.rank_low],
            "rank_high": [int(r) for r in self.rank_high],
            "group": [int(g) for g in self.group],
            "n_comparisons": _json_list(self.n_comparisons),
            "win_rate": _json_list(self.win_rate),
            "wins": _json_list(self.wins),
            "counts": _json_list(self.counts),
            "win_fraction": _json_list(self.win_fraction),
            "tie_param": self.tie_param,
            "order_effect": _json_float(self.order_effect),
            "order_effect_ci": [_json_float(v) for v in self.order_effect_ci],
            "prior_sd": self.prior_sd,
            "method": self.method,
            "n_total": self.n_total,
        }


def _json_float(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _json_list(values: FloatArray) -> list[Any]:
    as_object = values.astype(object)
    as_object[~np.isfinite(values)] = None
    return as_object.tolist()


def theta_to_score(theta: FloatArray) -> FloatArray:
    """Log-strengths (nats) to the Elo-like scale."""
    return BASE_SCORE + ELO_SCALE * theta


def score_to_theta(scores: FloatArray) -> FloatArray:
    """Elo-like scores to log-strengths (nats), centred to mean zero; unrated (nan) items at the prior mean."""
    theta = (np.asarray(scores, dtype=np.float64) - BASE_SCORE) / ELO_SCALE
    theta = np.where(np.isfinite(theta), theta, 0.0)
    return theta - theta.mean()


def check_options(ties: str, ci: str, n_bootstrap: int, ridge: float | str, order: str = "auto") -> None:
    """Validate fit options.

    Raises:
        RankingError: unknown ``ties`` / ``ci`` / ``order``, a negative ``n_bootstrap`` (or one given without
            ``ci="bootstrap"``), or a ridge that is neither "auto" nor a positive finite number.
    """
    if ties not in ("half", "davidson"):
        raise RankingError(f"ties must be 'half' or 'davidson', got {ties!r}")
    if ci not in ("sandwich", "hessian", "bootstrap"):
        raise RankingError(f"ci must be 'sandwich', 'hessian' or 'bootstrap', got {ci!r}")
    if order not in ("auto", "ignore"):
        raise RankingError(f"order must be 'auto' or 'ignore', got {order!r}")
    if int(n_bootstrap) != n_bootstrap or n_bootstrap < 0:
        raise RankingError(f"n_bootstrap must be a non-negative integer, got {n_bootstrap!r}")
    if n_bootstrap and ci != "bootstrap":
        raise RankingError("n_bootstrap applies only to ci='bootstrap'")
    if ridge != "auto" and not (isinstance(ridge, int | float) and math.isfinite(ridge) and ridge > 0):
        raise RankingError(f"ridge must be 'auto' or a positive finite number, got {ridge!r}")


def fit(
    a: ArrayLike,
    b: ArrayLike,
    outcome: ArrayLike,
    n_items: int,
    *,
    weights: ArrayLike | None = None,
    ties: Ties = "davidson",
    ci: CiMethod = "hessian",
    ridge: float | Literal["auto"] = "auto",
    order: OrderMode = "auto",
    anchor: int | None = None,
    n_bootstrap: int = 0,
    seed: int = 0,
) -> Ratings:
    r"""Fit Bradley-Terry ratings with 95% intervals, rank bands and the order effect.

    The rows are aggregated per (slot A, slot B) pair (:func:`ranking.pairs.aggregate`), then
    ``-loglik(theta, nu, h) + |theta|^2 / (2 tau^2) + 0.005 * (log(nu)^2 + h^2)`` is minimised by Newton's
    method (:func:`ranking.newton.newton_fit`), with ``tau`` estimated by empirical Bayes (module docstring).

    Args:
        a, b: (R,) int item indices: ``a`` ran first (slot A), ``b`` second.
        outcome: (R,) float, 1 = ``a`` won, 0 = ``b`` won, 0.5 = tie.
        n_items: number of items (indices lie in ``[0, n_items)``); items without comparisons are unrated.
        weights: (R,) non-negative frequency weights (row multiplicities, e.g. the count of a
            ``GROUP BY a, b, outcome`` row, or the output of :func:`ranking.cap_influence`); default 1 per row.
            Adaptive designs need no weights (see the module docstring).
        ties: "davidson" (default) fits Davidson's tie model and reports ``tie_param`` (nu); "half" counts a
            tie as half a win for each side (LMArena), which compresses the scale when ties are common.
        ci: "hessian" (default): Laplace approximation of the posterior (inverse penalised Fisher
            information); "sandwich": robust Huber-White intervals from per-cell scores; "bootstrap":
            percentile intervals from refits on multinomial resamples of the aggregated cells (an audit).
        ridge: "auto" (default): empirical-Bayes prior precision ``1 / tau^2``; or a fixed L2 penalty weight
            on the log-strengths (see :data:`DEFAULT_RIDGE`).
        order: "auto" (default) fits the order effect whenever the design identifies it; "ignore" never.
        anchor: item whose score is pinned at 1000 (in its group), so adding or retiring other items does not
            shift the scale; default: rated items of each group average 1000.
        n_bootstrap: bootstrap rounds for ``ci="bootstrap"``; 0 means 100.
        seed: seed of the bootstrap resampling.

    Returns:
        :class:`Ratings`.

    Raises:
        InvalidComparisons: malformed rows (see :func:`ranking.pairs.check_comparisons`).
        RankingError: invalid options, or an anchor outside ``[0, n_items)``.
        ConvergenceError: Newton's method failed to converge (not expected with a prior).
    """
    check_options(ties, ci, n_bootstrap, ridge, order)
    a_arr, b_arr, y, w = check_comparisons(a, b, outcome, n_items, weights)
    cells = outcome_cells(a_arr, b_arr, y, w, int(n_items))
    table = table_from_cells(cells, oriented=order == "auto")
    return fit_table(
        table, ties=ties, ci=ci, n_bootstrap=n_bootstrap, ridge=ridge, order=order, anchor=anchor, seed=seed
    )


def order_identified(table: PairTable) -> bool:
    """Whether the oriented comparisons identify an order effect ``h``.

    ``h`` is confounded with the strengths exactly when some potential ``phi`` has ``phi_a - phi_b = 1`` on
    every compared (slot A, slot B) pair, i.e. the graph can be layered so that slot A is always one layer
    above slot B. That fails as soon as one pair was compared in both orders, or around any cycle whose
    orientations do not cancel; a breadth-first layering per component checks it in O(E).
    """
    if not table.oriented or table.n_pairs == 0:
        return False
    n = table.n_items
    slot_a_above = np.zeros((n, n), dtype=np.int8)
    slot_a_above[table.i, table.j] = 1
    if np.any(slot_a_above & slot_a_above.T):
        return True
    graph = scipy.sparse.csr_matrix((np.ones(table.n_pairs), (table.i, table.j)), shape=(n, n))
    level = np.full(n, np.nan)
    for root in np.unique(table.i):
        if not np.isnan(level[root]):
            continue
        nodes, parent = breadth_first_order(graph, int(root), directed=False, return_predecessors=True)
        level[root] = 0.0
        for node in nodes[1:]:
            up = parent[node]
            level[node] = level[up] - 1.0 if slot_a_above[up, node] else level[up] + 1.0
    return bool(np.any(level[table.i] - level[table.j] != 1.0))


def fit_table(
    table: PairTable,
    *,
    ties: Ties = "davidson",
    ci: CiMethod = "hessian",
    n_bootstrap: int = 0,
    ridge: float | Literal["auto"] = "auto",
    order: OrderMode = "auto",
    anchor: int | None = None,
    seed: int = 0,
) -> Ratings:
    """:func:`fit` on already aggregated comparisons (oriented tables allow the order effect)."""
    check_options(ties, ci, n_bootstrap, ridge, order)
    n = table.n_items
    if anchor is not None and not (int(anchor) == anchor and 0 <= anchor < n):
        raise RankingError(f"anchor must be an item index in [0, {n}), got {anchor!r}")
    with_order = order == "auto" and order_identified(table)
    posterior: Posterior | None = None
    if ridge == "auto":
        posterior = hierarchical_fit(table, ties=ties, order=with_order)
        solution, penalty, prior_sd = posterior.mode, posterior.mode_ridge, posterior.prior_sd
        prior = f"normal(sd={prior_sd:.3g} nats, hierarchical)"
    else:
        penalty = float(ridge)
        solution = newton_fit(table, ties=ties, ridge=penalty, order=with_order)
        prior_sd = 1.0 / math.sqrt(penalty)
        prior = f"ridge={penalty:g}"
    n_comparisons = table.counts.sum(axis=1)
    rated = n_comparisons > 0
    group = comparison_groups(table.counts, rated)
    references = _references(group, anchor)
    if posterior is not None and ci == "hessian":
        params, full = posterior.params, posterior.covariance
    else:
        params = np.concatenate([solution.theta, _extras(solution)])
        full = None
    theta_mean = params[:n]
    theta = _contrasts(theta_mean, None, references)[0]
    order_ci = (math.nan, math.nan)
    if ci == "bootstrap":
        rounds = n_bootstrap or DEFAULT_BOOTSTRAP_ROUNDS
        thetas, orders = bootstrap_thetas(
            table, solution, ties=ties, ridge=penalty, rounds=rounds, seed=seed, order=with_order
        )
        contrasts = _contrasts(thetas, None, references)[0]
        ci_low, ci_high = theta_to_score(np.percentile(contrasts, [2.5, 97.5], axis=0))
        theta_cov = np.cov(thetas, rowvar=False).reshape(n, n)
        if with_order:
            order_ci = (float(np.percentile(orders, 2.5)), float(np.percentile(orders, 97.5)))
        method_ci = f"bootstrap({rounds})"
    else:
        if full is None:
            full = parameter_covariance(table, solution, kind=ci, inverse=lifted_inverse(solution, n))
        theta_cov = full[:n, :n]
        contrast_cov = _contrasts(theta_mean, theta_cov, references)[1]
        half_width = _Z95 * ELO_SCALE * np.sqrt(np.maximum(contrast_cov, 0.0))
        ci_low, ci_high = theta_to_score(theta) - half_width, theta_to_score(theta) + half_width
        if with_order:
            h_sd = math.sqrt(max(float(full[-1, -1]), 0.0))
            order_ci = (float(params[-1]) - _Z95 * h_sd, float(params[-1]) + _Z95 * h_sd)
        method_ci = ci
    rank_low, rank_high = rank_bands(theta_mean, theta_cov, group)
    scores = np.where(rated, theta_to_score(theta), np.nan)
    ci_low = np.where(rated, ci_low, -np.inf)
    ci_high = np.where(rated, ci_high, np.inf)
    with np.errstate(invalid="ignore", divide="ignore"):
        win_rate = np.where(rated, table.wins.sum(axis=1) / n_comparisons, np.nan)
        win_fraction = np.where(table.counts > 0, table.wins / table.counts, np.nan)
    order_text = "fitted" if with_order else ("not identified" if order == "auto" else "ignored")
    return Ratings(
        scores=scores,
        ci_low=ci_low,
        ci_high=ci_high,
        rank=rank_low,
        rank_low=rank_low,
        rank_high=rank_high,
        group=group,
        n_comparisons=n_comparisons,
        win_rate=win_rate,
        wins=table.wins,
        counts=table.counts,
        win_fraction=win_fraction,
        tie_param=None if solution.phi is None else math.exp(float(params[n])),
        order_effect=float(params[-1]) if with_order else math.nan,
        order_effect_ci=order_ci,
        prior_sd=prior_sd,
        covariance=theta_cov,
        method=f"bradley-terry(ties={ties}, order={order_text}, ci={method_ci}, prior={prior})",
        n_total=table.n_total,
    )


@dataclass(frozen=True, eq=False)
class Posterior:
    """The hierarchical fit's approximate posterior (see :func:`hierarchical_fit`).

    Attributes:
        params: (n + k,) posterior mean of ``(theta, phi?, h?)``, ``theta`` with mean zero.
        covariance: (n + k, n + k) posterior covariance, ``theta`` block on the sum-zero subspace.
        prior_sd: posterior mean of ``tau``, nats.
        mode: the fit at the empirical-Bayes ``tau`` and its prior precision ``mode_ridge``.
    """

    params: FloatArray
    covariance: FloatArray
    prior_sd: float
    mode: Solution
    mode_ridge: float


def _extras(solution: Solution) -> list[float]:
    return [v for v in (solution.phi, solution.order) if v is not None]


def hierarchical_fit(table: PairTable, *, ties: Ties, order: bool) -> Posterior:
    r"""Posterior of the strengths under :math:`\theta_i \sim N(0, \tau^2)` with ``tau`` integrated out.

    1. Empirical Bayes: MacKay's fixed point for the Laplace-approximated evidence (exact traces up to
       :data:`ranking.newton.DIRECT_SOLVE_MAX` parameters; beyond, a Jacobi estimate, and the fixed point is
       iterated inside one Newton fit), with
       :math:`\Sigma = (H + \lambda I)^{-1}` at the penalised optimum, :math:`\gamma = n - \lambda
       \operatorname{tr}\Sigma` (the number of well-measured directions; an unrated item contributes 0) and
       :math:`1/\lambda \leftarrow |\hat\theta|^2 / \gamma`, started from the spread of
       :func:`ranking.newton.performance_start`, with warm starts.
    2. ``tau`` is then integrated out on a grid of step :data:`TAU_GRID_STEP` in ``log tau`` around that
       mode, walking outwards until the log posterior falls :data:`TAU_GRID_DROP` below its maximum (one or
       two points when the data pin ``tau`` down, a dozen at 10 comparisons per item): at each point
       the Laplace evidence :math:`\log p(y \mid \tau) \approx \ell(\hat\theta) - \lambda |\hat\theta|^2 / 2
       + (n/2) \log\lambda - \tfrac12 \log\det(H + \lambda I)` times the hyperprior
       :data:`TAU_PRIOR_POWER` weighs a normal posterior, and the mixture's mean and covariance are
       returned. Plugging in the estimated ``tau`` alone makes intervals too short at small samples (0.86
       instead of 0.95 at 10 comparisons per item): where ``tau`` comes out low, shrinkage pulls extreme
       items past their truth.

    ``tau`` is kept in :data:`PRIOR_SD_RANGE`. Deterministic: the same table gives the same result.
    """
    n = table.n_items
    low, high = 1.0 / PRIOR_SD_RANGE[1] ** 2, 1.0 / PRIOR_SD_RANGE[0] ** 2
    # start from the spread of the opponent-adjusted win log-odds (close to the fit's once data abound)
    start = performance_start(table)
    rated = table.counts.sum(axis=1) > 0
    start_spread = float(np.sum((start[rated] - start[rated].mean()) ** 2)) if rated.sum() > 1 else 0.0
    lam = min(max((rated.sum() - 1) / start_spread, low), high) if start_spread > 0 else 1.0
    solution: Solution | None = None

    def refit(ridge: float, start: Solution | None, pilot: bool = False) -> Solution:
        return newton_fit(
            table,
            ties=ties,
            ridge=ridge,
            order=order,
            theta0=None if start is None else start.theta,
            phi0=None if start is None else start.phi,
            order0=0.0 if start is None or start.order is None else start.order,
            # the pilot fit only sets the next prior precision: stopping it early saves Newton iterations
            step_tol=PILOT_STEP_TOL if pilot else STEP_TOL,
        )

    n_components = np.unique(comparison_groups(table.counts, rated)).size
    if n + (ties == "davidson") + order > DIRECT_SOLVE_MAX:
        # large boards: an O(n) trace estimate, so the fixed point runs inside one Newton fit

        def proposal_of(theta: FloatArray, diagonal: FloatArray, ridge: float) -> float:
            gamma = _gamma_jacobi(diagonal, ridge, n_components)
            spread = float(np.dot(theta, theta))
            return min(max(gamma / spread, low), high) if spread > 0 and gamma > 0 else high

        solution = newton_fit(
            table, ties=ties, ridge=lam, order=order, ridge_update=proposal_of, ridge_tol=EB_TOLERANCE
        )
        lam = solution.ridge
        gamma = _gamma_jacobi(solution.hessian.diagonal()[:n], lam, n_components)
    else:
        for iteration in range(EB_MAX_ITER):
            solution = refit(lam, solution, pilot=iteration == 0)
            inverse, _ = lifted_inverse_logdet(solution, n)
            lift = float(np.mean(solution.hessian.diagonal()[:n]))
            trace = float(np.trace(inverse[:n, :n])) - 1.0 / (lam + lift) + 1.0 / lam
            gamma = n - lam * trace
            spread = float(np.dot(solution.theta, solution.theta))
            proposal = gamma / spread if spread > 0 and gamma > 0 else high
            proposal = min(max(proposal, low), high)
            if abs(proposal - lam) <= EB_TOLERANCE * lam:
                break
            lam = proposal
        assert solution is not None
        if iteration == 0:  # the pilot already agreed with its prior: converge it fully
            solution = refit(lam, solution)
    mode, mode_ridge = solution, lam
    if gamma > 0.5 / (TAU_GRID_STEP / 2) ** 2:
        # log tau is known to within TAU_GRID_STEP / 2 (posterior sd about 1 / sqrt(2 gamma)): the mixture
        # over tau would equal the mode's posterior to second order
        params = np.concatenate([mode.theta, _extras(mode)])
        cov = parameter_covariance(table, mode, kind="hessian", inverse=lifted_inverse(mode, n))
        return Posterior(params=params, covariance=cov, prior_sd=lam**-0.5, mode=mode, mode_ridge=lam)

    points: dict[int, tuple[float, FloatArray, FloatArray, float]] = {}
    centre = -0.5 * math.log(lam)  # log tau
    lowest, highest = math.log(PRIOR_SD_RANGE[0]), math.log(PRIOR_SD_RANGE[1])

    def evaluate(step: int, start: Solution) -> Solution:
        log_tau = min(max(centre + step * TAU_GRID_STEP, lowest), highest)
        ridge = math.exp(-2.0 * log_tau)
        fitted = refit(ridge, start)
        inverse, logdet = lifted_inverse_logdet(fitted, n)
        penalty = 0.5 * ridge * float(np.dot(fitted.theta, fitted.theta))
        log_evidence = -fitted.terms.objective - penalty + 0.5 * n * math.log(ridge) - 0.5 * logdet
        log_post = log_evidence + (TAU_PRIOR_POWER + 1) * log_tau
        params = np.concatenate([fitted.theta, _extras(fitted)])
        cov = parameter_covariance(table, fitted, kind="hessian", inverse=inverse)
        points[step] = (log_post, params, cov, math.exp(log_tau))
        return fitted

    evaluate(0, mode)
    for direction in (-1, 1):
        start, step = mode, 0
        while abs(step) < MAX_TAU_GRID:
            step += direction
            log_tau = centre + step * TAU_GRID_STEP
            if not lowest <= log_tau <= highest:
                break
            start = evaluate(step, start)
            if points[step][0] < max(p[0] for p in points.values()) - TAU_GRID_DROP:
                break
    log_posts = np.array([p[0] for p in points.values()])
    weights = np.exp(log_posts - log_posts.max())
    weights /= weights.sum()
    mean = sum(w * p[1] for w, p in zip(weights, points.values(), strict=True))
    second = sum(
        w * (p[2] + np.outer(p[1] - mean, p[1] - mean)) for w, p in zip(weights, points.values(), strict=True)
    )
    prior_sd = float(sum(w * p[3] for w, p in zip(weights, points.values(), strict=True)))
    return Posterior(params=mean, covariance=second, prior_sd=prior_sd, mode=mode, mode_ridge=mode_ridge)


def _gamma_jacobi(diagonal: FloatArray, ridge: float, n_components: int) -> float:
    """Effective number of parameters ``n - ridge tr(H^-1)`` with the Jacobi estimate of the trace (an O(n)
    lower bound, close on the dense graphs of large boards) plus each rated component's mean beyond the
    first, which only the prior measures."""
    return float(diagonal.size - ridge * float(np.sum(1.0 / diagonal)) - (n_components - 1))


def comparison_groups(counts: FloatArray, rated: np.ndarray) -> IntArray:
    """(n,) connected component of each rated item in the comparison graph, 0 = the largest (ties broken by
    the smallest member); -1 for unrated items."""
    _, labels = connected_components(scipy.sparse.csr_matrix(counts > 0), directed=False)
    group = np.full(counts.shape[0], -1, dtype=np.int64)
    components = [np.flatnonzero((labels == c) & rated) for c in np.unique(labels[rated])]
    components.sort(key=lambda members: (-members.size, members[0]))
    for index, members in enumerate(components):
        group[members] = index
    return group


def _references(group: IntArray, anchor: int | None) -> list[tuple[IntArray, FloatArray]]:
    """Per rated group: its members and the weights ``w`` of its reference level ``w @ theta[members]``
    (the anchor in the anchor's group, the group mean elsewhere)."""
    out = []
    for g in np.unique(group[group >= 0]):
        members = np.flatnonzero(group == g)
        if anchor is not None and group[anchor] == g:
            weights = (members == anchor).astype(np.float64)
        else:
            weights = np.full(members.size, 1.0 / members.size)
        out.append((members, weights))
    return out


def _contrasts(
    theta: FloatArray, theta_cov: FloatArray | None, references: list[tuple[IntArray, FloatArray]]
) -> tuple[FloatArray, FloatArray]:
    """``theta_i`` minus its group's reference level, and (if ``theta_cov``) the variances of those
    contrasts, ``C_ii - 2 (C w)_i + w' C w`` per group: O(n^2), no n^3 product. ``theta`` may be
    (rounds, n) replicates; unrated items get 0."""
    out = np.zeros_like(theta)
    variance = np.zeros(theta.shape[-1])
    for members, weights in references:
        out[..., members] = theta[..., members] - (theta[..., members] @ weights)[..., None]
        if theta_cov is not None:
            block = theta_cov[np.ix_(members, members)]
            cross = block @ weights
            variance[members] = np.diag(block) - 2.0 * cross + weights @ cross
    return out, variance


def rank_bands(
    theta: FloatArray, theta_cov: FloatArray, group: IntArray, alpha: float = FAMILY_ALPHA
) -> tuple[IntArray, IntArray]:
    """95% rank bands with family-wise error ``alpha`` over all pairs of the board (Holm's step-down).

    Args:
        theta: (n,) log-strengths.
        theta_cov: (n, n) their covariance.
        group: (n,) :func:`comparison_groups`; only pairs within a group are tested.

    Returns:
        ``(rank_low, rank_high)``, (n,) int64 each, within the item's group; 0 for unrated items.
    """
    n = theta.size
    i, j = np.triu_indices(n, 1)
    same = (group[i] == group[j]) & (group[i] >= 0)
    i, j = i[same], j[same]
    variance = theta_cov[i, i] + theta_cov[j, j] - 2.0 * theta_cov[i, j]
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.abs(theta[i] - theta[j]) / np.sqrt(np.maximum(variance, 1e-300))
    # Holm without sorting: after r rejections (the r largest z) the next threshold is alpha / (m - r), and
    # every z above it passes its own, laxer, Holm threshold too; iterate to the fixed point
    m = z.size
    rejected = np.zeros(m, dtype=bool)
    n_rejected = 0
    while n_rejected < m:
        now = z >= float(norm.isf(alpha / (2.0 * (m - n_rejected))))
        count = int(np.count_nonzero(now))
        if count == n_rejected:
            break
        rejected, n_rejected = now, count
    significant = np.flatnonzero(rejected)
    i_above = theta[i[significant]] > theta[j[significant]]
    winners = np.where(i_above, i[significant], j[significant])
    losers = np.where(i_above, j[significant], i[significant])
    above = np.bincount(losers, minlength=n)
    below = np.bincount(winners, minlength=n)
    size = np.bincount(group[group >= 0], minlength=max(int(group.max()) + 1, 1))
    rated = group >= 0
    rank_low = np.where(rated, 1 + above, 0).astype(np.int64)
    rank_high = np.where(rated, size[np.maximum(group, 0)] - below, 0).astype(np.int64)
    return rank_low, rank_high


def bootstrap_thetas(
    table: PairTable,
    solution: Solution,
    *,
    ties: Ties,
    ridge: float,
    rounds: int,
    seed: int,
    order: bool = False,
) -> tuple[FloatArray, FloatArray]:
    """(rounds, n_items) log-strengths and (rounds,) order effects refitted on multinomial resamples of the
    aggregated cells (order effects are 0 when not fitted).

    Each round draws ``round(n_total)`` comparisons from the (pair, outcome) cells with probability
    proportional to their weight, rescaled to the original total weight, and refits warm-started from
    ``solution`` with the same prior precision ``ridge``.
    """
    rng = np.random.default_rng(seed)
    cells = np.concatenate([table.wins_i, table.wins_j, table.ties])
    total = float(cells.sum())
    out = np.tile(solution.theta, (rounds, 1))
    orders = np.zeros(rounds)
    if total == 0.0:
        return out, orders
    n_draws = max(1, round(total))
    probabilities = cells / total
    e = table.n_pairs
    for r in range(rounds):
        resampled = rng.multinomial(n_draws, probabilities) * (total / n_draws)
        replicate = table.with_cells(resampled[:e], resampled[e : 2 * e], resampled[2 * e :])
        refit = newton_fit(
            replicate,
            ties=ties,
            ridge=ridge,
            order=order,
            theta0=solution.theta,
            phi0=solution.phi,
            order0=solution.order or 0.0,
        )
        out[r] = refit.theta
        orders[r] = refit.order or 0.0
    return out, orders


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
