"""Writes for policies: registration, updates, retirement and health-check results.

A dial-out policy registers the endpoint ``dialout://<its slug>`` (:func:`check_dialout_endpoint`): its server
connects out to a relay (``policy_server.dialout``), so there is no address to guard or to prove control of;
the relay's ``attach/`` call checks the owner key instead.

Endpoints are checked before anything is stored (:func:`check_endpoint_url`): the address guard of
:mod:`policy_server.netguard` refuses link-local, metadata, private, loopback, multicast and reserved addresses
(``ARENA_ENDPOINT_ALLOW`` opens private or loopback ones) without sending a packet to them. An endpoint on a
server that another organization has registered (same host and port whatever the path, or a host resolving to
the same address) needs proof of control (:func:`check_endpoint_claim`).

Health-check results (:func:`policy_check_record`) move a policy between active and failing only when they
come from the arena's own checks; the re-check an abort asks for is queued with a random delay
(:func:`policy_recheck_request`) and its result is evidence for the owner and for lab integrity, never a
strike against the policy, so a lab's aborts alone cannot take a competitor out of the pool.

Versions: a row is one version of a policy, with its own rating. Declaring another version (a new
``version_label`` or ``weights_hash``, required with a new endpoint URL) creates the next row
(:func:`policy_version_create`) and retires the old one with its results. Each passing check stores the
fingerprint of the policy's answer to the fixed probe; two checks in a row that agree with each other but not
with the version's first one flag the policy (``behaviour_changed_at``, for its owner and staff only).
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.crypto import salted_hmac

from arena import metrics
from arena.errors import Conflict, InvalidInput, PermissionDenied
from arena.models import ACTION_SPACES, Organization, Policy, PolicyCheck
from arena.services.accounts import check_owner_in_organization
from arena.services.notifications import notify_policy_health
from policy_server import dialout, netguard
from policy_server.check import same_behaviour
from policy_server.relay_token import MAX_ENDPOINT_AND_KEY_BYTES, endpoint_fits
from policy_server.server import NONCE_KEY

log = logging.getLogger(__name__)

# Both are also the OpenAPI patterns of the fields (ECMA dialect): ASCII classes only, matched with fullmatch.
SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,78}[a-z0-9]$")
# An endpoint: ws(s)://, a host name (dot-separated labels) or a bracketed IPv6 literal, a port in 1-65535 and
# a path of printable ASCII. The address guard (policy_server.netguard) checks the rest.
ENDPOINT_RE = re.compile(
    r"^wss?://"
    r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_][A-Za-z0-9_-]*)*\.?)"
    r"(?::(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?"
    r"(?:/[!-~]*)?$"
)
# The endpoint field's pattern: a ws(s):// address or a dial-out policy's dialout://<slug>.
ENDPOINT_FIELD_RE = re.compile(rf"^(?:{ENDPOINT_RE.pattern[1:-1]}|{dialout.SCHEME}{SLUG_RE.pattern[1:-1]})$")
# A version label or weights hash: printable characters, no line breaks.
VERSION_TEXT_RE = re.compile(r"^[^\x00-\x1f\x7f]*$")
VERSION_FIELDS = ("version_label", "weights_hash")
# Not carried over to a new version: identity, lifecycle, health and the fingerprint belong to one version.
NOT_INHERITED = frozenset(
    {
        "id",
        "slug",
        "status",
        "created_at",
        "retired_at",
        "version_number",
        "previous",
        "family",
        "fingerprint",
        "probe_answer",
        "behaviour_changed_at",
        "last_check_at",
        "last_check_ok",
        "last_check_error",
        "last_check_latency_ms",
        "consecutive_failures",
        "recheck_due_at",
    }
)
EDITABLE_FIELDS = (
    "name",
    "description",
    "license",
    "open_weights",
    "endpoint_url",
    "endpoint_api_key",
    "req_platform",
    "videos_public",
    *VERSION_FIELDS,
)


def endpoint_allow() -> frozenset[str]:
    """The address classes endpoints may have here (``ARENA_ENDPOINT_ALLOW``, see policy_server.netguard)."""
    return netguard.parse_allow(settings.ARENA_ENDPOINT_ALLOW)


def check_endpoint_url(url: str) -> netguard.Endpoint:
    """Refuse a malformed endpoint (400 ``invalid_endpoint``) or one whose host is, or now resolves to, an
    address this arena does not connect to (403 ``endpoint_not_allowed``). Only the resolver is asked: nothing is sent to
    the address. A name that does not resolve yet passes; every connect checks again."""
    if not ENDPOINT_RE.fullmatch(url or ""):
        raise InvalidInput(
            "invalid_endpoint",
            "The endpoint must be a ws:// or wss:// URL, e.g. ws://host:8000.",
            field="endpoint_url",
        )
    try:
        return netguard.check_endpoint(url, allow=endpoint_allow())
    except netguard.EndpointNotAllowed as exc:
        # 403: the request is well-formed (the schema's pattern holds); the address guard refuses it (a
        # forbidden address class, or a form the pattern cannot express, such as a bad IPv6 literal).
        raise PermissionDenied(
            "endpoint_not_allowed",
            f"Refused: {exc}. Register an address that the arena can reach over the internet.",
            field="endpoint_url",
        ) from exc


def check_dialout_endpoint(url: str, *, slug: str) -> None:
    """A ``dialout://`` endpoint must name the policy's own slug (403 ``dialout_slug_mismatch``: the request is
    well-formed, the schema's pattern holds, but it names another policy)."""
    if url != dialout.endpoint_for(slug):
        raise PermissionDenied(
            "dialout_slug_mismatch",
            f"A dial-out policy's endpoint is {dialout.endpoint_for(slug)} (its own slug).",
            field="endpoint_url",
        )


