"""``arena-policy`` (python -m policy_server): serve a factory or a baseline, check a server, stop cleanly."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from arena_test_policies import EchoPolicy

from arena.ports import free_port
from policy_server.client import PolicyClient, PolicyUnauthorized
from policy_server.server import serve_in_thread

HERE = Path(__file__).parent
REPO = HERE.parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE)])}


def arena_policy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "policy_server", *args],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@contextlib.contextmanager
def serving(*args: str) -> Iterator[int]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "policy_server", "serve", *args, "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, process.communicate()[1]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                break
        except OSError:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
    try:
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=15)
        assert process.returncode == 0, stderr


def test_serve_factory_with_api_key_until_sigterm() -> None:
    with serving("arena_test_policies:make_echo", "--api-key", "sesame") as port:
        url = f"ws://127.0.0.1:{port}"
        with pytest.raises(PolicyUnauthorized):
            PolicyClient(url, retries=0)
        with PolicyClient(url, api_key="sesame") as client:
            assert client.dialect == "arena"
            assert client.infer(
                {"observation/joint_position": [0.0] * 7, "observation/gripper_position": [1.0]}
            )["actions"].shape == (10, 8)


def test_serve_a_baseline_by_name() -> None:
    from policy_server.baselines import BASELINES

    name = sorted(BASELINES)[0]
    with serving("--baseline", name) as port:
        with PolicyClient(f"ws://127.0.0.1:{port}") as client:
            assert client.dialect == "arena"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve"], "either module:factory or --baseline"),
        (["serve", "arena_test_policies:make_echo", "--baseline", "expert"], "either module:factory"),
        (["serve", "no_such_module_anywhere:make"], "cannot import 'no_such_module_anywhere'"),
        (["serve", "arena_test_policies:nothing_here"], "no attribute 'nothing_here'"),
        (["serve", "arena_test_policies:DROID_METADATA"], "not a policy_server.base.BasePolicy"),
        (["serve", "arena_test_policies"], "module:factory"),
        (["serve", "--baseline", "no-such-baseline"], "unknown baseline 'no-such-baseline'"),
    ],
)
def test_bad_targets_exit_2_with_a_reason(args: list[str], message: str) -> None:
    done = arena_policy(*args)
    assert done.returncode == 2
    assert message in done.stderr


def test_check_prints_json_and_sets_the_exit_code() -> None:
    with serve_in_thread(EchoPolicy()) as server:
        done = arena_policy("check", server.url, "--timeout", "5")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True and report["requirements"]["action_dim"] == 8
    done = arena_policy("check", f"ws://127.0.0.1:{free_port()}", "--timeout", "2")
    assert done.returncode == 1
    assert json.loads(done.stdout)["error"] == "refused"
