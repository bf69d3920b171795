"""Relay tokens: sealed, expiring capabilities that name a policy endpoint without revealing it.

A token is ``base64url(version || nonce || AES-256-GCM(claims))`` with no padding. The claims (endpoint,
session, slot, expiry, optional API key) are JSON inside the ciphertext, so an evaluator who holds a
token learns nothing about the policy behind it (the claims are padded to a multiple of 256 bytes, so not
even the endpoint's length shows), and any change to the token fails authentication. The AES key is
derived from a secret string shared by the arena server (which mints) and every relay copy (which opens),
with HKDF-SHA256.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import os
import re
import time
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

TOKEN_VERSION = b"\x01"
_NONCE_BYTES = 12
_HKDF_INFO = b"policy-arena relay token v1"
_PAD_TO = 256
_TOKEN_ALPHABET = re.compile(r"[A-Za-z0-9_-]+")


class TokenError(ValueError):
    """A relay token cannot be used."""


class TokenInvalid(TokenError):
    """The token is malformed, was altered, or was sealed with another secret."""


class TokenExpired(TokenError):
    """The token was genuine but its lifetime has passed."""


@dataclass(frozen=True)
class TokenClaims:
    """What a token grants: a websocket to ``endpoint`` for ``slot`` of ``session_id`` until ``expires_at``.

    ``expires_at`` is Unix time in seconds. ``api_key`` is the policy server's key, if it has one.
    """

    endpoint: str
    session_id: str
    slot: str
    expires_at: float
    api_key: str | None = None


@functools.lru_cache(maxsize=8)
def derive_key(secret: bytes | str) -> bytes:
    """The 32-byte AES key for a configured secret (any length, at least 16 bytes)."""
    raw = secret.encode() if isinstance(secret, str) else secret
    if len(raw) < 16:
        raise ValueError("the relay secret must be at least 16 bytes long")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(raw)


def mint_token(
    *,
    endpoint: str,
    session_id: str,
    slot: str,
    key: bytes | str,
    ttl_s: int,
    api_key: str | None = None,
    now: float | None = None,
) -> str:
    """Seal claims into a URL-safe token valid for ``ttl_s`` seconds from ``now`` (default: the current time).

    ``key`` is the shared relay secret (see :func:`derive_key`).
    """
    if ttl_s <= 0:
        raise ValueError("ttl_s must be positive")
    issued = time.time() if now is None else now
    claims = {"e": endpoint, "s": session_id, "t": slot, "x": issued + ttl_s, "k": api_key}
    plaintext = json.dumps(claims, separators=(",", ":")).encode()
    # Pad so the token length does not tell policies apart by the length of their endpoints.
    plaintext += b" " * (-len(plaintext) % _PAD_TO)
    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(derive_key(key)).encrypt(nonce, plaintext, TOKEN_VERSION)
    return base64.urlsafe_b64encode(TOKEN_VERSION + nonce + sealed).rstrip(b"=").decode("ascii")


def open_token(token: str, *, key: bytes | str, now: float | None = None) -> TokenClaims:
    """Authenticate, decrypt and check the expiry of ``token`` at ``now`` (default: the current time).

    Raises :class:`TokenInvalid` or :class:`TokenExpired`.
    """
    if not _TOKEN_ALPHABET.fullmatch(token):
        raise TokenInvalid("token is not unpadded base64url")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except binascii.Error as exc:
        raise TokenInvalid("token is not unpadded base64url") from exc
    if len(raw) < 1 + _NONCE_BYTES + 16 or raw[:1] != TOKEN_VERSION:
        raise TokenInvalid("token is truncated or of an unknown version")
    nonce, sealed = raw[1 : 1 + _NONCE_BYTES], raw[1 + _NONCE_BYTES :]
    try:
        plaintext = AESGCM(derive_key(key)).decrypt(nonce, sealed, TOKEN_VERSION)
    except InvalidTag as exc:
        raise TokenInvalid("token failed authentication (altered, or sealed with another secret)") from exc
    fields = json.loads(plaintext)
    claims = TokenClaims(
        endpoint=fields["e"],
        session_id=fields["s"],
        slot=fields["t"],
        expires_at=fields["x"],
        api_key=fields["k"],
    )
    if (time.time() if now is None else now) >= claims.expires_at:
        raise TokenExpired("token has expired")
    return claims