def endpoint_nonce(*, organization: Organization, endpoint: netguard.Endpoint) -> str:
    """The registration nonce proving that ``organization`` controls ``endpoint``: 32 hex characters, the
    same on every request (an HMAC of the server's secret key), so an owner can configure it once."""
    value = f"{organization.pk}:{endpoint.identity}"
    return salted_hmac("arena.endpoint-proof", value, algorithm="sha256").hexdigest()[:32]


def policy_endpoint_nonce(*, policy: Policy) -> str | None:
    """The nonce ``policy``'s organization serves to prove control of its endpoint; None for a dial-out policy
    (or a URL the guard cannot parse)."""
    try:
        endpoint = netguard.parse_endpoint(policy.endpoint_url)
    except netguard.EndpointNotAllowed:
        return None
    return endpoint_nonce(organization=policy.organization, endpoint=endpoint)


def _endpoint_rivals(
    *,
    endpoint: netguard.Endpoint,
    organization: Organization,
    exclude_pk: int | None = None,
    resolve: bool = False,
    proven_only: bool = False,
) -> list[Policy]:
    """Other organizations' policies (not retired) on the same server as ``endpoint``: the same host and port
    whatever the path (a policy server answers on every path), or, with ``resolve``, a host that now resolves to
    an address ``endpoint``'s host resolves to, on the same port (an IP literal or another name for the same
    machine). Resolving asks the resolver only, in parallel, within ``netguard.RESOLVE_TIMEOUT_S`` in all: never
    inside a transaction. ``proven_only``: only policies that proved control of their endpoint."""
    candidates = (
        Policy.objects.exclude(status=Policy.Status.RETIRED)
        .exclude(organization=organization)
        .exclude(pk=exclude_pk)
        .only("pk", "endpoint_url", "organization_id", "endpoint_proven_at", "status")
    )
    if proven_only:
        candidates = candidates.filter(endpoint_proven_at__isnull=False)
    rivals, same_port = [], []
    for policy in candidates:
        try:
            other = netguard.parse_endpoint(policy.endpoint_url)
        except netguard.EndpointNotAllowed:
            continue  # a dial-out policy, or a URL stored before the guard existed
        if other.server == endpoint.server:
            rivals.append(policy)
        elif other.port == endpoint.port:
            same_port.append((policy, other))
    if resolve and same_port:
        found = netguard.resolved_addresses([endpoint, *(other for _policy, other in same_port)])
        mine = found[endpoint]
        rivals += [policy for policy, other in same_port if mine & found[other]]
    return rivals


