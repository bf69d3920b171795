"""Writes for the relay's internal API: admitting connections to session slots, renewing and releasing them,
and storing policies' error reports for their owners.

A connection is valid while its session is open (not voted, aborted or past its lease), the lab key its token
was minted for is unrevoked and belongs to the session's lab, and it holds the slot's attachment (one per
slot, with a short lease the relay's status calls renew; see ``policy_server.relay_admission``).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from arena.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from arena.models import (
    SLOTS,
    ApiKey,
    EvaluationSession,
    Policy,
    PolicyDialout,
    PolicyIncident,
    RelayAttachment,
)
from arena.services.policies import organization_nonces
from policy_server import dialout, netguard

CONNECTION_RE = re.compile(r"[0-9a-f]{8,64}")
INCIDENTS_PER_SLOT = 20
"""Reports stored per session slot: a policy that fails on every frame does not flood its owner's list."""


@dataclass(frozen=True)
class SlotClaim:
    """What a relay connection claims (from its token), plus the relay's id for the connection."""

    session: str
    slot: str
    lab_key: str
    connection: str


@dataclass(frozen=True)
class EndpointProof:
    """What the relay checks in the ``arena_nonce`` of the metadata the slot's policy serves: it must be one of
    ``nonces`` (its organization's registration nonces) when present, and present when ``required`` (the
    policy proved control of its endpoint, so its server serves the nonce: any other server answering at that
    endpoint, such as another organization's reached through a name that points elsewhere since the checks,
    is refused)."""

    required: bool
    nonces: list[str]


@dataclass(frozen=True)
class Admitted:
    """An admitted connection: its attachment's lease in seconds, and the endpoint proof (None: nothing to
    check, as for a dial-out policy, whose link the owner's key authenticated)."""

    lease_s: float
    endpoint_proof: EndpointProof | None


def relay_endpoint_proof(*, policy: Policy) -> EndpointProof | None:
    """The endpoint proof the relay checks for ``policy`` (see :class:`EndpointProof`)."""
    try:
        netguard.parse_endpoint(policy.endpoint_url)
    except netguard.EndpointNotAllowed:
        return None  # a dial-out policy (or a URL the relay will not connect to anyway)
    return EndpointProof(
        required=policy.endpoint_proven_at is not None,
        nonces=sorted(organization_nonces(organization=policy.organization)),
    )


def relay_admit(*, claim: SlotClaim) -> Admitted:
    """Attach ``claim.connection`` to its session slot; returns the attachment's lease in seconds and the
    endpoint proof the relay checks in the policy's metadata (:func:`relay_endpoint_proof`).

    Raises NotFound (no such session), Conflict ``session_closed`` (voted, aborted or past its lease),
    PermissionDenied ``key_revoked`` (the lab key is revoked or not the session's lab's), Conflict
    ``slot_in_use`` (another connection holds the slot).

    Each write is one statement, outside a multi-statement transaction: on SQLite a transaction that reads and
    then writes fails at once ("database is locked") when another writer commits meanwhile, and the relay's
    steady calls would turn that into failures of the labs' own writes. A session closing between the check and
    the insert leaves an attachment that the relay's next status call closes.
    """
    session_id = _check_claim(claim)
    lease = timedelta(seconds=settings.ARENA_RELAY_ATTACHMENT_LEASE_SECONDS)
    now = timezone.now()
    session = EvaluationSession.objects.filter(pk=session_id).first()
    if session is None:
        raise NotFound("session_not_found", "No such session.", field="session")
    if not _session_open(session, now):
        raise Conflict("session_closed", "The session is closed; its relay tokens are void.")
    if _active_keys({claim.lab_key}).get(claim.lab_key) != session.lab_id:
        raise PermissionDenied("key_revoked", "The lab key this token was minted for is not active.")
    RelayAttachment.objects.filter(session=session, slot=claim.slot, lease_expires_at__lte=now).delete()
    try:
        with transaction.atomic():  # a savepoint when called inside a transaction (tests, admin shells)
            RelayAttachment.objects.create(
                session=session,
                slot=claim.slot,
                connection=claim.connection,
                lease_expires_at=now + lease,
                created_at=now,
            )
    except IntegrityError as exc:
        raise Conflict("slot_in_use", "Another connection serves this slot.") from exc
    policy_id = session.policy_a_id if claim.slot == "A" else session.policy_b_id
    policy = Policy.objects.select_related("organization").get(pk=policy_id)
    return Admitted(lease_s=lease.total_seconds(), endpoint_proof=relay_endpoint_proof(policy=policy))


