"""Reads of the ranking: everything comes from the newest immutable snapshot."""

from __future__ import annotations

import csv
import hashlib
import io
from typing import Any

import numpy as np

import ranking
from arena.errors import NotFound
from arena.models import RankingSnapshot


def snapshot_latest(*, fitted_rows: bool = True) -> RankingSnapshot | None:
    """The newest snapshot; ``fitted_rows=False`` leaves its fitted rows (the largest field, only the
    download needs it) unread."""
    snapshots = RankingSnapshot.objects.order_by("-version")
    return (snapshots if fitted_rows else snapshots.defer("fitted_rows")).first()


def snapshot_get(*, version: int) -> RankingSnapshot:
    snapshot = RankingSnapshot.objects.filter(version=version).first()
    if snapshot is None:
        raise NotFound("snapshot_not_found", f"No ranking snapshot {version}.", field="version")
    return snapshot


def leaderboard(snapshot: RankingSnapshot | None) -> dict[str, Any]:
    """The public table: ranked rows, provisional rows apart, the order effect and the snapshot's identity."""
    if snapshot is None:
        return {
            "snapshot": None,
            "updated_at": None,
            "method": None,
            "n_comparisons": 0,
            "rows": [],
            "provisional": [],
            "order_effect": None,
            "order_effect_ci": None,
        }
    ranked = [r for r in snapshot.ratings if not r["provisional"]]
    return {
        "snapshot": snapshot.version,
        "updated_at": snapshot.created_at,
        "method": snapshot.method,
        "n_comparisons": snapshot.n_comparisons,
        "rows": ranked,
        "provisional": [r for r in snapshot.ratings if r["provisional"]],
        "order_effect": snapshot.model.get("order_effect"),
        "order_effect_ci": snapshot.model.get("order_effect_ci"),
    }


def comparison_groups(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Rows split by connected component of the comparison graph, the largest first (snapshots fitted before
    groups existed are one group). Policies of different groups never met, directly or through others, so
    nothing compares them."""
    groups: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row.get("group", 0), []).append(row)
    return [groups[g] for g in sorted(groups)]


FITTED_COLUMNS = ("a", "b", "policy_a", "policy_b", "outcome", "task_category", "lab", "count", "weight")
"""Columns of a snapshot's fitted rows: item indices of slot A and slot B (0 = the scale anchor), their
slugs, outcome (1 = A won, 0 = B won, 0.5 = tie), task category, lab number, raw count and the weight the fit
gave the row (the count after the defences: trust ramp, cohort exclusions, lab and organization caps)."""


def fitted_rows_csv(fitted_rows: dict[str, Any]) -> str:
    """The CSV text of a snapshot's fitted rows; its sha256 is the snapshot's ``data_hash``. Floats are
    written in Python's shortest round-trip form, so parsing the text gives back the exact weights."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(FITTED_COLUMNS)
    writer.writerows(fitted_rows.get("rows", []))
    return out.getvalue()


def fitted_rows_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def fitted_rows_refit(text: str) -> dict[str, dict[str, float]]:
    """Refit a downloaded fitted-rows CSV with the public defaults, as the snapshot was fitted.

    Returns ``{slug: {"score", "ci_low", "ci_high", "rank_low", "rank_high"}}``.

    Raises:
        ValueError: the text is not a fitted-rows CSV (wrong header or malformed rows).
    """
    reader = csv.reader(io.StringIO(text))
    if tuple(next(reader, ())) != FITTED_COLUMNS:
        raise ValueError(f"expected the header {','.join(FITTED_COLUMNS)}")
    rows = list(reader)
    a = np.array([int(r[0]) for r in rows], dtype=np.int64)
    b = np.array([int(r[1]) for r in rows], dtype=np.int64)
    slugs: dict[int, str] = {}
    for r in rows:
        slugs[int(r[0])], slugs[int(r[1])] = r[2], r[3]
    n = max(slugs) + 1 if slugs else 1
    if sorted(slugs) != list(range(n)):
        raise ValueError("item indices must run from 0 without gaps")
    outcome = np.array([float(r[4]) for r in rows])
    weight = np.array([float(r[8]) for r in rows])
    r = ranking.fit(a, b, outcome, n, weights=weight, anchor=0)
    return {
        slugs[k]: {
            "score": float(r.scores[k]),
            "ci_low": float(r.ci_low[k]),
            "ci_high": float(r.ci_high[k]),
            "rank_low": int(r.rank_low[k]),
            "rank_high": int(r.rank_high[k]),
        }
        for k in range(n)
    }
