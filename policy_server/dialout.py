"""Dial-out serving: a policy server behind NAT or a firewall connects out to a relay and is served through it.

``arena-policy serve ... --connect URL --key OWNER_KEY --policy SLUG`` binds no port. It opens one websocket
to the relay (``<relay>/dialout``, handshake headers ``Authorization: Api-Key <owner key>`` and
``X-Arena-Policy: <slug>``); the relay asks the arena whether the key owns the policy and whether the policy is
registered as dial-out (endpoint ``dialout://<slug>``), and refuses the handshake (403) otherwise. Over that
one link the relay then opens a *channel* per evaluator session or health check, and each channel carries
exactly the openpi lockstep conversation a direct connection would: the policy's :class:`PolicyServer`
handler runs on a :class:`Channel`, which behaves like a websocket (``send``, ``recv``, ``close``).

Link protocol: binary websocket messages only, each ``kind (1 byte) | channel id (uint32, big-endian) |
payload``:

- ``OPEN`` (relay to policy, empty payload): a new channel; the policy answers with its metadata frame.
- ``DATA_BINARY`` / ``DATA_TEXT``: one websocket message of the channel (text as UTF-8).
- ``CLOSE``: ``code (uint16) | reason (UTF-8, at most 123 bytes)``; the channel is gone on both sides.

Bounds: a message carries at most the receiver's frame limit (the link's websocket ``max_size``; above it the
receiver closes the whole link with 1009, and the relay reports the policy's oversize frame to every session
of that link as it would for a direct endpoint); at most :data:`MAX_CHANNELS` channels per link (the relay
refuses more sessions as "policy unavailable", the policy refuses more OPENs with CLOSE 1013); at most
:data:`MAX_CHANNEL_QUEUE` messages wait per channel: the protocol is lockstep, so a peer that sends more before
the other side read them breaks the protocol, and that channel (only) is closed with 1008. The link's reader
never waits on a channel, so a slow session never stalls the others.

The owner side reconnects with jittered exponential backoff (:class:`Backoff`) whenever the link drops, and stops
for good (with a one-line reason) only when the relay refuses the key or the policy (HTTP 401/403/404) or a
newer link of the same policy replaced this one (close code :data:`SUPERSEDED`).

This module runs on the owner's machine as well as in the relay: Python 3.8, no Django.
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
from collections.abc import Awaitable, Callable
from typing import Any, Union

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, ConnectionClosedOK, InvalidStatus
from websockets.frames import Close, CloseCode

logger = logging.getLogger(__name__)

SCHEME = "dialout://"
"""A dial-out policy's registered endpoint is ``dialout://<slug>``."""
LINK_PATH = "/dialout"
FORWARD_PREFIX = "/forward/"
"""``<relay>/forward/<slug>``: a channel to a policy attached to that relay, for other relays and the arena's
health check (authenticated with :func:`policy_server.relay_token.relay_forward_credential`)."""
POLICY_HEADER = "X-Arena-Policy"
OPEN, DATA_BINARY, DATA_TEXT, CLOSE = 1, 2, 3, 4
_HEADER = struct.Struct(">BI")
HEADER_BYTES = _HEADER.size
MAX_CHANNELS = 32
MAX_CHANNEL_QUEUE = 2
MAX_CLOSE_REASON_BYTES = 123
MAX_SLUG_CHARS = 80
SUPERSEDED = 4001
"""Close code of a link that a newer link of the same policy replaced (two servers for one policy: the older
one stops instead of taking the policy back, so that they do not flap)."""
FORWARD_TOO_BIG = 4009
"""Close code of a forwarded channel whose policy sent a frame over the relay's limit."""
Message = Union[str, bytes]  # noqa: UP007 (an alias is evaluated at runtime; Python 3.8 has no X | Y)


def endpoint_for(slug: str) -> str:
    """The endpoint a dial-out policy registers: ``dialout://<slug>``."""
    return f"{SCHEME}{slug}"


