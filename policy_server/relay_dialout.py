"""The relay's side of dial-out serving (see :mod:`policy_server.dialout` and the design in
:mod:`policy_server.relay`): admitting policies' links (``/dialout``) and keeping the arena's record of them,
routing a session to a dial-out policy (a channel on a local link, or a forwarded websocket to the relay holding
it) and serving other relays' forwards (``/forward/<slug>``).

The session itself runs through the relay's ordinary pipeline, on whatever :meth:`DialoutRoutes.open_channel`
returns; nothing here reads a policy's frames beyond the link's framing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import http
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.protocol import State

from policy_server import dialout, wire
from policy_server.relay_admission import AdmissionRefused, ArenaLink, ArenaUnreachable
from policy_server.relay_frames import CLOSE_POLICY_UNAVAILABLE
from policy_server.relay_token import TokenClaims, relay_forward_credential

logger = logging.getLogger(__name__)

_Result = TypeVar("_Result")


class DialoutRoutes:
    """Dial-out links held by one relay, and the routes to dial-out policies held by others.

    ``arena`` checks owner keys and keeps the directory (None: a standalone relay, which accepts any key and
    knows only its own links). ``advertise_url`` is this relay's internal address (set by the relay once it
    listens); ``connect`` opens a websocket without following redirects; ``report(claims, kind, detail)`` is the
    relay's policy error report (hook and owner incident).
    """

    def __init__(
        self,
        secret: bytes | str,
        *,
        arena: ArenaLink | None,
        poll_interval: float,
        upstream_timeout: float,
        connect: Callable[..., Any],
        report: Callable[[TokenClaims, str, str], Awaitable[None]],
        advertise_url: str | None = None,
    ) -> None:
        self._arena = arena
        self._poll_interval = poll_interval
        self._upstream_timeout = upstream_timeout
        self._connect = connect
        self._report = report
        self.advertise_url = advertise_url.rstrip("/") if advertise_url else None
        self._forward_credential = relay_forward_credential(secret)
        self._links: dict[str, _Attached] = {}  # policy slug -> its link to this relay
        # Admitted at the handshake, not yet served: connection -> its link's record.
        self._pending_links: dict[ServerConnection, _Attached] = {}

    def link_admitted(self, connection: ServerConnection) -> _Attached | None:
        """The link admitted for ``connection`` at its handshake (once), None for any other connection."""
        return self._pending_links.pop(connection, None)

    async def admit_link(self, connection: ServerConnection, request: Request) -> Response | None:
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        slug = dialout.slug_of(dialout.SCHEME + request.headers.get(dialout.POLICY_HEADER, ""))
        if scheme.lower() != "api-key" or not key.strip() or slug is None:
            return connection.respond(http.HTTPStatus.UNAUTHORIZED, "owner key and policy slug required\n")
        attached = _Attached(slug=slug, key=key.strip(), connection_id=secrets.token_hex(16))
        if self._arena is None:
            logger.warning("standalone relay: accepting dial-out policy %s without checking its key", slug)
        else:
            try:
                attached.lease_s = await _in_thread(
                    self._arena.attach,
                    policy=slug,
                    key=attached.key,
                    relay_url=self._advertised(),
                    connection_id=attached.connection_id,
                )
            except AdmissionRefused as refused:
                return connection.respond(http.HTTPStatus(refused.status), f"{refused.message}\n")
            except ArenaUnreachable as exc:
                logger.warning("refusing a dial-out link: %s", exc)
                return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "arena unreachable, retry\n")
        # A handshake that failed after admission never reaches the handler: forget those here.
        for stale in [c for c in self._pending_links if c.state is State.CLOSED]:
            del self._pending_links[stale]
        self._pending_links[connection] = attached
        return None

    def _advertised(self) -> str:
        assert self.advertise_url is not None  # set by start()
        return self.advertise_url

    async def serve_link(self, ws: ServerConnection, attached: _Attached) -> None:
        # The policy's messages are bounded like a direct endpoint's replies (plus the channel header).
        ws.protocol.max_size = wire.REPLY_LIMITS.max_frame_bytes + dialout.HEADER_BYTES
        attached.link = dialout.Link(ws)
        previous = self._links.get(attached.slug)
        self._links[attached.slug] = attached
        if previous is not None and previous.link is not None:
            background(previous.link.ws.close(dialout.SUPERSEDED, "replaced by a newer link"))
        renewal = asyncio.ensure_future(self._renew(ws, attached))
        logger.info("dial-out policy %s attached", attached.slug)
        try:
            await attached.link.run()
        finally:
            renewal.cancel()
            if self._links.get(attached.slug) is attached:
                del self._links[attached.slug]
            if self._arena is not None:
                background(_in_thread(_quietly, self._arena.detach, attached.connection_id))
            logger.info("dial-out policy %s detached", attached.slug)

    async def _renew(self, ws: ServerConnection, attached: _Attached) -> None:
        """Renew the arena's record of the link every third of its lease; close the link when the arena says
        the key or the policy no longer qualifies, or a newer link replaced it, or it could not be asked for
        longer than the lease."""
        if self._arena is None:
            return
        last_ok = time.monotonic()
        while True:
            await asyncio.sleep(min(attached.lease_s / 3, self._poll_interval * 4))
            try:
                attached.lease_s = await _in_thread(
                    self._arena.attach,
                    policy=attached.slug,
                    key=attached.key,
                    relay_url=self._advertised(),
                    connection_id=attached.connection_id,
                    renew=True,
                )
                last_ok = time.monotonic()
            except AdmissionRefused as refused:
                code = dialout.SUPERSEDED if refused.status == 409 else CloseCode.POLICY_VIOLATION
                await ws.close(code, refused.message[:100])
                return
            except ArenaUnreachable as exc:
                logger.warning("cannot renew dial-out policy %s: %s", attached.slug, exc)
                if time.monotonic() - last_ok > attached.lease_s:
                    await ws.close(CloseCode.TRY_AGAIN_LATER, "relay lost contact with the arena")
                    return

    def admit_forward(self, connection: ServerConnection, request: Request, slug: str) -> Response | None:
        scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
        expected = self._forward_credential.encode()
        if scheme.lower() != "api-key" or not hmac.compare_digest(credential.strip().encode(), expected):
            return connection.respond(http.HTTPStatus.FORBIDDEN, "forwarding is for the arena's relays\n")
        if slug not in self._links:
            return connection.respond(http.HTTPStatus.NOT_FOUND, "that policy is not attached here\n")
        return None

    async def serve_forward(self, ws: ServerConnection, slug: str) -> None:
        """Pipe another relay's (or the arena's health check's) websocket into a channel of the policy's link.
        The caller applies the relay pipeline; frames are bounded both ways (by this server's ``max_size``
        towards the policy, by the link's towards the caller)."""
        channel = self._local_channel(slug)
        if channel is None:
            await ws.close(*CLOSE_POLICY_UNAVAILABLE)
            return
        async with channel:
            inward = asyncio.ensure_future(_pump(ws.recv, channel.send))
            outward = asyncio.ensure_future(_pump(channel.recv, ws.send))
            try:
                await asyncio.wait({inward, outward}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                inward.cancel()
                outward.cancel()
            if channel.closed:
                await ws.close(*_forward_close(channel))

    def _local_channel(self, slug: str) -> dialout.Channel | None:
        attached = self._links.get(slug)
        if attached is None or attached.link is None:
            return None
        try:
            return attached.link.open_channel()
        except dialout.ChannelLimit:
            return None

    async def open_channel(self, claims: TokenClaims, slug: str) -> dialout.Channel | ClientConnection | None:
        """A channel to the dial-out policy ``slug``: on its link if it is attached here, else through the relay
        the arena says it is attached to; None (reported as unreachable) when it is attached nowhere."""
        if slug in self._links:
            channel = self._local_channel(slug)
            if channel is None:
                await self._report(claims, "unreachable", f"the link carries {dialout.MAX_CHANNELS} sessions")
            return channel
        relay_url = None
        if self._arena is not None:
            try:
                relay_url = await _in_thread(self._arena.locate, slug)
            except ArenaUnreachable as exc:
                logger.warning("cannot locate dial-out policy %s: %s", slug, exc)
        if relay_url is None or relay_url == self.advertise_url:
            await self._report(claims, "unreachable", "the dial-out policy is not connected to any relay")
            return None
        try:
            return await self._connect(
                relay_url.rstrip("/") + dialout.FORWARD_PREFIX + slug,
                additional_headers={"Authorization": f"Api-Key {self._forward_credential}"},
                open_timeout=self._upstream_timeout,
                compression=None,
                proxy=None,
                max_size=wire.REPLY_LIMITS.max_frame_bytes,
                max_queue=dialout.MAX_CHANNEL_QUEUE,
            )
        except (OSError, TimeoutError, asyncio.TimeoutError, InvalidHandshake) as exc:
            await self._report(claims, "unreachable", f"dial-out forward to another relay failed: {exc}")
            return None


@dataclass
class _Attached:
    """A dial-out policy's link to this relay, as admitted (the key is kept to renew the attachment)."""

    slug: str
    key: str
    connection_id: str
    lease_s: float = 10.0
    link: dialout.Link | None = None


_SENDABLE = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})


