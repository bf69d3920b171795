"""The ranking job's Django side: aggregate comparisons in SQL, fit with ``ranking``, store a snapshot.

Comparisons are read from the running tallies (one row per pair, outcome, lab and task category, maintained
with each preference), so 10^6 stored comparisons arrive as weighted rows and are never loaded one by one.
Votes of labs an operator excluded, and preferences the lab marked invalid, are left out.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

import ranking
from arena.models import Lab, Policy, Preference, RankingSnapshot
from arena.selectors.leaderboard import FITTED_COLUMNS, fitted_rows_csv, fitted_rows_hash
from arena.services.slices import leaderboard_slices

OUTCOME = {"A": 1.0, "B": 0.0, "tie": 0.5}
METHOD = "bradley-terry, davidson ties, order effect, hierarchical prior, 95% posterior CI, holm rank bands, lab cap {cap}"
MIN_CATEGORY_COMPARISONS = 20
SCALE_ANCHOR = 0
"""Index (into the ascending policy ids) of the policy whose score is fixed at 1000: the oldest one rated."""


@dataclass(frozen=True)
class Comparisons:
    """Aggregated comparison rows: one per (policy A, policy B, outcome, lab, task category), with the row's
    count, the summed progress scores of both slots and its newest preference id. Indices point into ``policy_ids``, ``lab_ids`` and
    ``categories``; ``platform`` (robot platform per row) into ``platforms``."""

    a: np.ndarray
    b: np.ndarray
    outcome: np.ndarray
    lab: np.ndarray
    category: np.ndarray
    count: np.ndarray
    progress_a: np.ndarray
    progress_b: np.ndarray
    last_id: np.ndarray
    policy_ids: list[int]
    lab_ids: list[int]
    categories: list[str]
    platform: np.ndarray | None = None
    platforms: tuple[str, ...] = ()

    @property
    def total(self) -> int:
        return int(self.count.sum())


COUNTED = """
    SELECT t.policy_a_id AS a, t.policy_b_id AS b, CASE t.choice WHEN 'A' THEN 2 WHEN 'B' THEN 0 ELSE 1 END AS y,
           t.lab_id AS lab, t.task_category AS cat, t.n AS n, t.progress_a_sum AS pa, t.progress_b_sum AS pb,
           t.last_preference_id AS last, {platform_hex} AS plat
    FROM arena_comparisontally t JOIN arena_lab l ON l.id = t.lab_id
    WHERE NOT l.votes_excluded
