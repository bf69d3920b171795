"""Bomb frames against the relay (from a lab and from a policy), the policy server and the health checker.

Each bomb is refused with a clear code before anything is allocated in proportion to what it declares
(tracemalloc's peak over the whole process, which also traces numpy's buffers, and the process's CPU time stay
bounded), the target policy never sees it, and another session on the same relay, mid-request while the bomb
arrives (a handshake: its policy holds the request until the bomb has been refused), is served to the end.
"""

from __future__ import annotations

import threading
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import msgpack
import numpy as np
import pytest
from arena_test_policies import DROID_METADATA, EchoPolicy
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, ConnectionClosedError
from websockets.sync.client import connect

from policy_server import wire
from policy_server._serving import serve_in_thread
from policy_server.check import dummy_observation, policy_check, requirements_from_metadata
from policy_server.client import PolicyClient
from policy_server.relay import serve_relay_in_thread
from policy_server.relay_token import mint_token
from policy_server.server import serve_in_thread as serve_policy_in_thread

SECRET = "relay secret for the hostile frame tests"
OBS = {
    **dummy_observation(requirements_from_metadata({})),  # the full DROID observation the relay asks for
    "prompt": "p",
}
MAX_PEAK_BYTES = 32 * 2**20
MAX_CPU_S = 2.0


def _tagged(dtype: str, shape: list[int], data: bytes = b"") -> dict[bytes, object]:
    return {b"__ndarray__": True, b"data": data, b"dtype": dtype, b"shape": shape}


BOMBS = {
    # 540 KB of dims: the old decoder multiplied them into a 3.8-megabit integer (seconds of CPU).
    "huge-shape-list": (msgpack.packb({"x": _tagged("<f4", [2**63 - 1] * 60_000)}), "too_many_items"),
    "many-huge-dims": (msgpack.packb({"x": _tagged("<f4", [2**63 - 1] * 4_000)}), "bad_shape"),
    "zero-size-S0": (msgpack.packb({"prompt": _tagged("|S0", [10**9, 10**9])}), "bad_dtype"),
    "zero-size-U": (msgpack.packb({"prompt": _tagged("<U", [10**9, 10**9])}), "bad_dtype"),
    "deep-nesting": (b"\x81\xa4nest" + b"\x91" * 1000 + b"\xc0", "too_deep"),
    # 1 MB of empty maps: a million dicts (about 100 MB) for the old decoder.
    "empty-map-flood": (
        b"\x81\xa5flood\xdc\x00\x10" + (b"\xdc\xff\xff" + b"\x80" * 65_535) * 16,
        "too_many_items",
    ),
    "declared-size-mismatch": (
        msgpack.packb({"x": _tagged("<f8", [1000, 1000], bytes(16))}),
        "size_mismatch",
    ),
    # 21 bytes: a bin whose header declares 4 GiB.
    "declared-bin-length": (b"\x81\xa6prompt\xc6\xff\xff\xff\xff" + bytes(8), "malformed"),
}


def token_for(endpoint: str) -> str:
    """A token of a session of its own: the relay admits one connection per session slot at a time."""
    return mint_token(
        endpoint=endpoint, session_id=f"s-{uuid.uuid4().hex[:12]}", slot="A", key=SECRET, ttl_s=300
    )


class Bounded:
    """Measures tracemalloc's peak and the process's CPU seconds over a block (not wall-clock time)."""

    def __enter__(self) -> Bounded:
        tracemalloc.start()
        self._cpu = time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cpu_s = time.process_time() - self._cpu
        _, self.peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()

    def check(self) -> None:
        assert self.peak < MAX_PEAK_BYTES, f"peak {self.peak} bytes"
        assert self.cpu_s < MAX_CPU_S, f"{self.cpu_s:.2f} s of CPU"


