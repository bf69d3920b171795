r"""Evaluator integrity: detecting labs whose votes disagree with the consensus, and capping lab influence.

:func:`lab_agreement` compares each lab's decisive votes with a consensus fitted **without that lab** (so a
lab cannot pull the consensus toward itself), with Davidson's tie model, under which the favoured item of a
decisive comparison wins with probability :math:`\sigma(d)`. For a comparison with consensus difference
:math:`\hat d = \hat\theta_a - \hat\theta_b` and its variance :math:`s^2`, the favoured item wins with
predictive probability :math:`q = \sigma(|\hat d| / \sqrt{1 + \pi s^2 / 8})` (the probit approximation of
:math:`E[\sigma(d)]` under the consensus' uncertainty, so honest labs are not flagged merely because the
consensus is noisy). Over a lab's decisive votes with weights :math:`w`: observed agreement
:math:`A = \sum w\,[\text{favoured won}]`, expected :math:`E = \sum w q`, variance :math:`V = \sum w q(1-q)`,
and :math:`z = (E - A) / \sqrt{V}`: large when the lab disagrees more than chance allows. The one-sided
p-value is compared with ``alpha / n_labs`` (Bonferroni) to set ``flagged``. Ties are not votes for either
side and are left out.

:func:`cap_influence` returns row weights so that no lab (and no organization) contributes more than its cap
of any item's total comparison weight, or of the board's; pass them to :func:`ranking.fit` as ``weights``.
:func:`ranking.lab_defence` combines it with a trust ramp and a cohort test.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import expit
from scipy.stats import norm

from ranking.errors import InvalidComparisons
from ranking.fit import DEFAULT_RIDGE, ELO_SCALE, Ratings, score_to_theta
from ranking.newton import covariance, newton_fit
from ranking.pairs import FloatArray, check_comparisons, outcome_cells, table_from_cells

_Z95 = float(norm.ppf(0.975))


@dataclass(frozen=True)
class LabAgreement:
    """Agreement of one lab's votes with the consensus.

    Attributes:
        lab: the lab label.
        n_comparisons: total weight of the lab's comparisons.
        n_decisive: weight of its decisive (non-tie) comparisons, the ones scored.
        agreement: observed rate at which the consensus favourite won, in [0, 1] (nan if none decisive).
        expected: rate expected from the consensus model's predictive probabilities.
        z: (expected - observed agreement) / standard deviation; positive = more disagreement than expected.
        p_value: one-sided p-value of ``z``.
        flagged: ``p_value < alpha / n_labs``: the lab disagrees significantly more than expected.
    """

    lab: Hashable
    n_comparisons: float
    n_decisive: float
    agreement: float
    expected: float
    z: float
    p_value: float
    flagged: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (nan as None)."""
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()
        }


def lab_agreement(
    a: ArrayLike,
    b: ArrayLike,
    outcome: ArrayLike,
    lab: ArrayLike,
    n_items: int,
    ratings: Ratings | None = None,
    *,
    weights: ArrayLike | None = None,
    ridge: float = DEFAULT_RIDGE,
    alpha: float = 0.05,
) -> dict[Hashable, LabAgreement]:
    """Per-lab agreement with the consensus (see the module docstring for the statistics).

    Args:
        a, b, outcome, n_items, weights: the comparisons, as for :func:`ranking.fit`.
        lab: (R,) lab label per row.
        ratings: optional consensus to use for every lab instead of leave-that-lab-out fits (cheaper, but a
            lab then weighs on its own consensus; its interval widths give variances, covariances ignored).
            Fit it with ``ties="davidson"`` when the data hold ties.
        ridge: ridge penalty of the leave-one-lab-out fits. These use Davidson's tie model, whose
            ``P(favoured wins | decisive) = sigma(d)`` holds exactly; counting ties as half wins would shrink
            ``d`` and understate the expected agreement of decisive votes.
        alpha: family-wise significance level; each lab is tested at ``alpha / n_labs``.

    Returns:
        ``{lab: LabAgreement}`` in label order.
    """
    a_arr, b_arr, y, w = check_comparisons(a, b, outcome, n_items, weights)
    labels = np.asarray(lab)
    if labels.shape != y.shape:
        raise InvalidComparisons(f"lab has shape {labels.shape}, expected {y.shape}")
    unique, inverse = np.unique(labels, return_inverse=True)
    threshold = alpha / max(unique.size, 1)
    n = int(n_items)
    all_cells = outcome_cells(a_arr, b_arr, y, w, n)
    result: dict[Hashable, LabAgreement] = {}
    for index, label in enumerate(unique):
        own = inverse == index
        own_cells = outcome_cells(a_arr[own], b_arr[own], y[own], w[own], n)
        if ratings is None:
            # Everyone but this lab: all cells minus its own (clipped at 0 against rounding).
            table = table_from_cells(np.maximum(all_cells - own_cells, 0.0))
            solution = newton_fit(table, ties="davidson", ridge=ridge)
            theta = solution.theta
            cov = covariance(table, solution, ridge=ridge, kind="hessian", full=True)
        else:
            theta = score_to_theta(ratings.scores)
            se = (ratings.ci_high - ratings.ci_low) / (2.0 * _Z95 * ELO_SCALE)
            cov = np.diag(np.where(np.isfinite(se), se, 1.0 / math.sqrt(ridge)) ** 2)
        key = label.item() if isinstance(label, np.generic) else label
        result[key] = _lab_statistics(key, own_cells, theta, cov, threshold)
    return result


