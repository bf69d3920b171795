"""Aggregation of comparison rows into per-pair outcome counts.

Every fit starts here: the rows ``(a, b, outcome, weight)`` are reduced, with one integer key per row and
``np.bincount``, to the unordered pairs ``i < j`` that were compared and the total weight of each outcome cell
(``i`` won, ``j`` won, tie). All later work is proportional to the number of compared pairs, not of rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ranking.errors import InvalidComparisons

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


@dataclass(frozen=True, eq=False)
class PairTable:
    """Outcome counts per compared pair: unordered (``i < j``), or oriented by slot (``i`` ran first).

    Attributes:
        n_items: number of items.
        i, j: (E,) int64, the compared pairs: ``i < j``; if ``oriented``, ``i`` = slot A, ``j`` = slot B (a
            pair compared in both orders has two entries).
        wins_i, wins_j, ties: (E,) float64, total weight of rows won by ``i``, won by ``j``, tied.
        wins: (n_items, n_items) float64, ``wins[i, j]`` = weight of wins of ``i`` over ``j``, ties half.
        counts: (n_items, n_items) float64, symmetric, total weight of comparisons between ``i`` and ``j``.
        n_total: total weight of all rows.
        oriented: whether ``i``, ``j`` keep the slot order.
    """

    n_items: int
    i: IntArray
    j: IntArray
    wins_i: FloatArray
    wins_j: FloatArray
    ties: FloatArray
    wins: FloatArray
    counts: FloatArray
    n_total: float
    oriented: bool = False

    @property
    def n_pairs(self) -> int:
        """Number of distinct compared pairs."""
        return int(self.i.size)

    @cached_property
    def totals(self) -> FloatArray:
        """(E,) float64, total weight per pair (computed once: the fit's inner loop reads it)."""
        return self.wins_i + self.wins_j + self.ties

    @cached_property
    def pair_key(self) -> IntArray:
        """(E,) int64, ``i * n_items + j``: the flat index of each pair in an (n, n) matrix."""
        return self.i * self.n_items + self.j

    @cached_property
    def margin(self) -> FloatArray:
        """(E,) float64, ``wins_i - wins_j`` per pair."""
        return self.wins_i - self.wins_j

    @cached_property
    def tie_total(self) -> float:
        """Total weight of tied rows."""
        return float(self.ties.sum())

    def with_cells(self, wins_i: FloatArray, wins_j: FloatArray, ties: FloatArray) -> PairTable:
        """The same pairs with replaced cell weights (used by the bootstrap); matrices are not rebuilt."""
        return PairTable(
            n_items=self.n_items,
            i=self.i,
            j=self.j,
            wins_i=wins_i,
            wins_j=wins_j,
            ties=ties,
            wins=self.wins,
            counts=self.counts,
            n_total=float(wins_i.sum() + wins_j.sum() + ties.sum()),
            oriented=self.oriented,
        )


def check_comparisons(
    a: ArrayLike,
    b: ArrayLike,
    outcome: ArrayLike,
    n_items: int,
    weights: ArrayLike | None = None,
) -> tuple[IntArray, IntArray, FloatArray, FloatArray]:
    """Validate comparison rows and return them as contiguous arrays.

    Args:
        a, b: (R,) integer item indices in ``[0, n_items)``, ``a != b``.
        outcome: (R,) float, 1 = ``a`` won, 0 = ``b`` won, 0.5 = tie.
        n_items: number of items, at least 1.
        weights: (R,) non-negative finite row weights, default all ones.

    Returns:
        ``(a, b, outcome, weights)`` as int64, int64, float64, float64 arrays.

    Raises:
        InvalidComparisons: on mismatched shapes, out-of-range or self comparisons, outcomes other than
            0, 0.5, 1, or negative / non-finite weights.
    """
    if int(n_items) != n_items or n_items < 1:
        raise InvalidComparisons(f"n_items must be a positive integer, got {n_items!r}")
    a_arr = np.asarray(a)
    b_arr = np.asarray(b)
    y = np.asarray(outcome, dtype=np.float64).ravel()
    if a_arr.size and not (np.issubdtype(a_arr.dtype, np.integer) and np.issubdtype(b_arr.dtype, np.integer)):
        raise InvalidComparisons("a and b must be integer item indices")
    a_arr = a_arr.astype(np.int64, copy=False).ravel()
    b_arr = b_arr.astype(np.int64, copy=False).ravel()
    if not (a_arr.size == b_arr.size == y.size):
        raise InvalidComparisons(f"a, b and outcome differ in length: {a_arr.size}, {b_arr.size}, {y.size}")
    if a_arr.size:
        if min(a_arr.min(), b_arr.min()) < 0 or max(a_arr.max(), b_arr.max()) >= n_items:
            raise InvalidComparisons(f"item indices must lie in [0, {n_items})")
        if np.any(a_arr == b_arr):
            raise InvalidComparisons("an item cannot be compared with itself (a == b)")
        doubled = 2.0 * y
        if not (np.array_equal(doubled, np.round(doubled)) and doubled.min() >= 0 and doubled.max() <= 2):
            raise InvalidComparisons("outcome must be 1 (a won), 0 (b won) or 0.5 (tie)")
    if weights is None:
        w = np.ones(y.size)
    else:
        w = np.asarray(weights, dtype=np.float64).ravel()
        if w.size != y.size:
            raise InvalidComparisons(f"weights has length {w.size}, expected {y.size}")
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise InvalidComparisons("weights must be finite and non-negative")
    return a_arr, b_arr, y, w


def aggregate(
    a: ArrayLike,
    b: ArrayLike,
    outcome: ArrayLike,
    n_items: int,
    weights: ArrayLike | None = None,
    *,
    oriented: bool = False,
) -> PairTable:
    """Reduce comparison rows to a :class:`PairTable` (validated; see :func:`check_comparisons`).

    ``oriented`` keeps the slot order (``a`` = slot A) of each pair, as the order effect needs.
    Cost: O(R + n_items**2) time and memory, one ``np.bincount`` pass over the rows.
    """
    a_arr, b_arr, y, w = check_comparisons(a, b, outcome, n_items, weights)
    return table_from_cells(outcome_cells(a_arr, b_arr, y, w, int(n_items)), oriented=oriented)


def outcome_cells(a: IntArray, b: IntArray, y: FloatArray, w: FloatArray, n: int) -> FloatArray:
    """(3, n, n) weights of validated rows by outcome: ``[0]`` b won, ``[1]`` tie, ``[2]`` a won, at ``[a, b]``.

    Cells of disjoint row sets add up (and subtract), so a leave-some-rows-out table costs O(n**2), not O(R).
    """
    size = n * n
    # one key per row: (outcome code, a, b), outcome code 0 = b won, 1 = tie, 2 = a won
    key = (2.0 * y).astype(np.int64) * size + a * n + b
    cells = np.bincount(key, weights=w, minlength=3 * size)
    return cells.astype(np.float64, copy=False).reshape(3, n, n)


def table_from_cells(cells: FloatArray, *, oriented: bool = False) -> PairTable:
    """The :class:`PairTable` of (3, n, n) outcome cells (see :func:`outcome_cells`), oriented by slot if asked."""
    lost, tied, beat = cells
    n = cells.shape[1]
    outright = beat + lost.T  # outright[i, j]: i beat j, any orientation
    ties = tied + tied.T
    wins = outright + 0.5 * ties
    counts = wins + wins.T
    if oriented:
        a, b = np.nonzero(beat + lost + tied)
        return PairTable(
            n_items=n,
            i=a.astype(np.int64),
            j=b.astype(np.int64),
            wins_i=beat[a, b],
            wins_j=lost[a, b],
            ties=tied[a, b],
            wins=wins,
            counts=counts,
            n_total=float(cells.sum()),
            oriented=True,
        )
    i, j = np.nonzero(np.triu(counts, 1))
    return PairTable(
        n_items=n,
        i=i.astype(np.int64),
        j=j.astype(np.int64),
        wins_i=outright[i, j],
        wins_j=outright[j, i],
        ties=ties[i, j],
        wins=wins,
        counts=counts,
        n_total=float(cells.sum()),
    )
