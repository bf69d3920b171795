"""How fast hostile frames are refused, and how long an honest session stalls meanwhile.

    python -m benchmarks.hostile_frames [--quick]

Each bomb is one websocket frame built by hand with msgpack (so it does not depend on our encoder), aimed at
four targets, each a separate process on 127.0.0.1 so that one frozen interpreter cannot stall the
measurement itself:

- ``server``: a lab sends the bomb straight to a policy server; an honest client uses the same server.
- ``relay``: a lab sends the bomb through the relay to a policy server; an honest session runs through the
  same relay to another policy server.
- ``relay<-policy``: a hostile policy sends the bomb as its metadata frame to the relay; an honest session runs
  through the same relay.
- ``relay<-reply``: a hostile policy sends well-formed (empty) metadata, then the bomb as its reply to the lab's
  first observation; an honest session runs through the same relay.
- ``checker``: a hostile policy sends the bomb as its metadata frame to ``policy_check`` (the health checker).
- ``checker<-reply``: a hostile policy sends empty metadata, then the bomb as its reply to the dry run.

``reject s`` is the time from sending the bomb (or connecting, for a hostile policy's metadata; or sending the
observation, for a hostile reply) until the attacker's
connection answers (a close, an error text frame, or a reply: ``outcome`` says which), median over the
repeats. ``honest max s`` is the longest round trip of the honest session among those that overlapped the
attack. Goal: both under 0.2 s.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import msgpack
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from arena.ports import free_ports
from benchmarks.protocol import RELAY_SECRET, _process, observation
from policy_server import netguard, wire
from policy_server._serving import health_response, run_until_signal
from policy_server.check import policy_check
from policy_server.client import PolicyClient
from policy_server.relay_token import mint_token

GOAL_S = 0.2
ARRAY, DATA, DTYPE, SHAPE = b"__ndarray__", b"data", b"dtype", b"shape"


def _tagged_array(dtype: str, shape: list[int], data: bytes) -> dict[bytes, object]:
    return {ARRAY: True, DATA: data, DTYPE: dtype, SHAPE: shape}


def _frame_limit() -> int:
    """The frame limit of the code under test (``DEFAULT_LIMITS`` since issue 13, ``DEFAULT_MAX_SIZE`` before)."""
    limits = getattr(wire, "DEFAULT_LIMITS", None)
    return int(limits.max_frame_bytes) if limits is not None else int(wire.DEFAULT_MAX_SIZE)


def huge_shape() -> bytes:
    """360 KB: an array whose shape lists 40,000 dims of 2**63 - 1 (an empty ``data``)."""
    return msgpack.packb({"observation/joint_position": _tagged_array("<f4", [2**63 - 1] * 40_000, b"")})


def zero_size_bytes_dtype() -> bytes:
    """About 60 bytes: a ``|S0`` array of shape (10**9, 10**9), which needs 0 bytes of data."""
    return msgpack.packb({"prompt": _tagged_array("|S0", [10**9, 10**9], b"")})


def zero_size_unicode_dtype() -> bytes:
    """About 60 bytes: a ``<U`` (zero-size unicode) array of shape (10**9, 10**9)."""
    return msgpack.packb({"prompt": _tagged_array("<U", [10**9, 10**9], b"")})


def deep_nesting() -> bytes:
    """1 KB: lists nested 1,000 deep (just inside msgpack's own stack limit)."""
    nested = b"\x91" * 1000 + b"\xc0"
    return b"\x82" + msgpack.packb("prompt") + msgpack.packb("x") + msgpack.packb("nest") + nested


def container_flood() -> bytes:
    """1 MB: 16 lists of 65,535 empty maps (a million dicts for one megabyte)."""
    inner = b"\xdc\xff\xff" + b"\x80" * 65_535
    return b"\x81" + msgpack.packb("flood") + b"\xdc\x00\x10" + inner * 16


def declared_length() -> bytes:
    """16 bytes: a bin whose header declares 4 GiB, followed by 8 bytes."""
    return b"\x81" + msgpack.packb("prompt") + b"\xc6\xff\xff\xff\xff" + bytes(8)


def size_mismatch() -> bytes:
    """About 80 bytes: an array declared (1000, 1000) float64 that carries 16 bytes of data."""
    return msgpack.packb({"observation/joint_position": _tagged_array("<f8", [1000, 1000], bytes(16))})


def oversize() -> bytes:
    """Only the header of a binary frame that declares one byte over the frame limit of the code under test.

    A target that checks the declared length refuses it without reading on; sending the payload for real
    would time the attacker's own copying of 150 MB, not the target.
    """
    return OVERSIZE_MARK + (_frame_limit() + 1).to_bytes(8, "big")


OVERSIZE_MARK = b"\x00oversize-header:"


def _raw_header(frame: bytes, *, masked: bool) -> bytes | None:
    """The websocket header for an :func:`oversize` bomb (binary, FIN, 64-bit length), else None."""
    if not frame.startswith(OVERSIZE_MARK):
        return None
    length = frame[len(OVERSIZE_MARK) :]
    return b"\x82" + (b"\xff" + length + bytes(4) if masked else b"\x7f" + length)


def _declared_bytes(frame: bytes) -> int:
    if frame.startswith(OVERSIZE_MARK):
        return int.from_bytes(frame[len(OVERSIZE_MARK) :], "big")
    return len(frame)


BOMBS: dict[str, Callable[[], bytes]] = {
    "huge_shape": huge_shape,
    "zero_size_S0": zero_size_bytes_dtype,
    "zero_size_U": zero_size_unicode_dtype,
    "deep_nesting": deep_nesting,
    "container_flood": container_flood,
    "declared_length": declared_length,
    "size_mismatch": size_mismatch,
    "oversize": oversize,
}


# -- the hostile policy: sends the bomb named in its URL path as its metadata frame ----------------------------


def serve_hostile(port: int) -> None:
    """Serve ``ws://127.0.0.1:port/bomb/<name>`` until SIGTERM: each connection gets that bomb as its metadata
    frame and as the answer to its first request, then a normal close. On ``/reply/<name>`` the metadata is
    an empty map and the bomb is the answer to the first request."""

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        mode, name = ws.request.path.strip("/").rsplit("/", 2)[-2:]
        frame = BOMBS[name]()
        header = _raw_header(frame, masked=False)
        with contextlib.suppress(Exception):
            if mode == "reply":
                await ws.send(b"\x80")  # msgpack's empty map: openpi's empty metadata
                await ws.recv()
            if header is not None:
                ws.transport.write(header)  # declare a huge frame; the payload never comes
                await ws.wait_closed()
                return
            await ws.send(frame)
            await ws.recv()  # a request: answer it with the bomb too, then hang up
            await ws.send(frame)
            await ws.close()

    async def start() -> Server:
        return await serve(
            handler, "127.0.0.1", port, process_request=health_response, compression=None, max_size=None
        )

    run_until_signal(start)


# -- measurement --------------------------------------------------------------------------------------------


class HonestSession:
    """A thread doing back-to-back infers on ``url``; records every call's (start, end) in perf_counter s."""

    def __init__(self, url: str) -> None:
        self.calls: list[tuple[float, float]] = []
        self._url = url
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HonestSession:
        self._client = PolicyClient(self._url, action_dim=8, request_timeout=120)
        self._client.infer(observation())  # warm up before anything is timed
        self._thread.start()
        return self

    def _run(self) -> None:
        obs = observation()
        while not self._stop.is_set():
            started = time.perf_counter()
            self._client.infer(obs)
            self.calls.append((started, time.perf_counter()))

    def longest_during(self, start: float, end: float) -> float:
        """Longest call that overlapped [start, end]; waits for the call in flight at ``end`` to finish."""
        deadline = time.monotonic() + 120
        while not any(done >= end for _, done in self.calls) and time.monotonic() < deadline:
            time.sleep(0.005)
        return max(
            (done - began for began, done in self.calls if done >= start and began <= end), default=0.0
        )

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(120)
        self._client.close()


def _outcome_of(ws: ClientConnection, sent: Callable[[], None]) -> tuple[float, str]:
    """Run ``sent`` (which sends the bomb) and time until ``ws`` answers; returns (seconds, outcome)."""

    def send() -> None:
        with contextlib.suppress(ConnectionClosed, OSError):  # the target may close while we still write
            sent()

    started = time.perf_counter()
    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        answer = ws.recv(timeout=120)
        outcome = "text frame" if isinstance(answer, str) else "binary reply (accepted)"
        if isinstance(answer, str):
            with contextlib.suppress(ConnectionClosed, TimeoutError):
                ws.recv(timeout=5)
            outcome += f", close {ws.protocol.close_code}" if ws.protocol.close_code else ""
    except ConnectionClosed as exc:
        code = exc.rcvd.code if exc.rcvd is not None else None
        outcome = f"close {code}"
    elapsed = time.perf_counter() - started
    sender.join(120)
    return elapsed, outcome


URL = str | Callable[[], str]
"""A URL, or a function returning a fresh one (a relay URL of a session of its own for each attack)."""


def _url(url: URL) -> str:
    return url() if callable(url) else url


def attack_lab(url: URL, frame: bytes) -> tuple[float, str]:
    """A lab connects to ``url``, reads the metadata, then sends ``frame``."""
    with connect(_url(url), max_size=None, compression=None, open_timeout=60) as ws:
        ws.recv(timeout=60)
        header = _raw_header(frame, masked=True)
        if header is not None:
            return _outcome_of(ws, lambda: ws.socket.sendall(header))
        return _outcome_of(ws, lambda: ws.send(frame))


def attack_from_policy(url: URL) -> tuple[float, str]:
    """A lab connects to a relay URL whose policy answers with a bomb; timed from the connect."""
    target = _url(url)
    started = time.perf_counter()
    with connect(target, max_size=None, compression=None, open_timeout=60) as ws:
        handshake = time.perf_counter() - started
        elapsed, outcome = _outcome_of(ws, lambda: None)
    return handshake + elapsed, outcome


def attack_reply(url: URL) -> tuple[float, str]:
    """A lab connects to a relay URL whose policy answers the first observation with a bomb; timed from
    sending the observation."""
    with connect(_url(url), max_size=None, compression=None, open_timeout=60) as ws:
        ws.recv(timeout=60)
        frame = wire.packb(observation())
        return _outcome_of(ws, lambda: ws.send(frame))


def attack_checker(url: str) -> tuple[float, str]:
    started = time.perf_counter()
    # The bombs are served on loopback, which the endpoint guard refuses unless allowed.
    result = policy_check(url, timeout=60, endpoint_allow=netguard.parse_allow("loopback"))
    return time.perf_counter() - started, f"check {result.error or 'ok'}"


@dataclass
class Row:
    bomb: str
    frame_bytes: int
    target: str
    outcome: str
    reject_s: float
    honest_max_s: float | None


def _measure(
    bomb: str,
    target: str,
    attack: Callable[[], tuple[float, str]],
    honest: HonestSession | None,
    *,
    repeats: int,
    frame_bytes: int,
) -> Row:
    times, outcomes, stalls = [], [], []
    for _ in range(repeats):
        started = time.perf_counter()
        elapsed, outcome = attack()
        ended = time.perf_counter()
        times.append(elapsed)
        outcomes.append(outcome)
        if honest is not None:
            stalls.append(honest.longest_during(started, ended))
    return Row(
        bomb,
        frame_bytes,
        target,
        "; ".join(sorted(set(outcomes))),
        statistics.median(times),
        max(stalls) if stalls else None,
    )


@contextlib.contextmanager
def _servers() -> Iterator[dict[str, str]]:
    honest_port, target_port, relay_port, hostile_port = free_ports(4)
    env = {**os.environ, "ARENA_RELAY_SECRET": RELAY_SECRET, "PYTHONPATH": os.getcwd()}

    def policy(port: int) -> list[str]:
        serve = [sys.executable, "-m", "policy_server", "serve", "benchmarks.protocol:ZeroPolicy"]
        return [*serve, "--host", "127.0.0.1", "--port", str(port)]

    # Standalone: tokens are checked for their own expiry only (no arena to admit them); the policies are on
    # loopback, which a relay refuses unless allowed.
    relay = [sys.executable, "-m", "policy_server.relay", "--host", "127.0.0.1", "--port", str(relay_port)]
    relay += ["--standalone", "--endpoint-allow", "loopback"]
    hostile = [sys.executable, "-m", "benchmarks.hostile_frames", "--serve-hostile", str(hostile_port)]
    with (
        _process(policy(honest_port), honest_port, env) as honest,
        _process(policy(target_port), target_port, env) as target,
        _process(relay, relay_port, env) as relay_url,
        _process(hostile, hostile_port, env) as hostile_url,
    ):
        yield {"honest": honest, "target": target, "relay": relay_url, "hostile": hostile_url}


def relayed(relay_url: str, endpoint: str) -> str:
    # A session of its own per connection: the relay admits one connection per session slot at a time.
    session_id = f"bench-{uuid.uuid4().hex[:12]}"
    token = mint_token(endpoint=endpoint, session_id=session_id, slot="A", key=RELAY_SECRET, ttl_s=3600)
    return f"{relay_url}/{token}"


def run(*, repeats: int, bombs: list[str]) -> list[Row]:
    rows: list[Row] = []
    frames = {bomb: BOMBS[bomb]() for bomb in bombs}
    with _servers() as urls:
        relay_url = urls["relay"]
        # The relay admits one connection per session slot and frees it once it has finished with the last one:
        # each attack gets a session of its own, so that the next one never waits for that.
        to_target = functools.partial(relayed, relay_url, urls["target"])
        with HonestSession(urls["target"]) as honest:
            for bomb, frame in frames.items():
                attack = functools.partial(attack_lab, urls["target"], frame)
                rows.append(
                    _measure(
                        bomb, "server", attack, honest, repeats=repeats, frame_bytes=_declared_bytes(frame)
                    )
                )

        def from_policy(mode: str, attack: Callable, bomb: str, frame: Any) -> Callable:
            return functools.partial(
                attack, functools.partial(relayed, relay_url, f"{urls['hostile']}/{mode}/{bomb}")
            )

        relay_attacks = (  # target -> the attack on the relay for (bomb, frame)
            ("relay", lambda bomb, frame: functools.partial(attack_lab, to_target, frame)),
            ("relay<-policy", functools.partial(from_policy, "bomb", attack_from_policy)),
            ("relay<-reply", functools.partial(from_policy, "reply", attack_reply)),
        )
        with HonestSession(relayed(relay_url, urls["honest"])) as honest:
            for target, make_attack in relay_attacks:
                for bomb, frame in frames.items():
                    rows.append(
                        _measure(
                            bomb,
                            target,
                            make_attack(bomb, frame),
                            honest,
                            repeats=repeats,
                            frame_bytes=_declared_bytes(frame),
                        )
                    )
        for target, mode in (("checker", "bomb"), ("checker<-reply", "reply")):
            for bomb, frame in frames.items():
                attack = functools.partial(attack_checker, f"{urls['hostile']}/{mode}/{bomb}")
                rows.append(
                    _measure(bomb, target, attack, None, repeats=repeats, frame_bytes=_declared_bytes(frame))
                )
    return rows


def format_table(rows: list[Row]) -> str:
    header = f"{'bomb':<16} {'bytes':>10}  {'target':<14} {'reject s':>9} {'honest max s':>12}  outcome"
    lines = [header, "-" * len(header)]
    for row in rows:
        honest = f"{row.honest_max_s:>12.3f}" if row.honest_max_s is not None else f"{'-':>12}"
        lines.append(
            f"{row.bomb:<16} {row.frame_bytes:>10}  {row.target:<14} {row.reject_s:>9.3f} {honest}  {row.outcome}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.hostile_frames", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--quick", action="store_true", help="one attack per bomb and target instead of three"
    )
    parser.add_argument("--serve-hostile", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_hostile is not None:
        serve_hostile(args.serve_hostile)
        return
    rows = run(repeats=1 if args.quick else 3, bombs=list(BOMBS))
    print(format_table(rows))
    worst_reject = max(row.reject_s for row in rows)
    worst_stall = max(row.honest_max_s or 0.0 for row in rows)
    verdict = "meets" if worst_reject < GOAL_S and worst_stall < GOAL_S else "MISSES"
    print(
        f"slowest rejection {worst_reject:.3f} s, longest honest round trip {worst_stall:.3f} s "
        f"({verdict} the < {GOAL_S} s goal)"
    )


if __name__ == "__main__":
    main()
