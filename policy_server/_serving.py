"""Running an asyncio websockets server in the foreground (until a signal) or in a background thread."""

from __future__ import annotations

import asyncio
import contextlib
import http
import signal
import threading
import typing
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field

from websockets.asyncio.server import Server, ServerConnection
from websockets.http11 import Request, Response

HEALTH_PATH = "/healthz"

# typing's generics: collections.abc's cannot be subscripted at run time before Python 3.9.
StartServer = typing.Callable[[], typing.Awaitable[Server]]
"""Coroutine factory that starts a listening :class:`Server` on the running loop."""


def health_response(connection: ServerConnection, request: Request) -> Response | None:
    """Answer a plain ``GET /healthz`` with 200 OK; ``None`` for every other request."""
    if request.path.split("?", 1)[0] == HEALTH_PATH:
        return connection.respond(http.HTTPStatus.OK, "OK\n")
    return None


def bound_port(server: Server) -> int:
    """The TCP port the server listens on (useful after binding port 0)."""
    return int(next(iter(server.sockets)).getsockname()[1])


async def _serve_until(start: StartServer, stop: asyncio.Event) -> None:
    server = await start()
    try:
        await stop.wait()
    finally:
        server.close()
        await server.wait_closed()


def run_until_signal(start: StartServer) -> None:
    """Serve in the foreground until SIGINT or SIGTERM, then close every connection (code 1001) and return."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await _serve_until(start, stop)

    asyncio.run(main())


@dataclass
class ServerHandle:
    """A server running on its own event loop in a background thread."""

    host: str
    port: int
    _loop: asyncio.AbstractEventLoop = field(repr=False)
    _stop: asyncio.Event = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    @property
    def url(self) -> str:
        """``ws://host:port`` of the server."""
        return f"ws://{self.host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        """Close every connection and the listening socket; wait up to ``timeout`` seconds. Idempotent."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout)


@contextlib.contextmanager
def serve_in_thread(start: StartServer, *, host: str) -> Iterator[ServerHandle]:
    """Start a server in a daemon thread, yield its handle once it listens, stop it on exit.

    An error while starting (e.g. the port is taken) is raised here, in the caller's thread.
    """
    listening: Future[ServerHandle] = Future()

    def run() -> None:
        loop = asyncio.new_event_loop()
        stop = asyncio.Event()

        async def start_and_report() -> Server:
            server = await start()
            listening.set_result(
                ServerHandle(host, bound_port(server), loop, stop, threading.current_thread())
            )
            return server

        try:
            loop.run_until_complete(_serve_until(start_and_report, stop))
        except BaseException as exc:
            if listening.done():
                raise
            listening.set_exception(exc)
        finally:
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    thread = threading.Thread(target=run, name="ws-server", daemon=True)
    thread.start()
    handle = listening.result()
    try:
        yield handle
    finally:
        handle.stop()
