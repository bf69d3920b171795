r"""Defences against coordinated labs: a trust ramp, a cohort test and influence caps, in one weighting step.

:func:`lab_defence` turns raw comparison counts into the row weights the public fit uses. Per round:

1. **Leave-one-lab-out consensus.** For every lab ``l``, a Davidson fit on everyone else's *defended* weights
   (so Sybils and flagged cohorts pull the consensus little), as in :func:`ranking.lab_agreement`.
2. **Trust ramp.** A lab's votes count fully only once it has agreed with that consensus often enough:
   :math:`t_l = \min(1, A_l / r)`, with :math:`A_l` the weight of the lab's decisive votes in which the
   consensus favourite won and :math:`r` = ``trust_ramp`` (capped at the largest :math:`A` on the board, so
   the best-established lab always counts fully, also on a young arena). Labs the agreement test flags get 0
   (on boards of three labs or more).
3. **Cohort test.** Residuals of each lab's votes on each item against its leave-out consensus, Davidson
   scores :math:`s` (win 1, tie 1/2, loss 0): :math:`R_{li} = \sum c (s - E s)`, variance
   :math:`V_{li} = \sum c \operatorname{Var} s + (\sum c\, \partial E s / \partial d)^2 \operatorname{Var}
   \hat\theta_{-l,i}` (the consensus' own uncertainty). For each item and each sign, the labs are sorted by
   :math:`z_{li} = R_{li} / \sqrt{V_{li}}` and the scan statistic :math:`T_i = \max_k \sum_{top\ k} R /
   \sqrt{\sum_{top\ k} V}` finds the group of labs that favours (or disfavours) the item most. Its null
   distribution is simulated: every lab re-votes ``n_null`` times from its leave-out consensus (same pairs
   and counts, Davidson outcomes, plus normal noise for the consensus term), and an item's p-value is the
   share of simulated boards whose *largest* statistic over all items and signs reaches it (max-T,
   family-wise over the board). A cohort with p <= ``alpha`` that holds less than half of the item's weight,
   with at least :data:`MIN_OTHER_LABS` other labs on the item, loses its votes on that item (weight 0); when
   both directions qualify (the honest labs look contrary to a consensus the cohort pulled), the smaller group.
4. Rounds repeat (at most ``max_rounds``) until trust and cohorts no longer change.

Finally :func:`ranking.cap_influence` caps each lab's and each organization's share of every item's weight
and of the board's. ``Defence.uncapped`` (trust and cohort exclusions, before the caps) lets a breakdown
(per task category) re-apply the same caps within its own rows (:func:`cap_by_group`).
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from ranking.errors import InvalidComparisons
from ranking.fit import DEFAULT_RIDGE
from ranking.integrity import LabAgreement, _lab_statistics, cap_influence
from ranking.newton import covariance, newton_fit
from ranking.pairs import FloatArray, check_comparisons, outcome_cells, table_from_cells

DEFAULT_TRUST_RAMP = 50.0
"""Agreeing decisive votes after which a lab's votes count fully."""

MIN_OTHER_LABS = 2
"""A cohort is flagged only where at least this many other labs evaluated the item, and the agreement test
zeroes a lab's trust only on boards of more labs than this: one other lab is no consensus."""

DEFAULT_N_NULL = 200
"""Simulated boards of the cohort test's null distribution (p-values resolve to 1 / (n_null + 1))."""


@dataclass(frozen=True)
class Cohort:
    """A group of labs whose votes on one item depart from the consensus together.

    Attributes:
        item: the item index.
        labs: the labs' labels.
        direction: +1 when they favour the item, -1 when they disfavour it.
        z: the scan statistic (pooled standardised residual of the group).
        p_value: family-wise p-value over the board (max-T over items and directions).
    """

    item: int
    labs: tuple[Hashable, ...]
    direction: int
    z: float
    p_value: float


