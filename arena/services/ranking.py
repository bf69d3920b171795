"""The ranking job's Django side: aggregate comparisons in SQL, fit with ``ranking``, store a snapshot.

Comparisons are read from the running tallies (one row per pair, outcome, lab and task category, maintained
with each preference), so 10^6 stored comparisons arrive as weighted rows and are never loaded one by one.
Votes of labs an operator excluded, and preferences the lab marked invalid, are left out. The fit's weights are
the defended ones (:func:`ranking.lab_defence`: trust ramp for new labs, cohort test, lab and organization
caps); the task-category breakdowns re-apply the same caps within each category.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

import ranking
from arena import metrics
from arena.models import Lab, Policy, Preference, RankingSnapshot
from arena.selectors.leaderboard import FITTED_COLUMNS, fitted_rows_csv, fitted_rows_hash
from arena.services.slices import leaderboard_slices

log = logging.getLogger(__name__)

OUTCOME = {"A": 1.0, "B": 0.0, "tie": 0.5}
METHOD = (
    "bradley-terry, davidson ties, order effect, hierarchical prior, 95% posterior CI, holm rank bands, "
    "lab cap {cap}, org cap {org_cap}, board cap {board_cap}, trust ramp {ramp}, cohort test"
)
MIN_CATEGORY_COMPARISONS = 20
SCALE_ANCHOR = 0
"""Index (into the ascending policy ids) of the policy whose score is fixed at 1000: the oldest one rated."""


@dataclass(frozen=True)
class Comparisons:
    """Aggregated comparison rows: one per (policy A, policy B, outcome, lab, task category), with the row's
    count, the summed progress scores of both slots, its newest preference id and the lab's organization.
    Indices point into ``policy_ids``, ``lab_ids`` and ``categories``; ``org`` holds organization ids;
    ``platform`` (robot platform per row) points into ``platforms``."""

    a: np.ndarray
    b: np.ndarray
    outcome: np.ndarray
    lab: np.ndarray
    category: np.ndarray
    count: np.ndarray
    progress_a: np.ndarray
    progress_b: np.ndarray
    last_id: np.ndarray
    org: np.ndarray
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
           t.last_preference_id AS last, l.organization_id AS org, {platform_hex} AS plat
    FROM arena_comparisontally t JOIN arena_lab l ON l.id = t.lab_id
    WHERE NOT l.votes_excluded
"""
COLUMNS = ("a", "b", "y", "lab", "n", "pa", "pb", "last", "org")


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
            org=empty_i,
            policy_ids=[],
            lab_ids=[],
            categories=[],
            platform=empty_i,
        )
    a, b, y, lab, n, pa, pb, last, org = (np.array(col.split(","), dtype=np.int64) for col in numeric)
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
        org=org,
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
    caps = _caps()
    rows: list[dict[str, Any]] = []
    matrices: dict[str, Any] = {"slugs": [], "wins": [], "counts": []}
    integrity: dict[str, Any] = {}
    breakdowns: dict[str, Any] = {}
    model: dict[str, Any] = {}
    slices: dict[str, Any] = {}
    fitted_rows: dict[str, Any] = {"columns": list(FITTED_COLUMNS), "rows": []}
    if data.total:
        defence = ranking.lab_defence(
            data.a,
            data.b,
            data.outcome,
            len(data.policy_ids),
            data.lab,
            org=data.org,
            weights=data.count,
            trust_ramp=settings.ARENA_LAB_TRUST_RAMP,
            **caps,
        )
        weights = defence.weights
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
        # the window and labs of these rows, so the per-comparison log is exactly what was fitted (the hash
        # covers the rows' CSV only)
        fitted_rows["labs"] = data.lab_ids
        fitted_rows["through_preference"] = int(data.last_id.max())
        rows = _rows(data, ratings, policies)
        wins = _raw_wins(data)
        matrices = {"slugs": slugs, "wins": wins.tolist(), "counts": (wins + wins.T).tolist()}
        integrity = _integrity(data, defence, slugs)
        breakdowns = _breakdowns(data, defence, caps, dict(zip(data.policy_ids, slugs, strict=True)))
        slices = leaderboard_slices(data, policies, defence, caps)
    fit_seconds = time.perf_counter() - started
    clash: IntegrityError | None = None
    for _ in range(5):
        try:
            with transaction.atomic():
                last = RankingSnapshot.objects.select_for_update().order_by("-version").first()
                snapshot = RankingSnapshot.objects.create(
                    version=(last.version + 1) if last else 1,
                    created_at=timezone.now(),
                    method=METHOD.format(
                        cap=caps["max_share"],
                        org_cap=caps["max_org_share"],
                        board_cap=caps["max_board_share"],
                        ramp=settings.ARENA_LAB_TRUST_RAMP,
                    ),
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
            metrics.REFIT_SECONDS.observe(time.perf_counter() - started)
            log.info(
                "ranking snapshot %d stored: %d comparisons, %d policies, fit %.3f s",
                snapshot.version,
                snapshot.n_comparisons,
                snapshot.n_policies,
                fit_seconds,
            )
            return snapshot
        except IntegrityError as exc:
            clash = exc
            continue  # another refit took the same version number at the same moment
    raise RuntimeError("could not allocate a snapshot version") from clash


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
        if not math.isfinite(ratings.scores[k]):
            continue  # every comparison of it was left out by the defences: unrated, not listed
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


def _caps() -> dict[str, float]:
    return {
        "max_share": settings.ARENA_LAB_MAX_SHARE,
        "max_org_share": settings.ARENA_ORG_MAX_SHARE,
        "max_board_share": settings.ARENA_BOARD_MAX_SHARE,
    }


def _integrity(data: Comparisons, defence: ranking.Defence, slugs: list[str]) -> dict[str, Any]:
    """Per lab: agreement with the leave-that-lab-out consensus, trust (the ramp for new labs), and the
    cohorts it was found in (policies it favoured or disfavoured together with other labs; its votes on those
    policies are left out of the fit)."""
    lab_slugs = dict(Lab.objects.filter(pk__in=data.lab_ids).values_list("pk", "slug"))
    cohorts: dict[int, list[dict[str, Any]]] = {}
    for cohort in defence.cohorts:
        for member in cohort.labs:
            cohorts.setdefault(int(member), []).append(
                {
                    "policy": slugs[cohort.item],
                    "direction": "favoured" if cohort.direction > 0 else "disfavoured",
                    "n_labs": len(cohort.labs),
                    "z": cohort.z,
                    "p_value": cohort.p_value,
                }
            )
    out: dict[str, Any] = {}
    for k, entry in defence.agreement.items():
        slug = lab_slugs[data.lab_ids[k]]
        out[slug] = entry.to_dict() | {
            "lab": slug,
            "trust": defence.trust[k],
            "cohorts": cohorts.get(int(k), []),
        }
    return out


def _flag_labs(integrity: dict[str, Any]) -> None:
    for slug, stats in integrity.items():
        notes = []
        if stats["agreement"] is not None:
            notes.append(
                f"agreed {stats['agreement']:.2f} vs {stats['expected']:.2f} expected (p={stats['p_value']:.3g})"
            )
        if stats.get("trust", 1.0) < 1.0:
            notes.append(f"trust {stats['trust']:.2f}")
        for cohort in stats.get("cohorts", []):
            notes.append(
                f"{cohort['direction']} {cohort['policy']} with {cohort['n_labs'] - 1} other labs "
                f"(p={cohort['p_value']:.3g}): those votes left out"
            )
        Lab.objects.filter(slug=slug).update(
            integrity_flagged=bool(stats["flagged"] or stats.get("cohorts")),
            integrity_note="; ".join(notes)[:300],
        )


def _breakdowns(
    data: Comparisons, defence: ranking.Defence, caps: dict[str, float], slugs_by_pk: dict[int, str]
) -> dict[str, Any]:
    """Ratings per task category, for categories with enough comparisons, with the board's trust and cohort
    exclusions and the same caps applied within each category's rows."""
    weights = ranking.cap_by_group(
        data.a, data.b, data.lab, data.category, weights=defence.uncapped, org=data.org, **caps
    )
    fits = ranking.fit_groups(
        data.a,
        data.b,
        data.outcome,
        len(data.policy_ids),
        data.category,
        weights=weights,
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
