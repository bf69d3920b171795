r"""Per-pair likelihood terms of the Bradley-Terry model under the two tie conventions.

Items have log-strengths :math:`\theta`; for a compared pair ``(i, j)`` let :math:`d = \theta_i - \theta_j`.

``ties="half"`` (the LMArena convention): a tie is half a win each way,

.. math:: \ell_{ij} = s_{ij} \log\sigma(d) + (n_{ij} - s_{ij}) \log\sigma(-d),

with :math:`n_{ij}` the pair's total weight and :math:`s_{ij}` the wins of ``i`` plus half the ties.

``ties="davidson"`` (Davidson 1970), with tie parameter :math:`\nu = e^{\varphi} \ge 0`:

.. math::
    P(i \succ j) = \frac{e^{d/2}}{D},\quad P(j \succ i) = \frac{e^{-d/2}}{D},\quad
    P(i \sim j) = \frac{\nu}{D},\quad D = e^{d/2} + e^{-d/2} + \nu .

In both models :math:`P(i \succ j \mid \text{decisive}) = \sigma(d)`, so :math:`\theta` has the same meaning.

The functions below return the negative log-likelihood and its derivatives with respect to ``d`` per pair (and
with respect to :math:`\varphi`), and the per-observation scores of each outcome cell for the sandwich.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from ranking.pairs import FloatArray, PairTable


@dataclass(frozen=True, eq=False)
class EdgeTerms:
    """Negative log-likelihood and derivatives at one parameter point.

    Attributes:
        objective: negative log-likelihood (no penalty).
        grad_d: (E,) d(-loglik)/dd per pair.
        hess_d: (E,) d²(-loglik)/dd² per pair.
        cross: (E,) d²(-loglik)/(dd dφ) per pair; None for ties="half".
        grad_phi, hess_phi: d(-loglik)/dφ and d²(-loglik)/dφ²; 0 for ties="half".
    """

    objective: float
    grad_d: FloatArray
    hess_d: FloatArray
    cross: FloatArray | None
    grad_phi: float
    hess_phi: float


@dataclass(frozen=True, eq=False)
class CellScores:
    """Per-observation derivatives of the log-likelihood, one row per outcome cell.

    Attributes:
        weights: (3, E) cell weights: ``i`` won, ``j`` won, tie.
        d: (3, E) d(loglik)/dd of one observation in that cell.
        phi: (3, E) d(loglik)/dφ of one observation; None for ties="half".
    """

    weights: FloatArray
    d: FloatArray
    phi: FloatArray | None


def half_terms(table: PairTable, d: FloatArray) -> EdgeTerms:
    """Terms of the ties-as-half-wins model at differences ``d`` (E,)."""
    n = table.totals
    s = table.wins_i + 0.5 * table.ties
    # one exp serves both: softplus(d) = max(d, 0) + log1p(e), sigma(d) = 1/(1+e) or e/(1+e), e = exp(-|d|)
    e = np.exp(-np.abs(d))
    softplus = np.maximum(d, 0.0) + np.log1p(e)
    inv = 1.0 / (1.0 + e)
    p = np.where(d >= 0.0, inv, e * inv)
    objective = float(np.dot(n, softplus) - np.dot(s, d))
    return EdgeTerms(
        objective=objective,
        grad_d=n * p - s,
        hess_d=n * e * inv * inv,
        cross=None,
        grad_phi=0.0,
        hess_phi=0.0,
    )


def half_scores(table: PairTable, d: FloatArray) -> CellScores:
    """Cell scores of the ties-as-half-wins model: ``1 - p``, ``-p``, ``0.5 - p``."""
    p = expit(d)
    return CellScores(
        weights=np.stack([table.wins_i, table.wins_j, table.ties]),
        d=np.stack([1.0 - p, -p, 0.5 - p]),
        phi=None,
    )


def _davidson_probabilities(
    d: FloatArray, phi: float
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """``P(i won)``, ``P(j won)``, ``P(tie)`` and ``log D`` at differences ``d``.

    Scaled by ``e^{-|d|/2}`` so one exp and one log per pair suffice and nothing overflows:
    ``D e^{-|d|/2} = 1 + e^{-|d|} + nu e^{-|d|/2}``.
    """
    half_abs = 0.5 * np.abs(d)
    q = np.exp(-half_abs)
    smaller = q * q
    tie = math.exp(phi) * q
    scaled = 1.0 + smaller + tie
    inv = 1.0 / scaled
    favoured = d >= 0.0
    p_small = smaller * inv
    p_i = np.where(favoured, inv, p_small)
    p_j = np.where(favoured, p_small, inv)
    return p_i, p_j, tie * inv, half_abs + np.log(scaled)


def davidson_terms(table: PairTable, d: FloatArray, phi: float) -> EdgeTerms:
    """Terms of Davidson's tie model at differences ``d`` (E,) and ``phi = log(nu)``.

    With ``q = e^{-|d|/2}``: ``D e^{-|d|/2} = 1 + q^2 + nu q``, ``P(i) - P(j) = sign(d) (1 - q^2) / (1 + q^2 + nu q)``
    and ``P(i) + P(j) = 1 - P(tie)``: one exp and one log per pair, few temporaries (this is the fit's inner loop).
    """
    n = table.totals
    margin = table.margin
    tie_total = table.tie_total
    half_abs = 0.5 * np.abs(d)
    q = np.exp(-half_abs)
    small = q * q
    tie = math.exp(phi) * q
    scaled = small + tie
    scaled += 1.0
    inv = 1.0 / scaled
    p_t = tie * inv
    diff = (1.0 - small) * inv
    np.copysign(diff, d, out=diff)
    log_denominator = np.log(scaled)
    log_denominator += half_abs
    objective = float(np.dot(n, log_denominator) - 0.5 * np.dot(margin, d) - phi * tie_total)
    n_diff = n * diff
    return EdgeTerms(
        objective=objective,
        grad_d=0.5 * (n_diff - margin),
        hess_d=0.25 * (n - n * p_t - n_diff * diff),
        cross=-0.5 * n_diff * p_t,
        grad_phi=float(np.dot(n, p_t) - tie_total),
        hess_phi=float(np.dot(n, p_t * (1.0 - p_t))),
    )


def davidson_scores(table: PairTable, d: FloatArray, phi: float) -> CellScores:
    """Cell scores of Davidson's model (derivatives in ``d`` and in ``phi``)."""
    p_i, p_j, p_t, _ = _davidson_probabilities(d, phi)
    centre = -0.5 * (p_i - p_j)
    return CellScores(
        weights=np.stack([table.wins_i, table.wins_j, table.ties]),
        d=np.stack([centre + 0.5, centre - 0.5, centre]),
        phi=np.stack([-p_t, -p_t, 1.0 - p_t]),
    )