@dataclass(frozen=True, eq=False)
class Defence:
    """Row weights after the defences, and what they found.

    Attributes:
        weights: (R,) float64, the weights to fit with (trust, cohort exclusions and caps applied).
        uncapped: (R,) float64, trust and cohort exclusions applied, caps not (for breakdowns).
        trust: ``{lab: t}`` in [0, 1].
        agreement: ``{lab: LabAgreement}`` from the last round's leave-out consensus.
        cohorts: flagged cohorts of the last round.
        excluded: (R,) bool, rows whose weight the cohort test set to 0.
        rounds: rounds used.
    """

    weights: FloatArray
    uncapped: FloatArray
    trust: dict[Hashable, float]
    agreement: dict[Hashable, LabAgreement]
    cohorts: list[Cohort] = field(default_factory=list)
    excluded: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    rounds: int = 0


def lab_defence(
    a: ArrayLike,
    b: ArrayLike,
    outcome: ArrayLike,
    n_items: int,
    lab: ArrayLike,
    *,
    org: ArrayLike | None = None,
    weights: ArrayLike | None = None,
    max_share: float = 0.5,
    max_org_share: float | None = 0.5,
    max_board_share: float | None = 0.5,
    trust_ramp: float = DEFAULT_TRUST_RAMP,
    alpha: float = 0.05,
    n_null: int = DEFAULT_N_NULL,
    max_rounds: int = 3,
    ridge: float = DEFAULT_RIDGE,
    seed: int = 0,
) -> Defence:
    """Defended row weights (module docstring): trust ramp, cohort test, then lab and organization caps.

    Args:
        a, b, outcome, n_items, weights: the comparisons, as for :func:`ranking.fit` (``weights`` = counts).
        lab: (R,) lab label per row.
        org: (R,) organization label per row (default: each lab its own organization).
        max_share: largest share of one lab in one item's weight (and, with ``max_board_share``, the board's).
        max_org_share: the same for an organization's labs together; None = no organization cap.
        max_board_share: largest share of one lab, and of one organization, in the board's total weight.
        trust_ramp: agreeing decisive votes after which a lab counts fully; 0 turns the ramp off.
        alpha: family-wise level of the cohort test (and of the agreement test that zeroes trust).
        n_null: simulated boards for the cohort test; 0 turns the cohort test off.
        max_rounds: rounds of consensus, trust and cohorts.
        ridge: penalty of the leave-one-lab-out fits.
        seed: seed of the null simulation (the result is deterministic given it).

    Returns:
        :class:`Defence`.
    """
    a_arr, b_arr, y, counts = check_comparisons(a, b, outcome, n_items, weights)
    labels = np.asarray(lab).ravel()
    if labels.shape != y.shape:
        raise InvalidComparisons(f"lab has shape {labels.shape}, expected {y.shape}")
    orgs = labels if org is None else np.asarray(org).ravel()
    if orgs.shape != y.shape:
        raise InvalidComparisons(f"org has shape {orgs.shape}, expected {y.shape}")
    n = int(n_items)
    unique, lab_index = np.unique(labels, return_inverse=True)
    keys = [u.item() if isinstance(u, np.generic) else u for u in unique]
    n_labs = unique.size
    trust = np.ones(n_labs)
    excluded = np.zeros(y.size, dtype=bool)
    cohorts: list[Cohort] = []
    agreement: dict[Hashable, LabAgreement] = {}
    rounds = 0
    while rounds < max_rounds:
        rounds += 1
        current = counts * trust[lab_index] * ~excluded
        consensus = _leave_out_fits(a_arr, b_arr, y, current, lab_index, n_labs, n, ridge)
        agreement, agreed = _agreement(a_arr, b_arr, y, counts, lab_index, keys, consensus, n, alpha)
        new_trust = _trust(agreed, agreement, keys, trust_ramp)
        if n_null > 0 and n_labs > 0:
            cohorts, new_excluded = _cohort_test(
                a_arr, b_arr, y, counts, lab_index, keys, consensus, n, alpha, n_null, seed
            )
        else:
            cohorts, new_excluded = [], excluded
        stable = np.allclose(new_trust, trust, atol=1e-3) and np.array_equal(new_excluded, excluded)
        trust, excluded = new_trust, new_excluded
        if stable:
            break
    uncapped = counts * trust[lab_index] * ~excluded
    capped = cap_influence(
        a_arr,
        b_arr,
        labels,
        weights=uncapped,
        max_share=max_share,
        org=orgs,
        max_org_share=max_org_share,
        max_board_share=max_board_share,
    )
    return Defence(
        weights=capped,
        uncapped=uncapped,
        trust={k: float(t) for k, t in zip(keys, trust, strict=True)},
        agreement=agreement,
        cohorts=cohorts,
        excluded=excluded,
        rounds=rounds,
    )


