"""Blind websocket relay between evaluators and policy servers.

An evaluator connects to ``ws://relay:port/<token>`` (or sends the token as ``Authorization: Bearer
<token>``). The relay opens the token (see :mod:`policy_server.relay_token`), refuses the handshake with
401 (missing or expired token) or 403 (invalid token) before touching any policy, then connects to the
endpoint named inside the token (never following a redirect: a 3xx means the policy is unavailable) and
relays the lockstep protocol, forwarding only what it allows (:mod:`policy_server.relay_frames`): every frame
either way is decoded by the shared safe decoder and re-encoded, replies are cut to ``actions`` and a coarse
``server_timing.infer_ms``, and a policy's text frames, tracebacks and close reasons never reach the evaluator,
who gets a fixed ``policy error (code <kind>)`` text frame and close 1011 instead; the full text goes to the
relay's log and to the ``on_policy_error`` hook. Neither side learns the other's address: the evaluator sees
only the relay, the policy server sees only the relay's connection, with none of the evaluator's headers. If the
policy server cannot be reached, or drops without a closing handshake, the evaluator's websocket is closed with
1014 (bad gateway).

Limits: an evaluator's frames are bounded by what the policy's metadata declares (its cameras at its image
resolution, see :func:`policy_server.relay_frames.observation_bytes`; :data:`EARLY_FRAME_BYTES` until the
metadata has been passed on) and refused with 1009 above that; a frame the decoder refuses closes that
connection with 1008; a policy's frames are bounded by :data:`policy_server.wire.REPLY_LIMITS`. At most two
frames wait per connection, one connection serves a token's slot at a time (see below), and frames over 64 KiB
are decoded in a worker thread, so one peer's frame never stalls the other sessions. The relay connects only to addresses the endpoint guard allows (:mod:`policy_server.netguard`; ``--endpoint-allow`` or
``$ARENA_ENDPOINT_ALLOW``, default public addresses only), on a socket connected to the checked address.

Before a handshake succeeds the arena admits it (see :mod:`policy_server.relay_admission`): the session must be
open, the lab key the token was minted for unrevoked and the slot free (403, 409; 503 when the arena cannot be
asked); open connections are closed (1008) within a poll period once their session closes.

The relay keeps no state beyond open connections: run as many copies as needed behind any load balancer, all
configured with the same secret and arena URL (``--arena-url`` or ``$ARENA_INTERNAL_URL``). ``GET /healthz``
answers 200.

Dial-out policies (:mod:`policy_server.dialout`; registered endpoint ``dialout://<slug>``) connect *to* a relay
(``/dialout``) instead of being dialled (the relay's side: :mod:`policy_server.relay_dialout`). Design, for
several relay processes: the arena is the directory. The relay that accepts a policy's link asks the arena's
``attach/`` whether the owner key owns the policy and the policy is dial-out; the arena then records the
attachment (policy, this relay's internal URL ``--advertise-url``, link id, lease), which this relay renews every
third of the lease while the link lives (newest link wins: a policy reconnecting to another relay after a restart
replaces the old attachment, and the old relay closes its link at its next renewal). A session whose token names
``dialout://<slug>`` is served by whichever relay the evaluator reached: if the policy's link is local, the
session is a channel on it; if not, the relay asks ``locate/`` and opens ``<that relay>/forward/<slug>``
(authenticated with :func:`~policy_server.relay_token.relay_forward_credential`), which the other relay pipes,
frame for frame and bounded, into a channel of its link. Either way the serving relay runs the very same pipeline
as for a direct endpoint (metadata redaction, observation limits, reply filtering, fixed error texts, incident
reports), on the channel or forwarded websocket instead of a direct one. The arena's health check opens the same
forward path on the relay the policy is attached to. No Redis, no relay-to-relay state: one directory row per
dial-out policy and one extra hop when the evaluator and the policy reached different relays.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import http
import logging
import os
import sys
import typing
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from policy_server import dialout, logs, netguard, wire
from policy_server._compat import to_thread
from policy_server._serving import ServerHandle, bound_port, health_response, run_until_signal
from policy_server._serving import serve_in_thread as _serve_in_thread
from policy_server.relay_admission import (
    ARENA_URL_ENV,
    AdmissionRefused,
    ArenaLink,
    EndpointProof,
    RelayGate,
)
from policy_server.relay_dialout import DialoutRoutes
from policy_server.relay_frames import (
    CLOSE_POLICY_ERROR,
    CLOSE_POLICY_UNAVAILABLE,
    LabFault,
    PolicyFault,
    lab_close_for,
    lab_error_text,
    observation_for_policy,
    redact_metadata_frame,
    reply_for_lab,
)
from policy_server.relay_token import (
    TokenClaims,
    TokenExpired,
    TokenInvalid,
    derive_key,
    open_token,
)

logger = logging.getLogger(__name__)

SECRET_ENV = "ARENA_RELAY_SECRET"
MAX_QUEUED_FRAMES = 2
"""Frames buffered per connection, either side, before websockets stops reading (lockstep needs one)."""
MAX_LOGGED_CHARS = 64 * 1024
EARLY_FRAME_BYTES = 64 * 1024
"""Largest frame a lab may send before the relay has passed on the policy's metadata (a lab has nothing to send
then); from the metadata on, the session's own bound applies (:func:`~policy_server.relay_frames.observation_bytes`)."""