def _forward_close(channel: dialout.Channel) -> tuple[int, str]:
    """How a forwarded channel's end is told to the caller: the policy's close code (no reason: the caller
    does not pass it on anyway), FORWARD_TOO_BIG for an oversize frame, 1014 for a link that dropped."""
    if channel.too_big:
        return dialout.FORWARD_TOO_BIG, "policy frame too big"
    code = channel.close_code or 0
    return (code, "") if code in _SENDABLE or 3000 <= code <= 4999 else CLOSE_POLICY_UNAVAILABLE


async def _pump(receive: Callable[[], Any], send: Callable[[Any], Any]) -> None:
    with contextlib.suppress(ConnectionClosed):
        while True:
            await send(await receive())


async def _in_thread(function: Callable[..., _Result], *args: Any, **kwargs: Any) -> _Result:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, lambda: function(*args, **kwargs))


def _quietly(function: Callable[..., Any], *args: Any) -> None:
    with contextlib.suppress(ArenaUnreachable):
        function(*args)


_background_tasks: set[asyncio.Future[Any]] = set()


def background(awaitable: Any) -> None:
    """Run ``awaitable`` on the loop without waiting for it (kept referenced until done)."""
    task = asyncio.ensure_future(awaitable)
    _background_tasks.add(task)
    task.add_done_callback(_background_tasks.discard)
