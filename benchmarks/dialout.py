"""Round-trip latency of a dial-out policy against a direct endpoint and today's relay path.

    python -m benchmarks.dialout [--quick] [--calls N]

The observation and the policy are those of :mod:`benchmarks.protocol` (two 224x224x3 uint8 images plus DROID
state in, zero actions (10, 8) out, no work), so the numbers are the transport's own cost. Every server is a
separate process on 127.0.0.1: the direct policy server (``arena-policy serve``), the dial-out one
(``arena-policy serve --connect``, no port bound) and two relays. Rows:

- direct: the lab's client straight to the policy server (what no firewalled owner can offer);
- relay: today's relay path, the relay dialling the policy server;
- dial-out: the relay serving the session on a channel of the policy's link;
- dial-out, forwarded: the lab on relay 2, the policy attached to relay 1 (one more hop, relay to relay).

The relays' arena is a stand-in directory (:class:`BenchDirectory`: admits every session, locates the dial-out
policy on relay 1): the arena is asked once per handshake and per lease period, never per frame, so it adds
nothing to the per-call numbers measured here. The tests exercise the real arena (tests/hardening/).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator

from arena.ports import free_ports
from benchmarks.protocol import RELAY_SECRET, REPO, _process, format_table, observation
from policy_server import dialout
from policy_server.client import LatencyStats, PolicyClient, PolicyClientError
from policy_server.relay_admission import Admission, ArenaLink
from policy_server.relay_token import TokenClaims, mint_token

SLUG = "bench-dialout"


class BenchDirectory(ArenaLink):
    """The arena's relay API as far as the benchmark needs it: every session admitted, every owner key
    accepted, the dial-out policy located at ``located``. Not for anything but this benchmark."""

    def __init__(self, located: str | None) -> None:
        super().__init__("http://127.0.0.1:9", RELAY_SECRET)
        self._located = located

    def admit(self, claims: TokenClaims, connection_id: str) -> Admission:
        return Admission(lease_s=3600.0)

    def status(self, connections: dict[str, TokenClaims]) -> set[str]:
        return set()

    def release(self, connection_ids: Iterable[str]) -> None:
        return None

    def attach(
        self, *, policy: str, key: str, relay_url: str, connection_id: str, renew: bool = False
    ) -> float:
        return 3600.0

    def detach(self, connection_id: str) -> None:
        return None

    def locate(self, policy: str) -> str | None:
        return self._located

    def report_policy_error(self, claims: TokenClaims, kind: str, detail: str) -> None:
        return None


def run_relay(port: int, located: str) -> None:
    """A relay process for the benchmark (``located``: where the dial-out policy is, or "" for here)."""
    from policy_server.relay import Relay

    relay = Relay(
        RELAY_SECRET,
        host="127.0.0.1",
        port=port,
        endpoint_allow="loopback",
        arena=BenchDirectory(located or None),
    )
    relay.serve_forever()


@contextlib.contextmanager
def _dialout_server(relay_url: str, env: dict[str, str]) -> Iterator[None]:
    command = [sys.executable, "-m", "policy_server", "serve", "benchmarks.protocol:ZeroPolicy"]
    command += ["--connect", relay_url, "--key", "bench-owner-key", "--policy", SLUG]
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield
    finally:
        process.terminate()
        process.wait(15)


def _token(endpoint: str, session_id: str) -> str:
    return mint_token(endpoint=endpoint, session_id=session_id, slot="A", key=RELAY_SECRET, ttl_s=3600)


def _wait_served(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with PolicyClient(url, connect_timeout=5, retries=0) as client:
                client.connect()
            return
        except PolicyClientError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing served {url.rsplit('/', 1)[0]}") from None
            time.sleep(0.1)


def run(*, calls: int, warmup: int) -> list[tuple[str, LatencyStats]]:
    server_port, first_port, second_port = free_ports(3)
    env = {**os.environ, "ARENA_RELAY_SECRET": RELAY_SECRET, "PYTHONPATH": str(REPO)}
    serve = [sys.executable, "-m", "policy_server", "serve", "benchmarks.protocol:ZeroPolicy"]
    serve += ["--host", "127.0.0.1", "--port", str(server_port)]
    first_url = f"ws://127.0.0.1:{first_port}"
    relay = [
        sys.executable,
        "-c",
        "import sys; from benchmarks.dialout import run_relay; run_relay(*sys.argv[1:])",
    ]
    with (
        _process(serve, server_port, env) as server_url,
        _process([*relay, str(first_port), ""], first_port, env) as relay_1,
        _process([*relay, str(second_port), first_url], second_port, env) as relay_2,
        _dialout_server(relay_1, env),
    ):
        dialled = dialout.endpoint_for(SLUG)
        _wait_served(f"{relay_1}/{_token(dialled, 'bench-wait')}")
        paths = [
            ("PolicyClient -> server (direct)", server_url),
            ("PolicyClient -> relay -> server (today)", f"{relay_1}/{_token(server_url, 'bench-1')}"),
            ("PolicyClient -> relay -> dial-out link", f"{relay_1}/{_token(dialled, 'bench-2')}"),
            ("PolicyClient -> relay 2 -> relay 1 -> link", f"{relay_2}/{_token(dialled, 'bench-3')}"),
        ]
        return _interleaved(paths, calls=calls, warmup=warmup)


def _interleaved(paths: list[tuple[str, str]], *, calls: int, warmup: int) -> list[tuple[str, LatencyStats]]:
    """One call on each path in turn, ``calls`` times: a busy machine's slow spells fall on every path alike
    (two cores shared with other work make timings drift by milliseconds within a minute)."""
    obs = observation()
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(PolicyClient(url, action_dim=8)) for _, url in paths]
        for _ in range(warmup):
            for client in clients:
                client.infer(obs)
        for client in clients:
            client.latencies_ms.clear()
        for _ in range(calls):
            for client in clients:
                client.infer(obs)
        return [(label, client.latency()) for (label, _), client in zip(paths, clients, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dialout", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 calls per path instead of 1000")
    parser.add_argument("--calls", type=int, help="calls per path (overrides --quick)")
    args = parser.parse_args()
    calls = args.calls or (100 if args.quick else 1000)
    rows = run(calls=calls, warmup=max(10, calls // 20))
    print(
        "Observation: 2 x 224x224x3 uint8 images + joint (7,), cartesian (6,), gripper (1,); actions (10, 8)"
    )
    print(format_table(rows))
    stats = dict(rows)
    direct, today = stats["PolicyClient -> server (direct)"], stats["PolicyClient -> relay -> server (today)"]
    for label in ("PolicyClient -> relay -> dial-out link", "PolicyClient -> relay 2 -> relay 1 -> link"):
        row = stats[label]
        print(
            f"{label}: vs direct {row.p50_ms - direct.p50_ms:+.3f} ms p50 / {row.p99_ms - direct.p99_ms:+.3f} "
            f"ms p99; vs today's relay {row.p50_ms - today.p50_ms:+.3f} ms p50 / "
            f"{row.p99_ms - today.p99_ms:+.3f} ms p99"
        )


if __name__ == "__main__":
    main()
