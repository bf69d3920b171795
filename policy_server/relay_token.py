"""Relay tokens: sealed, expiring capabilities that name a policy endpoint without revealing it.

A token is ``base64url(version || nonce || AES-256-GCM(claims))`` with no padding. The claims (endpoint,
session, slot, expiry, the prefix of the lab key it was minted for, optional API key) are packed into a
plaintext of one fixed size, :data:`PLAINTEXT_BYTES`, so every token has the same length
(:data:`TOKEN_CHARS`) whatever the endpoint and key: an evaluator who holds a token learns nothing about the
policy behind it, and any change to the token fails authentication. An endpoint plus key longer than
:data:`MAX_ENDPOINT_AND_KEY_BYTES` cannot be sealed (the arena refuses such a registration up front, see
:func:`endpoint_fits`).

The AES key is derived from a secret string shared by the arena server (which mints) and every relay copy
(which opens), with HKDF-SHA256. The relay's credential for the arena's internal relay API is derived from
the same secret with another HKDF ``info`` (:func:`relay_api_credential`), so neither value reveals the
other or the secret.

Plaintext layout (big-endian): expiry ``float64`` Unix seconds, slot (1 byte), then four length-prefixed
UTF-8 strings: session id and lab key prefix (1-byte lengths), endpoint and API key (2-byte lengths), then
zero padding up to :data:`PLAINTEXT_BYTES`. A binary layout, not JSON, so that the capacity is an exact
byte count independent of escaping.
"""

from __future__ import annotations

import base64
import binascii
import functools
import math
import os
import re
import struct
import time
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

TOKEN_VERSION = b"\x02"
_NONCE_BYTES = 12
_TAG_BYTES = 16
_HKDF_INFO = b"policy-arena relay token v2"
_API_CREDENTIAL_INFO = b"policy-arena relay->arena internal API v1"
_FORWARD_CREDENTIAL_INFO = b"policy-arena relay forward v1"
_TOKEN_ALPHABET = re.compile(r"[A-Za-z0-9_-]+")

MAX_SESSION_ID_BYTES = 64
MAX_LAB_KEY_BYTES = 32
MAX_ENDPOINT_AND_KEY_BYTES = 512
"""Capacity for the policy's endpoint URL plus its API key, in UTF-8 bytes (both together)."""
_HEADER = struct.Struct(">dc")
PLAINTEXT_BYTES = (
    _HEADER.size + 1 + MAX_SESSION_ID_BYTES + 1 + MAX_LAB_KEY_BYTES + 2 + 2 + MAX_ENDPOINT_AND_KEY_BYTES
)
TOKEN_CHARS = math.ceil((1 + _NONCE_BYTES + PLAINTEXT_BYTES + _TAG_BYTES) * 4 / 3)
"""The length of every token, in characters."""


class TokenError(ValueError):
    """A relay token cannot be used."""


class TokenInvalid(TokenError):
    """The token is malformed, was altered, or was sealed with another secret."""


class TokenExpired(TokenError):
    """The token was genuine but its lifetime has passed."""


class ClaimsTooLong(ValueError):
    """The claims do not fit the token's fixed-size plaintext (see :data:`MAX_ENDPOINT_AND_KEY_BYTES`)."""


@dataclass(frozen=True)
class TokenClaims:
    """What a token grants: a websocket to ``endpoint`` for ``slot`` of ``session_id`` until ``expires_at``.

    ``expires_at`` is Unix time in seconds. ``lab_key`` is the prefix of the lab's API key the token was
    minted for (empty for tokens minted outside the arena, e.g. by a standalone relay's tests): the arena
    refuses the token once that key is revoked. ``api_key`` is the policy server's key, if it has one.
    """

    endpoint: str
    session_id: str
    slot: str
    expires_at: float
    api_key: str | None = None
    lab_key: str = ""


def endpoint_fits(endpoint: str, api_key: str | None = None) -> bool:
    """Whether a token can carry this endpoint URL and API key (at most
    :data:`MAX_ENDPOINT_AND_KEY_BYTES` UTF-8 bytes together)."""
    return len(endpoint.encode()) + len((api_key or "").encode()) <= MAX_ENDPOINT_AND_KEY_BYTES


@functools.lru_cache(maxsize=8)
def derive_key(secret: bytes | str) -> bytes:
    """The 32-byte AES key for a configured secret (any length, at least 16 bytes)."""
    return _derive(secret, _HKDF_INFO)


@functools.lru_cache(maxsize=8)
def relay_api_credential(secret: bytes | str) -> str:
    """The relay's bearer credential for the arena's internal relay API (64 hex characters), derived from the
    shared secret with its own HKDF ``info``: a leaked credential opens no token and mints none."""
    return _derive(secret, _API_CREDENTIAL_INFO).hex()


