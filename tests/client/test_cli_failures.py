"""Every ordinary failure of the real executables is one line on stderr and a non-zero exit, never a
traceback: an unreachable server, a busy port (the operator screen, ``manage.py demo``, ``arena.serve``), end of
input at a prompt, a closed pipe; and what to do next: ``arena-eval abort``, ``flush``'s advice."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from arena.models import EvaluationSession
from arena.ports import free_port
from evaluator_client import config as config_mod
from tests.client.test_cli_refusals import arena_eval, one_line_error

ROOT = Path(__file__).resolve().parents[2]


def configured_home(home: Path, server: str) -> Path:
    profile = config_mod.RobotProfile(
        name="r1", platform="replica:tabletop-v1", action_spaces=["cartesian_velocity"]
    )
    config_mod.save(config_mod.Config(server, "pa_x_y", profile), home)
    return home


@pytest.fixture
def listening() -> Iterator[int]:
    """A port something else listens on."""
    with socket.create_server(("127.0.0.1", free_port())) as sock:
        yield sock.getsockname()[1]


@pytest.fixture
def nothing_listens() -> str:
    return f"http://127.0.0.1:{free_port()}"


@pytest.mark.parametrize(
    ("command", "hint"),
    [
        (("status",), "check the server address"),
        (("abort", "0123abcd"), "check the server address"),
        (
            (
                "run",
                "--robot",
                "replica",
                "--judge",
                "auto",
                "--quiet",
                "--task",
                "put the red block in the bowl",
            ),
            "kept in the spool",
        ),
    ],  # fmt: skip
    ids=["status", "abort", "run"],
)
def test_an_unreachable_server_is_one_line(tmp_path, nothing_listens, command, hint):
    result = arena_eval(configured_home(tmp_path, nothing_listens), *command)
    assert result.returncode == 1
    line = one_line_error(result)
    assert line.startswith("arena-eval: cannot reach ") and hint in line


def test_configure_against_an_unreachable_server_saves_nothing(tmp_path, nothing_listens):
    result = arena_eval(tmp_path, "configure", "--server", nothing_listens, "--key", "pa_x_y")
    assert result.returncode == 1
    assert "nothing was saved" in one_line_error(result)
    assert not (tmp_path / "config.json").exists()


def test_a_busy_operator_screen_port_is_one_line(tmp_path, listening):
    home = configured_home(tmp_path, "http://127.0.0.1:9")
    result = arena_eval(home, "run", "--judge", "human", "--ui-port", str(listening), "--quiet")
    assert result.returncode == 1
    line = one_line_error(result)
    assert f"cannot listen on 127.0.0.1:{listening}" in line and "--ui-port" in line


def test_a_closed_pipe_ends_quietly(network):
    """`arena-eval status | head`, where the reader is gone before anything is printed: no traceback, no
    "Exception ignored" at exit, and the exit code a shell gives a program ended by SIGPIPE."""
    network.configure()
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [str(Path(sys.executable).with_name("arena-eval")), "--home", str(network.home), "status"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write_end)
    assert (result.returncode, result.stderr) == (141, "")


def test_end_of_input_at_a_prompt_then_abort_and_flush(network):
    """Ctrl-D at "Scene ready?" (--no-ui): one line naming the open session and the command that closes it;
    `flush` gives the same advice; `abort` with the id's first characters closes it."""
    network.configure()
    run = ("run", "--robot", "replica", "--judge", "human", "--no-ui", "--quiet", "--max-steps", "10")
    result = subprocess.run(
        [str(Path(sys.executable).with_name("arena-eval")), "--home", str(network.home), *run],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 1
    session = EvaluationSession.objects.get()
    line = one_line_error(result)
    assert line.startswith("arena-eval: no answer: the input ended at a prompt (Ctrl-D)")
    assert f"`arena-eval abort {session.pk}` closes it" in line
    assert "start.png" in result.stdout  # --no-ui prints where the start image is

    status = arena_eval(network.home, "status")
    assert status.returncode == 0 and f"`arena-eval abort {str(session.pk)[:8]}` closes it" in status.stdout

    flush = arena_eval(network.home, "flush")
    assert flush.returncode == 1
    assert f"`arena-eval abort {session.pk}` closes it now" in flush.stdout

    aborted = arena_eval(network.home, "abort", str(session.pk)[:8], "--reason", "the operator left")
    assert aborted.returncode == 0, aborted.stderr
    session.refresh_from_db()
    assert (session.state, session.abort_fault, session.abort_reason) == (
        "aborted",
        "operator",
        "the operator left",
    )
    assert not (network.home / "spool" / str(session.pk)).exists()
    assert arena_eval(network.home, "flush").returncode == 0  # nothing left pending

    again = arena_eval(network.home, "abort", str(session.pk))
    assert again.returncode == 1
    assert one_line_error(again).startswith("arena-eval: the server refused: ")


def test_abort_of_an_unknown_session_is_one_line(network):
    network.configure()
    result = arena_eval(network.home, "abort", "ffffffff")
    assert result.returncode == 1
    assert one_line_error(result).startswith("arena-eval: no session of yours starts with 'ffffffff'")


def test_demo_on_a_busy_port_is_one_line(tmp_path, listening):
    result = subprocess.run(
        [sys.executable, "manage.py", "demo", "--port", str(listening), "--sessions", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "ARENA_VAR_DIR": str(tmp_path)},
        check=False,
    )
    assert result.returncode == 1
    line = one_line_error(result)
    assert f"port {listening} is already in use" in line


def test_serve_on_a_busy_port_is_one_line(tmp_path, listening):
    result = subprocess.run(
        [sys.executable, "-m", "arena.serve", "--port", str(listening), "--relay-port", str(free_port())],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "ARENA_VAR_DIR": str(tmp_path)},
        check=False,
    )
    assert result.returncode == 1
    line = one_line_error(result)
    assert line.startswith(f"arena.serve: port {listening} (--port) already in use")
