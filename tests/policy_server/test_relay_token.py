"""Relay tokens are sealed, tamper-evident, expiring, and reveal nothing about the endpoint."""

from __future__ import annotations

import base64
import time

import pytest

from policy_server.relay_token import (
    MAX_ENDPOINT_AND_KEY_BYTES,
    TOKEN_CHARS,
    ClaimsTooLong,
    TokenExpired,
    TokenInvalid,
    derive_key,
    endpoint_fits,
    mint_token,
    open_token,
    relay_api_credential,
)

SECRET = "correct horse battery staple, arena relay"
ENDPOINT = "ws://10.20.30.40:8123"


def mint(**overrides: object) -> str:
    fields = {"endpoint": ENDPOINT, "session_id": "sess-1", "slot": "A", "key": SECRET, "ttl_s": 600}
    return mint_token(**{**fields, **overrides})  # type: ignore[arg-type]


def test_claims_round_trip() -> None:
    before = time.time()
    claims = open_token(mint(api_key="k3y"), key=SECRET)
    assert (claims.endpoint, claims.session_id, claims.slot, claims.api_key) == (
        ENDPOINT,
        "sess-1",
        "A",
        "k3y",
    )
    assert before + 600 <= claims.expires_at <= time.time() + 600
    assert open_token(mint(), key=SECRET.encode()).api_key is None


def test_token_reveals_neither_host_nor_port() -> None:
    token = mint(api_key="visible-key?")
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    for secret_part in ("10.20.30.40", "8123", "visible-key"):
        assert secret_part not in token
        assert secret_part.encode() not in raw


def test_token_length_does_not_depend_on_the_endpoint() -> None:
    lengths = {
        len(mint(endpoint=endpoint)) for endpoint in ("ws://a:1", ENDPOINT, "wss://policy.lab.example.org/x")
    }
    assert len(lengths) == 1


def test_a_10_and_a_400_character_endpoint_give_tokens_of_one_length() -> None:
    short, long = "ws://h0:80", "ws://" + "h" * 390 + ":8000"
    assert (len(short), len(long)) == (10, 400)
    tokens = [
        mint(endpoint=short),
        mint(endpoint=long, api_key="k" * 100, lab_key="0123456789ab"),
        mint(endpoint="ws://" + "é" * 253, api_key="k"),  # the capacity, counted in UTF-8 bytes
    ]
    assert {len(t) for t in tokens} == {TOKEN_CHARS}
    assert open_token(tokens[1], key=SECRET).endpoint == long


def test_claims_over_the_capacity_are_refused_with_a_reason() -> None:
    endpoint = "ws://" + "h" * (MAX_ENDPOINT_AND_KEY_BYTES - 5)
    assert endpoint_fits(endpoint) and not endpoint_fits(endpoint, "k")
    with pytest.raises(ClaimsTooLong, match=f"at most {MAX_ENDPOINT_AND_KEY_BYTES}"):
        mint(endpoint=endpoint, api_key="k")
    with pytest.raises(ClaimsTooLong):
        mint(session_id="s" * 65)


def test_the_lab_key_prefix_travels_sealed() -> None:
    token = mint(lab_key="0123456789ab")
    assert open_token(token, key=SECRET).lab_key == "0123456789ab"
    assert open_token(mint(), key=SECRET).lab_key == ""
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert b"0123456789ab" not in raw


def test_the_relay_api_credential_is_neither_the_secret_nor_the_token_key() -> None:
    credential = relay_api_credential(SECRET)
    assert len(credential) == 64 and credential != SECRET
    assert bytes.fromhex(credential) != derive_key(SECRET)
    assert relay_api_credential("another secret of enough length!") != credential


def test_tokens_for_the_same_claims_differ() -> None:
    assert mint() != mint()


@pytest.mark.parametrize("position", [0, 1, 5, 20, 60, -20, -2, -1])
def test_tampered_tokens_are_refused(position: int) -> None:
    token = mint()
    flipped = "A" if token[position] != "A" else "B"
    tampered = token[:position] + flipped + token[position + 1 :] if position != -1 else token[:-1] + flipped
    with pytest.raises(TokenInvalid):
        open_token(tampered, key=SECRET)


@pytest.mark.parametrize("token", ["", "not a token", "!!!!", "AQ", "a" * 400, "abc=", "x/y"])
def test_garbage_is_refused(token: str) -> None:
    with pytest.raises(TokenInvalid):
        open_token(token, key=SECRET)


def test_truncated_and_extended_tokens_are_refused() -> None:
    token = mint()
    for variant in (token[:-4], token + "AAAA", token[4:]):
        with pytest.raises(TokenInvalid):
            open_token(variant, key=SECRET)


def test_another_secret_cannot_open_a_token() -> None:
    with pytest.raises(TokenInvalid, match="another secret"):
        open_token(mint(), key="a different secret of enough length")


def test_expired_tokens_are_refused() -> None:
    token = mint(ttl_s=30, now=1_000_000.0)
    assert open_token(token, key=SECRET, now=1_000_029.0).slot == "A"
    with pytest.raises(TokenExpired):
        open_token(token, key=SECRET, now=1_000_030.0)
    with pytest.raises(TokenExpired):
        open_token(mint(ttl_s=1, now=time.time() - 5), key=SECRET)


def test_short_secrets_and_non_positive_ttl_are_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        mint(key="short")
    with pytest.raises(ValueError, match="ttl_s"):
        mint(ttl_s=0)
