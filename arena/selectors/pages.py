"""Reads for the public pages: a policy's record, task categories, lab shares, score history, the anonymized
comparison log of a snapshot, and the sessions whose videos a page may list.

Records are computed from the running comparison tallies (``ComparisonTally``), counting what the ranking
counts: valid preferences of labs whose votes are not excluded. Scores come from the immutable ranking
snapshots.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.conf import settings
from django.db.models import Case, F, IntegerField, Q, QuerySet, Sum, When
from django.db.models.functions import Coalesce

from arena.models import ComparisonTally, EvaluationSession, Policy, Preference, RankingSnapshot, Video


@dataclass(frozen=True)
class Record:
    """One policy's wins, losses and ties in a group of comparisons (one opponent, or one category)."""

    key: str
    wins: int
    losses: int
    ties: int

    @property
    def total(self) -> int:
        return self.wins + self.losses + self.ties

    @property
    def win_fraction(self) -> float:
        """Wins plus half the ties, over all comparisons; in [0, 1]."""
        return (self.wins + 0.5 * self.ties) / self.total if self.total else 0.0


@dataclass(frozen=True)
class HistoryPoint:
    """A policy's score and 95% interval (Elo-like scale) in one ranking snapshot."""

    at: datetime
    version: int
    score: float
    low: float
    high: float


@dataclass(frozen=True)
class LabShare:
    """One lab's share of a policy's counted comparisons. ``name`` is for staff only."""

    index: int
    name: str
    n: int
    share: float


LATENCY_BUCKETS_MS = (50, 100, 200, 500, 1000, 2000, 5000)
"""Upper edges of the latency bands the public sees (ms): exact latencies cluster by policy and would help
a lab tell which policy sits in a slot."""


@dataclass(frozen=True)
class PublicHealth:
    """What anyone may see of a policy's health: the outcome of the arena's last own check, its time rounded
    down to ``ARENA_PUBLIC_CHECK_ROUNDING_MINUTES`` and its latency as a band. Re-checks after aborts do not
    show here (they never touch the last-check fields), so an abort changes nothing a lab can watch."""

    checked: bool
    ok: bool
    at: datetime | None
    latency: str


def coarse_time(at: datetime, *, minutes: int) -> datetime:
    """``at`` rounded down to a multiple of ``minutes`` since the hour (UTC); seconds and below dropped."""
    step = max(1, minutes)
    return at.replace(second=0, microsecond=0) - timedelta(minutes=at.minute % step)


def latency_band(latency_ms: float | None) -> str:
    """``"under 50 ms"``, ``"100-200 ms"``, ``"over 5000 ms"``... or "" when no latency was measured."""
    if latency_ms is None:
        return ""
    low = 0
    for high in LATENCY_BUCKETS_MS:
        if latency_ms < high:
            return f"under {high} ms" if low == 0 else f"{low}-{high} ms"
        low = high
    return f"over {low} ms"


def policy_public_health(*, policy: Policy) -> PublicHealth:
    """The public view of ``policy``'s last arena check (owners read exact times through their own API)."""
    if policy.last_check_at is None:
        return PublicHealth(checked=False, ok=False, at=None, latency="")
    return PublicHealth(
        checked=True,
        ok=bool(policy.last_check_ok),
        at=coarse_time(policy.last_check_at, minutes=settings.ARENA_PUBLIC_CHECK_ROUNDING_MINUTES),
        latency=latency_band(policy.last_check_latency_ms) if policy.last_check_ok else "",
    )


def _counted_tallies(policy: Policy) -> QuerySet[ComparisonTally]:
    return ComparisonTally.objects.filter(Q(policy_a=policy) | Q(policy_b=policy), lab__votes_excluded=False)


def _outcome_sums(policy: Policy) -> dict[str, Coalesce]:
    won = Q(policy_a=policy, choice="A") | Q(policy_b=policy, choice="B")
    lost = Q(policy_a=policy, choice="B") | Q(policy_b=policy, choice="A")
    return {
        "w": Coalesce(Sum("n", filter=won), 0),
        "l": Coalesce(Sum("n", filter=lost), 0),
        "t": Coalesce(Sum("n", filter=Q(choice="tie")), 0),
    }


def policy_record_by_opponent(*, policy: Policy) -> list[Record]:
    """The policy's counted record against each opponent (keyed by the opponent's slug), most games first."""
    opponent = Case(
        When(policy_a=policy, then=F("policy_b")), default=F("policy_a"), output_field=IntegerField()
    )
    rows = (
        _counted_tallies(policy)
        .annotate(opponent=opponent)
        .values("opponent")
        .annotate(**_outcome_sums(policy))
        .order_by()
    )
    slugs = dict(Policy.objects.filter(pk__in=[r["opponent"] for r in rows]).values_list("pk", "slug"))
    records = [Record(key=slugs[r["opponent"]], wins=r["w"], losses=r["l"], ties=r["t"]) for r in rows]
    return sorted(records, key=lambda r: (-r.total, r.key))


def policy_record_by_category(*, policy: Policy) -> list[Record]:
    """The policy's counted record per task category ("" for sessions without one), most games first."""
    rows = _counted_tallies(policy).values("task_category").annotate(**_outcome_sums(policy)).order_by()
    records = [Record(key=r["task_category"], wins=r["w"], losses=r["l"], ties=r["t"]) for r in rows]
    return sorted(records, key=lambda r: (-r.total, r.key))