def check_endpoint_claim(
    *,
    organization: Organization,
    endpoint: netguard.Endpoint,
    api_key: str = "",
    exclude_pk: int | None = None,
) -> datetime | None:
    """Whether ``organization`` may register ``endpoint``: None when no other organization has it, the time of
    the proof when the endpoint's metadata carries this organization's nonce (``arena_nonce``), else Conflict
    ``endpoint_taken`` whose message gives the nonce to serve. Reading the metadata goes through the address
    guard (the endpoint passed :func:`check_endpoint_url` first); call this outside any transaction."""
    from policy_server.check import served_nonce

    if not _endpoint_rivals(
        endpoint=endpoint, organization=organization, exclude_pk=exclude_pk, resolve=True
    ):
        return None
    nonce = endpoint_nonce(organization=organization, endpoint=endpoint)
    served = served_nonce(
        endpoint.url,
        api_key=api_key or None,
        timeout=settings.ARENA_CHECK_TIMEOUT_SECONDS,
        endpoint_allow=endpoint_allow(),
    )
    if served is not None and hmac.compare_digest(served.encode(), nonce.encode()):
        return timezone.now()
    raise Conflict(
        "endpoint_taken",
        f"Another organization has registered this endpoint. If the server is yours, prove it: make its metadata "
        f'carry {NONCE_KEY} = "{nonce}" (arena-policy serve --arena-nonce {nonce}, or add the key to any '
        "server's metadata dict) and send this request again.",
        field="endpoint_url",
    )


def _unproven_rivals(*, organization: Organization, endpoint: netguard.Endpoint) -> list[int]:
    """The ids of other organizations' unproven policies on ``endpoint``'s server (resolved: outside any
    transaction), which go back to pending once ``organization`` proved control (:func:`_demote`)."""
    rivals = _endpoint_rivals(endpoint=endpoint, organization=organization, resolve=True)
    return [rival.pk for rival in rivals if rival.endpoint_proven_at is None]


def _demote(policy_ids: list[int]) -> None:
    """Whoever serves the nonce controls the server (the first registrant may have squatted it): the unproven
    rivals of a proven endpoint go back to pending."""
    if policy_ids:
        Policy.objects.filter(pk__in=policy_ids, endpoint_proven_at__isnull=True).exclude(
            status=Policy.Status.RETIRED
        ).update(status=Policy.Status.PENDING, consecutive_failures=0)


def _endpoint_claimed_elsewhere(policy: Policy) -> bool:
    """Whether another organization proved control of ``policy``'s server (same host and port, or an address its
    host resolves to) while ``policy`` did not. Resolves names: call it outside any transaction."""
    proven_elsewhere = Policy.objects.filter(endpoint_proven_at__isnull=False).exclude(
        organization_id=policy.organization_id
    )
    if policy.endpoint_proven_at is not None or not proven_elsewhere.exists():  # the common case: one query
        return False
    try:
        endpoint = netguard.parse_endpoint(policy.endpoint_url)
    except netguard.EndpointNotAllowed:
        return False
    return bool(
        _endpoint_rivals(
            endpoint=endpoint,
            organization=policy.organization,
            exclude_pk=policy.pk,
            resolve=True,
            proven_only=True,
        )
    )


def organization_nonces(*, organization: Organization) -> set[str]:
    """The registration nonces of every endpoint ``organization`` registered (dial-out ones have none): a
    server serving any of them is this organization's."""
    own = set()
    for url in Policy.objects.filter(organization=organization).values_list("endpoint_url", flat=True):
        try:
            own.add(endpoint_nonce(organization=organization, endpoint=netguard.parse_endpoint(url)))
        except netguard.EndpointNotAllowed:
            continue
    return own


