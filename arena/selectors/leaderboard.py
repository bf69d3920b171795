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
    """The public table: ranked rows, provisional rows apart, and the snapshot's identity."""
    if snapshot is None:
        return {
            "snapshot": None,
            "updated_at": None,
            "method": None,
            "n_comparisons": 0,
            "rows": [],
            "provisional": [],
        }
    return {
        "snapshot": snapshot.version,
        "updated_at": snapshot.created_at,
        "method": snapshot.method,
        "n_comparisons": snapshot.n_comparisons,
        "rows": [r for r in snapshot.ratings if not r["provisional"]],
        "provisional": [r for r in snapshot.ratings if r["provisional"]],
    }