PolicyErrorHook = typing.Callable[[TokenClaims, str, str], None]  # typing's: subscripted at run time on 3.8
"""``on_policy_error(claims, kind, detail)``: called (in a worker thread, so it may block) whenever a policy
fails a session: ``kind`` is ``unreachable``, ``policy_error`` (it sent a text frame: ``detail`` is the full
text), ``bad_metadata``, ``bad_reply``, ``endpoint_claimed`` or ``nonce_mismatch`` (the metadata's
``arena_nonce`` is not what the arena expects for the policy; the evaluator is told ``bad_metadata``). The
evaluator never sees ``detail``."""

_Result = TypeVar("_Result")


def log_policy_error(claims: TokenClaims, kind: str, detail: str) -> None:
    """The default :data:`PolicyErrorHook`: one warning in the relay's log, ``detail`` cut to 64 KiB."""
    logger.warning(
        "session %s slot %s: %s: %s", claims.session_id, claims.slot, kind, detail[:MAX_LOGGED_CHARS]
    )


class _connect_without_redirects(connect):  # noqa: N801 (websockets' connect is a class named like a function)
    """websockets' ``connect``, except that a 3xx answer is an error, never followed: a redirect would let one
    policy's endpoint send the relay to another owner's server, which the lab would then see in its slot."""

    def process_redirect(self, exc: Exception) -> Exception | str:
        return exc