def _lab_statistics(
    label: Hashable, cells: FloatArray, theta: FloatArray, cov: FloatArray, threshold: float
) -> LabAgreement:
    """The statistics of one lab's (3, n, n) outcome cells (see :func:`ranking.pairs.outcome_cells`)."""
    lost, _, beat = cells
    outright = beat + lost.T  # outright[i, j]: weight of decisive votes in which i beat j
    winner, loser = np.nonzero(outright)
    w_dec = outright[winner, loser]
    d = theta[winner] - theta[loser]
    var_d = np.maximum(cov[winner, winner] + cov[loser, loser] - 2.0 * cov[winner, loser], 0.0)
    favoured_wins = expit(np.abs(d) / np.sqrt(1.0 + math.pi * var_d / 8.0))
    agree = np.where(d == 0.0, 0.5, (d > 0).astype(np.float64))
    total = float(w_dec.sum())
    observed = float(np.dot(w_dec, agree))
    expected = float(np.dot(w_dec, favoured_wins))
    variance = float(np.dot(w_dec, favoured_wins * (1.0 - favoured_wins)))
    z = (expected - observed) / math.sqrt(variance) if variance > 0 else 0.0
    p_value = float(norm.sf(z))
    return LabAgreement(
        lab=label,
        n_comparisons=float(cells.sum()),
        n_decisive=total,
        agreement=observed / total if total > 0 else math.nan,
        expected=expected / total if total > 0 else math.nan,
        z=z,
        p_value=p_value,
        flagged=p_value < threshold,
    )


