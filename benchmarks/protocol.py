"""Round-trip latency of the policy wire protocol: direct, through the blind relay, and from openpi-client.

    python -m benchmarks.protocol [--quick] [--calls N]

Each call sends a DROID observation (two 224x224x3 uint8 images, joint (7,), cartesian (6,) and gripper (1,)
state, a prompt) and receives ``actions`` (10, 8) from a policy that does no work, so the numbers are the
protocol's own cost: encoding, websocket framing, loopback TCP, decoding, and the server's worker-thread hop.
The policy server and the relay run as separate processes (``arena-policy serve``, ``arena-relay``) on
127.0.0.1; openpi-client 0.1.2 runs in its own venv (var/venvs/openpi-client, built on first use).
Target: the relay adds under 1 ms to the median round trip.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from arena.ports import free_ports
from policy_server.base import BasePolicy
from policy_server.client import LatencyStats, PolicyClient
from policy_server.peer_venv import ensure_peer_venv
from policy_server.relay_token import mint_token

REPO = Path(__file__).resolve().parent.parent
RELAY_SECRET = "benchmark-only relay secret, not for deployment"
RELAY_OVERHEAD_TARGET_MS = 1.0
ACTIONS = np.zeros((10, 8), dtype=np.float32)


class ZeroPolicy(BasePolicy):
    """Answers every observation with zero actions (10, 8) at once."""

    def infer(self, obs: dict[str, Any]) -> dict[str, np.ndarray]:
        return {"actions": ACTIONS}


def observation() -> dict[str, Any]:
    """The benchmark observation: two 224x224x3 uint8 images and the DROID state arrays."""
    rng = np.random.default_rng(0)
    return {
        "observation/exterior_image_1_left": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
        "observation/wrist_image_left": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
        "observation/joint_position": rng.uniform(-1, 1, 7),
        "observation/cartesian_position": rng.uniform(-1, 1, 6),
        "observation/gripper_position": rng.uniform(0, 1, 1),
        "prompt": "put the marker in the cup",
    }


# Run by the openpi-client venv's interpreter: time N infers with openpi's own client, print the latencies.
OPENPI_CLIENT_TIMER = """
import json, sys, time
import numpy as np
from openpi_client.websocket_client_policy import WebsocketClientPolicy
url, calls, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
obs = {
    "observation/exterior_image_1_left": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
    "observation/wrist_image_left": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
    "observation/joint_position": rng.uniform(-1, 1, 7),
    "observation/cartesian_position": rng.uniform(-1, 1, 6),
    "observation/gripper_position": rng.uniform(0, 1, 1),
    "prompt": "put the marker in the cup",
}
client = WebsocketClientPolicy(host=url)
latencies = []
for i in range(warmup + calls):
    started = time.perf_counter()
    reply = client.infer(obs)
    elapsed = (time.perf_counter() - started) * 1e3
    assert reply["actions"].shape == (10, 8)
    if i >= warmup:
        latencies.append(elapsed)
print(json.dumps(latencies))
"""


@contextlib.contextmanager
def _process(command: list[str], port: int, env: dict[str, str] | None = None) -> Iterator[str]:
    """Start a server process, wait for its ``/healthz``, yield ``ws://127.0.0.1:port``, then SIGTERM it."""
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{command[0]} exited: {process.communicate()[1]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{' '.join(command)} did not become healthy") from None
                time.sleep(0.05)
        yield f"ws://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.communicate(timeout=15)


def time_policy_client(url: str, *, calls: int, warmup: int) -> LatencyStats:
    """Round trips of our PolicyClient, in milliseconds."""
    obs = observation()
    with PolicyClient(url, action_dim=8) as client:
        for _ in range(warmup):
            client.infer(obs)
        client.latencies_ms.clear()
        for _ in range(calls):
            client.infer(obs)
        return client.latency()


def time_openpi_client(url: str, *, calls: int, warmup: int) -> LatencyStats:
    """Round trips of the PyPI openpi-client (in its venv), in milliseconds."""
    python = ensure_peer_venv("openpi-client")
    done = subprocess.run(
        [str(python), "-c", OPENPI_CLIENT_TIMER, url, str(calls), str(warmup)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return LatencyStats.of(json.loads(done.stdout))


def run(*, calls: int, warmup: int) -> list[tuple[str, LatencyStats]]:
    """Measure every path; returns (label, stats) rows."""
    server_port, relay_port = free_ports(2)
    serve = [
        sys.executable,
        "-m",
        "policy_server",
        "serve",
        "benchmarks.protocol:ZeroPolicy",
        "--host",
        "127.0.0.1",
        "--port",
        str(server_port),
    ]
    relay = [
        sys.executable,
        "-c",
        "from policy_server.relay import main; main()",
        "--host",
        "127.0.0.1",
        "--port",
        str(relay_port),
        "--standalone",  # the forwarding path alone; admission costs one arena call per handshake, none per frame
        "--endpoint-allow",
        "loopback",  # the policy server listens on loopback, which a relay refuses unless allowed
    ]
    env = {**os.environ, "ARENA_RELAY_SECRET": RELAY_SECRET, "PYTHONPATH": str(REPO)}
    with _process(serve, server_port, env) as server_url, _process(relay, relay_port, env) as relay_url:

        def relayed(session_id: str) -> str:
            # one session per row: the relay frees a slot only once it has seen the previous row's close
            token = mint_token(
                endpoint=server_url, session_id=session_id, slot="A", key=RELAY_SECRET, ttl_s=3600
            )
            return f"{relay_url}/{token}"

        return [
            ("PolicyClient -> server (direct)", time_policy_client(server_url, calls=calls, warmup=warmup)),
            (
                "PolicyClient -> relay -> server",
                time_policy_client(relayed("bench-1"), calls=calls, warmup=warmup),
            ),
            ("openpi-client -> server (direct)", time_openpi_client(server_url, calls=calls, warmup=warmup)),
            (
                "openpi-client -> relay -> server",
                time_openpi_client(relayed("bench-2"), calls=calls, warmup=warmup),
            ),
        ]


def format_table(rows: list[tuple[str, LatencyStats]]) -> str:
    width = max(len(label) for label, _ in rows)
    lines = [f"{'path':<{width}}  {'calls':>6}  {'mean ms':>8}  {'p50 ms':>8}  {'p99 ms':>8}"]
    lines.append("-" * len(lines[0]))
    for label, stats in rows:
        lines.append(
            f"{label:<{width}}  {stats.n:>6}  "
            f"{stats.mean_ms:>8.3f}  {stats.p50_ms:>8.3f}  {stats.p99_ms:>8.3f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.protocol", description=__doc__.split("\n")[0])
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
    for client in ("PolicyClient", "openpi-client"):
        overhead = stats[f"{client} -> relay -> server"].p50_ms - stats[f"{client} -> server (direct)"].p50_ms
        verdict = "meets" if overhead < RELAY_OVERHEAD_TARGET_MS else "MISSES"
        print(
            f"relay overhead, p50, {client}: {overhead:.3f} ms "
            f"({verdict} the < {RELAY_OVERHEAD_TARGET_MS} ms target)"
        )


if __name__ == "__main__":
    main()
