"""API keys: ``Authorization: Api-Key pa_<prefix>_<secret>``; per-key throttles; limits on failed
authentication per client address; the principal's permissions."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest
from django.utils import timezone
from rest_framework import authentication, exceptions, permissions, throttling

from arena.models import ApiKey, Lab

KEY_PREFIX = "pa"
PREFIX_RE = re.compile(r"[0-9a-f]{12}")  # generate_key's prefixes; anything else is not looked up
# Anything shaped like a key (also URL-encoded or embedded in a longer value), to refuse it where it would leak.
KEY_LIKE_RE = re.compile(rf"{KEY_PREFIX}_[0-9a-f]{{12}}_", re.IGNORECASE)
_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class NewKey:
    api_key: ApiKey
    plaintext: str


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def generate_key() -> tuple[str, str, str]:
    """Return (prefix, secret, plaintext key)."""
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return prefix, secret, f"{KEY_PREFIX}_{prefix}_{secret}"


def key_lookup(plaintext: str) -> ApiKey | None:
    """The active key matching ``plaintext``, compared in constant time, or None."""
    parts = plaintext.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not PREFIX_RE.fullmatch(parts[1]):
        return None
    _, prefix, secret = parts
    key = ApiKey.objects.select_related("lab", "user").filter(prefix=prefix, revoked_at__isnull=True).first()
    if key is None or not hmac.compare_digest(key.hashed_secret, hash_secret(secret)):
        return None
    return key


def key_claimed(request) -> ApiKey | None:
    """The key (active or revoked) whose prefix the request's ``Authorization`` header names, whatever its
    secret; for the audit log of refused attempts, never for authentication."""
    header = authentication.get_authorization_header(request).decode("latin-1")
    scheme, _, token = header.partition(" ")
    parts = token.strip().split("_", 2)
    if scheme != ApiKeyAuthentication.keyword or len(parts) != 3 or not PREFIX_RE.fullmatch(parts[1]):
        return None
    return ApiKey.objects.filter(prefix=parts[1]).first()


def client_address(request: HttpRequest) -> str:
    """The caller's address as DRF's throttles see it: ``REMOTE_ADDR``, or the ``X-Forwarded-For`` entry
    ``NUM_PROXIES`` hops back when the arena runs behind that many trusted proxies."""
    return throttling.BaseThrottle().get_ident(request)


class FailureLimit:
    """At most ``rate`` (``"20/min"``) failures per client address per window, counted in the Django cache, so
    every process shares the count when ``REDIS_URL`` is set. Fixed windows: a burst across a boundary may
    reach twice the rate, never more.

    Once an address reaches the limit, every attempt from it is refused until the window ends, valid
    credentials included: answering those would let a guesser tell a right guess from a wrong one.
    """

    def __init__(self, scope: str, rate: str) -> None:
        number, _, period = rate.partition("/")
        self.scope = scope
        self.limit = int(number)
        self.window = _PERIODS[period.strip()[:1]]

    def _key(self, address: str) -> tuple[str, int]:
        window = int(time.time() // self.window)
        return f"arena:auth-failures:{self.scope}:{address}:{window}", (window + 1) * self.window

    def wait(self, address: str) -> int | None:
        """Seconds until ``address`` may try again, or None when it is under the limit."""
        key, window_end = self._key(address)
        if (cache.get(key) or 0) < self.limit:
            return None
        return max(1, int(window_end - time.time()) + 1)

    def record(self, address: str) -> None:
        key, _ = self._key(address)
        if cache.add(key, 1, timeout=2 * self.window):
            return
        try:
            cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.add(key, 1, timeout=2 * self.window)


def failed_api_keys() -> FailureLimit:
    return FailureLimit("api-key", settings.ARENA_THROTTLE_FAILED_AUTH)


def failed_sign_ins() -> FailureLimit:
    return FailureLimit("sign-in", settings.ARENA_THROTTLE_LOGIN)


class TooManyFailedAuth(exceptions.Throttled):
    """429 ``too_many_failed_auth``: this address sent too many invalid keys."""

    arena_code = "too_many_failed_auth"
    extra_detail_singular = "Try again in {wait} second."
    extra_detail_plural = "Try again in {wait} seconds."

    def __init__(self, wait: int) -> None:
        super().__init__(wait=wait, detail="Too many invalid API keys from your address.")


class Principal:
    """The authenticated caller: a lab (evaluator) or a user (policy owner). DRF stores it as ``request.user``."""

    is_authenticated = True
    is_anonymous = False

    def __init__(self, api_key: ApiKey) -> None:
        self.api_key = api_key
        self.lab: Lab | None = api_key.lab
        self.user = api_key.user

    @property
    def is_lab(self) -> bool:
        return self.lab is not None

    @property
    def is_owner(self) -> bool:
        return self.user is not None


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Api-Key"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        address = client_address(request)
        limit = failed_api_keys()
        wait = limit.wait(address)
        if wait is not None:
            raise TooManyFailedAuth(wait)
        scheme, _, token = header.partition(" ")
        if scheme != self.keyword or not token.strip():
            limit.record(address)
            raise exceptions.AuthenticationFailed("Use the header 'Authorization: Api-Key <key>'.")
        api_key = key_lookup(token.strip())
        if api_key is None:
            limit.record(address)
            raise exceptions.AuthenticationFailed("Unknown or revoked API key.")
        now = timezone.now()
        if api_key.last_used_at is None or (now - api_key.last_used_at).total_seconds() > 60:
            ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        return Principal(api_key), api_key

    def authenticate_header(self, request) -> str:
        return self.keyword


class IsLab(permissions.BasePermission):
    message = "This endpoint needs a lab (evaluator) API key."

    def has_permission(self, request, view) -> bool:
        return isinstance(request.user, Principal) and request.user.is_lab


class IsOwner(permissions.BasePermission):
    message = "This endpoint needs a policy owner's API key."

    def has_permission(self, request, view) -> bool:
        return isinstance(request.user, Principal) and request.user.is_owner


class IsAuthenticated(permissions.BasePermission):
    message = "This endpoint needs an API key."

    def has_permission(self, request, view) -> bool:
        return isinstance(request.user, Principal)


class ApiKeyThrottle(throttling.SimpleRateThrottle):
    """Per-key rate limit; anonymous callers are limited per client address."""

    def get_rate(self):
        return None  # chosen per request in allow_request

    def allow_request(self, request, view) -> bool:
        self.scope = "api_key" if isinstance(request.user, Principal) else "anon"
        self.rate = self.THROTTLE_RATES[self.scope]
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)

    def get_cache_key(self, request, view) -> str:
        if isinstance(request.user, Principal):
            ident = request.user.api_key.prefix
        else:
            ident = self.get_ident(request)
        return f"throttle_{self.scope}_{ident}"
