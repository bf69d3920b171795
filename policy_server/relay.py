"""Blind websocket relay between evaluators and policy servers.

An evaluator connects to ``ws://relay:port/<token>`` (or sends the token as ``Authorization: Bearer
<token>``). The relay opens the token (see :mod:`policy_server.relay_token`), refuses the handshake with
401 (missing or expired token) or 403 (invalid token) before touching any policy, then connects to the
endpoint named inside the token and forwards frames both ways unchanged: binary and text frames, and the
closing code and reason (so a policy's traceback text frame and its 1011 reach the evaluator). Neither
side learns the other's address: the evaluator sees only the relay, the policy server sees only the
relay's connection, with none of the evaluator's headers. If the policy server cannot be reached, or
drops without a closing handshake, the evaluator's websocket is closed with 1014 (bad gateway).

Before a handshake succeeds the arena admits it (see :mod:`policy_server.relay_admission`): the session must be
open, the lab key the token was minted for unrevoked and the slot free (403, 409; 503 when the arena cannot be
asked); open connections are closed (1008) within a poll period once their session closes.

The relay keeps no state beyond open connections: run as many copies as needed behind any load balancer, all
configured with the same secret and arena URL (``--arena-url`` or ``$ARENA_INTERNAL_URL``). ``GET /healthz``
answers 200.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from policy_server import wire
from policy_server._serving import ServerHandle, health_response, run_until_signal
from policy_server._serving import serve_in_thread as _serve_in_thread
from policy_server.check import ACTION_SPACES
from policy_server.client import ROBOARENA_METADATA_KEYS, detect_dialect
from policy_server.relay_admission import ARENA_URL_ENV, AdmissionRefused, ArenaLink, RelayGate
from policy_server.relay_token import TokenClaims, TokenExpired, TokenInvalid, derive_key, open_token
from policy_server.server import PROTOCOL_KEY, PROTOCOL_VERSION

logger = logging.getLogger(__name__)

SECRET_ENV = "ARENA_RELAY_SECRET"
REQUIREMENT_KEYS = ROBOARENA_METADATA_KEYS | {"action_dim", "action_horizon", "needs_replica_state"}
RELAY_MARKER = "arena_relay"
BAD_GATEWAY = 1014
MAX_REQUIREMENT_NUMBER = 100_000
_UNSENDABLE_CODES = {CloseCode.NO_STATUS_RCVD, CloseCode.ABNORMAL_CLOSURE, CloseCode.TLS_HANDSHAKE}


def token_from_request(request: Request) -> str | None:
    """The token from ``Authorization: Bearer`` or else the last segment of the URL path, if any."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    segment = urlsplit(request.path).path.rstrip("/").rsplit("/", 1)[-1]
    return segment or None