def slug_of(endpoint: str) -> str | None:
    """The slug of a ``dialout://<slug>`` endpoint, None for any other endpoint."""
    if not endpoint.startswith(SCHEME):
        return None
    slug = endpoint[len(SCHEME) :]
    if (
        not slug
        or len(slug) > MAX_SLUG_CHARS
        or not all(c.isascii() and (c.isalnum() or c == "-") for c in slug)
    ):
        return None
    return slug


class LinkProtocolError(Exception):
    """The peer broke the link protocol (not a channel's: the whole link closes with 1002)."""


class ChannelLimit(Exception):
    """A link already carries :data:`MAX_CHANNELS` channels."""


def encode(kind: int, channel: int, payload: bytes = b"") -> bytes:
    return _HEADER.pack(kind, channel) + payload


def decode(message: Message) -> tuple[int, int, bytes]:
    """``(kind, channel, payload)`` of one link message; raises :class:`LinkProtocolError`."""
    if not isinstance(message, bytes) or len(message) < HEADER_BYTES:
        raise LinkProtocolError("link messages are binary and at least 5 bytes long")
    kind, channel = _HEADER.unpack_from(message)
    if kind not in (OPEN, DATA_BINARY, DATA_TEXT, CLOSE):
        raise LinkProtocolError(f"unknown link message kind {kind}")
    return kind, channel, message[HEADER_BYTES:]


def _close_payload(code: int, reason: str) -> bytes:
    return struct.pack(">H", code) + reason.encode()[:MAX_CLOSE_REASON_BYTES]


def _parse_close(payload: bytes) -> tuple[int, str]:
    if len(payload) < 2 or len(payload) > 2 + MAX_CLOSE_REASON_BYTES:
        return CloseCode.PROTOCOL_ERROR, ""
    (code,) = struct.unpack_from(">H", payload)
    if not 1000 <= code <= 4999:
        code = CloseCode.PROTOCOL_ERROR
    return code, payload[2:].decode(errors="replace")


_CLOSED = object()