"""
COLUMNS = ("a", "b", "y", "lab", "n", "pa", "pb", "last")


def comparisons_aggregate() -> Comparisons:
    """Counted comparisons (valid preferences of labs whose votes are not excluded), from the running tallies
    (see ``arena.services.tallies``: the GROUP BY over all preferences is maintained incrementally).

    The tally rows (up to ~10^5 at 10^6 comparisons) come back as one row of comma-joined columns that numpy
    parses at C speed: building 10^5 Python row tuples would cost ten times the query.
    """
    postgres = connection.vendor == "postgresql"
    concat = "string_agg" if postgres else "group_concat"
    # Platforms are free text (commas included): they travel hex-encoded.
    platform_hex = "encode(convert_to(t.platform, 'UTF8'), 'hex')" if postgres else "hex(t.platform)"
    columns = ", ".join(f"{concat}(CAST(g.{c} AS TEXT), ',')" for c in COLUMNS)
    counted = COUNTED.format(platform_hex=platform_hex)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {columns}, {concat}(g.cat, ','), {concat}(g.plat, ',') FROM ({counted}) g")
        *numeric, cats, plats = cursor.fetchone()
    if numeric[0] is None:
        empty_i, empty_f = np.zeros(0, dtype=np.int64), np.zeros(0)
        return Comparisons(
            a=empty_i,
            b=empty_i,
            outcome=empty_f,
            lab=empty_i,
            category=empty_i,
            count=empty_f,
            progress_a=empty_f,
            progress_b=empty_f,
            last_id=empty_i,
            policy_ids=[],
            lab_ids=[],
            categories=[],
            platform=empty_i,
        )
    a, b, y, lab, n, pa, pb, last = (np.array(col.split(","), dtype=np.int64) for col in numeric)
    policy_ids, ab = np.unique(np.concatenate([a, b]), return_inverse=True)
    lab_ids, lab_index = np.unique(lab, return_inverse=True)
    categories, cat_index = np.unique(np.array(cats.split(","), dtype=object), return_inverse=True)
    platforms_hex, platform_index = np.unique(np.array(plats.split(","), dtype=object), return_inverse=True)
    return Comparisons(
        a=ab[: a.size],
        b=ab[a.size :],
        outcome=y / 2.0,
        lab=lab_index,
        category=cat_index,
        count=n.astype(np.float64),
        progress_a=pa.astype(np.float64),
        progress_b=pb.astype(np.float64),
        last_id=last,
        policy_ids=policy_ids.tolist(),
        lab_ids=lab_ids.tolist(),
        categories=[str(c) for c in categories],
        platform=platform_index,
        platforms=tuple(bytes.fromhex(str(h)).decode() for h in platforms_hex),
    )


def ranking_snapshot_create() -> RankingSnapshot:
    """Fit the ranking on all counted comparisons and store it as the next immutable snapshot."""
    started = time.perf_counter()
    data = comparisons_aggregate()
    cap = settings.ARENA_LAB_MAX_SHARE
    rows: list[dict[str, Any]] = []
    matrices: dict[str, Any] = {"slugs": [], "wins": [], "counts": []}
    integrity: dict[str, Any] = {}
    breakdowns: dict[str, Any] = {}
    model: dict[str, Any] = {}
    slices: dict[str, Any] = {}
    fitted_rows: dict[str, Any] = {"columns": list(FITTED_COLUMNS), "rows": []}
    if data.total:
        weights = ranking.cap_influence(data.a, data.b, data.lab, weights=data.count, max_share=cap)
        # the scale's anchor: the longest-registered policy with comparisons (policy ids ascend), pinned at
        # 1000, so newcomers and retirements do not move the other scores
        ratings = ranking.fit(
            data.a, data.b, data.outcome, len(data.policy_ids), weights=weights, anchor=SCALE_ANCHOR
        )
        policies = {
            p.pk: p for p in Policy.objects.select_related("organization").filter(pk__in=data.policy_ids)
        }
        slugs = [policies[pid].slug for pid in data.policy_ids]
        model = _model(ratings, anchor=slugs[SCALE_ANCHOR])
        fitted_rows["rows"] = _fitted_rows(data, weights, slugs)
        rows = _rows(data, ratings, policies)
        wins = _raw_wins(data)
        matrices = {"slugs": slugs, "wins": wins.tolist(), "counts": (wins + wins.T).tolist()}
        integrity = _integrity(data)
        breakdowns = _breakdowns(data, dict(zip(data.policy_ids, slugs, strict=True)))
        slices = leaderboard_slices(data, policies)
    fit_seconds = time.perf_counter() - started
    for _ in range(5):
        try:
            with transaction.atomic():
                last = RankingSnapshot.objects.select_for_update().order_by("-version").first()
                snapshot = RankingSnapshot.objects.create(
                    version=(last.version + 1) if last else 1,
                    created_at=timezone.now(),
                    method=METHOD.format(cap=cap),
                    data_hash=fitted_rows_hash(fitted_rows_csv(fitted_rows)),
                    n_comparisons=data.total,
                    n_policies=len(data.policy_ids),
                    fit_seconds=fit_seconds,
                    ratings=rows,
                    matrices=matrices,
                    breakdowns=breakdowns,
                    integrity=integrity,
                    model=model,
                    fitted_rows=fitted_rows,
                    slices=slices,
                )
                _flag_labs(integrity)
                return snapshot
        except IntegrityError:
            continue  # another refit took the same version number at the same moment
    raise RuntimeError("could not allocate a snapshot version")


def _fitted_rows(data: Comparisons, weights: np.ndarray, slugs: list[str]) -> list[list[Any]]:
    """The rows exactly as fitted (see ``arena.selectors.leaderboard.FITTED_COLUMNS``), in fit order."""
    return [
        [a, b, slugs[a], slugs[b], y, data.categories[c], lab + 1, int(n), w]
        for a, b, y, c, lab, n, w in zip(
            data.a.tolist(),
            data.b.tolist(),
            data.outcome.tolist(),
            data.category.tolist(),
            data.lab.tolist(),
            data.count.tolist(),
            np.asarray(weights, dtype=np.float64).tolist(),
            strict=True,
        )
    ]


def _raw_wins(data: Comparisons) -> np.ndarray:
    """(n, n) raw comparison counts: ``wins[i, j]`` = times i beat j, ties counted half to each side."""
    n = len(data.policy_ids)
    wins = np.zeros((n, n))
    np.add.at(wins, (data.a, data.b), data.count * data.outcome)
    np.add.at(wins, (data.b, data.a), data.count * (1.0 - data.outcome))
    return wins


def _rows(data: Comparisons, ratings: ranking.Ratings, policies: dict[int, Policy]) -> list[dict[str, Any]]:
    """Leaderboard rows, provisional ones last, each ordered by comparison group, rank, then score."""
    extras = _policy_extras(data)
    rows = []
    for k, pid in enumerate(data.policy_ids):
        policy = policies[pid]
        n_comp = int(extras[pid]["n_comparisons"])
        rows.append(
            {
                "slug": policy.slug,
                "name": policy.name,
                "organization": policy.organization.name,
                "license": policy.license,
                "open_weights": policy.open_weights,
                "status": policy.status,
                "score": float(ratings.scores[k]),
                "ci_low": float(ratings.ci_low[k]),
                "ci_high": float(ratings.ci_high[k]),
                "rank": int(ratings.rank[k]),
                "rank_low": int(ratings.rank_low[k]),
                "rank_high": int(ratings.rank_high[k]),
                "group": int(ratings.group[k]),
                "anchor": k == SCALE_ANCHOR,
                "provisional": n_comp < settings.ARENA_PROVISIONAL_MIN_COMPARISONS,
                **extras[pid],
            }
        )
    rows.sort(key=lambda r: (r["provisional"], r["group"], r["rank"], -r["score"]))
    return rows


def _model(ratings: ranking.Ratings, *, anchor: str) -> dict[str, Any]:
    """The fit's board-wide parameters: the order effect (nats; None when one slot order only), Davidson's
    tie parameter, the prior scale, the scale's anchor policy and the fit's own method string."""
    low, high = ratings.order_effect_ci
    finite = math.isfinite(ratings.order_effect)
    return {
        "order_effect": ratings.order_effect if finite else None,
        "order_effect_ci": [low, high] if finite else None,
        "tie_param": ratings.tie_param,
        "prior_sd": ratings.prior_sd,
        "n_groups": int(ratings.group.max()) + 1,
        "anchor": anchor,
        "fit": ratings.method,
    }


def _integrity(data: Comparisons) -> dict[str, Any]:
    """Each lab's agreement with the leave-that-lab-out consensus; flags labs that disagree far too often."""
    stats = ranking.lab_agreement(
        data.a, data.b, data.outcome, data.lab, len(data.policy_ids), weights=data.count
    )
    slugs = dict(Lab.objects.filter(pk__in=data.lab_ids).values_list("pk", "slug"))
    return {
        slugs[data.lab_ids[k]]: entry.to_dict() | {"lab": slugs[data.lab_ids[k]]}
        for k, entry in stats.items()
    }