@functools.lru_cache(maxsize=8)
def relay_forward_credential(secret: bytes | str) -> str:
    """The credential (64 hex characters, sent as ``Authorization: Api-Key``) with which other relays and the
    arena's health check open a channel to a dial-out policy attached to a relay (``<relay>/forward/<slug>``);
    derived from the shared secret with its own HKDF ``info``."""
    return _derive(secret, _FORWARD_CREDENTIAL_INFO).hex()


def _derive(secret: bytes | str, info: bytes) -> bytes:
    raw = secret.encode() if isinstance(secret, str) else secret
    if len(raw) < 16:
        raise ValueError("the relay secret must be at least 16 bytes long")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(raw)


def mint_token(
    *,
    endpoint: str,
    session_id: str,
    slot: str,
    key: bytes | str,
    ttl_s: int,
    api_key: str | None = None,
    lab_key: str = "",
    now: float | None = None,
) -> str:
    """Seal claims into a URL-safe token of :data:`TOKEN_CHARS` characters, valid for ``ttl_s`` seconds from
    ``now`` (default: the current time). ``key`` is the shared relay secret (see :func:`derive_key`).

    Raises :class:`ClaimsTooLong` if the endpoint and API key exceed :data:`MAX_ENDPOINT_AND_KEY_BYTES`
    together, or the session id or lab key prefix exceed theirs; ``ValueError`` for a bad slot or ``ttl_s``.
    """
    if ttl_s <= 0:
        raise ValueError("ttl_s must be positive")
    slot_byte = slot.encode()
    if len(slot_byte) != 1:
        raise ValueError("slot must be one ASCII character")
    session_raw, lab_key_raw = session_id.encode(), lab_key.encode()
    endpoint_raw, api_key_raw = endpoint.encode(), (api_key or "").encode()
    if len(session_raw) > MAX_SESSION_ID_BYTES or len(lab_key_raw) > MAX_LAB_KEY_BYTES:
        raise ClaimsTooLong("the session id or lab key prefix is too long for a relay token")
    if not endpoint_fits(endpoint, api_key):
        raise ClaimsTooLong(
            f"the endpoint URL and API key take {len(endpoint_raw) + len(api_key_raw)} bytes; "
            f"a relay token holds at most {MAX_ENDPOINT_AND_KEY_BYTES}"
        )
    issued = time.time() if now is None else now
    plaintext = b"".join(
        (
            _HEADER.pack(issued + ttl_s, slot_byte),
            struct.pack(">B", len(session_raw)),
            session_raw,
            struct.pack(">B", len(lab_key_raw)),
            lab_key_raw,
            struct.pack(">H", len(endpoint_raw)),
            endpoint_raw,
            struct.pack(">H", len(api_key_raw)),
            api_key_raw,
        )
    )
    plaintext = plaintext.ljust(PLAINTEXT_BYTES, b"\0")
    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(derive_key(key)).encrypt(nonce, plaintext, TOKEN_VERSION)
    return base64.urlsafe_b64encode(TOKEN_VERSION + nonce + sealed).rstrip(b"=").decode("ascii")


def open_token(token: str, *, key: bytes | str, now: float | None = None) -> TokenClaims:
    """Authenticate, decrypt and check the expiry of ``token`` at ``now`` (default: the current time).

    Raises :class:`TokenInvalid` or :class:`TokenExpired`.
    """
    if len(token) != TOKEN_CHARS or not _TOKEN_ALPHABET.fullmatch(token):
        raise TokenInvalid(f"a relay token is {TOKEN_CHARS} characters of unpadded base64url")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except binascii.Error as exc:
        raise TokenInvalid("token is not unpadded base64url") from exc
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != token:
        # Unused low bits in the last character: another spelling of some token, never one the arena minted.
        raise TokenInvalid("token is not in canonical base64url")
    if raw[:1] != TOKEN_VERSION:
        raise TokenInvalid("token is of an unknown version")
    nonce, sealed = raw[1 : 1 + _NONCE_BYTES], raw[1 + _NONCE_BYTES :]
    try:
        plaintext = AESGCM(derive_key(key)).decrypt(nonce, sealed, TOKEN_VERSION)
    except InvalidTag as exc:
        raise TokenInvalid("token failed authentication (altered, or sealed with another secret)") from exc
    # Authenticated plaintext comes only from a minting server, so its layout is trusted from here on.
    expires_at, slot = _HEADER.unpack_from(plaintext)
    offset = _HEADER.size
    fields = []
    for width in (">B", ">B", ">H", ">H"):
        (length,) = struct.unpack_from(width, plaintext, offset)
        offset += struct.calcsize(width)
        fields.append(plaintext[offset : offset + length].decode())
        offset += length
    session_id, lab_key, endpoint, api_key = fields
    claims = TokenClaims(
        endpoint=endpoint,
        session_id=session_id,
        slot=slot.decode(),
        expires_at=expires_at,
        api_key=api_key or None,
        lab_key=lab_key,
    )
    if (time.time() if now is None else now) >= claims.expires_at:
        raise TokenExpired("token has expired")
    return claims
