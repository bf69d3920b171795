"""Structured logs of the relay and the policy server (``policy_server.logs``): each line of a connection names
its session; the JSON format parses line by line, from the command-line relay too."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from arena_test_policies import EchoPolicy
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import connect

from arena.ports import free_port
from policy_server import logs
from policy_server.relay import serve_relay_in_thread
from policy_server.relay_token import mint_token
from policy_server.server import serve_in_thread
from policy_server.wire import packb

REPO = Path(__file__).resolve().parents[2]
SECRET = "relay secret for the log tests"
STATE = {
    "observation/joint_position": np.arange(7, dtype=np.float64),
    "observation/gripper_position": np.array([0.5]),
    "prompt": "wave",
}


@contextmanager
def json_lines(logger: str, level: int = logging.INFO) -> Iterator[list[dict]]:
    """The JSON lines ``logger`` writes in the block, as a handler set up like ``logs.configure`` does."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.addFilter(logs.ContextFilter())
    handler.setFormatter(logs.JsonFormatter())
    target = logging.getLogger(logger)
    old_level = target.level
    target.addHandler(handler)
    target.setLevel(level)
    parsed: list[dict] = []
    try:
        yield parsed
    finally:
        target.removeHandler(handler)
        target.setLevel(old_level)
        parsed.extend(json.loads(line) for line in buffer.getvalue().splitlines())


def test_a_relay_connection_logs_under_its_session():
    dead = f"ws://127.0.0.1:{free_port()}"
    token = mint_token(endpoint=dead, session_id="s-logged-session", slot="A", key=SECRET, ttl_s=300)
    with json_lines("policy_server.relay", logging.WARNING) as lines:
        with (
            serve_relay_in_thread(SECRET, upstream_timeout=2.0) as relay,
            connect(f"{relay.url}/{token}") as ws,
        ):
            with pytest.raises(ConnectionClosedError):
                ws.recv(timeout=10)
    unreachable = [line for line in lines if "unreachable" in line["msg"]]
    assert unreachable, lines
    assert unreachable[0]["session_id"] == "s-logged-session" and unreachable[0]["slot"] == "A"
    assert unreachable[0]["level"] == "WARNING" and unreachable[0]["logger"] == "policy_server.relay"


def test_a_policy_server_connection_logs_its_number_and_session():
    with json_lines("policy_server.server") as lines:
        with serve_in_thread(EchoPolicy()) as server, connect(server.url, compression=None) as ws:
            ws.recv(timeout=5)
            ws.send(packb({**STATE, "session_id": "alias-0123456789"}))
            ws.recv(timeout=5)
            ws.send("a text frame is a bad request")
            with pytest.raises(ConnectionClosedError):
                while True:
                    ws.recv(timeout=5)
    connected = next(line for line in lines if "connected" in line["msg"])
    bad = next(line for line in lines if "bad request" in line["msg"])
    assert "session_id" not in connected and connected["connection"] == "1"
    assert bad["session_id"] == "alias-0123456789" and bad["connection"] == "1"


def test_bound_fields_are_cut_and_unbound():
    with logs.bound(session_id="x" * 500):
        assert logs.current()["session_id"] == "x" * logs.MAX_FIELD_CHARS
    assert "session_id" not in logs.current()


def test_json_lines_carry_tracebacks_and_text_lines_their_ids():
    record = logging.LogRecord("arena.test", logging.ERROR, __file__, 1, "failed %s", ("here",), None)
    try:
        raise ValueError("boom")
    except ValueError:
        record.exc_info = sys.exc_info()
    with logs.bound(request_id="req-12345678"):
        logs.ContextFilter().filter(record)
        line = json.loads(logs.JsonFormatter().format(record))
        text = logs.TextFormatter().format(record)
    assert line["msg"] == "failed here" and line["request_id"] == "req-12345678"
    assert "ValueError: boom" in line["exc"] and line["ts"].endswith("+00:00")
    assert "[request_id=req-12345678]: failed here" in text
    with pytest.raises(ValueError, match="ARENA_LOG_FORMAT"):
        logs.formatter("xml")


def test_the_relay_command_logs_json_when_asked(tmp_path):
    port = free_port()
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET)
    env = {**os.environ, logs.FORMAT_ENV: "json"}
    process = subprocess.Popen(
        [sys.executable, "-m", "policy_server.relay", "--host", "127.0.0.1", "--port", str(port)]
        + ["--secret-file", str(secret_file), "--standalone"],
        cwd=REPO,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        first = process.stderr.readline()  # the standalone warning comes before the listening line
    finally:
        process.send_signal(signal.SIGTERM)
        _, rest = process.communicate(timeout=30)
    line = json.loads(first)
    assert line["level"] == "WARNING" and "standalone relay" in line["msg"]
    log_lines = [text for text in rest.splitlines() if not text.startswith("arena-relay listening")]
    for text in log_lines:
        json.loads(text)
