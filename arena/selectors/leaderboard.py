"""Reads of the ranking: everything comes from the newest immutable snapshot."""

from __future__ import annotations

from typing import Any

from arena.errors import NotFound
from arena.models import RankingSnapshot


def snapshot_latest() -> RankingSnapshot | None:
    return RankingSnapshot.objects.order_by("-version").first()


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