class Channel:
    """One conversation over a :class:`Link`, shaped like a websockets connection (``send``, ``recv``,
    ``close``, ``wait_closed``, ``close_code``, ``async with``), so that the policy server's handler and the
    relay's forwarding code run on it unchanged.

    ``too_big`` is set when the link died because the policy sent a frame over the relay's limit.
    """

    def __init__(self, link: Link, channel_id: int) -> None:
        self.id = channel_id
        self._link = link
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._closed = asyncio.Event()
        self.close_code: int | None = None
        self.close_reason = ""
        self.too_big = False
        self.remote_address = ("dial-out channel", channel_id)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def recv(self) -> Message:
        """The next message; raises ConnectionClosed once the channel closed and nothing is queued."""
        item = await self._queue.get()
        if item is _CLOSED:
            self._queue.put_nowait(_CLOSED)  # every later recv() raises too
            raise self._exception()
        return item

    async def send(self, message: Message) -> None:
        if self.closed:
            raise self._exception()
        if isinstance(message, str):
            await self._link.send(encode(DATA_TEXT, self.id, message.encode()))
        else:
            await self._link.send(encode(DATA_BINARY, self.id, bytes(message)))

    async def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Close this channel (tells the peer, unless the link is gone); idempotent."""
        if self.closed:
            return
        self._finish(code, reason)
        try:
            await self._link.send(encode(CLOSE, self.id, _close_payload(code, reason)))
        except ConnectionClosed:
            pass

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def __aenter__(self) -> Channel:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    def _deliver(self, message: Message) -> bool:
        """Queue a message from the peer; False if the peer overran the bound (the caller closes us)."""
        if self.closed:
            return True  # late data after our close: dropped
        if self._queue.qsize() >= MAX_CHANNEL_QUEUE:
            return False
        self._queue.put_nowait(message)
        return True

    def _finish(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.close_code, self.close_reason = code, reason
        self._closed.set()
        self._queue.put_nowait(_CLOSED)
        self._link.forget(self.id)

    def _exception(self) -> ConnectionClosed:
        code = self.close_code or CloseCode.ABNORMAL_CLOSURE
        if code == CloseCode.ABNORMAL_CLOSURE:
            return ConnectionClosedError(None, None)
        frame = Close(code, self.close_reason)
        if code in (CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY):
            return ConnectionClosedOK(frame, None)
        return ConnectionClosedError(frame, None)


class Link:
    """Channels multiplexed over one websocket ``ws`` (either side). ``on_open(channel)`` is called for each
    channel the peer opens (the policy's side); None refuses OPEN as a protocol error (the relay's side).

    Run :meth:`run` for as long as the link lives; it returns when the websocket closes, after closing every
    channel (code 1006, or with ``too_big`` set when we closed the link for an oversize frame).
    """

    def __init__(self, ws: Any, *, on_open: Callable[[Channel], None] | None = None) -> None:
        self.ws = ws
        self._on_open = on_open
        self._channels: dict[int, Channel] = {}
        self._next_id = 1

    @property
    def channel_count(self) -> int:
        return len(self._channels)

    def open_channel(self) -> Channel:
        """A new channel (the relay's side): the OPEN frame is sent before any of its data."""
        if len(self._channels) >= MAX_CHANNELS:
            raise ChannelLimit(f"the link already carries {MAX_CHANNELS} channels")
        channel_id = self._next_id
        self._next_id = self._next_id % 0xFFFFFFFF + 1
        channel = Channel(self, channel_id)
        self._channels[channel_id] = channel
        self._background(self.send(encode(OPEN, channel_id)))
        return channel

    async def send(self, message: bytes) -> None:
        await self.ws.send(message)

    def forget(self, channel_id: int) -> None:
        self._channels.pop(channel_id, None)

    async def run(self) -> None:
        try:
            async for message in self.ws:
                self._dispatch(*decode(message))
        except LinkProtocolError as exc:
            logger.warning("dial-out link: %s", exc)
            await self.ws.close(CloseCode.PROTOCOL_ERROR, "link protocol error")
        except ConnectionClosed:
            pass
        finally:
            too_big = closed_for_size(self.ws)
            for channel in list(self._channels.values()):
                channel.too_big = too_big
                channel._finish(CloseCode.ABNORMAL_CLOSURE, "")

    def _dispatch(self, kind: int, channel_id: int, payload: bytes) -> None:
        channel = self._channels.get(channel_id)
        if kind == OPEN:
            if self._on_open is None:
                raise LinkProtocolError("only the relay opens channels")
            if channel is not None:
                raise LinkProtocolError(f"channel {channel_id} is already open")
            if len(self._channels) >= MAX_CHANNELS:
                self._background(self.send(encode(CLOSE, channel_id, _close_payload(1013, "too many"))))
                return
            channel = Channel(self, channel_id)
            self._channels[channel_id] = channel
            self._on_open(channel)
        elif channel is None:
            return  # a message for a channel that we closed meanwhile
        elif kind == CLOSE:
            channel._finish(*_parse_close(payload))
        else:
            message: Message = payload.decode(errors="replace") if kind == DATA_TEXT else payload
            if not channel._deliver(message):
                logger.warning("dial-out channel %s: the peer overran its queue", channel_id)
                self._background(channel.close(CloseCode.POLICY_VIOLATION, "channel queue overrun"))

    def _background(self, awaitable: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(awaitable)
        task.add_done_callback(_log_failure)


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        if not isinstance(task.exception(), ConnectionClosed):
            logger.warning("dial-out link task failed: %r", task.exception())


def closed_for_size(ws: Any) -> bool:
    """Whether we closed ``ws`` (websockets does, with 1009) because the peer sent an oversize frame."""
    protocol = getattr(ws, "protocol", None)
    if protocol is None:
        return False
    sent = protocol.close_sent
    return (
        sent is not None
        and sent.code == CloseCode.MESSAGE_TOO_BIG
        and protocol.close_rcvd_then_sent is not True
    )


# --- The owner's side -------------------------------------------------------------------------------------


class DialoutRefused(Exception):
    """The relay refused the link for good (wrong key, unknown policy, or a policy not registered as
    dial-out), or a newer link of the same policy replaced it: retrying would not help."""


class Backoff:
    """Delays between reconnection attempts: ``base * 2**n`` seconds capped at ``cap``, each multiplied by a
    random factor in [0.5, 1] (so that many policies cut off by one relay restart do not return in step)."""

    def __init__(self, base: float = 0.5, cap: float = 30.0, rng: random.Random | None = None) -> None:
        self.base, self.cap = base, cap
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        delay = min(self.cap, self.base * (2**self.attempt))
        self.attempt = min(self.attempt + 1, 30)
        return delay * self._rng.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.attempt = 0


def link_url(relay_url: str) -> str:
    """The relay's dial-out address for a relay base URL (``ws(s)://host:port``)."""
    return relay_url.rstrip("/") + LINK_PATH


async def serve_over_link(
    relay_url: str,
    handler: Callable[[Channel], Awaitable[None]],
    *,
    key: str,
    policy: str,
    max_frame_bytes: int,
    backoff: Backoff | None = None,
    stop: asyncio.Event | None = None,
    on_attached: Callable[[], None] | None = None,
    open_timeout: float = 10.0,
) -> None:
    """Keep a link to ``relay_url`` open until ``stop`` is set, running ``handler(channel)`` (the policy
    server's connection handler) for every channel the relay opens; reconnects with ``backoff``.

    ``max_frame_bytes`` bounds the relay's messages (the policy's own request limit). Raises
    :class:`DialoutRefused` when the relay refuses the key or the policy.
    """
    backoff = backoff or Backoff()
    stop = stop or asyncio.Event()
    headers = {"Authorization": f"Api-Key {key}", POLICY_HEADER: policy}
    while not stop.is_set():
        try:
            ws = await connect(
                link_url(relay_url),
                additional_headers=headers,
                open_timeout=open_timeout,
                compression=None,
                max_size=max_frame_bytes + HEADER_BYTES,
                max_queue=4 * MAX_CHANNELS,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403, 404):
                raise DialoutRefused(
                    f"the relay refused policy {policy!r} with HTTP {status}: check the key (an owner key of the "
                    f"policy's organization) and that the policy is registered with endpoint {endpoint_for(policy)}"
                ) from None
            logger.warning("relay answered HTTP %s; retrying", status)
        except Exception as exc:  # any other failure to connect (refused, timeout, reset, bad answer): retry
            logger.warning("cannot reach the relay at %s: %s", relay_url, exc)
        else:
            backoff.reset()
            logger.info("attached to %s as %s", relay_url, policy)
            if on_attached is not None:
                on_attached()
            await _serve_link(ws, handler, stop)
            if stop.is_set():
                return
            if ws.close_code == SUPERSEDED:
                raise DialoutRefused(f"another server now serves policy {policy!r}; this one stops")
            logger.warning("link to the relay closed (code %s); reconnecting", ws.close_code)
        try:
            await asyncio.wait_for(stop.wait(), backoff.next_delay())
        except asyncio.TimeoutError:  # noqa: UP041 (not the builtin one before Python 3.11)
            pass


async def _serve_link(ws: Any, handler: Callable[[Channel], Awaitable[None]], stop: asyncio.Event) -> None:
    tasks: set[asyncio.Future[Any]] = set()

    async def run_channel(channel: Channel) -> None:
        try:
            await handler(channel)
        finally:
            await channel.close()  # like a websockets server when the handler returns

    def on_open(channel: Channel) -> None:
        task = asyncio.ensure_future(run_channel(channel))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    link = Link(ws, on_open=on_open)
    runner = asyncio.ensure_future(link.run())
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not runner.done():
            await ws.close()
            await runner
        for task in list(tasks):
            task.cancel()