def _proof_lost(policy: Policy, served_nonce: str | None) -> bool:
    """Whether ``policy`` proved control of its endpoint but the server there no longer serves a nonce of its
    organization's (the relay refuses such a slot too: ``policy_server.relay_admission.EndpointProof``)."""
    if policy.endpoint_proven_at is None:
        return False
    if not isinstance(served_nonce, str) or not served_nonce:
        return True
    own = organization_nonces(organization=policy.organization)
    return not any(hmac.compare_digest(served_nonce.encode(), nonce.encode()) for nonce in own)


def _serves_another_organizations_nonce(policy: Policy, served_nonce: str | None) -> bool:
    """Whether the endpoint's metadata carries a registration nonce that is not one of ``policy``'s organization's
    (for any endpoint it registered): the server is another organization's, reached under another name."""
    if not isinstance(served_nonce, str) or not served_nonce:
        return False
    own = organization_nonces(organization=policy.organization)
    return not any(hmac.compare_digest(served_nonce.encode(), nonce.encode()) for nonce in own)


def check_relay_capacity(endpoint_url: str, endpoint_api_key: str) -> None:
    """Relay tokens have one fixed size, so the endpoint and its key must fit in it together."""
    if not endpoint_fits(endpoint_url, endpoint_api_key):
        raise InvalidInput(
            "endpoint_too_long",
            f"The endpoint URL and its API key may take {MAX_ENDPOINT_AND_KEY_BYTES} bytes together "
            "(UTF-8); shorten one of them.",
            field="endpoint_url",
        )


def check_version(*, version_label: str, weights_hash: str) -> None:
    for field, value, limit in (("version_label", version_label, 120), ("weights_hash", weights_hash, 128)):
        if len(value) > limit or not VERSION_TEXT_RE.fullmatch(value):
            raise InvalidInput(
                "invalid_version", f"{field} is at most {limit} printable characters.", field=field
            )


def _version_slug(first: Policy, number: int) -> str:
    """``<first slug>-v<number>``, shortened to fit 80 characters; a random tag if that slug is taken."""
    suffix = f"-v{number}"
    slug = first.slug[: 80 - len(suffix)].rstrip("-") + suffix
    while Policy.objects.filter(slug=slug).exists():
        tag = f"-{secrets.token_hex(2)}{suffix}"
        slug = first.slug[: 80 - len(tag)].rstrip("-") + tag
    return slug


def policy_register(
    *,
    owner,
    slug: str,
    name: str,
    endpoint_url: str,
    organization: Organization | None = None,
    description: str = "",
    license: str = "",
    open_weights: bool = False,
    endpoint_api_key: str = "",
    req_platform: str = "",
    version_label: str = "",
    weights_hash: str = "",
) -> Policy:
    """Register a policy (its first version) as pending; a health check runs after commit and activates it
    when it passes."""
    if not SLUG_RE.fullmatch(slug):
        raise InvalidInput(
            "invalid_slug", "A slug is 3-80 lowercase letters, digits and hyphens.", field="slug"
        )
    check_version(version_label=version_label, weights_hash=weights_hash)
    if endpoint_url.startswith(dialout.SCHEME):
        check_dialout_endpoint(endpoint_url, slug=slug)
        endpoint = None
    else:
        endpoint = check_endpoint_url(endpoint_url)
    check_relay_capacity(endpoint_url, endpoint_api_key)
    if organization is None:
        orgs = list(owner.organizations.all()[:2])
        if len(orgs) != 1:
            raise InvalidInput(
                "organization_required",
                "You belong to several organizations: name one.",
                field="organization",
            )
        organization = orgs[0]
    check_owner_in_organization(user=owner, organization=organization)
    if Policy.objects.filter(slug=slug).exists():  # before contacting a contested endpoint; re-checked below
        raise Conflict("slug_taken", f"The slug {slug!r} is taken.", field="slug")
    proven_at = (
        None
        if endpoint is None
        else check_endpoint_claim(organization=organization, endpoint=endpoint, api_key=endpoint_api_key)
    )
    demoted = [] if proven_at is None else _unproven_rivals(organization=organization, endpoint=endpoint)
    with transaction.atomic():
        if Policy.objects.filter(slug=slug).exists():
            raise Conflict("slug_taken", f"The slug {slug!r} is taken.", field="slug")
        policy = Policy.objects.create(
            slug=slug,
            name=name,
            organization=organization,
            owner=owner,
            description=description,
            license=license,
            open_weights=open_weights,
            endpoint_url=endpoint_url,
            endpoint_api_key=endpoint_api_key,
            req_platform=req_platform,
            endpoint_proven_at=proven_at,
            version_label=version_label,
            weights_hash=weights_hash,
        )
        _demote(demoted)
        _schedule_check(policy)
    return policy


