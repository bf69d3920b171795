"""Leaderboards of slices of the comparisons, each refitted on its own rows, and the agreement of the real-robot
ranking with the replica's.

A slice is a subset of the counted comparisons: those made on real robots, those made in the replica, those
of one robot type (each real platform, and the replica) or of one task category. Each slice is fitted exactly
as the whole board is (the board's trust and cohort exclusions, the lab, organization and board caps applied
again within the slice, Davidson ties, order effect, hierarchical prior, rank bands), on the policies it
compared, with its own scale anchor (its longest-registered policy at 1000). Its table is therefore a
leaderboard of its own, not the overall scores filtered.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

import ranking
from arena.models import Policy
from arena.pairing import REPLICA_PREFIX

if TYPE_CHECKING:
    from arena.services.ranking import Comparisons

MIN_SLICE_COMPARISONS = 20
"""A slice with fewer counted comparisons is listed (with its count) but not fitted."""

MIN_AGREEMENT_POLICIES = 3
"""Real and replica rankings are compared once this many policies are rated in both."""

AGREEMENT_DRAWS = 2000
REPLICA = "replica"


def robot_type(platform: str) -> str:
    """``"replica"`` for every replica platform (``replica:<scene>``), else the real platform itself."""
    return REPLICA if platform.startswith(REPLICA_PREFIX) else (platform or "unspecified")


def comparisons_subset(data: Comparisons, rows: np.ndarray) -> Comparisons:
    """The comparisons of the selected ``rows`` (boolean mask), with policies renumbered to those the rows
    compare, in ascending id (so index 0, the scale anchor, is the slice's longest-registered policy)."""
    from arena.services.ranking import Comparisons

    a, b = data.a[rows], data.b[rows]
    kept, ab = np.unique(np.concatenate([a, b]), return_inverse=True)
    return Comparisons(
        a=ab[: a.size],
        b=ab[a.size :],
        outcome=data.outcome[rows],
        lab=data.lab[rows],
        category=data.category[rows],
        count=data.count[rows],
        progress_a=data.progress_a[rows],
        progress_b=data.progress_b[rows],
        last_id=data.last_id[rows],
        org=data.org[rows],
        policy_ids=[data.policy_ids[k] for k in kept.tolist()],
        lab_ids=data.lab_ids,
        categories=data.categories,
        platform=None if data.platform is None else data.platform[rows],
        platforms=data.platforms,
    )


def _slice_definitions(data: Comparisons) -> list[tuple[str, str, str, np.ndarray]]:
    """(key, label, tab, row mask) of every slice: real/replica, each robot type, each task category."""
    types = [robot_type(p) for p in data.platforms]
    platform = data.platform if data.platform is not None else np.zeros(data.a.size, dtype=np.int64)
    is_replica = np.array([t == REPLICA for t in types], dtype=bool)[platform] if types else platform < 0
    out = [
        ("real", "Real robots only", "scope", ~is_replica),
        (REPLICA, "Replica only", "scope", is_replica),
    ]
    for name in sorted({t for t in types if t != REPLICA}):
        codes = [k for k, t in enumerate(types) if t == name]
        out.append((f"robot:{name}", name, "robot", np.isin(platform, codes)))
    for k, category in enumerate(data.categories):
        if category:
            out.append((f"category:{category}", category, "category", data.category == k))
    return out


def _fit(data: Comparisons, uncapped: np.ndarray, caps: dict[str, float]) -> ranking.Ratings:
    weights = ranking.cap_influence(data.a, data.b, data.lab, weights=uncapped, org=data.org, **caps)
    return ranking.fit(data.a, data.b, data.outcome, len(data.policy_ids), weights=weights, anchor=0)


def leaderboard_slices(
    data: Comparisons, policies: dict[int, Policy], defence: ranking.Defence, caps: dict[str, float]
) -> dict[str, Any]:
    """Every slice's leaderboard and the real-vs-replica agreement, for ``RankingSnapshot.slices``.

    Returns ``{"boards": {key: board}, "tabs": {"scope": [keys], "robot": [keys], "category": [keys]},
    "agreement": dict | None, "fit_seconds": float}``. A board: ``key``, ``label``, ``n_comparisons``, ``n_policies``, ``n_labs``,
    ``fitted`` (False below ``MIN_SLICE_COMPARISONS``), ``rows`` (as ``RankingSnapshot.ratings``) and
    ``model`` (as ``RankingSnapshot.model``). The robot tab lists each real platform, then the replica.
    ``defence`` is the board's (its ``uncapped`` weights carry the trust and cohort exclusions); ``caps`` are
    re-applied within each slice.
    """
    from arena.services.ranking import _model, _rows

    started = time.perf_counter()
    boards: dict[str, dict[str, Any]] = {}
    tabs: dict[str, list[str]] = {"scope": ["real", REPLICA], "robot": [], "category": []}
    fits: dict[str, tuple[Comparisons, ranking.Ratings]] = {}
    for key, label, tab, mask in _slice_definitions(data):
        if tab != "scope":
            tabs[tab].append(key)
        subset = comparisons_subset(data, mask)
        weights = defence.uncapped[mask]
        board: dict[str, Any] = {
            "key": key,
            "label": label,
            "n_comparisons": subset.total,
            "n_policies": len(subset.policy_ids),
            "n_labs": int(np.unique(subset.lab).size),
            "fitted": subset.total >= MIN_SLICE_COMPARISONS,
            "rows": [],
            "model": {},
        }
        if board["fitted"]:
            ratings = _fit(subset, weights, caps)
            board["rows"] = _rows(subset, ratings, policies)
            board["model"] = _model(ratings, anchor=policies[subset.policy_ids[0]].slug)
            fits[key] = (subset, ratings)
        boards[key] = board
    if any(boards[k]["n_comparisons"] for k in tabs["robot"]) or boards[REPLICA]["n_comparisons"]:
        tabs["robot"].append(REPLICA)
    agreement = None
    if "real" in fits and REPLICA in fits:
        agreement = real_replica_agreement(fits["real"], fits[REPLICA], policies)
    return {
        "boards": boards,
        "tabs": tabs,
        "agreement": agreement,
        "fit_seconds": time.perf_counter() - started,
    }


def _main_group(subset: Comparisons, ratings: ranking.Ratings) -> dict[int, int]:
    """Policy id -> index in the fit, for the policies of the fit's largest comparison group."""
    return {pid: k for k, pid in enumerate(subset.policy_ids) if ratings.group[k] == 0}


def real_replica_agreement(
    real: tuple[Comparisons, ranking.Ratings],
    replica: tuple[Comparisons, ranking.Ratings],
    policies: dict[int, Policy],
) -> dict[str, Any] | None:
    """Both rankings of the policies rated in both (the largest group of each fit), side by side, with
    Pearson's r and MMRV between them and their 95% posterior intervals (``ranking.agreement``).

    ``policies``: rows ``slug``, ``name``, ``real`` and ``replica`` (``score``, ``ci_low``, ``ci_high``,
    ``rank_low``, ``rank_high`` within that slice's own board), best real score first. None when fewer than
    ``MIN_AGREEMENT_POLICIES`` are rated in both."""
    (real_data, real_fit), (sim_data, sim_fit) = real, replica
    in_real, in_sim = _main_group(real_data, real_fit), _main_group(sim_data, sim_fit)
    common = sorted(set(in_real) & set(in_sim))
    if len(common) < MIN_AGREEMENT_POLICIES:
        return None
    i_real = np.array([in_real[p] for p in common])
    i_sim = np.array([in_sim[p] for p in common])
    theta_real = (real_fit.scores[i_real] - 1000.0) / ranking.ELO_SCALE
    theta_sim = (sim_fit.scores[i_sim] - 1000.0) / ranking.ELO_SCALE
    stats = ranking.agreement(
        theta_real,
        real_fit.covariance[np.ix_(i_real, i_real)],
        theta_sim,
        sim_fit.covariance[np.ix_(i_sim, i_sim)],
        n_draws=AGREEMENT_DRAWS,
        seed=0,
    )

    def side(fit: ranking.Ratings, k: int) -> dict[str, Any]:
        return {
            "score": float(fit.scores[k]),
            "ci_low": float(fit.ci_low[k]),
            "ci_high": float(fit.ci_high[k]),
            "rank_low": int(fit.rank_low[k]),
            "rank_high": int(fit.rank_high[k]),
        }

    rows = [
        {
            "slug": policies[pid].slug,
            "name": policies[pid].name,
            "real": side(real_fit, in_real[pid]),
            "replica": side(sim_fit, in_sim[pid]),
        }
        for pid in common
    ]
    rows.sort(key=lambda r: -r["real"]["score"])
    return {**stats.to_dict(), "policies": rows, "method": "parametric bootstrap from both posteriors"}
