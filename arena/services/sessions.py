"""Writes for evaluation sessions: assignment, episode reports, the preference, aborts and expiry."""

from __future__ import annotations

import logging
import secrets
import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from arena import metrics
from arena.errors import Conflict, InvalidInput, NotFound, Unavailable
from arena.models import ApiKey, Episode, EvaluationSession, Lab, Policy, Preference, Robot
from arena.pairing import eligible_policies, pair_choose
from arena.services.notifications import notify_sessions_undelivered
from arena.services.policies import policy_recheck_request
from arena.services.tallies import tally_add

State = EvaluationSession.State
log = logging.getLogger(__name__)


def lease_deadline(now: datetime | None = None) -> datetime:
    return (now or timezone.now()) + timedelta(minutes=settings.ARENA_SESSION_LEASE_MINUTES)


def pair_assign(
    *,
    lab: Lab,
    robot: Robot,
    task: str,
    task_category: str = "",
    scene_notes: str = "",
    created_by: ApiKey | None = None,
) -> EvaluationSession:
    """Open a session on ``robot`` for ``task`` with two eligible policies in random slot order.

    Raises Conflict when the lab already has the maximum number of open sessions, Unavailable when fewer than
    two policies are eligible for this robot.
    """
    if robot.lab_id != lab.pk:
        raise NotFound("robot_not_found", "Your lab has no such robot.", field="robot")
    if not task.strip():
        raise InvalidInput("required", "Type the task instruction before asking for a pair.", field="task")
    now = timezone.now()
    with metrics.assignment_observed():
        session = _pair_assign_locked(
            lab=lab,
            robot=robot,
            task=task,
            task_category=task_category,
            scene_notes=scene_notes,
            created_by=created_by,
            now=now,
        )
    log.info("session %s assigned to lab %s on robot %s", session.pk, lab.slug, robot.name)
    return session


def _pair_assign_locked(
    *,
    lab: Lab,
    robot: Robot,
    task: str,
    task_category: str,
    scene_notes: str,
    created_by: ApiKey | None,
    now: datetime,
) -> EvaluationSession:
    with transaction.atomic():
        # Serialises assignment per lab (a row lock on Postgres) so the open-session cap holds under races.
        Lab.objects.select_for_update().get(pk=lab.pk)
        _expire(EvaluationSession.objects.filter(lab=lab), now)
        open_count = EvaluationSession.objects.filter(
            lab=lab, state__in=EvaluationSession.OPEN_STATES
        ).count()
        limit = settings.ARENA_MAX_OPEN_SESSIONS_PER_LAB
        if open_count >= limit:
            raise Conflict(
                "too_many_open_sessions",
                f"Your lab has {open_count} open sessions (the limit is {limit}): finish or abort one first.",
            )
        session_id = uuid.uuid4()
        choice = pair_choose(policies=eligible_policies(lab=lab, robot=robot), session_id=session_id)
        if choice is None:
            raise Unavailable(
                "no_eligible_pair",
                "Fewer than two active policies can run on this robot right now; try again later.",
                field="robot",
            )
        first, second = choice.policy_a, choice.policy_b
        if secrets.randbelow(2):
            first, second = second, first
        return EvaluationSession.objects.create(
            id=session_id,
            lab=lab,
            robot=robot,
            created_by=created_by,
            task=task.strip(),
            task_category=task_category,
            scene_notes=scene_notes,
            policy_a=first,
            policy_b=second,
            pair_probability=choice.probability,
            state=State.ASSIGNED,
            lease_expires_at=lease_deadline(now),
            created_at=now,
        )


def session_for_lab_update(*, lab: Lab, session_id: uuid.UUID | str) -> EvaluationSession:
    """Lock the lab's open session for a write, inside the caller's transaction.

    Callers run ``_expire(...)`` first, outside their transaction, so that an overdue lease is recorded as
    expired even though the write that found it is refused and rolled back.
    """
    session = (
        # of=("self",): lock the session row only. Without it Postgres also locks the joined policy and robot
        # rows FOR UPDATE, serialising every session of a popular policy and deadlocking with the foreign-key
        # locks that concurrent inserts (sessions, preferences) take on the same policies.
        EvaluationSession.objects.select_for_update(of=("self",))
        .filter(pk=session_id, lab=lab)
        .select_related("policy_a", "policy_b", "robot")
        .first()
    )
    if session is None:
        raise NotFound("session_not_found", "Your lab has no such session.")
    if session.is_open and session.lease_expires_at <= timezone.now():
        raise Conflict("lease_expired", "The session's lease ran out; it accepts no more changes.")
    if not session.is_open:
        code = "lease_expired" if session.state == State.EXPIRED else f"session_{session.state}"
        raise Conflict(code, f"The session is {session.state}; it accepts no more changes.")
    return session


def episode_report(
    *,
    lab: Lab,
    session_id: uuid.UUID | str,
    slot: str,
    progress: int,
    success: bool,
    steps: int,
    duration_s: float,
    mean_latency_ms: float | None = None,
    failure_reason: str = "",
) -> Episode:
    _expire(EvaluationSession.objects.filter(pk=session_id, lab=lab), timezone.now())
    with transaction.atomic():
        session = session_for_lab_update(lab=lab, session_id=session_id)
        if session.episodes.filter(slot=slot).exists():
            raise Conflict("episode_exists", f"Slot {slot} already has an episode.", field="slot")
        now = timezone.now()
        episode = Episode.objects.create(
            session=session,
            slot=slot,
            progress=progress,
            success=success,
            steps=steps,
            duration_s=duration_s,
            mean_latency_ms=mean_latency_ms,
            failure_reason=failure_reason,
            created_at=now,
        )
        session.state = State.RUNNING
        session.started_at = session.started_at or now
        session.lease_expires_at = lease_deadline(now)
        session.save(update_fields=["state", "started_at", "lease_expires_at"])
        return episode