class Relay:
    """The relay server. ``secret`` is the string shared with the arena server that mints tokens; ``arena``
    admits and revokes connections (None: a standalone relay, see :mod:`policy_server.relay_admission`),
    polled every ``poll_interval`` seconds."""

    def __init__(
        self,
        secret: bytes | str,
        *,
        host: str = "0.0.0.0",
        port: int = 8765,
        upstream_timeout: float = 10.0,
        max_size: int | None = wire.DEFAULT_MAX_SIZE,
        arena: ArenaLink | None = None,
        poll_interval: float = 1.5,
    ) -> None:
        derive_key(secret)  # fail at startup, not at the first evaluator, if the secret is unusable
        self._secret = secret
        self._gate = RelayGate(arena, poll_interval=poll_interval)
        self.host = host
        self.port = port
        self._upstream_timeout = upstream_timeout
        self._max_size = max_size

    async def start(self) -> Server:
        """Listen on the running loop and return the websockets :class:`Server`."""
        return await serve(
            self._handle_admitted,
            self.host,
            self.port,
            process_request=self._process_request,
            compression=None,
            max_size=self._max_size,
        )

    def serve_forever(self) -> None:
        """Relay until SIGINT/SIGTERM, then close all connections cleanly."""
        run_until_signal(self.start)

    def _claims(self, request: Request) -> TokenClaims:
        token = token_from_request(request)
        if token is None:
            raise TokenInvalid("no relay token")
        return open_token(token, key=self._secret)

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        health = health_response(connection, request)
        if health is not None:
            return health
        if token_from_request(request) is None:
            return connection.respond(http.HTTPStatus.UNAUTHORIZED, "missing relay token\n")
        try:
            claims = self._claims(request)
        except TokenExpired:
            return connection.respond(http.HTTPStatus.UNAUTHORIZED, "relay token expired\n")
        except TokenInvalid:
            return connection.respond(http.HTTPStatus.FORBIDDEN, "invalid relay token\n")
        try:
            await self._gate.admit(connection, claims)
        except AdmissionRefused as refused:
            return connection.respond(http.HTTPStatus(refused.status), f"{refused.message}\n")
        return None

    async def _handle_admitted(self, downstream: ServerConnection) -> None:
        try:
            await self._handle(downstream)
        finally:
            self._gate.release(downstream)

    async def _handle(self, downstream: ServerConnection) -> None:
        assert downstream.request is not None  # set once the handshake succeeded
        claims = self._claims(downstream.request)
        headers = {"Authorization": f"Api-Key {claims.api_key}"} if claims.api_key else None
        try:
            upstream = await connect(
                claims.endpoint,
                additional_headers=headers,
                open_timeout=self._upstream_timeout,
                compression=None,
                max_size=self._max_size,
            )
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            logger.warning("session %s slot %s: policy unreachable: %s", claims.session_id, claims.slot, exc)
            await downstream.close(BAD_GATEWAY, "policy unavailable")
            return
        async with upstream:
            try:
                first = await asyncio.wait_for(upstream.recv(), self._upstream_timeout)
                await downstream.send(redact_metadata_frame(first))
            except (ConnectionClosed, TimeoutError):
                await downstream.close(BAD_GATEWAY, "policy unavailable")
                return
            await _splice(downstream, upstream)


def redact_metadata_frame(frame: str | bytes) -> str | bytes:
    """The policy's metadata frame as evaluators may see it: the run requirements only.

    Policy servers put anything in their metadata (model names, checkpoints, hosts); forwarded verbatim it would
    break the blinding. Kept: RoboArena's config keys, ``action_dim``, ``action_horizon``,
    ``needs_replica_state`` (each only with a value of its own form, see ``_plain_requirement``) and the
    markers by which clients recognise the server's dialect (an openpi server's frame gets ``arena_relay`` so
    that it is never mistaken for RoboArena's exact config). A frame that is not msgpack (a traceback) is
    passed on unchanged.
    """
    if not isinstance(frame, bytes):
        return frame
    try:
        metadata = wire.unpackb(frame)
    except wire.WireError:
        return frame
    if not isinstance(metadata, dict):
        return frame
    dialect = detect_dialect(metadata)
    kept = {k: v for k, v in metadata.items() if k in REQUIREMENT_KEYS and _plain_requirement(k, v)}
    if dialect == "arena":
        version = metadata[PROTOCOL_KEY]
        kept[PROTOCOL_KEY] = version if _count(version) else PROTOCOL_VERSION
    elif dialect == "openpi":
        kept[RELAY_MARKER] = 1
    return wire.packb(kept)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_REQUIREMENT_NUMBER


def _plain_requirement(key: str, value: Any) -> bool:
    """Whether ``value`` has the form requirement ``key`` takes, so that no free text (a policy's name
    smuggled into ``action_space``, say) passes the relay: numbers, a pair of numbers, action spaces, flags.
    """
    if key == "image_resolution":
        return isinstance(value, list | tuple) and len(value) == 2 and all(_count(n) for n in value)
    if key == "action_space":
        return value in ACTION_SPACES
    if key in ("n_external_cameras", "action_dim", "action_horizon"):
        return _count(value)
    return isinstance(value, bool)


async def _pump(
    source: ServerConnection | ClientConnection, sink: ServerConnection | ClientConnection
) -> None:
    """Forward messages until either side closes; keeps text frames text and binary frames binary."""
    with contextlib.suppress(ConnectionClosed):
        async for message in source:
            await sink.send(message)