def relay_status(*, claims: list[SlotClaim]) -> list[str]:
    """The connections among ``claims`` that must close; renews the attachments of all the others.

    A constant number of queries whatever the number of connections, and no write at all in most calls: leases
    are renewed once half spent, and rows are deleted only for connections that close or lapsed (a relay died
    or stopped polling). A malformed claim is simply closed. Statements stand alone, as in ``relay_admit``.
    """
    now = timezone.now()
    lease = timedelta(seconds=settings.ARENA_RELAY_ATTACHMENT_LEASE_SECONDS)
    attachments = {
        a.connection: a
        for a in RelayAttachment.objects.filter(
            connection__in=[c.connection for c in claims], lease_expires_at__gt=now
        ).select_related("session")
    }
    keys = _active_keys({c.lab_key for c in claims})
    renew, closed = [], []
    for claim in claims:
        attachment = attachments.get(claim.connection)
        ok = (
            attachment is not None
            and str(attachment.session_id) == claim.session
            and attachment.slot == claim.slot
            and _session_open(attachment.session, now)
            and keys.get(claim.lab_key) == attachment.session.lab_id
        )
        if not ok:
            closed.append(claim.connection)
        elif attachment is not None and attachment.lease_expires_at < now + lease / 2:
            renew.append(claim.connection)
    if renew:
        RelayAttachment.objects.filter(connection__in=renew).update(lease_expires_at=now + lease)
    if closed:
        RelayAttachment.objects.filter(connection__in=closed).delete()
    if RelayAttachment.objects.filter(lease_expires_at__lte=now).exists():
        RelayAttachment.objects.filter(lease_expires_at__lte=now).delete()
    return closed


def relay_release(*, connections: list[str]) -> int:
    """Free the slots of connections that ended; returns how many were attached."""
    deleted, _ = RelayAttachment.objects.filter(connection__in=connections).delete()
    return deleted


RELAY_URL_RE = re.compile(r"wss?://[!-~]{1,290}")


def relay_dialout_attach(*, policy: str, key: str, relay: str, connection: str, renew: bool = False) -> float:
    """Record that the dial-out policy ``policy`` (a slug) is connected to the relay reachable at ``relay``
    through the link ``connection``; returns the attachment's lease in seconds. A new link replaces any older
    one (a reconnect after a relay restart is served at once); ``renew`` renews an existing attachment.

    Raises PermissionDenied ``dialout_refused`` (the same answer for an unknown policy, a key that is not an
    active owner key of the policy's owner or organization, a retired policy, or an endpoint other than
    ``dialout://<slug>``: no oracle for which it was), Conflict ``superseded`` (renew of a replaced link).
    """
    from arena.auth import key_lookup
    from arena.services.policies import check_policy_owner

    if not CONNECTION_RE.fullmatch(connection):
        raise InvalidInput("invalid_connection", "A connection id is 8-64 hex digits.", field="connection")
    if not RELAY_URL_RE.fullmatch(relay):
        raise InvalidInput("invalid_relay", "The relay address is a ws:// or wss:// URL.", field="relay")
    refused = PermissionDenied("dialout_refused", "This key does not serve that policy in dial-out mode.")
    found = Policy.objects.exclude(status=Policy.Status.RETIRED).filter(slug=policy).first()
    api_key = key_lookup(key)
    if found is None or api_key is None or api_key.user is None:
        raise refused
    if found.endpoint_url != dialout.endpoint_for(found.slug):
        raise refused
    try:
        check_policy_owner(owner=api_key.user, policy=found)
    except PermissionDenied as exc:
        raise refused from exc
    lease = timedelta(seconds=settings.ARENA_RELAY_ATTACHMENT_LEASE_SECONDS)
    now = timezone.now()
    if renew:
        renewed = PolicyDialout.objects.filter(policy=found, connection=connection).update(
            lease_expires_at=now + lease, relay_url=relay
        )
        if not renewed:
            raise Conflict("superseded", "A newer link serves this policy.")
    else:
        PolicyDialout.objects.update_or_create(
            policy=found,
            defaults={
                "relay_url": relay,
                "connection": connection,
                "lease_expires_at": now + lease,
                "attached_at": now,
            },
        )
    return lease.total_seconds()