def policy_update(*, owner, policy: Policy, **changes: Any) -> Policy:
    """Change editable fields. A new endpoint sends the policy back to pending until it passes a check.

    A new endpoint URL needs a ``version_label``. A declared version (``version_label``, ``weights_hash``)
    other than the current one makes a new version (:func:`policy_version_create`), which is returned;
    the same label with a new URL is the same version moved to another server.
    """
    check_policy_owner(owner=owner, policy=policy)
    unknown = set(changes) - set(EDITABLE_FIELDS)
    if unknown:
        field = sorted(unknown)[0]
        raise InvalidInput("not_editable", f"{field} cannot be changed.", field=field)
    if policy.status == Policy.Status.RETIRED:
        successor = Policy.objects.filter(previous=policy).values_list("slug", flat=True).first()
        later = f" Its next version is {successor}." if successor else ""
        raise Conflict("policy_retired", f"A retired policy cannot be changed.{later}")
    check_version(
        version_label=changes.get("version_label", policy.version_label),
        weights_hash=changes.get("weights_hash", policy.weights_hash),
    )
    endpoint = None
    proven_at = None
    if "endpoint_url" in changes and changes["endpoint_url"].startswith(dialout.SCHEME):
        check_dialout_endpoint(changes["endpoint_url"], slug=policy.slug)
    elif "endpoint_url" in changes:
        endpoint = check_endpoint_url(changes["endpoint_url"])
    if (
        "endpoint_url" in changes
        and changes["endpoint_url"] != policy.endpoint_url
        and not changes.get("version_label")
    ):
        raise InvalidInput(
            "version_label_required",
            "A new endpoint needs a version_label: the checkpoint, git sha or a note on what it serves "
            "(the current label if it serves the same version).",
            field="version_label",
        )
    if endpoint is not None:
        # Also for an unchanged URL: that is how an owner whose endpoint another organization proved to
        # control gets the nonce (409) and, once the server serves it, proves control in turn.
        proven_at = check_endpoint_claim(
            organization=policy.organization,
            endpoint=endpoint,
            api_key=changes.get("endpoint_api_key", policy.endpoint_api_key),
            exclude_pk=policy.pk,
        )
    if any(k in changes and changes[k] != getattr(policy, k) for k in VERSION_FIELDS):
        return policy_version_create(policy=policy, changes=changes, proven_at=proven_at, endpoint=endpoint)
    demoted = (
        []
        if endpoint is None or proven_at is None
        else _unproven_rivals(organization=policy.organization, endpoint=endpoint)
    )
    with transaction.atomic():
        policy = Policy.objects.select_for_update().get(pk=policy.pk)
        check_relay_capacity(
            changes.get("endpoint_url", policy.endpoint_url),
            changes.get("endpoint_api_key", policy.endpoint_api_key),
        )
        endpoint_changed = any(
            k in changes and changes[k] != getattr(policy, k) for k in ("endpoint_url", "endpoint_api_key")
        )
        url_changed = changes.get("endpoint_url", policy.endpoint_url) != policy.endpoint_url
        for field, value in changes.items():
            setattr(policy, field, value)
        if url_changed or proven_at is not None:  # a proof holds for the endpoint it was made on only
            policy.endpoint_proven_at = proven_at
        if endpoint_changed:
            policy.status = Policy.Status.PENDING
            policy.consecutive_failures = 0
        policy.save()
        _demote(demoted)
        if endpoint_changed or proven_at is not None:
            _schedule_check(policy)
    return policy


