"""Exceptions raised by the rating engine."""


class RankingError(ValueError):
    """Base class: the input cannot be rated as given."""


class InvalidComparisons(RankingError):
    """The comparison arrays are malformed (shapes, indices, outcomes or weights)."""


class ConvergenceError(RankingError):
    """Newton's method did not reach the requested tolerance within its iteration budget."""


class NoEligiblePair(RankingError):
    """The eligibility mask allows no pair of distinct items."""
