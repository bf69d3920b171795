"""Serve any :class:`~policy_server.base.BasePolicy` over the openpi websocket protocol.

Per connection: the server sends one metadata frame (the policy's metadata plus ``arena_protocol``), then
answers each request frame in lockstep. A request is a msgpack dict; its ``endpoint`` key (removed before the
policy sees the request) is ``"infer"`` (the default, so plain openpi clients work) or ``"reset"``.

- ``infer`` answers ``{**policy.infer(obs), "server_timing": {"infer_ms": float}}``.
- ``reset`` calls ``policy.reset(rest_of_request)`` and answers ``{"reset": True}``.
- A frame the safe decoder refuses (:func:`policy_server.wire.unpackb`), a text frame, a request that is not
  a map or names an unknown endpoint: one text frame ``bad request (code <code>): <why>``, then close 1008.
- An exception in the policy: the traceback as one text frame, then close code 1011.

Frames over ``limits.max_frame_bytes`` are refused by websockets before they are read (close 1009); at most two
frames wait per connection (the protocol is lockstep), and frames over 64 KiB are decoded in a worker thread,
so one client's frame never stalls the others.

``GET /healthz`` answers 200 without authentication. With an API key, the websocket handshake needs
``Authorization: Api-Key <key>`` or ``?api_key=<key>``; otherwise it is refused with HTTP 401.
Requests from all clients run one at a time per policy, in a worker thread, so slow inference never blocks the
event loop (pings, health checks and other handshakes go on).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import http
import itertools
import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from policy_server import dialout, logs, wire
from policy_server._serving import ServerHandle, health_response, run_until_signal
from policy_server._serving import serve_in_thread as _serve_in_thread
from policy_server.base import BasePolicy

logger = logging.getLogger(__name__)

PROTOCOL_KEY = "arena_protocol"
"""Metadata key by which clients recognise this server (the "arena" dialect)."""
PROTOCOL_VERSION = 1
NONCE_KEY = "arena_nonce"
"""Metadata key holding the registration nonce an arena issues to prove who controls an endpoint (any
server can carry it; ours adds it with ``--arena-nonce``)."""


class RequestError(ValueError):
    """A request frame is not a msgpack dict with a known endpoint; ``code`` says why, for machines."""

    def __init__(self, message: str, *, code: str = "bad_request") -> None:
        super().__init__(message)
        self.code = code


MAX_QUEUED_FRAMES = 2
"""Incoming frames buffered per connection before websockets stops reading from the socket (lockstep needs 1)."""


def api_key_matches(request: Request, api_key: str) -> bool:
    """Whether the handshake carries ``api_key`` in ``Authorization: Api-Key`` or the ``api_key`` query."""
    expected = api_key.encode()
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "api-key" and hmac.compare_digest(value.strip().encode(), expected):
        return True
    offered = parse_qs(urlsplit(request.path).query).get("api_key", [])
    return any(hmac.compare_digest(key.encode(), expected) for key in offered)


class PolicyServer:
    """Websocket server for one policy. Build it, then :meth:`serve_forever` or ``await start()``."""

    def __init__(
        self,
        policy: BasePolicy,
        *,
        host: str = "0.0.0.0",
        port: int = 8000,
        api_key: str | None = None,
        limits: wire.Limits = wire.DEFAULT_LIMITS,
        arena_nonce: str | None = None,
    ) -> None:
        self.policy = policy
        self._arena_nonce = arena_nonce or None
        self.host = host
        self.port = port
        self._api_key = api_key or None
        self._limits = limits
        self._connections = itertools.count(1)
        self._lock = asyncio.Lock()

    async def start(self) -> Server:
        """Listen on the running loop and return the websockets :class:`Server`."""
        self._lock = asyncio.Lock()  # bound to this loop; a server restarted on another loop gets a new one
        return await serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._process_request,
            compression=None,
            max_size=self._limits.max_frame_bytes,
            max_queue=MAX_QUEUED_FRAMES,
        )

    def serve_forever(self) -> None:
        """Serve until SIGINT/SIGTERM, then close all connections cleanly."""
        run_until_signal(self.start)

    async def serve_dialout(
        self,
        relay_url: str,
        *,
        key: str,
        policy: str,
        backoff: dialout.Backoff | None = None,
        stop: asyncio.Event | None = None,
        on_attached: Callable[[], None] | None = None,
    ) -> None:
        """Serve through an outgoing link to the relay at ``relay_url`` instead of listening (see
        :mod:`policy_server.dialout`) until ``stop`` is set; raises :class:`~policy_server.dialout.DialoutRefused`.
        ``key`` is an owner key of the policy ``policy`` (its slug)."""
        self._lock = asyncio.Lock()
        await dialout.serve_over_link(
            relay_url,
            self._handle,
            key=key,
            policy=policy,
            max_frame_bytes=self._limits.max_frame_bytes,
            backoff=backoff,
            stop=stop,
            on_attached=on_attached,
        )

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        health = health_response(connection, request)
        if health is not None:
            return health
        if self._api_key is not None and not api_key_matches(request, self._api_key):
            return connection.respond(http.HTTPStatus.UNAUTHORIZED, "missing or wrong API key\n")
        return None

    def _metadata_frame(self) -> bytes:
        nonce = {NONCE_KEY: self._arena_nonce} if self._arena_nonce else {}
        return wire.packb({**self.policy.metadata, **nonce, PROTOCOL_KEY: PROTOCOL_VERSION})

    async def _handle(self, ws: ServerConnection | dialout.Channel) -> None:
        # Each connection runs in an asyncio task with its own context: its lines carry its number and, once a
        # request names one, the session (the relay's alias of it).
        logs.bind(connection=next(self._connections))
        logger.info("client %s connected", ws.remote_address)
        try:
            await ws.send(self._metadata_frame())
            while True:
                frame = await ws.recv()
                try:
                    reply = await self._answer(frame)
                except RequestError as exc:
                    logger.info("bad request from %s: %s", ws.remote_address, exc)
                    await ws.send(f"bad request (code {exc.code}): {exc}")
                    await ws.close(CloseCode.POLICY_VIOLATION, "bad request")
                    return
                except Exception:
                    logger.exception("request from %s failed", ws.remote_address)
                    await ws.send(traceback.format_exc())
                    await ws.close(
                        CloseCode.INTERNAL_ERROR, "policy server error; traceback in previous frame"
                    )
                    return
                await ws.send(reply)
        except ConnectionClosed:
            logger.info("client %s disconnected", ws.remote_address)

    async def _answer(self, frame: str | bytes) -> bytes:
        if isinstance(frame, str):
            raise RequestError("requests are msgpack binary frames, got a text frame", code="text_frame")
        try:
            request = await wire.unpackb_off_loop(frame, limits=self._limits)
        except wire.WireError as exc:
            raise RequestError(str(exc), code=exc.code) from exc
        if not isinstance(request, dict):
            raise RequestError(f"a request is a msgpack map, got {type(request).__name__}", code="not_a_map")
        session_id = request.get("session_id")
        if isinstance(session_id, str) and session_id != logs.current().get("session_id"):
            logs.bind(session_id=session_id)
        endpoint = request.pop("endpoint", "infer")
        if endpoint == "infer":
            started = time.perf_counter()
            result = await self._run(self.policy.infer, request)
            infer_ms = (time.perf_counter() - started) * 1e3
            if not isinstance(result, dict):
                raise TypeError(  # the policy's fault, not the request's: a traceback and 1011
                    f"policy.infer returned {type(result).__name__}, expected a dict"
                )
            timing = {**result.get("server_timing", {}), "infer_ms": infer_ms}
            return wire.packb({**result, "server_timing": timing})
        if endpoint == "reset":
            await self._run(self.policy.reset, request)
            return wire.packb({"reset": True})
        raise RequestError(
            f"unknown endpoint {str(endpoint)[:40]!r}; expected 'infer' or 'reset'", code="unknown_endpoint"
        )

    async def _run(self, method: Any, request: dict[str, Any]) -> Any:
        async with self._lock:
            return await asyncio.get_running_loop().run_in_executor(None, method, request)


@contextlib.contextmanager
def serve_in_thread(
    policy: BasePolicy,
    host: str = "127.0.0.1",
    port: int = 0,
    api_key: str | None = None,
    *,
    limits: wire.Limits = wire.DEFAULT_LIMITS,
    arena_nonce: str | None = None,
) -> Iterator[ServerHandle]:
    """Serve ``policy`` from a background thread; yields a handle with ``.port``, ``.url`` and ``.stop()``.

    ``port=0`` binds a free port chosen by the OS. The server stops when the block exits. ``arena_nonce``
    goes into the metadata frame (see ``NONCE_KEY``).
    """
    server = PolicyServer(
        policy, host=host, port=port, api_key=api_key, limits=limits, arena_nonce=arena_nonce
    )
    with _serve_in_thread(server.start, host=host) as handle:
        yield handle


@contextlib.contextmanager
def dial_out_in_thread(
    policy: BasePolicy,
    relay_url: str,
    *,
    key: str,
    slug: str,
    backoff: dialout.Backoff | None = None,
    limits: wire.Limits = wire.DEFAULT_LIMITS,
) -> Iterator[DialoutHandle]:
    """Serve ``policy`` through a dial-out link to ``relay_url`` from a background thread (binds no port).

    Yields a :class:`DialoutHandle`; the link closes when the block exits."""
    server = PolicyServer(policy, limits=limits)
    loop = asyncio.new_event_loop()
    handle = DialoutHandle(loop=loop)

    async def main() -> None:
        handle._stop = asyncio.Event()  # created on the thread's loop (Python 3.8 binds it at creation)
        handle._ready.set()
        try:
            await server.serve_dialout(
                relay_url,
                key=key,
                policy=slug,
                backoff=backoff,
                stop=handle._stop,
                on_attached=handle._attached,
            )
        except dialout.DialoutRefused as exc:
            handle.refused = str(exc)

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), name="dialout", daemon=True)
    thread.start()
    handle._ready.wait(10)
    try:
        yield handle
    finally:
        loop.call_soon_threadsafe(handle._stop.set)
        thread.join(10)
        loop.close()


class DialoutHandle:
    """A dial-out policy server running in a thread: ``attachments`` counts the links opened so far,
    ``refused`` holds the relay's refusal (None while it keeps serving)."""

    def __init__(self, *, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.attachments = 0
        self.refused: str | None = None

    def _attached(self) -> None:
        self.attachments += 1

    def wait_attached(self, count: int = 1, timeout: float = 30.0) -> bool:
        """Wait until ``count`` links were opened; False on timeout or refusal."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.attachments >= count:
                return True
            if self.refused is not None:
                return False
            time.sleep(0.05)
        return False
