"""An emulation of RoboArena's policy server dialect, written from its documented behaviour.

Its metadata frame is exactly the policy's config dict; every request must carry ``endpoint`` (a request
without it fails with a traceback text frame and close 1011); ``reset`` gets the rest of the request as
``reset_info`` and is answered with the text frame ``"reset successful"``; there is no ``server_timing``.
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Iterator

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from policy_server._serving import ServerHandle, health_response, serve_in_thread
from policy_server.base import BasePolicy
from policy_server.wire import packb, unpackb


@contextlib.contextmanager
def serve_roboarena_in_thread(policy: BasePolicy) -> Iterator[ServerHandle]:
    async def handle(ws: ServerConnection) -> None:
        await ws.send(packb(policy.metadata))
        try:
            while True:
                request = unpackb(await ws.recv())
                try:
                    endpoint = request.pop("endpoint")
                    if endpoint == "infer":
                        await ws.send(packb(policy.infer(request)))
                    elif endpoint == "reset":
                        policy.reset(request)
                        await ws.send("reset successful")
                    else:
                        raise ValueError(f"unknown endpoint {endpoint}")
                except Exception:
                    await ws.send(traceback.format_exc())
                    await ws.close(CloseCode.INTERNAL_ERROR, "Internal server error")
                    return
        except ConnectionClosed:
            return

    async def start() -> Server:
        return await serve(
            handle, "127.0.0.1", 0, compression=None, max_size=None, process_request=health_response
        )

    with serve_in_thread(start, host="127.0.0.1") as handle_:
        yield handle_
