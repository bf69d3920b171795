"""A policy's public page: identity and health, score history, record by opponent and task category, lab
shares and the session videos the visitor may watch."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from arena.errors import NotFound
from arena.models import EvaluationSession, Policy, Video
from arena.selectors.leaderboard import snapshot_latest
from arena.selectors.pages import (
    policy_lab_shares,
    policy_public_health,
    policy_record_by_category,
    policy_record_by_opponent,
    policy_score_history,
    policy_sessions_with_videos,
)
from arena.selectors.policies import policy_get, policy_versions
from arena.storage import get_storage
from arena.web import charts
from arena.web.access import principals_of, video_for_visitor
from arena.web.render import render_page

OUTCOME_FOR = {("A", "A"): "won", ("A", "B"): "lost", ("B", "B"): "won", ("B", "A"): "lost"}


def _session_entry(session: EvaluationSession, policy: Policy, principals) -> dict[str, Any] | None:
    """What the page shows of one finished session: opponent, outcome, and the videos the visitor may play
    in two columns, slot A (ran first) and slot B, each with its policy and a poster frame when there is one."""
    slot = "A" if session.policy_a_id == policy.pk else "B"
    opponent = session.policy_b if slot == "A" else session.policy_a
    by_slot: dict[str, list[dict[str, Any]]] = {"A": [], "B": []}
    storage = None
    for video in session.videos.all():
        if video.state != Video.State.VERIFIED:
            continue
        view = video_for_visitor(principals=principals, video=video)
        if view is None:
            continue
        poster = None
        if video.poster_key:
            storage = storage or get_storage()
            poster = storage.download_url(key=video.poster_key)[0]
        by_slot[video.slot].append({**view, "content_type": video.content_type, "poster": poster})
    if not any(by_slot.values()):
        return None
    choice = session.preference.choice
    return {
        "id": session.pk,
        "ended_at": session.ended_at,
        "opponent": opponent,
        "task_category": session.task_category,
        "outcome": "tie" if choice == "tie" else OUTCOME_FOR[(slot, choice)],
        "slots": [
            {
                "slot": s,
                "policy": session.policy_in(s).slug,
                "is_this": s == slot,
                "preferred": choice == s,
                "videos": sorted(by_slot[s], key=lambda v: v["camera"]),
            }
            for s in ("A", "B")
        ],
    }


@require_GET
def policy_page(request: HttpRequest, slug: str) -> HttpResponse:
    try:
        policy = policy_get(slug=slug)
    except NotFound as exc:
        raise Http404(exc.message) from exc
    snapshot = snapshot_latest(fitted_rows=False)
    row = next((r for r in snapshot.ratings if r["slug"] == slug), None) if snapshot else None
    # A pending registration has no public page; a ranked policy sent back to pending (new endpoint) keeps it.
    if policy.status == Policy.Status.PENDING and row is None:
        raise Http404("No such policy.")

    breakdown_scores = {
        category: entry["scores"].get(slug)
        for category, entry in (snapshot.breakdowns if snapshot else {}).items()
    }
    categories = [
        {"record": record, "rating": breakdown_scores.get(record.key)}
        for record in policy_record_by_category(policy=policy)
    ]
    shares = policy_lab_shares(policy=policy)
    max_share = settings.ARENA_LAB_MAX_SHARE
    history = policy_score_history(slug=slug, since=policy.created_at)
    principals = principals_of(request.user)
    sessions = [
        entry
        for session in policy_sessions_with_videos(policy=policy)
        if (entry := _session_entry(session, policy, principals)) is not None
    ]
    return render_page(
        request,
        "arena/policy.html",
        {
            "policy": policy,
            "health": policy_public_health(policy=policy),
            "check_rounding_minutes": settings.ARENA_PUBLIC_CHECK_ROUNDING_MINUTES,
            "row": row,
            "snapshot": snapshot,
            "opponents": policy_record_by_opponent(policy=policy),
            "categories": categories,
            "shares": shares,
            "max_share": max_share,
            "max_share_pct": round(100 * max_share),
            "dominant": [s for s in shares if s.share > max_share],
            "show_lab_names": request.user.is_staff,
            "history_chart": charts.score_history(
                history, ident="score-history", title=f"Score of {policy.slug} across ranking snapshots"
            )
            if history
            else None,
            "sessions": sessions,
            "versions": policy_versions(policy=policy, ratings=snapshot.ratings if snapshot else None),
        },
    )