class HeldPolicy(EchoPolicy):
    """Blocks each inference until ``release`` is set, after signalling ``entered``."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def infer(self, obs: dict) -> dict:  # type: ignore[override]
        self.entered.set()
        assert self.release.wait(60)
        return super().infer(obs)


def refusal(url: str, frame: bytes) -> tuple[int | None, str, list[str]]:
    """Send ``frame`` after the metadata; returns the close (code, reason) and any text frames received."""
    texts: list[str] = []
    with connect(url, max_size=None) as ws:
        ws.recv(timeout=30)
        ws.send(frame)
        try:
            while True:
                answer = ws.recv(timeout=60)
                assert isinstance(answer, str), "the bomb was answered as if it were an observation"
                texts.append(answer)
        except ConnectionClosed as exc:
            assert exc.rcvd is not None
            return exc.rcvd.code, exc.rcvd.reason, texts


@pytest.fixture
def relay_with_honest_session() -> Iterator[tuple[str, EchoPolicy, HeldPolicy, list]]:
    """A relay, a target policy for the bombs, and an honest session mid-request on another policy."""
    reported: list = []
    target, held = EchoPolicy(), HeldPolicy()
    with (
        serve_relay_in_thread(SECRET, on_policy_error=lambda c, k, d: reported.append(k)) as relay,
        serve_policy_in_thread(target) as target_server,
        serve_policy_in_thread(held) as held_server,
        ThreadPoolExecutor(1) as pool,
    ):
        honest = PolicyClient(f"{relay.url}/{token_for(held_server.url)}", action_dim=8, request_timeout=120)
        pending = pool.submit(honest.infer, OBS)
        assert held.entered.wait(60)
        yield f"{relay.url}/{token_for(target_server.url)}", target, held, reported
        held.release.set()
        assert pending.result(120)["actions"].shape == (10, 8)  # the honest session was served through it all
        assert honest.infer(OBS)["actions"].shape == (10, 8)
        honest.close()


@pytest.mark.parametrize("name", list(BOMBS))
def test_relay_refuses_lab_bombs_and_keeps_serving(name: str, relay_with_honest_session) -> None:
    url, target, _, _ = relay_with_honest_session
    frame, code = BOMBS[name]
    with Bounded() as bounds:
        assert refusal(url, frame) == (1008, f"invalid frame ({code})", [])
    bounds.check()
    assert target.seen_keys == []  # the bomb never reached the policy


def test_relay_refuses_frames_over_the_sessions_declared_size(relay_with_honest_session) -> None:
    url, target, _, _ = relay_with_honest_session
    # The target declares one exterior and one wrist camera at 224 x 224: 2 images + 1 MiB of state.
    too_big = wire.packb({**OBS, "observation/exterior_image_1_left": np.zeros((1024, 1024, 3), np.uint8)})
    with Bounded() as bounds:
        assert refusal(url, too_big)[0] == 1009
    bounds.check()
    assert target.seen_keys == []


def hostile_policy(frame: bytes, *, metadata: bytes | None = None):  # type: ignore[no-untyped-def]
    """A policy server that sends ``frame`` as its metadata (or ``metadata`` if given) and as its answer to
    any request."""

    async def handler(ws: ServerConnection) -> None:
        try:
            await ws.send(frame if metadata is None else metadata)
            await ws.recv()
            await ws.send(frame)
            await ws.wait_closed()
        except ConnectionClosed:
            return

    async def start() -> Server:
        return await serve(handler, "127.0.0.1", 0, compression=None, max_size=None)

    return serve_in_thread(start, host="127.0.0.1")


@pytest.mark.parametrize("name", list(BOMBS))
def test_relay_refuses_policy_bombs_and_keeps_serving(name: str, relay_with_honest_session) -> None:
    url, _, _, reported = relay_with_honest_session
    relay_url = url.rsplit("/", 1)[0]
    frame, _ = BOMBS[name]
    with hostile_policy(frame) as hostile, Bounded() as bounds:
        with connect(f"{relay_url}/{token_for(hostile.url)}") as ws:
            assert ws.recv(timeout=60) == "policy error (code bad_metadata)"
            with pytest.raises(ConnectionClosedError) as closed:
                ws.recv(timeout=60)
    bounds.check()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    deadline = time.monotonic() + 30  # the hook runs after the lab's connection is closed
    while not reported and time.monotonic() < deadline:
        time.sleep(0.02)
    assert reported == ["bad_metadata"]


@pytest.mark.parametrize("name", list(BOMBS))
def test_relay_refuses_policy_reply_bombs_and_keeps_serving(name: str, relay_with_honest_session) -> None:
    """The same bombs as a reply, after a well-formed metadata frame: a generic error, nothing allocated."""
    url, _, _, reported = relay_with_honest_session
    relay_url = url.rsplit("/", 1)[0]
    frame, _ = BOMBS[name]
    with hostile_policy(frame, metadata=wire.packb(DROID_METADATA)) as hostile, Bounded() as bounds:
        with connect(f"{relay_url}/{token_for(hostile.url)}") as ws:
            assert isinstance(ws.recv(timeout=60), bytes)
            ws.send(wire.packb(OBS))
            assert ws.recv(timeout=60) == "policy error (code bad_reply)"
            with pytest.raises(ConnectionClosedError) as closed:
                ws.recv(timeout=60)
    bounds.check()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    deadline = time.monotonic() + 30
    while not reported and time.monotonic() < deadline:
        time.sleep(0.02)
    assert reported == ["bad_reply"]


@pytest.mark.parametrize("name", list(BOMBS))
def test_checker_refuses_reply_bombs(name: str) -> None:
    frame, _ = BOMBS[name]
    with hostile_policy(frame, metadata=wire.packb(DROID_METADATA)) as hostile, Bounded() as bounds:
        result = policy_check(hostile.url, timeout=60)
    bounds.check()
    assert result.error == "protocol_error", result.message


@pytest.mark.parametrize("name", list(BOMBS))
def test_policy_server_refuses_bombs_and_keeps_serving(name: str) -> None:
    frame, code = BOMBS[name]
    held = HeldPolicy()
    with serve_policy_in_thread(held) as server, ThreadPoolExecutor(1) as pool:
        honest = PolicyClient(server.url, action_dim=8, request_timeout=120)
        pending = pool.submit(honest.infer, OBS)
        assert held.entered.wait(60)
        with Bounded() as bounds:
            closed_code, _, texts = refusal(server.url, frame)
        bounds.check()
        assert closed_code == 1008 and len(texts) == 1 and texts[0].startswith(f"bad request (code {code})")
        held.release.set()
        assert pending.result(120)["actions"].shape == (10, 8)
        honest.close()
    assert len(held.seen_keys) == 1  # only the honest request reached the policy


@pytest.mark.parametrize("name", list(BOMBS))
def test_checker_refuses_bombs(name: str) -> None:
    frame, _ = BOMBS[name]
    with hostile_policy(frame) as hostile, Bounded() as bounds:
        result = policy_check(hostile.url, timeout=60)
    bounds.check()
    assert result.error == "bad_metadata", result.message


def test_checker_refuses_an_oversize_metadata_frame_unread() -> None:
    async def handler(ws: ServerConnection) -> None:
        ws.transport.write(b"\x82\x7f" + (2**40).to_bytes(8, "big"))  # declares a 1 TiB frame, sends nothing
        await ws.wait_closed()

    async def start() -> Server:
        return await serve(handler, "127.0.0.1", 0)

    with serve_in_thread(start, host="127.0.0.1") as hostile, Bounded() as bounds:
        result = policy_check(hostile.url, timeout=60)
    bounds.check()
    assert result.error == "bad_metadata", result.message