async def _splice(downstream: ServerConnection, upstream: ClientConnection) -> None:
    tasks = {
        asyncio.create_task(_pump(upstream, downstream)),
        asyncio.create_task(_pump(downstream, upstream)),
    }
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if downstream.close_code is None:
        # The policy side ended first: pass its closing code and reason on to the evaluator.
        code, reason = upstream.close_code, upstream.close_reason or ""
        if code is None or code in _UNSENDABLE_CODES:
            code, reason = BAD_GATEWAY, "policy server went away"
        await downstream.close(code, reason)


@contextlib.contextmanager
def serve_relay_in_thread(
    secret: bytes | str,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    upstream_timeout: float = 10.0,
    arena_url: str | None = None,
    poll_interval: float = 1.5,
) -> Iterator[ServerHandle]:
    """Run a relay in a background thread; yields a handle with ``.port``, ``.url`` and ``.stop()``.

    ``arena_url`` (``http://host:port`` of the arena) admits and revokes connections; None runs standalone.
    """
    arena = ArenaLink(arena_url, secret) if arena_url else None
    relay = Relay(
        secret,
        host=host,
        port=port,
        upstream_timeout=upstream_timeout,
        arena=arena,
        poll_interval=poll_interval,
    )
    try:
        with _serve_in_thread(relay.start, host=host) as handle:
            yield handle
    finally:
        if arena is not None:
            arena.close()


def _read_secret(secret_file: Path | None) -> str:
    if secret_file is not None:
        return secret_file.read_text().strip()
    secret = os.environ.get(SECRET_ENV, "")
    if not secret:
        raise SystemExit(f"arena-relay: no secret configured: set {SECRET_ENV} or pass --secret-file")
    return secret


def _arena_link(args: argparse.Namespace, secret: str) -> ArenaLink | None:
    if args.standalone:
        if args.arena_url:
            raise SystemExit("arena-relay: give --arena-url or --standalone, not both")
        logger.warning(
            "standalone relay: tokens are checked for their own expiry only; closed sessions, revoked keys "
            "and other relays' connections are NOT enforced (development and protocol tests only)"
        )
        return None
    url = args.arena_url or os.environ.get(ARENA_URL_ENV, "")
    if not url:
        raise SystemExit(
            f"arena-relay: no arena configured: set {ARENA_URL_ENV} or pass --arena-url "
            "(the arena's internal http(s) address, which admits and revokes connections)"
        )
    return ArenaLink(url, secret)


def main(argv: Sequence[str] | None = None) -> None:
    """``arena-relay --host H --port P [--secret-file F] [--arena-url URL | --standalone]``; the secret
    defaults to ``$ARENA_RELAY_SECRET``, the arena URL to ``$ARENA_INTERNAL_URL``."""
    parser = argparse.ArgumentParser(
        prog="arena-relay", description="Blind websocket relay to policy servers."
    )
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--secret-file", type=Path, help=f"file holding the shared secret (else ${SECRET_ENV})"
    )
    parser.add_argument("--upstream-timeout", type=float, default=10.0, help="seconds to reach a policy")
    parser.add_argument(
        "--arena-url",
        help=f"the arena's internal http(s) address, which admits connections (else ${ARENA_URL_ENV})",
    )
    parser.add_argument(
        "--standalone", action="store_true", help="no arena: check tokens' own expiry only (development)"
    )
    parser.add_argument(
        "--poll-interval", type=float, default=1.5, help="seconds between session status checks (default 1.5)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.poll_interval <= 0:
        raise SystemExit("arena-relay: --poll-interval must be positive")
    try:
        secret = _read_secret(args.secret_file)
        relay = Relay(
            secret,
            host=args.host,
            port=args.port,
            upstream_timeout=args.upstream_timeout,
            arena=_arena_link(args, secret),
            poll_interval=args.poll_interval,
        )
    except ValueError as exc:
        raise SystemExit(f"arena-relay: {exc}") from exc
    print(f"arena-relay listening on ws://{args.host}:{args.port}", file=sys.stderr, flush=True)
    relay.serve_forever()


if __name__ == "__main__":
    main()