def _flag_labs(integrity: dict[str, Any]) -> None:
    for slug, stats in integrity.items():
        note = (
            f"agreed {stats['agreement']:.2f} vs {stats['expected']:.2f} expected (p={stats['p_value']:.3g})"
            if stats["agreement"] is not None
            else ""
        )
        Lab.objects.filter(slug=slug).update(
            integrity_flagged=bool(stats["flagged"]), integrity_note=note[:300]
        )


def _breakdowns(data: Comparisons, slugs_by_pk: dict[int, str]) -> dict[str, Any]:
    """Ratings per task category, for categories with enough comparisons."""
    fits = ranking.fit_groups(
        data.a,
        data.b,
        data.outcome,
        len(data.policy_ids),
        data.category,
        weights=data.count,
        min_comparisons=MIN_CATEGORY_COMPARISONS,
    )
    out: dict[str, Any] = {}
    for index, r in fits.items():
        category = data.categories[index]
        if not category:
            continue
        out[category] = {
            "n_comparisons": int(r.n_total),
            "scores": {
                slugs_by_pk[pid]: {
                    "score": float(r.scores[i]),
                    "ci_low": float(r.ci_low[i]),
                    "ci_high": float(r.ci_high[i]),
                    "n": int(r.n_comparisons[i]),
                }
                for i, pid in enumerate(data.policy_ids)
                if r.n_comparisons[i] > 0
            },
        }
    return out


def _policy_extras(data: Comparisons) -> dict[int, dict[str, Any]]:
    """Raw comparison count and win rate (ties half; the fit's weights are capped per lab, these are not),
    distinct labs, mean progress score and last evaluation per policy."""
    n = len(data.policy_ids)
    progress = np.bincount(data.a, data.progress_a, n) + np.bincount(data.b, data.progress_b, n)
    games = np.bincount(data.a, data.count, n) + np.bincount(data.b, data.count, n)
    wins = np.bincount(data.a, data.count * data.outcome, n) + np.bincount(
        data.b, data.count * (1 - data.outcome), n
    )
    labs = np.zeros((n, len(data.lab_ids)), dtype=bool)
    labs[data.a, data.lab] = True
    labs[data.b, data.lab] = True
    newest = np.zeros(n, dtype=np.int64)
    np.maximum.at(newest, data.a, data.last_id)
    np.maximum.at(newest, data.b, data.last_id)
    when = dict(Preference.objects.filter(pk__in=newest.tolist()).values_list("pk", "created_at"))
    return {
        pid: {
            "n_comparisons": int(games[k]),
            "win_rate": float(wins[k] / games[k]) if games[k] else 0.0,
            "n_labs": int(labs[k].sum()),
            "mean_progress": round(float(progress[k] / games[k]), 1) if games[k] else None,
            "last_evaluated": when[newest[k]].isoformat(),
        }
        for k, pid in enumerate(data.policy_ids)
    }
