"""Pure rating engine for pairwise comparisons: Bradley-Terry fits with posterior intervals, rank bands and
an order effect, an adaptive pair sampler, and evaluator-integrity checks. numpy / scipy only; no I/O."""

from ranking.agreement import Agreement, agreement, mmrv, pearson, win_probability
from ranking.defence import Cohort, Defence, cap_by_group, lab_defence
from ranking.errors import ConvergenceError, InvalidComparisons, NoEligiblePair, RankingError
from ranking.fit import (
    DEFAULT_RIDGE,
    ELO_SCALE,
    FAMILY_ALPHA,
    PRIOR_SD_RANGE,
    Ratings,
    fit,
    fit_groups,
    fit_table,
)
from ranking.integrity import LabAgreement, cap_influence, lab_agreement
from ranking.pairs import PairTable, aggregate
from ranking.sampler import PairChoice, PairSampler

__all__ = [
    "Agreement",
    "DEFAULT_RIDGE",
    "ELO_SCALE",
    "FAMILY_ALPHA",
    "PRIOR_SD_RANGE",
    "Cohort",
    "ConvergenceError",
    "Defence",
    "InvalidComparisons",
    "LabAgreement",
    "NoEligiblePair",
    "PairChoice",
    "PairSampler",
    "PairTable",
    "RankingError",
    "Ratings",
    "aggregate",
    "cap_by_group",
    "agreement",
    "cap_influence",
    "fit",
    "fit_groups",
    "fit_table",
    "lab_agreement",
    "lab_defence",
    "mmrv",
    "pearson",
    "win_probability",
]