def cap_influence(
    a: ArrayLike,
    b: ArrayLike,
    lab: ArrayLike,
    *,
    max_share: float = 0.5,
    weights: ArrayLike | None = None,
    org: ArrayLike | None = None,
    max_org_share: float | None = None,
    max_board_share: float | None = None,
    max_iter: int = 100,
) -> FloatArray:
    """Row weights so that no lab (and no organization) holds more than its cap of any item's weight or of the
    board's.

    For every item, the labs' weights on the item's rows are water-filled: labs above the cap are scaled down
    to a common level ``c`` with ``c = max_share * (their capped total + the others' total)``, labs below it
    are untouched. The same holds for organizations (``org``, ``max_org_share``: an organization's labs
    together) and, with ``max_board_share``, for each lab's and each organization's share of the board's total
    weight. A row keeps the smallest of its scale factors, which can lower another total, so the procedure
    repeats until every share is within its cap (weights only decrease, so it settles). Where fewer than
    ``1 / cap`` labs (organizations) are present, they are equalised instead (effective cap ``1 / count``).

    Args:
        a, b: (R,) item indices of each comparison.
        lab: (R,) lab label per row.
        max_share: largest allowed share of one lab in one item's total weight, in (0, 1].
        weights: (R,) prior row weights (e.g. counts), default ones.
        org: (R,) organization label per row; None = no organization caps.
        max_org_share: largest share of one organization in one item's weight; None = no such cap (the board
            cap still applies to organizations).
        max_board_share: largest share of one lab (and one organization) in the board's weight; None = none.
        max_iter: iteration budget of the repeat-until-within-cap loop.

    Returns:
        (R,) float64 weights, each at most the prior weight of its row.
    """
    a_arr = np.asarray(a, dtype=np.int64).ravel()
    b_arr = np.asarray(b, dtype=np.int64).ravel()
    labels = np.asarray(lab).ravel()
    if not (a_arr.size == b_arr.size == labels.size):
        raise InvalidComparisons("a, b and lab differ in length")
    for name, share in (
        ("max_share", max_share),
        ("max_org_share", max_org_share),
        ("max_board_share", max_board_share),
    ):
        if share is not None and not 0.0 < share <= 1.0:
            raise InvalidComparisons(f"{name} must lie in (0, 1], got {share!r}")
    w = np.ones(a_arr.size) if weights is None else np.asarray(weights, dtype=np.float64).ravel().copy()
    if w.size != a_arr.size or np.any(w < 0) or not np.all(np.isfinite(w)):
        raise InvalidComparisons("weights must be finite, non-negative, one per row")
    if a_arr.size == 0:
        return w
    n_items = int(max(a_arr.max(), b_arr.max())) + 1
    groupings = [(np.unique(labels, return_inverse=True)[1], max_share)]
    if org is not None:
        orgs = np.asarray(org).ravel()
        if orgs.size != labels.size:
            raise InvalidComparisons("org and lab differ in length")
        groupings.append(
            (np.unique(orgs, return_inverse=True)[1], 1.0 if max_org_share is None else max_org_share)
        )
    for _ in range(max_iter):
        factor = np.ones(w.size)
        for index, share in groupings:
            factor = np.minimum(factor, _row_factors(a_arr, b_arr, index, w, n_items, share, max_board_share))
        if np.all(factor >= 1.0 - 1e-12):
            break
        w = w * factor
    return w


def _row_factors(
    a: np.ndarray,
    b: np.ndarray,
    group: np.ndarray,
    w: FloatArray,
    n_items: int,
    item_share: float,
    board_share: float | None,
) -> FloatArray:
    """(R,) the smallest scale factor of each row's two (item, group) totals and, if capped, its board total."""
    n_groups = int(group.max()) + 1
    key_a, key_b = a * n_groups + group, b * n_groups + group
    size = n_items * n_groups
    totals = np.bincount(key_a, weights=w, minlength=size) + np.bincount(key_b, weights=w, minlength=size)
    item_factor = _water_fill_factors(totals.reshape(n_items, n_groups), item_share).ravel()
    factor = np.minimum(item_factor[key_a], item_factor[key_b])
    if board_share is not None:
        board = np.bincount(group, weights=w, minlength=n_groups)[None, :]
        factor = np.minimum(factor, _water_fill_factors(board, board_share)[0][group])
    return factor


def _water_fill_factors(weights: FloatArray, max_share: float) -> FloatArray:
    """(n_items, n_labs) scale factors <= 1 capping every lab's share of each item at the (effective) cap."""
    n_labs = weights.shape[1]
    positive = (weights > 0).sum(axis=1)
    cap_share = np.maximum(max_share, 1.0 / np.maximum(positive, 1))[:, None]
    ordered = -np.sort(-weights, axis=1)  # descending
    # remaining[:, j]: total of labs j.. (the uncapped ones when j labs are capped)
    remaining = np.cumsum(ordered[:, ::-1], axis=1)[:, ::-1]
    capped = np.arange(n_labs)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        level = cap_share * remaining / (1.0 - capped * cap_share)
    previous = np.concatenate([np.full((weights.shape[0], 1), np.inf), ordered[:, :-1]], axis=1)
    tolerance = 1e-12 * np.maximum(remaining[:, :1], 1e-300)
    valid = (
        (capped * cap_share < 1.0 - 1e-12) & (level >= ordered - tolerance) & (level <= previous + tolerance)
    )
    first_valid = np.argmax(valid, axis=1)
    chosen = level[np.arange(weights.shape[0]), first_valid]
    chosen = np.where(valid.any(axis=1), chosen, np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(weights > chosen[:, None], chosen[:, None] / weights, 1.0)
