r"""Penalised maximum likelihood by Newton's method, and the covariance of the estimate.

The objective is the negative log-likelihood of :mod:`ranking.likelihood` plus
``ridge / 2 * |theta|^2 + nuisance_ridge / 2 * (phi^2 + h^2)``. Its Hessian in ``theta`` is a weighted graph
Laplacian (edge weight = second derivative of the pair's term) plus ``ridge * I``; Davidson's model borders it
with one row and column for ``phi = log(nu)``, and the order effect ``h`` with one more: on an oriented table
(``i`` = slot A, ran first) the pair's difference is :math:`d = \theta_i - \theta_j + h`, so the ``h`` border
is the node sums of the edge curvatures and its corner their total. Because every pair's gradient enters its
two items with opposite signs, the penalised optimum has ``mean(theta) == 0`` and the constant direction is
decoupled from both borders.

Newton steps are solved densely (Cholesky) up to :data:`DIRECT_SOLVE_MAX` parameters and by
Jacobi-preconditioned conjugate gradients beyond; a backtracking (Armijo) line search keeps every step a
descent step, so undefeated items and disconnected graphs converge to the finite penalised optimum.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.linalg
import scipy.sparse
import scipy.sparse.linalg
from scipy.linalg import lapack

from ranking.errors import ConvergenceError
from ranking.likelihood import (
    CellScores,
    EdgeTerms,
    davidson_scores,
    davidson_terms,
    half_scores,
    half_terms,
)
from ranking.pairs import FloatArray, IntArray, PairTable

Ties = Literal["half", "davidson"]

DIRECT_SOLVE_MAX = 400
"""Largest number of parameters for which a Newton step is a dense Cholesky solve; beyond it, CG."""

DENSE_HESSIAN_FRACTION = 0.05
"""CG multiplies by a dense Hessian when more than this fraction of all pairs was compared, else by CSR."""

NUISANCE_RIDGE = 0.01
"""L2 penalty on the nuisance parameters ``phi = log(nu)`` and ``h`` (order effect): a N(0, 10**2) prior in nats,
negligible once a few comparisons exist, whatever the prior on ``theta``."""

SMALL_INVERSE = 512
"""Below this size a covariance inverse solves against the identity instead of calling LAPACK potri."""

STEP_TOL = 1e-5
"""Convergence: largest change of the last Newton step, in nats (1e-5 nats = 0.002 Elo points); quadratic
convergence leaves an error of order STEP_TOL**2 after it."""


@dataclass(frozen=True, eq=False)
class Solution:
    """A penalised maximum-likelihood fit.

    Attributes:
        theta: (n_items,) float64 log-strengths, mean zero.
        phi: log of Davidson's tie parameter, None for ties="half".
        order: the order effect ``h`` in nats (log-odds advantage of slot A), None when not fitted.
        terms: likelihood terms at the solution.
        hessian: the penalised Hessian (dense array or CSR) at the previous iterate, which is closer than
            :data:`STEP_TOL` to the solution; reused by :func:`covariance`.
        n_iter: Newton iterations used.
        ridge: the penalty weight on ``theta`` at the solution (and in ``hessian``).
    """

    theta: FloatArray
    phi: float | None
    order: float | None
    terms: EdgeTerms
    hessian: FloatArray | scipy.sparse.csr_matrix
    n_iter: int
    ridge: float


def edge_terms(
    table: PairTable, theta: FloatArray, phi: float | None, order: float | None = None
) -> EdgeTerms:
    """Likelihood terms at ``theta`` (and ``phi`` for Davidson's model, ``order`` for the order effect)."""
    d = theta[table.i] - theta[table.j] + (order or 0.0)
    return half_terms(table, d) if phi is None else davidson_terms(table, d, phi)


def cell_scores(
    table: PairTable, theta: FloatArray, phi: float | None, order: float | None = None
) -> CellScores:
    """Per-observation scores of each outcome cell at ``theta`` (and ``phi``, ``order``)."""
    d = theta[table.i] - theta[table.j] + (order or 0.0)
    return half_scores(table, d) if phi is None else davidson_scores(table, d, phi)


def _node_sums(i: IntArray, j: IntArray, edge_values: FloatArray, n: int) -> FloatArray:
    """Sum of +value at ``i`` and -value at ``j`` per node: the incidence matrix times ``edge_values``."""
    return np.bincount(i, weights=edge_values, minlength=n) - np.bincount(j, weights=edge_values, minlength=n)


def _border(
    table: PairTable, edge_weights: FloatArray, cross: FloatArray | None, corner: float, order: bool
) -> tuple[list[FloatArray], FloatArray]:
    """Border columns (n,) and corner (k, k) of the extra parameters: ``phi`` (if ``cross``), then ``h``.

    ``corner`` is the ``phi``-``phi`` entry; the ``h`` entries follow from ``d = theta_i - theta_j + h``.
    """
    n = table.n_items
    columns: list[FloatArray] = []
    if cross is not None:
        columns.append(_node_sums(table.i, table.j, cross, n))
    if order:
        columns.append(_node_sums(table.i, table.j, edge_weights, n))
    k = len(columns)
    block = np.zeros((k, k))
    if cross is not None:
        block[0, 0] = corner
    if order:
        block[k - 1, k - 1] = float(edge_weights.sum())
        if cross is not None:
            block[0, 1] = block[1, 0] = float(cross.sum())
    return columns, block


def bordered_laplacian_dense(
    table: PairTable,
    edge_weights: FloatArray,
    shift: float,
    cross: FloatArray | None,
    corner: float,
    order: bool = False,
    extra_shift: float = 0.0,
) -> FloatArray:
    """Dense Laplacian of ``edge_weights`` plus ``shift * I``, bordered by the extra parameters.

    Returns an (n + k, n + k) array: the borders of ``phi`` (when ``cross`` is given, last-but-order index) and
    of the order effect ``h`` (when ``order``), see :func:`_border`; ``extra_shift`` is added to their diagonal.
    Oriented tables may list a pair in both orders; their weights add up.
    """
    n = table.n_items
    columns, block = _border(table, edge_weights, cross, corner, order)
    m = n + len(columns)
    out = np.zeros((m, m))
    off = np.bincount(table.pair_key, weights=edge_weights, minlength=n * n).reshape(n, n)
    out[:n, :n] = -(off + off.T)
    degree = np.bincount(table.i, weights=edge_weights, minlength=n)
    degree += np.bincount(table.j, weights=edge_weights, minlength=n)
    out[np.arange(n), np.arange(n)] = degree + shift
    for k, column in enumerate(columns):
        out[:n, n + k] = column
        out[n + k, :n] = column
    out[n:, n:] = block + extra_shift * np.eye(len(columns))
    return out


class _SparseLaplacian:
    """CSR structure of a (bordered) Laplacian on a fixed edge set, refilled with new values per iteration.

    Pairs listed in both orders appear twice in the structure; CSR products add duplicates up.
    """

    def __init__(self, table: PairTable, n_extra: int) -> None:
        n = table.n_items
        self.n = n
        self.table = table
        self.n_extra = n_extra
        nodes = np.arange(n)
        rows = [table.i, table.j, nodes]
        cols = [table.j, table.i, nodes]
        for k in range(n_extra):
            rows += [nodes, np.full(n, n + k)]
            cols += [np.full(n, n + k), nodes]
        corner_r, corner_c = np.divmod(np.arange(n_extra * n_extra), max(n_extra, 1))
        rows.append(n + corner_r)
        cols.append(n + corner_c)
        row = np.concatenate(rows)
        col = np.concatenate(cols)
        self.order = np.lexsort((col, row))
        self.indices = col[self.order].astype(np.int32)
        size = n + n_extra
        self.indptr = np.concatenate([[0], np.cumsum(np.bincount(row, minlength=size))]).astype(np.int32)
        self.shape = (size, size)

    def matrix(
        self,
        edge_weights: FloatArray,
        shift: float,
        cross: FloatArray | None,
        corner: float,
        order: bool,
        extra_shift: float,
    ) -> scipy.sparse.csr_matrix:
        t = self.table
        degree = np.bincount(t.i, weights=edge_weights, minlength=self.n)
        degree += np.bincount(t.j, weights=edge_weights, minlength=self.n)
        values = [-edge_weights, -edge_weights, degree + shift]
        columns, block = _border(t, edge_weights, cross, corner, order)
        for column in columns:
            values += [column, column]
        values.append((block + extra_shift * np.eye(len(columns))).ravel())
        data = np.concatenate(values)[self.order]
        return scipy.sparse.csr_matrix((data, self.indices, self.indptr), shape=self.shape)


def _gradient(
    table: PairTable,
    terms: EdgeTerms,
    theta: FloatArray,
    phi: float | None,
    order: float | None,
    ridge: float,
    nuisance_ridge: float,
) -> FloatArray:
    g = _node_sums(table.i, table.j, terms.grad_d, table.n_items) + ridge * theta
    extra = []
    if phi is not None:
        extra.append(terms.grad_phi + nuisance_ridge * phi)
    if order is not None:
        extra.append(float(terms.grad_d.sum()) + nuisance_ridge * order)
    return np.append(g, extra) if extra else g


def _objective(
    terms: EdgeTerms,
    theta: FloatArray,
    phi: float | None,
    order: float | None,
    ridge: float,
    nuisance_ridge: float,
) -> float:
    nuisance = (0.0 if phi is None else phi * phi) + (0.0 if order is None else order * order)
    return terms.objective + 0.5 * ridge * float(np.dot(theta, theta)) + 0.5 * nuisance_ridge * nuisance


def initial_phi(table: PairTable) -> float:
    """Moment start for ``log(nu)``: at equal strengths P(tie) = nu / (2 + nu); tie share smoothed by 0.5."""
    share = (table.ties.sum() + 0.5) / (table.n_total + 1.5)
    return float(np.log(2.0 * share / (1.0 - share)))


def performance_start(table: PairTable) -> FloatArray:
    """Starting log-strengths: each item's smoothed win log-odds plus its opponents' average log-odds.

    A "performance rating" that accounts for opponent strength, so adaptive designs (strong items meeting
    strong items) start near the optimum too; it saves two to four Newton iterations over a start at zero.
    """
    played = table.counts.sum(axis=1)
    won = table.wins.sum(axis=1)
    log_odds = np.log((won + 1.0) / (played - won + 1.0))
    opponents = (table.counts @ log_odds) / np.maximum(played, 1e-300)
    return log_odds + opponents


def newton_fit(
    table: PairTable,
    *,
    ties: Ties,
    ridge: float,
    order: bool = False,
    nuisance_ridge: float = NUISANCE_RIDGE,
    theta0: FloatArray | None = None,
    phi0: float | None = None,
    order0: float = 0.0,
    max_iter: int = 200,
    step_tol: float = STEP_TOL,
    ridge_update: Callable[[FloatArray, FloatArray, float], float] | None = None,
    ridge_tol: float = 0.0,
) -> Solution:
    """Minimise the penalised negative log-likelihood.

    Args:
        table: aggregated comparisons; oriented (``i`` = slot A) when ``order`` is set.
        ties: "half" or "davidson".
        ridge: L2 penalty weight on ``theta`` (the prior precision, 1 / prior variance), must be > 0.
        order: fit the order effect ``h`` (the log-odds advantage of slot A).
        nuisance_ridge: L2 penalty weight on ``phi`` and ``h``.
        theta0: (n_items,) warm start, re-centred to mean zero; default :func:`performance_start`.
        phi0: warm start of ``log(nu)`` (Davidson only); default from the tie share.
        order0: warm start of ``h``.
        max_iter: Newton iteration budget.
        step_tol: convergence threshold on the last step, nats (a looser one serves a pilot fit).
        ridge_update: if given, ``ridge_update(theta, hessian_diagonal, ridge)`` proposes a new ridge after
            every step (an empirical-Bayes fixed point run inside Newton's iterations); the fit has converged
            when the step is below ``step_tol`` and the proposal within ``ridge_tol`` (relative) of the ridge
            in use, which :attr:`Solution.ridge` then reports.

    Raises:
        ConvergenceError: if the steps do not fall below ``step_tol`` within ``max_iter`` iterations.
    """
    n = table.n_items
    theta = performance_start(table) if theta0 is None else np.asarray(theta0, dtype=np.float64)
    theta = theta - theta.mean()
    phi: float | None = None
    if ties == "davidson":
        phi = initial_phi(table) if phi0 is None else float(phi0)
    h: float | None = float(order0) if order else None
    n_extra = (phi is not None) + order
    direct = n + n_extra <= DIRECT_SOLVE_MAX
    dense = direct or table.n_pairs > DENSE_HESSIAN_FRACTION * n * (n - 1) / 2
    sparse = None if dense else _SparseLaplacian(table, n_extra)

    terms = edge_terms(table, theta, phi, h)
    value = _objective(terms, theta, phi, h, ridge, nuisance_ridge)
    for iteration in range(1, max_iter + 1):
        grad = _gradient(table, terms, theta, phi, h, ridge, nuisance_ridge)
        if sparse is None:
            hess = bordered_laplacian_dense(
                table, terms.hess_d, ridge, terms.cross, terms.hess_phi, order, nuisance_ridge
            )
        else:
            hess = sparse.matrix(terms.hess_d, ridge, terms.cross, terms.hess_phi, order, nuisance_ridge)
        step = _newton_step(hess, grad, n, direct)
        slope = float(np.dot(grad, step))
        scale = 1.0
        while True:
            trial = theta + scale * step[:n]
            trial -= trial.mean()
            trial_phi = None if phi is None else phi + scale * float(step[n])
            trial_h = None if h is None else h + scale * float(step[-1])
            trial_terms = edge_terms(table, trial, trial_phi, trial_h)
            trial_value = _objective(trial_terms, trial, trial_phi, trial_h, ridge, nuisance_ridge)
            # the rounding allowance stops the search from chasing decreases below float resolution
            allowance = 1e-4 * scale * slope + 1e-13 * abs(value)
            if trial_value <= value + allowance or scale < 1e-12:
                break
            scale *= 0.5
        theta, phi, h, terms, value = trial, trial_phi, trial_h, trial_terms, trial_value
        settled = True
        if ridge_update is not None:
            proposal = ridge_update(theta, hess.diagonal()[:n], ridge)
            if abs(proposal - ridge) > ridge_tol * ridge:
                ridge, settled = proposal, False
                value = _objective(terms, theta, phi, h, ridge, nuisance_ridge)
        if settled and scale * np.max(np.abs(step), initial=0.0) < step_tol:
            return Solution(
                theta=theta, phi=phi, order=h, terms=terms, hessian=hess, n_iter=iteration, ridge=ridge
            )
    raise ConvergenceError(f"Newton's method did not converge in {max_iter} iterations")


def _newton_step(
    hess: FloatArray | scipy.sparse.csr_matrix, grad: FloatArray, n: int, direct: bool
) -> FloatArray:
    if direct:
        assert isinstance(hess, np.ndarray)
        return -scipy.linalg.solve(_lifted(hess, n), grad, assume_a="pos")
    diagonal = hess.diagonal()
    preconditioner = scipy.sparse.diags(1.0 / diagonal)
    rtol = float(np.clip(np.max(np.abs(grad)), 1e-11, 1e-2))
    step, _ = scipy.sparse.linalg.cg(
        hess, -grad, rtol=rtol, atol=0.0, maxiter=10 * len(grad), M=preconditioner
    )
    return step


def _lifted(hess: FloatArray, n: int) -> FloatArray:
    """``hess`` plus ``c/n * 11'`` on the theta block, with ``c`` the mean diagonal.

    The constant direction of theta has eigenvalue ``ridge`` (tiny); lifting it to the matrix's scale keeps
    factorisations well conditioned. Gradients and meats are orthogonal to that direction (every pair enters
    its two items with opposite signs), so steps and sandwich variances are unchanged.
    """
    lifted = hess.copy()
    lifted[:n, :n] += np.mean(np.diag(hess)[:n]) / n
    return lifted


CovarianceKind = Literal["sandwich", "hessian"]


def lifted_inverse(solution: Solution, n: int) -> FloatArray:
    """Inverse of the lifted penalised Hessian (see :func:`_lifted`), (n + k, n + k) with the extras last.

    Its ``theta`` block differs from the true inverse only along the constant direction; the extras' block
    is exact, because the constant direction is decoupled from them.
    """
    return lifted_inverse_logdet(solution, n)[0]


def lifted_inverse_logdet(solution: Solution, n: int) -> tuple[FloatArray, float]:
    """:func:`lifted_inverse` and ``log det`` of the (unlifted) penalised Hessian.

    The lift raises the constant direction's eigenvalue from ``ridge`` to ``ridge + c`` (``c`` the mean
    diagonal of the theta block), so ``log det H = log det L - log(ridge + c) + log(ridge)``; the ridge is read
    off the Hessian as ``H 1 = ridge 1``.
    """
    hess = solution.hessian
    dense = hess if isinstance(hess, np.ndarray) else hess.toarray()
    lifted = _lifted(dense, n)
    lift = float(np.mean(np.diag(dense)[:n]))
    ridge = float(dense[:n, :n].sum(axis=1).mean())
    inverse, logdet = _spd_inverse_logdet(lifted)
    return inverse, logdet - np.log(ridge + lift) + np.log(ridge)


def covariance(
    table: PairTable,
    solution: Solution,
    *,
    ridge: float,
    kind: CovarianceKind,
    full: bool = False,
    inverse: FloatArray | None = None,
) -> FloatArray:
    """Covariance of ``theta`` on the sum-zero subspace (the estimate has mean zero by construction).

    ``kind="hessian"``: the model-based (inverse penalised Fisher information) covariance ``P H^-1 P`` with
    ``P = I - 11'/n``; with the ridge read as a normal prior it is the Laplace approximation of the posterior
    covariance. ``kind="sandwich"``: the robust Huber-White covariance ``H^-1 M H^-1``, where the meat
    ``M`` sums the outer products of per-observation scores over every outcome cell (pair x outcome),
    weighted by the cell weight (frequency weights). ``M`` annihilates the constant direction, so the
    sandwich lives on the sum-zero subspace without a projection. Davidson's ``phi`` and the order effect are
    estimated jointly and marginalised out. Cost: O(n^3) (one Cholesky inverse, plus one matrix product for
    the sandwich).

    Args:
        inverse: :func:`lifted_inverse` of ``solution`` if already computed.

    Returns:
        (n_items,) variances, or the (n_items, n_items) covariance if ``full``.
    """
    full_cov = parameter_covariance(table, solution, kind=kind, full=full, inverse=inverse)
    n = table.n_items
    return full_cov[:n, :n] if full else full_cov[:n]


def parameter_covariance(
    table: PairTable,
    solution: Solution,
    *,
    kind: CovarianceKind,
    full: bool = True,
    inverse: FloatArray | None = None,
) -> FloatArray:
    """Covariance of all parameters ``(theta, phi?, h?)``: (n + k, n + k), or only the (n + k,) variances
    if not ``full``; the ``theta`` block is projected on the sum-zero subspace (see :func:`covariance`)."""
    n = table.n_items
    inv = lifted_inverse(solution, n) if inverse is None else inverse
    if kind == "hessian":
        row_mean = inv[:n, :n].mean(axis=1)
        if full:
            out = inv.copy()
            out[:n, :n] += row_mean.mean() - row_mean[:, None] - row_mean[None, :]
            return out
        variances = np.diag(inv).copy()
        variances[:n] += row_mean.mean() - 2.0 * row_mean
        return variances
    scores = cell_scores(table, solution.theta, solution.phi, solution.order)
    meat_edges = np.sum(scores.weights * scores.d**2, axis=0)
    meat_cross = None if scores.phi is None else np.sum(scores.weights * scores.d * scores.phi, axis=0)
    meat_corner = 0.0 if scores.phi is None else float(np.sum(scores.weights * scores.phi**2))
    meat = bordered_laplacian_dense(
        table, meat_edges, 0.0, meat_cross, meat_corner, solution.order is not None
    )
    if full:
        return inv @ meat @ inv
    return np.einsum("ij,ij->j", inv, meat @ inv)


def _spd_inverse_logdet(matrix: FloatArray) -> tuple[FloatArray, float]:
    """Inverse and log-determinant of a symmetric positive definite matrix via LAPACK Cholesky (falls back
    to ``pinvh`` and an eigenvalue log-determinant).

    Small matrices solve against the identity (potrs): OpenBLAS's threaded potri has a large fixed cost.
    """
    factor, info = lapack.dpotrf(matrix, lower=True, clean=False)
    if info != 0:
        eigenvalues = np.linalg.eigvalsh(matrix)
        positive = eigenvalues[eigenvalues > 0]
        return scipy.linalg.pinvh(matrix), float(np.sum(np.log(positive)))
    logdet = 2.0 * float(np.sum(np.log(np.diag(factor))))
    if matrix.shape[0] < SMALL_INVERSE:
        inverse, info = lapack.dpotrs(factor, np.eye(matrix.shape[0]), lower=True)
        return inverse, logdet
    inverse, info = lapack.dpotri(factor, lower=True)
    lower = np.tril(inverse)
    return lower + np.tril(lower, -1).T, logdet