def token_from_request(request: Request) -> str | None:
    """The token from ``Authorization: Bearer`` or else the last segment of the URL path, if any."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    segment = urlsplit(request.path).path.rstrip("/").rsplit("/", 1)[-1]
    return segment or None


class Relay:
    """The relay server. ``secret`` is the string shared with the arena server that mints tokens.

    ``limits`` bound the evaluators' frames (each session lowers ``max_frame_bytes`` to what its policy
    declares); ``on_policy_error`` is told the full story whenever a policy fails a session (see
    :data:`PolicyErrorHook`; the default logs it).

    ``arena`` admits and revokes connections and hears of every policy error for the policy's owner (None: a
    standalone relay, see :mod:`policy_server.relay_admission`), polled every ``poll_interval`` seconds.
    """

    def __init__(
        self,
        secret: bytes | str,
        *,
        host: str = "0.0.0.0",
        port: int = 8765,
        upstream_timeout: float = 10.0,
        limits: wire.Limits = wire.DEFAULT_LIMITS,
        on_policy_error: PolicyErrorHook = log_policy_error,
        endpoint_allow: str | None = None,
        arena: ArenaLink | None = None,
        poll_interval: float = 1.5,
        advertise_url: str | None = None,
    ) -> None:
        derive_key(secret)  # fail at startup, not at the first evaluator, if the secret is unusable
        self._secret = secret
        # Address classes the relay may connect to (see policy_server.netguard); default $ARENA_ENDPOINT_ALLOW.
        self._endpoint_allow = (
            netguard.allow_from_env() if endpoint_allow is None else netguard.parse_allow(endpoint_allow)
        )
        self._gate = RelayGate(arena, poll_interval=poll_interval)
        self._arena = arena
        self.host = host
        self.port = port
        self._upstream_timeout = upstream_timeout
        self._limits = limits
        self._on_policy_error = on_policy_error
        # Dial-out policies: their links to this relay, and routes to those attached to other relays.
        self._dialout = DialoutRoutes(
            secret,
            arena=arena,
            poll_interval=poll_interval,
            upstream_timeout=upstream_timeout,
            connect=_connect_without_redirects,
            report=self._report,
            advertise_url=advertise_url,
        )

    @property
    def advertise_url(self) -> str | None:
        """The address other relays and the arena reach this one at (``ws://host:port`` once bound)."""
        return self._dialout.advertise_url

    async def start(self) -> Server:
        """Listen on the running loop and return the websockets :class:`Server`."""
        server = await self._serve()
        if self._dialout.advertise_url is None:
            host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
            self._dialout.advertise_url = f"ws://{host}:{bound_port(server)}"
        return server

    async def _serve(self) -> Server:
        return await serve(
            self._handle_admitted,
            self.host,
            self.port,
            process_request=self._process_request,
            compression=None,
            max_size=self._limits.max_frame_bytes,
            max_queue=MAX_QUEUED_FRAMES,
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
        path = urlsplit(request.path).path
        if path == dialout.LINK_PATH:
            return await self._dialout.admit_link(connection, request)
        if path.startswith(dialout.FORWARD_PREFIX):
            return self._dialout.admit_forward(connection, request, path[len(dialout.FORWARD_PREFIX) :])
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
        # Until the metadata says how large this session's observations are, a lab's frame is small: the
        # server-wide bound (three 4K cameras) would let each connection queue hundreds of megabytes early.
        connection.protocol.max_size = EARLY_FRAME_BYTES
        return None

    async def _handle_admitted(self, downstream: ServerConnection) -> None:
        attached = self._dialout.link_admitted(downstream)
        if attached is not None:
            await self._dialout.serve_link(downstream, attached)
            return
        assert downstream.request is not None
        path = urlsplit(downstream.request.path).path
        if path.startswith(dialout.FORWARD_PREFIX):
            await self._dialout.serve_forward(downstream, path[len(dialout.FORWARD_PREFIX) :])
            return
        try:
            await self._handle(downstream)
        finally:
            self._gate.release(downstream)

    async def _handle(self, downstream: ServerConnection) -> None:
        assert downstream.request is not None  # set once the handshake succeeded
        claims = self._claims(downstream.request)
        # This connection's task has a context of its own: every line logged for it names the session.
        logs.bind(session_id=claims.session_id, slot=claims.slot)
        upstream = await self._open_upstream(claims)
        if upstream is None:
            await downstream.close(*CLOSE_POLICY_UNAVAILABLE)
            return
        async with upstream:
            try:
                await self._relay(
                    downstream,
                    upstream,
                    session_alias=self._session_alias(claims),
                    endpoint_proof=self._gate.endpoint_proof(downstream),
                )
            except PolicyFault as fault:
                await _send_then_close(downstream, lab_error_text(fault.lab_kind), CLOSE_POLICY_ERROR)
                self._gate.release(downstream)
                await self._report(claims, fault.kind, fault.detail)
            finally:
                # The lab's side is closed: free the slot now, not once the policy has answered the closing
                # handshake (up to its close timeout), so that a lab reconnecting at once is admitted.
                self._gate.release(downstream)

    async def _open_upstream(self, claims: TokenClaims) -> ClientConnection | dialout.Channel | None:
        """The websocket to the policy (no redirects, no proxy, none of the evaluator's headers), or None."""
        slug = dialout.slug_of(claims.endpoint)
        if slug is not None:
            return await self._dialout.open_channel(claims, slug)
        headers = {"Authorization": f"Api-Key {claims.api_key}"} if claims.api_key else None
        try:
            # A socket to a checked address: no second DNS lookup, no redirect followed (websockets cannot reuse
            # a given socket for one).
            sock = await netguard.open_socket_async(
                claims.endpoint, allow=self._endpoint_allow, timeout=self._upstream_timeout
            )
            return await _connect_without_redirects(
                claims.endpoint,
                sock=sock,
                additional_headers=headers,
                open_timeout=self._upstream_timeout,
                compression=None,
                proxy=None,
                max_size=wire.REPLY_LIMITS.max_frame_bytes,
                max_queue=MAX_QUEUED_FRAMES,
            )
        # ValueError: the endpoint guard refused the address (EndpointNotAllowed).
        except (OSError, TimeoutError, asyncio.TimeoutError, InvalidHandshake, ValueError) as exc:
            await self._report(claims, "unreachable", str(exc))
            return None

    def _session_alias(self, claims: TokenClaims) -> str:
        """What the policy is told for ``session_id``: stable for the session's slot, unlinkable to the session
        without the relay secret (an HMAC under the token key, with a label of its own)."""
        message = f"session-alias:{claims.session_id}:{claims.slot}".encode()
        return hmac.new(derive_key(self._secret), message, hashlib.sha256).hexdigest()[:32]

    async def _relay(
        self,
        downstream: ServerConnection,
        upstream: ClientConnection | dialout.Channel,
        *,
        session_alias: str,
        endpoint_proof: EndpointProof | None = None,
    ) -> None:
        """Metadata (its ``arena_nonce`` checked against ``endpoint_proof``), then request/reply pairs in
        lockstep until either side leaves. Raises PolicyFault."""
        try:
            first = await asyncio.wait_for(upstream.recv(), self._upstream_timeout)
        except (ConnectionClosed, TimeoutError, asyncio.TimeoutError):
            if _refused_as_too_big(upstream):
                raise PolicyFault("bad_metadata", _TOO_BIG) from None
            await downstream.close(*CLOSE_POLICY_UNAVAILABLE)
            return
        check_nonce = endpoint_proof.check if endpoint_proof is not None else None
        metadata, shape = await _off_loop(
            redact_metadata_frame, first, limits=self._limits, check_nonce=check_nonce
        )
        downstream.protocol.max_size = shape.observation_bytes  # websockets reads it for every new frame
        try:
            await downstream.send(metadata)
        except ConnectionClosed:
            return  # the lab left (or sent a frame over EARLY_FRAME_BYTES) while the policy was connecting
        while True:
            try:
                frame = await downstream.recv()
            except ConnectionClosed:
                return  # the evaluator left; leaving the ``async with`` closes the policy's side with 1000
            try:
                request, reset = await _off_loop(
                    observation_for_policy,
                    frame,
                    limits=self._limits,
                    shape=shape,
                    session_alias=session_alias,
                )
            except LabFault as fault:
                await downstream.close(CloseCode.POLICY_VIOLATION, fault.close_reason)
                return
            del frame
            try:
                await upstream.send(request)
                answer = await _answer_unless_gone(downstream, upstream)
            except ConnectionClosed:
                if _refused_as_too_big(upstream):
                    raise PolicyFault("bad_reply", _TOO_BIG) from None
                await downstream.close(*lab_close_for(upstream.close_code))
                return
            if answer is None:
                return
            reply = await _off_loop(reply_for_lab, answer, shape=shape, reset=reset)
            try:
                await downstream.send(reply)
            except ConnectionClosed:
                return

    async def _report(self, claims: TokenClaims, kind: str, detail: str) -> None:
        """Tell the hook (the log by default) and, with an arena, the policy's owner (queued, never raises)."""
        if self._arena is not None:
            self._arena.report_policy_error(claims, kind, detail)
        try:
            await to_thread(self._on_policy_error, claims, kind, detail)
        except Exception:
            logger.exception("on_policy_error hook failed for session %s", claims.session_id)


async def _off_loop(function: Callable[..., _Result], frame: str | bytes, **kwargs: Any) -> _Result:
    """``function(frame, **kwargs)``, in a worker thread when the frame is large (decoding and re-encoding
    a large frame would otherwise stall every other session on this event loop)."""
    if len(frame) > wire.OFF_LOOP_BYTES:
        return await to_thread(function, frame, **kwargs)
    return function(frame, **kwargs)


async def _answer_unless_gone(
    downstream: ServerConnection, upstream: ClientConnection | dialout.Channel
) -> str | bytes | None:
    """The policy's next frame, or None if the evaluator disconnects first (then nobody waits for it)."""
    answer = asyncio.ensure_future(upstream.recv())
    gone = asyncio.ensure_future(downstream.wait_closed())
    try:
        await asyncio.wait({answer, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not answer.done():
            answer.cancel()  # websockets: cancelling recv() loses no data
    return answer.result() if not answer.cancelled() else None


_TOO_BIG = f"the policy sent a frame over the relay's limit of {wire.REPLY_LIMITS.max_frame_bytes} bytes"


def _refused_as_too_big(upstream: ClientConnection | dialout.Channel) -> bool:
    """Whether the relay itself closed the policy's side (websockets does, with 1009) for an oversize frame:
    this relay (directly, or on the dial-out link of the channel) or the relay it forwards to."""
    if isinstance(upstream, dialout.Channel):
        return upstream.too_big
    return dialout.closed_for_size(upstream) or upstream.close_code == dialout.FORWARD_TOO_BIG


async def _send_then_close(downstream: ServerConnection, text: str, close: tuple[int, str]) -> None:
    with contextlib.suppress(ConnectionClosed):
        await downstream.send(text)
    await downstream.close(*close)


@contextlib.contextmanager
def serve_relay_in_thread(
    secret: bytes | str,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    upstream_timeout: float = 10.0,
    limits: wire.Limits = wire.DEFAULT_LIMITS,
    on_policy_error: PolicyErrorHook = log_policy_error,
    endpoint_allow: str | None = None,
    arena_url: str | None = None,
    poll_interval: float = 1.5,
    advertise_url: str | None = None,
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
        limits=limits,
        on_policy_error=on_policy_error,
        endpoint_allow=endpoint_allow,
        arena=arena,
        poll_interval=poll_interval,
        advertise_url=advertise_url,
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
        "--endpoint-allow",
        help=f"address classes policies may have besides public: private, loopback (else ${netguard.ALLOW_ENV})",
    )
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
    parser.add_argument(
        "--advertise-url",
        help="ws(s)://host:port at which other relays and the arena reach this relay, for dial-out policies "
        "attached here (default ws://<host>:<port>)",
    )
    args = parser.parse_args(argv)
    logs.configure()
    if args.poll_interval <= 0:
        raise SystemExit("arena-relay: --poll-interval must be positive")
    try:
        secret = _read_secret(args.secret_file)
        relay = Relay(
            secret,
            host=args.host,
            port=args.port,
            upstream_timeout=args.upstream_timeout,
            endpoint_allow=args.endpoint_allow,
            arena=_arena_link(args, secret),
            poll_interval=args.poll_interval,
            advertise_url=args.advertise_url,
        )
    except ValueError as exc:
        raise SystemExit(f"arena-relay: {exc}") from exc
    print(f"arena-relay listening on ws://{args.host}:{args.port}", file=sys.stderr, flush=True)
    relay.serve_forever()


if __name__ == "__main__":
    main()