def relay_dialout_detach(*, connection: str) -> int:
    """Forget a dial-out link that closed; returns how many attachments it held (0 or 1)."""
    deleted, _ = PolicyDialout.objects.filter(connection=connection).delete()
    return deleted


def relay_dialout_locate(*, policy: str) -> str | None:
    """The internal address of the relay the dial-out policy ``policy`` (a slug) is attached to now, or None."""
    return (
        PolicyDialout.objects.filter(policy__slug=policy, lease_expires_at__gt=timezone.now())
        .values_list("relay_url", flat=True)
        .first()
    )


def incident_record(*, session: str, slot: str, kind: str, detail: str) -> PolicyIncident | None:
    """Store a policy's error text for its owner (None when the slot already reported
    ``INCIDENTS_PER_SLOT``); keeps the newest ``ARENA_POLICY_INCIDENTS_KEPT`` per policy."""
    session_id = _check_session_and_slot(session, slot)
    if not kind.strip():
        raise InvalidInput("required", "Name the kind of error.", field="kind")
    found = EvaluationSession.objects.select_related("policy_a", "policy_b").filter(pk=session_id).first()
    if found is None:
        raise NotFound("session_not_found", "No such session.", field="session")
    if PolicyIncident.objects.filter(session=found, slot=slot).count() >= INCIDENTS_PER_SLOT:
        return None
    policy = found.policy_in(slot)
    # The insert opens the transaction, so that it holds the write lock from its first statement (SQLite).
    with transaction.atomic():
        incident = PolicyIncident.objects.create(
            policy=policy, session=found, slot=slot, kind=kind.strip(), detail=detail
        )
        stale = PolicyIncident.objects.filter(policy=policy).values_list("pk", flat=True)[
            settings.ARENA_POLICY_INCIDENTS_KEPT :
        ]
        PolicyIncident.objects.filter(pk__in=list(stale)).delete()
    return incident


def _session_open(session: EvaluationSession, now: datetime) -> bool:
    return session.is_open and session.lease_expires_at > now


def _active_keys(prefixes: set[str]) -> dict[str, int]:
    """Active lab keys among ``prefixes``: prefix -> the key's lab id."""
    return dict(
        ApiKey.objects.filter(prefix__in=prefixes, revoked_at__isnull=True, lab__isnull=False).values_list(
            "prefix", "lab_id"
        )
    )


def _check_claim(claim: SlotClaim) -> uuid.UUID:
    if not CONNECTION_RE.fullmatch(claim.connection):
        raise InvalidInput("invalid_connection", "A connection id is 8-64 hex digits.", field="connection")
    return _check_session_and_slot(claim.session, claim.slot)


def _check_session_and_slot(session: str, slot: str) -> uuid.UUID:
    if slot not in SLOTS:
        raise InvalidInput("invalid_slot", "The slot is A or B.", field="slot")
    try:
        return uuid.UUID(session)
    except ValueError as exc:
        raise NotFound("session_not_found", "No such session.", field="session") from exc