def cap_by_group(
    a: ArrayLike, b: ArrayLike, lab: ArrayLike, groups: ArrayLike, *, weights: ArrayLike, **cap_kwargs: object
) -> FloatArray:
    """:func:`ranking.cap_influence` applied within each group of rows (e.g. task category), so a breakdown
    obeys the same caps as the board: (R,) weights."""
    a_arr, b_arr = np.asarray(a), np.asarray(b)
    labels, group = np.asarray(lab), np.asarray(groups)
    w = np.asarray(weights, dtype=np.float64).copy()
    org = cap_kwargs.pop("org", None)
    orgs = None if org is None else np.asarray(org)
    for value in np.unique(group):
        rows = group == value
        w[rows] = cap_influence(
            a_arr[rows],
            b_arr[rows],
            labels[rows],
            weights=w[rows],
            org=None if orgs is None else orgs[rows],
            **cap_kwargs,  # type: ignore[arg-type]
        )
    return w


@dataclass(frozen=True, eq=False)
class _Consensus:
    theta: FloatArray  # (n_labs, n) leave-out log-strengths
    variance: FloatArray  # (n_labs, n) their variances
    covariances: list[FloatArray]  # per lab (n, n)
    nu: FloatArray  # (n_labs,) Davidson tie parameters


def _leave_out_fits(
    a: np.ndarray,
    b: np.ndarray,
    y: FloatArray,
    w: FloatArray,
    lab_index: np.ndarray,
    n_labs: int,
    n: int,
    ridge: float,
) -> _Consensus:
    all_cells = outcome_cells(a, b, y, w, n)
    thetas, variances, covs, nus = [], [], [], []
    for index in range(n_labs):
        own = lab_index == index
        own_cells = outcome_cells(a[own], b[own], y[own], w[own], n)
        table = table_from_cells(np.maximum(all_cells - own_cells, 0.0))
        solution = newton_fit(table, ties="davidson", ridge=ridge)
        cov = covariance(table, solution, ridge=ridge, kind="hessian", full=True)
        thetas.append(solution.theta)
        variances.append(np.diag(cov).copy())
        covs.append(cov)
        nus.append(math.exp(solution.phi) if solution.phi is not None else 0.0)
    return _Consensus(
        theta=np.array(thetas).reshape(n_labs, n),
        variance=np.array(variances).reshape(n_labs, n),
        covariances=covs,
        nu=np.array(nus),
    )


def _agreement(
    a: np.ndarray,
    b: np.ndarray,
    y: FloatArray,
    counts: FloatArray,
    lab_index: np.ndarray,
    keys: list[Hashable],
    consensus: _Consensus,
    n: int,
    alpha: float,
) -> tuple[dict[Hashable, LabAgreement], FloatArray]:
    """Each lab's agreement statistics (raw counts) and its agreeing decisive weight ``A_l``."""
    threshold = alpha / max(len(keys), 1)
    out: dict[Hashable, LabAgreement] = {}
    agreed = np.zeros(len(keys))
    for index, key in enumerate(keys):
        own = lab_index == index
        cells = outcome_cells(a[own], b[own], y[own], counts[own], n)
        stats = _lab_statistics(key, cells, consensus.theta[index], consensus.covariances[index], threshold)
        out[key] = stats
        agreed[index] = stats.agreement * stats.n_decisive if stats.n_decisive > 0 else 0.0
    return out, agreed