def policy_version_create(
    *,
    policy: Policy,
    changes: dict[str, Any],
    proven_at: datetime | None = None,
    endpoint: netguard.Endpoint | None = None,
) -> Policy:
    """Start the next version of ``policy`` with ``changes`` applied: a new pending row (slug
    ``<first slug>-v<n>``, its own rating, linked by ``previous`` and ``family``), checked after commit; the
    old row is retired with its results. Sessions still open on the old row keep running it."""
    demoted = (
        []
        if endpoint is None or proven_at is None
        else _unproven_rivals(organization=policy.organization, endpoint=endpoint)
    )
    with transaction.atomic():
        old = Policy.objects.select_for_update().get(pk=policy.pk)
        if old.status == Policy.Status.RETIRED:  # a concurrent request made a version first
            raise Conflict("policy_retired", "A retired policy cannot be changed.")
        check_relay_capacity(
            changes.get("endpoint_url", old.endpoint_url),
            changes.get("endpoint_api_key", old.endpoint_api_key),
        )
        fields = {
            f.name: getattr(old, f.name) for f in Policy._meta.concrete_fields if f.name not in NOT_INHERITED
        }
        fields.update(changes)
        if changes.get("endpoint_url", old.endpoint_url) != old.endpoint_url or proven_at is not None:
            fields["endpoint_proven_at"] = proven_at
        first = old.first_version
        number = old.version_number + 1
        slug = _version_slug(first, number)
        if fields["endpoint_url"].startswith(dialout.SCHEME):
            # a dial-out endpoint names its policy: the new version is attached under its own slug
            fields["endpoint_url"] = f"{dialout.SCHEME}{slug}"
        new = Policy.objects.create(
            **fields,
            slug=slug,
            version_number=number,
            previous=old,
            family=first,
            status=Policy.Status.PENDING,
        )
        old.status = Policy.Status.RETIRED
        old.retired_at = timezone.now()
        old.save(update_fields=["status", "retired_at"])
        _demote(demoted)
        _schedule_check(new)
        transaction.on_commit(_refit_soon)  # the board shows the old version retired
    return new


def _refit_soon() -> None:
    from arena.tasks import ranking_refit_soon

    ranking_refit_soon()


def policy_retire(*, owner, policy: Policy) -> Policy:
    """Take a policy out of the pool for good. Its past comparisons stay in the ranking's history."""
    check_policy_owner(owner=owner, policy=policy)
    with transaction.atomic():
        policy = Policy.objects.select_for_update().get(pk=policy.pk)
        if policy.status != Policy.Status.RETIRED:
            policy.status = Policy.Status.RETIRED
            policy.retired_at = timezone.now()
            policy.save(update_fields=["status", "retired_at"])
    return policy


def policy_check_request(*, owner, policy: Policy) -> None:
    check_policy_owner(owner=owner, policy=policy)
    if policy.status == Policy.Status.RETIRED:
        raise Conflict("policy_retired", "A retired policy is not checked.")
    policy_check_schedule(policy_id=policy.pk)


ENDPOINT_CLAIMED = (
    "endpoint_claimed",
    "another organization proved that it controls this endpoint; prove yours with its registration nonce",
)
NONCE_MISMATCH = (
    "nonce_mismatch",
    "this policy proved control of its endpoint, but the server there no longer serves its registration "
    "nonce (arena_nonce): serve the policy's endpoint_nonce",
)


