"""Every request has an id: a well-formed ``X-Request-ID`` is kept, anything else replaced; the response
returns it, and each line logged while the request runs carries it."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest

from policy_server import logs
from tests.api.actors import request_session


@pytest.fixture
def json_log():
    """The root logger's lines in the production (JSON) format, as settings.LOGGING sets it up."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.addFilter(logs.ContextFilter())
    handler.setFormatter(logs.JsonFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    lines: list[dict] = []
    yield lines, buffer
    root.removeHandler(handler)
    root.setLevel(old_level)


def parsed(buffer: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_a_sessions_log_lines_carry_its_request_id(lab1, robot1, pool, json_log):
    _, buffer = json_log
    response = lab1.client.post(
        "/api/v1/sessions/",
        {"robot": "franka-1", "task": "put the marker in the cup"},
        format="json",
        headers={"X-Request-ID": "trace-0123456789"},
    )
    assert response.status_code == 201
    assert response["X-Request-ID"] == "trace-0123456789"
    lines = parsed(buffer)
    assigned = [line for line in lines if line["logger"] == "arena.services.sessions"]
    assert assigned and "assigned" in assigned[0]["msg"]
    assert all(line.get("request_id") == "trace-0123456789" for line in assigned)
    assert response.json()["id"] in assigned[0]["msg"]


def test_two_requests_have_two_ids(lab1, robot1, pool, json_log):
    _, buffer = json_log
    first, second = request_session(lab1), request_session(lab1)
    assert first["X-Request-ID"] != second["X-Request-ID"]
    ids = [line.get("request_id") for line in parsed(buffer) if line["logger"] == "arena.services.sessions"]
    assert ids == [first["X-Request-ID"], second["X-Request-ID"]]
    assert "request_id" not in logs.current()  # nothing left bound after the request


@pytest.mark.parametrize(
    "given", ["short", "x" * 65, "has spaces in it", 'quote"d-0123', "new\nline-0123", "ünïcödé-0123"]
)
def test_malformed_request_ids_are_replaced_not_echoed(db, anonymous, given):
    response = anonymous.client.get("/api/v1/leaderboard/", headers={"X-Request-ID": given})
    assert response["X-Request-ID"] != given
    assert re.fullmatch(r"[0-9a-f]{32}", response["X-Request-ID"])


def test_a_celery_tasks_lines_carry_its_task_id(db, json_log):
    from arena.tasks import ranking_refit

    _, buffer = json_log
    result = ranking_refit.apply_async(task_id="task-id-0123456789")  # eager here, as in the embedded mode
    assert result.get() is not None
    stored = [line for line in parsed(buffer) if line["logger"] == "arena.services.ranking"]
    assert stored and "snapshot" in stored[0]["msg"]
    assert stored[0]["task_id"] == "task-id-0123456789"
    assert "task_id" not in logs.current()  # unbound when the task ended
