"""Compatibility with the real openpi peers from PyPI, each in its own venv (they pin numpy<2).

1. openpi-client 0.1.2 talks to our server unchanged (directly, with an API key, and through the relay).
2. A policy served by openpi-server 0.1.0 passes our policy_check and our PolicyClient talks to it.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from arena_test_policies import EchoPolicy, FailingPolicy

from arena.ports import free_port
from policy_server.check import policy_check
from policy_server.client import PolicyClient, PolicyError
from policy_server.relay import serve_relay_in_thread
from policy_server.relay_token import mint_token
from policy_server.server import PROTOCOL_KEY, serve_in_thread

pytestmark = pytest.mark.pypi_peer

HERE = Path(__file__).parent
STATE = {
    "observation/joint_position": np.arange(7, dtype=np.float64),
    "observation/gripper_position": np.array([0.75]),
    "prompt": "fold the towel",
}


def run_probe(python: Path, url: str, *extra: str) -> dict:
    done = subprocess.run(
        [str(python), str(HERE / "openpi_client_probe.py"), "--url", url, *extra],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_openpi_client_talks_to_our_server(openpi_client_python: Path) -> None:
    policy = EchoPolicy(horizon=15)
    with serve_in_thread(policy) as server:
        report = run_probe(openpi_client_python, server.url, "--steps", "3")
    assert report["numpy"].startswith("1.")
    assert report["metadata"] == {**policy.metadata, PROTOCOL_KEY: 1}
    assert [r["shape"] for r in report["replies"]] == [[15, 8]] * 3
    assert [r["first_row"] for r in report["replies"]] == [[float(s)] * 7 + [0.25] for s in range(3)]
    assert all(r["server_timing"] == ["infer_ms"] for r in report["replies"])
    assert policy.seen_keys[0] == sorted(
        [
            "observation/exterior_image_1_left",
            "observation/wrist_image_left",
            "observation/joint_position",
            "observation/cartesian_position",
            "observation/gripper_position",
            "prompt",
        ]
    )


def test_openpi_client_api_key_and_errors(openpi_client_python: Path) -> None:
    with serve_in_thread(EchoPolicy(), api_key="sesame") as server:
        assert len(run_probe(openpi_client_python, server.url, "--api-key", "sesame")["replies"]) == 3
    with serve_in_thread(FailingPolicy()) as server:
        report = run_probe(openpi_client_python, server.url)
    assert "the policy exploded on purpose" in report["error"]


def test_openpi_client_through_the_relay(openpi_client_python: Path) -> None:
    secret = "relay secret for the openpi-client test"
    with serve_in_thread(EchoPolicy()) as policy, serve_relay_in_thread(secret) as relay:
        token = mint_token(endpoint=policy.url, session_id="s", slot="A", key=secret, ttl_s=60)
        report = run_probe(openpi_client_python, f"{relay.url}/{token}")
    assert [r["shape"] for r in report["replies"]] == [[10, 8]] * 3


@pytest.fixture(
    scope="module", params=[{}, {"model": "echo", "version": 3}], ids=["empty-metadata", "custom"]
)
def openpi_server(request: pytest.FixtureRequest, openpi_server_python: Path) -> Iterator[tuple[str, dict]]:
    """A policy served by the PyPI openpi-server in its own process; yields (url, metadata)."""
    port = free_port()
    process = subprocess.Popen(
        [
            str(openpi_server_python),
            str(HERE / "openpi_server_echo.py"),
            "--port",
            str(port),
            "--metadata-json",
            json.dumps(request.param),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.communicate()[1]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                assert time.monotonic() < deadline, "openpi-server did not start"
                time.sleep(0.1)
        yield f"ws://127.0.0.1:{port}", request.param
    finally:
        process.terminate()
        process.communicate(timeout=10)


def test_openpi_server_policy_passes_our_check(openpi_server: tuple[str, dict]) -> None:
    url, metadata = openpi_server
    result = policy_check(url)
    assert result.ok, result.message
    assert result.dialect == "openpi"
    assert result.metadata == metadata
    assert result.requirements is not None
    assert (result.requirements["action_dim"], result.requirements["action_horizon"]) == (8, 10)


def test_our_client_talks_to_openpi_server(openpi_server: tuple[str, dict]) -> None:
    url, _ = openpi_server
    with PolicyClient(url, action_dim=8) as client:
        assert client.dialect == "openpi"
        client.reset()  # openpi has no reset message: nothing may reach the policy
        result = client.infer(STATE)
        np.testing.assert_allclose(result["actions"], np.tile([0, 1, 2, 3, 4, 5, 6, 0.75], (10, 1)))
        assert result["actions"].dtype == np.float32
        assert "infer_ms" in result["server_timing"]
        with pytest.raises(PolicyError, match="echo policy asked to explode") as failed:
            client.infer({**STATE, "prompt": "explode"})
        assert "Traceback" in failed.value.traceback
        assert client.infer(STATE)["actions"].shape == (10, 8)  # reconnects after the 1011