def policy_check_record(
    *,
    policy: Policy,
    ok: bool,
    error_code: str = "",
    message: str = "",
    latency_ms: float | None = None,
    requirements: dict[str, Any] | None = None,
    trigger: str = PolicyCheck.Trigger.ARENA,
    fingerprint: str | None = None,
    probe_answer: dict[str, Any] | None = None,
    served_nonce: str | None = None,
) -> Policy:
    """Store one health-check result.

    An arena check (``trigger="arena"``): N failures in a row make the policy ``failing``, a pass makes it
    active (unless another organization proved control of its endpoint, or ``served_nonce``, the ``arena_nonce``
    the endpoint's metadata carried, is not one of the policy's organization's: then the pass is recorded as
    ``endpoint_claimed``; or the policy proved control of its endpoint and the metadata carries no nonce of its
    organization's: ``nonce_mismatch``, as the relay would refuse its sessions). An abort re-check
    (``trigger="abort"``) is only recorded in the policy's check history: it changes neither the status, the
    failure count nor the public last-check fields.

    ``fingerprint`` and ``probe_answer`` (a passing check's :func:`policy_server.check.behaviour_fingerprint`
    and ``behaviour_probe``): the version's first become its reference; see :func:`_compare_behaviour`. The owner is notified when the policy goes
    failing, recovers, or is flagged.
    """
    now = timezone.now()
    claimed = ok and (  # resolves names: before the transaction
        _serves_another_organizations_nonce(policy, served_nonce) or _endpoint_claimed_elsewhere(policy)
    )
    proof_lost = ok and not claimed and _proof_lost(policy, served_nonce)
    with transaction.atomic():
        policy = Policy.objects.select_for_update().get(pk=policy.pk)
        if claimed:
            ok, (error_code, message), latency_ms = False, ENDPOINT_CLAIMED, None
        elif proof_lost:
            ok, (error_code, message), latency_ms = False, NONCE_MISMATCH, None
        fingerprint = (fingerprint or "")[:64] if ok else ""
        probe_answer = probe_answer if ok and fingerprint else None
        if trigger == PolicyCheck.Trigger.ARENA and probe_answer is not None:
            _compare_behaviour(policy, fingerprint, probe_answer, now)
        PolicyCheck.objects.create(
            policy=policy,
            at=now,
            ok=ok,
            error_code=error_code[:60],
            message=message[:500],
            latency_ms=latency_ms,
            trigger=trigger,
            fingerprint=fingerprint,
            probe_answer=probe_answer,
        )
        if trigger == PolicyCheck.Trigger.ABORT:
            metrics.CHECKS.labels(outcome="ok" if ok else "fail", trigger=trigger).inc()
            return policy
        status_before = policy.status
        policy.last_check_at = now
        policy.last_check_ok = ok
        policy.last_check_error = "" if ok else f"{error_code}: {message}"[:300]
        policy.last_check_latency_ms = latency_ms
        if ok:
            policy.consecutive_failures = 0
            if requirements:
                _apply_requirements(policy, requirements)
            if policy.status in (Policy.Status.PENDING, Policy.Status.FAILING):
                policy.status = Policy.Status.ACTIVE
        else:
            policy.consecutive_failures += 1
            threshold = settings.ARENA_CHECK_FAILURES_BEFORE_FAILING
            if policy.status == Policy.Status.ACTIVE and policy.consecutive_failures >= threshold:
                policy.status = Policy.Status.FAILING
        policy.save()
        if (status_before, policy.status) == (Policy.Status.ACTIVE, Policy.Status.FAILING):
            notify_policy_health(policy=policy, event="policy.failing", error=policy.last_check_error)
        elif (status_before, policy.status) == (Policy.Status.FAILING, Policy.Status.ACTIVE):
            notify_policy_health(policy=policy, event="policy.recovered")
    metrics.CHECKS.labels(outcome="ok" if ok else "fail", trigger=trigger).inc()
    log.info(
        "policy %s check (%s): %s%s",
        policy.slug,
        trigger,
        "ok" if ok else "fail",
        "" if ok else f" {error_code}",
    )
    return policy