def _trust(
    agreed: FloatArray, agreement: dict[Hashable, LabAgreement], keys: list[Hashable], ramp: float
) -> FloatArray:
    if ramp <= 0 or agreed.size == 0:
        trust = np.ones(agreed.size)
    else:
        scale = min(ramp, float(agreed.max())) if agreed.max() > 0 else 1.0
        trust = np.minimum(1.0, agreed / scale)
    if len(keys) < MIN_OTHER_LABS + 1:  # with two labs, "disagrees with the consensus" names neither
        return trust
    flagged = np.array([agreement[k].flagged for k in keys], dtype=bool)
    return np.where(flagged, 0.0, trust)


def _davidson_moments(
    d: FloatArray, nu: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
    """P(first wins), P(tie), expected score and its variance, and d(expected score)/dd, per row."""
    up, down = np.exp(d / 2.0), np.exp(-d / 2.0)
    total = up + down + nu
    p_win, p_tie = up / total, nu / total
    mean = p_win + 0.5 * p_tie
    var = p_win + 0.25 * p_tie - mean**2
    # d/dd of (up + nu/2) / total
    slope = (0.5 * up * total - (up + 0.5 * nu) * 0.5 * (up - down)) / total**2
    return p_win, p_tie, mean, var, slope


def _cohort_test(
    a: np.ndarray,
    b: np.ndarray,
    y: FloatArray,
    counts: FloatArray,
    lab_index: np.ndarray,
    keys: list[Hashable],
    consensus: _Consensus,
    n: int,
    alpha: float,
    n_null: int,
    seed: int,
) -> tuple[list[Cohort], np.ndarray]:
    n_labs = len(keys)
    d = consensus.theta[lab_index, a] - consensus.theta[lab_index, b]
    nu = consensus.nu[lab_index]
    p_win, p_tie, mean, var, slope = _davidson_moments(d, nu)
    key_a = lab_index * n + a
    key_b = lab_index * n + b
    size = n_labs * n

    def per_cell(values_a: FloatArray, values_b: FloatArray) -> FloatArray:
        cells = np.bincount(key_a, values_a, size) + np.bincount(key_b, values_b, size)
        return cells.reshape(n_labs, n)

    residual = per_cell(counts * (y - mean), -counts * (y - mean))
    noise_var = per_cell(counts * var, counts * var)
    estimation_var = per_cell(counts * slope, counts * slope) ** 2 * consensus.variance
    total_var = noise_var + estimation_var
    observed, order = _scan(residual[None], total_var, members=True)
    # null: every lab re-votes its own (pair, count) design from its leave-out consensus
    design_key, design_inverse = np.unique(lab_index * n * n + a * n + b, return_inverse=True)
    design_n = np.rint(np.bincount(design_inverse, counts)).astype(np.int64)
    first = np.zeros(design_key.size, dtype=np.int64)
    first[design_inverse] = np.arange(y.size)
    d_a, d_b, d_lab = a[first], b[first], lab_index[first]
    pw, pt, mu = p_win[first], p_tie[first], mean[first]
    single, multiple = np.flatnonzero(design_n == 1), np.flatnonzero(design_n != 1)
    rest_tie = np.clip(np.divide(pt, 1.0 - pw, out=np.zeros_like(pt), where=pw < 1.0), 0.0, 1.0)
    rng = np.random.default_rng(seed)
    null_max = np.empty(0)
    batch = max(1, min(n_null, 1_000_000 // max(size, design_n.size, 1)))  # arrays of ~8 MB: cache-sized
    while null_max.size < n_null:
        rounds = min(batch, n_null - null_max.size)
        # single comparisons (most cells of a large board) by one uniform draw, the rest by binomials
        u = rng.random((rounds, single.size))
        r = np.empty((rounds, design_n.size))
        r[:, single] = (
            (u < pw[single]) + 0.5 * ((u >= pw[single]) & (u < pw[single] + pt[single])) - mu[single]
        )
        if multiple.size:
            n_m, pw_m = design_n[multiple], pw[multiple]
            wins = rng.binomial(n_m, pw_m, size=(rounds, multiple.size))
            ties = rng.binomial(n_m - wins, rest_tie[multiple])
            r[:, multiple] = wins + 0.5 * ties - n_m * mu[multiple]
        simulated = np.zeros((rounds, size))
        for k in range(rounds):
            simulated[k] = np.bincount(d_lab * n + d_a, r[k], size) - np.bincount(d_lab * n + d_b, r[k], size)
        simulated = simulated.reshape(rounds, n_labs, n)
        simulated += rng.standard_normal(simulated.shape) * np.sqrt(estimation_var)
        stat, _ = _scan(simulated, total_var, members=False)
        null_max = np.concatenate([null_max, stat.reshape(rounds, -1).max(axis=1)])
    cohorts: list[Cohort] = []
    excluded = np.zeros(y.size, dtype=bool)
    stat = observed[0]  # (2, n): direction +, -
    item_weight = per_cell(counts, counts)  # (n_labs, n) each lab's comparison weight on each item
    for item in range(n):
        # a minority of the item's weight that departs together: when both directions depart (the honest
        # labs look contrary to a consensus the cohort pulled), the smaller group is the suspect
        candidates = []
        for sign_index, direction in enumerate((1, -1)):
            value = float(stat[sign_index, item])
            if not math.isfinite(value):
                continue
            p_value = (1.0 + float(np.count_nonzero(null_max >= value))) / (n_null + 1.0)
            members = order[0][sign_index][item]
            weight = float(item_weight[members, item].sum())
            others = np.count_nonzero(item_weight[:, item] > 0) - members.size
            minority = weight < 0.5 * float(item_weight[:, item].sum()) and others >= MIN_OTHER_LABS
            if p_value <= alpha and minority:
                candidates.append((weight, direction, value, p_value, members))
        if not candidates:
            continue
        _, direction, value, p_value, members = min(candidates, key=lambda c: c[0])
        cohorts.append(
            Cohort(
                item=item, labs=tuple(keys[m] for m in members), direction=direction, z=value, p_value=p_value
            )
        )
        excluded |= np.isin(lab_index, members) & ((a == item) | (b == item))
    cohorts.sort(key=lambda c: c.p_value)
    return cohorts, excluded


def _scan(
    residual: FloatArray, variance: FloatArray, *, members: bool
) -> tuple[FloatArray, list[list[list[np.ndarray]]]]:
    """Scan statistics of (B, n_labs, n) residuals with (n_labs, n) variances: (B, 2, n) statistics for
    direction + and -, and if ``members`` the labs attaining each, ``labs[0][sign][item]`` (first board)."""
    statistics = []
    attaining: list[list[np.ndarray]] = []
    valid = variance > 0
    safe_var = np.where(valid, variance, 1.0)
    for sign in (1.0, -1.0):
        r = sign * residual
        z = np.where(valid, r / np.sqrt(safe_var), -np.inf)
        order = np.argsort(-z, axis=1)  # (B, n_labs, n), labs by descending z
        r_sorted = np.take_along_axis(np.where(valid, r, 0.0), order, axis=1)
        v_sorted = np.take_along_axis(np.broadcast_to(np.where(valid, variance, 0.0), r.shape), order, axis=1)
        cum_r, cum_v = np.cumsum(r_sorted, axis=1), np.cumsum(v_sorted, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            scan = np.where(cum_v > 0, cum_r / np.sqrt(cum_v), -np.inf)
        best_k = np.argmax(scan, axis=1)  # (B, n)
        statistics.append(np.take_along_axis(scan, best_k[:, None, :], axis=1)[:, 0, :])
        if members:
            attaining.append([order[0, : best_k[0, i] + 1, i] for i in range(residual.shape[2])])
    return np.stack(statistics, axis=1), [attaining]