def policy_lab_shares(*, policy: Policy) -> list[LabShare]:
    """Each lab's share of the policy's counted comparisons, largest first; ``index`` numbers labs 1, 2, ...
    in that order so that pages can show shares without naming labs."""
    rows = list(
        _counted_tallies(policy)
        .values("lab_id", "lab__name")
        .annotate(total=Sum("n"))
        .order_by("-total", "lab_id")
    )
    total = sum(r["total"] for r in rows)
    return [
        LabShare(index=k + 1, name=r["lab__name"], n=r["total"], share=r["total"] / total)
        for k, r in enumerate(rows)
    ]


def policy_score_history(
    *, slug: str, since: datetime | None = None, max_points: int = 60
) -> list[HistoryPoint]:
    """The policy's score and 95% interval in up to ``max_points`` snapshots spread evenly over all snapshots
    (the newest always included), oldest first; snapshots that do not rate the policy are skipped.

    ``since``: only snapshots created at or after this time (e.g. the policy's registration)."""
    versions_qs = RankingSnapshot.objects.order_by("version")
    if since is not None:
        versions_qs = versions_qs.filter(created_at__gte=since)
    versions = list(versions_qs.values_list("version", flat=True))
    if len(versions) > max_points:
        step = (len(versions) - 1) / (max_points - 1)
        versions = sorted({versions[round(k * step)] for k in range(max_points)})
    points = []
    for snap in (
        RankingSnapshot.objects.filter(version__in=versions)
        .order_by("version")
        .only("version", "created_at", "ratings")
    ):
        row = next((r for r in snap.ratings if r["slug"] == slug), None)
        if row is not None:
            points.append(
                HistoryPoint(
                    at=snap.created_at,
                    version=snap.version,
                    score=row["score"],
                    low=row["ci_low"],
                    high=row["ci_high"],
                )
            )
    return points


COMPARISON_LOG_HEADER = ("policy_a", "policy_b", "outcome", "task_category", "date", "lab", "weight")
OUTCOME_OF_CHOICE = {"A": 1.0, "B": 0.0, "tie": 0.5}


def comparison_log(
    *, snapshot: RankingSnapshot, chunk_size: int = 2000
) -> Iterator[tuple[str, str, str, str, date, int, float]]:
    """The comparisons ``snapshot`` fitted, oldest first, streamed from the database.

    Rows: (policy A slug, policy B slug, outcome "A" | "B" | "tie" (the slot the lab preferred), task
    category, UTC date, lab number, weight in the fit). No lab names, session ids or reasons. The rows are
    those of the snapshot's fitted rows (``fitted-<version>.csv``), one per comparison: the same window (the
    preferences counted when the fit read its data), the same labs (exclusions as of the snapshot, not as of
    now), the lab numbers of the fitted rows, and each comparison's weight (its fitted row's weight / count).
    Snapshots stored before the fitted rows carried their window fall back to "stored before the snapshot, of
    labs not excluded now", numbering labs by first comparison.
    """
    fitted = snapshot.fitted_rows or {}
    if "through_preference" not in fitted:
        yield from _comparison_log_legacy(snapshot=snapshot, chunk_size=chunk_size)
        return
    lab_ids: list[int] = fitted["labs"]
    remaining: dict[tuple[str, str, float, str, int], int] = {}
    weight: dict[tuple[str, str, float, str, int], float] = {}
    for _, _, slug_a, slug_b, outcome, category, lab, count, w in fitted["rows"]:
        key = (slug_a, slug_b, float(outcome), category, int(lab))
        remaining[key] = remaining.get(key, 0) + int(count)
        weight[key] = float(w) / int(count) if count else 0.0
    number = {lab_id: k + 1 for k, lab_id in enumerate(lab_ids)}
    rows = (
        Preference.objects.filter(valid=True, pk__lte=fitted["through_preference"], lab_id__in=lab_ids)
        .order_by("pk")
        .values_list("policy_a__slug", "policy_b__slug", "choice", "task_category", "created_at", "lab_id")
        .iterator(chunk_size=chunk_size)
    )
    for a, b, choice, category, created_at, lab_id in rows:
        key = (a, b, OUTCOME_OF_CHOICE[choice], category, number[lab_id])
        # on a database whose ids may commit out of order, a preference committed after the fit read its
        # data can hold a smaller id: the fitted counts bound every (pair, outcome, category, lab) cell
        if remaining.get(key, 0) <= 0:
            continue
        remaining[key] -= 1
        yield a, b, choice, category, created_at.date(), number[lab_id], weight[key]


def _comparison_log_legacy(
    *, snapshot: RankingSnapshot, chunk_size: int
) -> Iterator[tuple[str, str, str, str, date, int, float]]:
    rows = (
        Preference.objects.filter(valid=True, created_at__lte=snapshot.created_at, lab__votes_excluded=False)
        .order_by("pk")
        .values_list("policy_a__slug", "policy_b__slug", "choice", "task_category", "created_at", "lab_id")
        .iterator(chunk_size=chunk_size)
    )
    lab_index: dict[int, int] = {}
    for a, b, choice, category, created_at, lab_id in rows:
        index = lab_index.setdefault(lab_id, len(lab_index) + 1)
        yield a, b, choice, category, created_at.date(), index, 1.0


def policy_sessions_with_videos(*, policy: Policy, limit: int = 12) -> QuerySet[EvaluationSession]:
    """The newest submitted sessions of the policy that have verified videos, with what a page shows."""
    return (
        EvaluationSession.objects.filter(
            Q(policy_a=policy) | Q(policy_b=policy),
            state=EvaluationSession.State.SUBMITTED,
            videos__state=Video.State.VERIFIED,
        )
        .distinct()
        .select_related("preference", "policy_a__organization", "policy_b__organization")
        .order_by("-ended_at")[:limit]
    )