def _compare_behaviour(policy: Policy, fingerprint: str, probe_answer: dict[str, Any], now: datetime) -> None:
    """Keep the version's first answer to the probe; flag the policy when this check's answer and the previous
    passing one's agree with each other but not with it (within one rounding step: float noise next to a
    rounding boundary is not a change). One differing answer alone may be noise, and a sampling policy, which
    never answers the same twice, is never flagged."""
    if policy.probe_answer is None:
        policy.fingerprint, policy.probe_answer = fingerprint, probe_answer
        return
    if policy.behaviour_changed_at is not None or same_behaviour(policy.probe_answer, probe_answer):
        return
    previous = (
        policy.checks.filter(ok=True, trigger=PolicyCheck.Trigger.ARENA, probe_answer__isnull=False)
        .values_list("probe_answer", flat=True)
        .first()
    )
    if previous is not None and same_behaviour(previous, probe_answer):
        policy.behaviour_changed_at = now
        notify_policy_health(policy=policy, event="policy.behaviour_changed")


def check_policy_owner(*, owner, policy: Policy) -> None:
    if policy.owner_id != owner.pk and not policy.organization.members.filter(pk=owner.pk).exists():
        raise PermissionDenied("not_policy_owner", "Only the policy's owner or organization may do this.")


def _apply_requirements(policy: Policy, req: dict[str, Any]) -> None:
    resolution = req.get("image_resolution")
    policy.req_image_height, policy.req_image_width = (
        (int(resolution[0]), int(resolution[1])) if resolution else (None, None)
    )
    policy.req_n_external_cameras = int(req.get("n_external_cameras") or 0)
    policy.req_wrist_camera = bool(req.get("needs_wrist_camera"))
    policy.req_stereo_camera = bool(req.get("needs_stereo_camera"))
    action_space = req.get("action_space") or ""
    policy.req_action_space = action_space if action_space in ACTION_SPACES else ""
    policy.req_replica_state = bool(req.get("needs_replica_state"))
    policy.req_action_dim = req.get("action_dim")
    policy.req_action_horizon = req.get("action_horizon")
    if req.get("platform") and not policy.req_platform:
        policy.req_platform = str(req["platform"])[:80]


def _schedule_check(policy: Policy) -> None:
    if settings.ARENA_CHECK_ON_REGISTER:
        policy_check_schedule(policy_id=policy.pk)


def policy_check_schedule(*, policy_id: int) -> None:
    """Health-check the policy once the current transaction commits (never from inside it)."""
    transaction.on_commit(lambda: _enqueue_check(policy_id))


def _enqueue_check(policy_id: int) -> None:
    from arena.tasks import policy_check_one

    policy_check_one.delay(policy_id)


def policy_recheck_request(*, policy_id: int, now: datetime | None = None) -> None:
    """Queue the re-check an abort blaming the policy asks for, inside the caller's transaction.

    The re-check is due after a uniform random delay of ``ARENA_ABORT_RECHECK_MIN_SECONDS`` to ``..._MAX_...``
    (from the system's CSPRNG, so a lab cannot predict it), and runs from the periodic
    ``arena.tasks.policy_recheck_due``, never inside the request. One re-check is pending per policy at a
    time: more aborts neither add checks nor move the due time (a lab can neither multiply checks nor time them).
    """
    low = settings.ARENA_ABORT_RECHECK_MIN_SECONDS
    high = max(low, settings.ARENA_ABORT_RECHECK_MAX_SECONDS)
    delay = secrets.SystemRandom().uniform(low, high)
    due = (now or timezone.now()) + timedelta(seconds=delay)
    Policy.objects.filter(pk=policy_id, recheck_due_at__isnull=True).exclude(
        status=Policy.Status.RETIRED
    ).update(recheck_due_at=due)


def policy_recheck_claim_due(*, now: datetime | None = None) -> list[int]:
    """The ids of policies whose abort re-check is due at ``now``, each cleared so that only one caller runs it."""
    now = now or timezone.now()
    with transaction.atomic():
        due = list(
            Policy.objects.select_for_update()
            .filter(recheck_due_at__lte=now)
            .order_by("pk")
            .values_list("pk", "status")
        )
        Policy.objects.filter(pk__in=[pk for pk, _status in due]).update(recheck_due_at=None)
    return [pk for pk, status in due if status != Policy.Status.RETIRED]
