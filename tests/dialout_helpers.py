"""A hostile dial-out policy: a raw websocket that speaks the link protocol of :mod:`policy_server.dialout`."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from policy_server import dialout


@contextlib.contextmanager
def hostile_dialer(
    relay_url: str, slug: str, answer: Callable[[int, int], list[bytes]], *, key: str = "k"
) -> Iterator[None]:
    """An owner-side link that answers every channel's OPEN and every request with ``answer(channel_id, kind)``
    (a list of raw link messages)."""
    attached = threading.Event()

    async def run_link() -> None:
        async with connect(
            dialout.link_url(relay_url),
            additional_headers={"Authorization": f"Api-Key {key}", dialout.POLICY_HEADER: slug},
            max_size=None,
            compression=None,
        ) as ws:
            attached.set()
            with contextlib.suppress(ConnectionClosed):
                async for message in ws:
                    kind, channel, _ = dialout.decode(message)
                    if kind in (dialout.OPEN, dialout.DATA_BINARY):
                        for out in answer(channel, kind):
                            await ws.send(out)

    loop = asyncio.new_event_loop()
    task = loop.create_task(run_link())
    thread = threading.Thread(
        target=lambda: loop.run_until_complete(asyncio.gather(task, return_exceptions=True)), daemon=True
    )
    thread.start()
    try:
        assert attached.wait(30)
        yield
    finally:
        loop.call_soon_threadsafe(task.cancel)
        thread.join(10)
        loop.close()