def preference_submit(
    *,
    lab: Lab,
    session_id: uuid.UUID | str,
    choice: str,
    reason: str,
    valid: bool = True,
    reason_public: bool | None = None,
) -> Preference:
    """Store the verdict (once), close the session and schedule a ranking refit after commit.

    ``reason_public``: whether the lab lets the reason text be published; None takes the lab's default
    (``Lab.publish_reasons``, itself False unless the lab opted in)."""
    if not reason.strip():
        raise InvalidInput("required", "Say why: the reason is required.", field="reason")
    _expire(EvaluationSession.objects.filter(pk=session_id, lab=lab), timezone.now())
    with transaction.atomic():
        session = session_for_lab_update(lab=lab, session_id=session_id)
        progress = dict(session.episodes.values_list("slot", "progress"))
        missing = sorted({"A", "B"} - set(progress))
        if missing:
            raise Conflict(
                "episodes_missing",
                f"Report the episode of slot {' and '.join(missing)} first.",
                field="choice",
            )
        now = timezone.now()
        preference = Preference.objects.create(
            session=session,
            choice=choice,
            reason=reason.strip(),
            reason_public=lab.publish_reasons if reason_public is None else reason_public,
            valid=valid,
            created_at=now,
            policy_a=session.policy_a,
            policy_b=session.policy_b,
            lab=session.lab,
            task_category=session.task_category,
            progress_a=progress["A"],
            progress_b=progress["B"],
        )
        tally_add(preference=preference, platform=session.robot.platform)
        session.state = State.SUBMITTED
        session.ended_at = now
        session.save(update_fields=["state", "ended_at"])
        transaction.on_commit(_enqueue_refit)
        transaction.on_commit(lambda: metrics.SESSIONS_ENDED.labels(how="submitted").inc())
    log.info("session %s: preference %s stored", session.pk, choice)
    return preference


def session_abort(*, lab: Lab, session_id: uuid.UUID | str, reason: str, fault: str) -> EvaluationSession:
    """Close a session without a verdict.

    A policy named at fault gets a re-check queued with a random delay (see ``policy_recheck_request``):
    nothing public changes at the abort, and the re-check's result never counts against the policy, so aborts
    cannot be used to learn which policy was in a slot or to push a competitor out of the pool. The fault stays
    on the session, for the owner's abort statistics and the lab-integrity review.
    """
    if not reason.strip():
        raise InvalidInput("required", "Say why the session is aborted.", field="reason")
    _expire(EvaluationSession.objects.filter(pk=session_id, lab=lab), timezone.now())
    with transaction.atomic():
        session = session_for_lab_update(lab=lab, session_id=session_id)
        session.state = State.ABORTED
        session.ended_at = timezone.now()
        session.abort_reason = reason.strip()
        session.abort_fault = fault
        session.save(update_fields=["state", "ended_at", "abort_reason", "abort_fault"])
        if fault in (EvaluationSession.Fault.POLICY_A, EvaluationSession.Fault.POLICY_B):
            policy: Policy = (
                session.policy_a if fault == EvaluationSession.Fault.POLICY_A else session.policy_b
            )
            policy_recheck_request(policy_id=policy.pk, now=session.ended_at)
        transaction.on_commit(lambda: metrics.SESSIONS_ENDED.labels(how="aborted").inc())
    log.info("session %s aborted (fault: %s)", session.pk, fault or "none")
    return session


def session_renew_lease(*, session: EvaluationSession) -> None:
    """Extend an open session's lease (called on activity, e.g. video uploads), inside the caller's atomic."""
    session.lease_expires_at = lease_deadline()
    session.save(update_fields=["lease_expires_at"])


def session_expire_overdue(*, now: datetime | None = None) -> int:
    """Mark every open session whose lease ran out as expired; returns how many."""
    return _expire(EvaluationSession.objects.all(), now or timezone.now())


def _expire(queryset, now: datetime) -> int:
    """Mark the open sessions of ``queryset`` whose lease ran out as expired; their labs' members are told
    after commit (results still spooled for them will be refused)."""
    overdue = list(
        queryset.filter(state__in=EvaluationSession.OPEN_STATES, lease_expires_at__lte=now).values_list(
            "pk", flat=True
        )
    )
    if not overdue:
        return 0
    with transaction.atomic():
        count = EvaluationSession.objects.filter(
            pk__in=overdue, state__in=EvaluationSession.OPEN_STATES
        ).update(state=State.EXPIRED, ended_at=now)
        expired = EvaluationSession.objects.filter(pk__in=overdue, state=State.EXPIRED, ended_at=now)
        notify_sessions_undelivered(sessions=expired.select_related("lab").prefetch_related("lab__members"))
    if count:
        metrics.SESSIONS_ENDED.labels(how="expired").inc(count)
        log.info("%d session(s) expired: their lease ran out", count)
    return count


def _enqueue_refit() -> None:
    from arena.tasks import ranking_refit_soon

    ranking_refit_soon()
