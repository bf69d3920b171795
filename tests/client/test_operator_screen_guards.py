"""The operator screen's HTTP edge, against a real screen on loopback: only this page, with its token, from
this host, may read or answer; bodies are bounded; answers are checked field by field."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator

import numpy as np
import pytest

from evaluator_client.screen import MAX_BODY_BYTES, OperatorScreen


@pytest.fixture
def screen() -> Iterator[OperatorScreen]:
    screen = OperatorScreen(port=0, sessions=1)
    try:
        yield screen
    finally:
        screen.close()


def request(screen, method: str, path: str, body: bytes | None = None, **headers: str):
    connection = http.client.HTTPConnection("127.0.0.1", screen.port, timeout=10)
    headers.setdefault("Host", f"127.0.0.1:{screen.port}")
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response, data


def answer(screen, payload: dict, **headers: str):
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", "X-Arena-Token": screen.token, **headers}
    response, data = request(screen, "POST", f"/{screen.token}/answer", body, **headers)
    return response.status, json.loads(data)


def test_the_page_is_self_contained_and_locked_down(screen):
    response, page = request(screen, "GET", f"/{screen.token}/")
    assert response.status == 200
    text = page.decode()
    assert "http://" not in text and "https://" not in text  # no CDN, nothing external
    policy = response.getheader("Content-Security-Policy")
    assert f"script-src 'nonce-{screen.nonce}'" in policy and "default-src 'none'" in policy
    assert "frame-ancestors 'none'" in policy and response.getheader("X-Frame-Options") == "DENY"
    assert text.count(f'nonce="{screen.nonce}"') == 2  # the one style and the one script


@pytest.mark.parametrize(
    "path", ["/", "/state", "/wrong-token/state", "/{token}x/state", "/{token}/../state"]
)
def test_without_the_token_nothing_is_served(screen, path):
    response, data = request(screen, "GET", path.format(token=screen.token))
    assert response.status == 404 and screen.token.encode() not in data


def test_another_host_name_is_refused(screen):
    """A page on evil.example that rebinds its name to 127.0.0.1 still sends its own Host."""
    response, _ = request(screen, "GET", f"/{screen.token}/state", Host=f"evil.example:{screen.port}")
    assert response.status == 421
    response, _ = request(screen, "GET", f"/{screen.token}/state", Host=f"localhost:{screen.port}")
    assert response.status == 200


def test_answers_need_the_token_header_a_same_origin_and_json(screen):
    body = json.dumps({"action": "stop"}).encode()
    path = f"/{screen.token}/answer"
    response, _ = request(screen, "POST", path, body, **{"Content-Type": "application/json"})
    assert response.status == 403  # a cross-site form cannot set X-Arena-Token
    status, reply = answer(screen, {"action": "stop"}, Origin="http://evil.example")
    assert status == 403 and reply["error"]["code"] == "forbidden"
    response, _ = request(
        screen, "POST", path, body, **{"Content-Type": "text/plain", "X-Arena-Token": screen.token}
    )
    assert response.status == 415
    response, _ = request(screen, "GET", path)
    assert response.status == 404


def test_a_body_over_the_bound_is_refused_unread(screen):
    body = b"{" + b" " * MAX_BODY_BYTES + b"}"
    headers = {"Content-Type": "application/json", "X-Arena-Token": screen.token}
    response, data = request(screen, "POST", f"/{screen.token}/answer", body, **headers)
    assert response.status == 413 and json.loads(data)["error"]["code"] == "too_large"


def test_an_answer_out_of_turn_is_refused(screen):
    status, reply = answer(screen, {"action": "scene_ready"})
    assert status == 409 and reply["error"]["code"] == "wrong_phase"


def test_the_rating_is_checked_field_by_field_and_not_ready_asks_again(screen):
    from evaluator_client.episode import EpisodeResult

    decided: dict = {}

    def judge() -> None:
        screen.session_started("0123456789abcdef", "put the red block in the bowl")
        decided["start"] = screen.confirm_start(np.zeros((4, 6, 3), dtype=np.uint8), slot="A")
        decided["progress_a"] = screen.progress("A", EpisodeResult())
        decided["preference"] = screen.preference(EpisodeResult(), EpisodeResult())

    worker = threading.Thread(target=judge, daemon=True)
    worker.start()
    _wait_for_phase(screen, "scene")
    assert answer(screen, {"action": "scene_not_ready"}) == (200, {"ok": True})
    assert _state(screen)["phase"] == "scene" and "Take your time" in _state(screen)["message"]
    assert answer(screen, {"action": "scene_ready"})[0] == 200
    _wait_for_phase(screen, "rate")
    good = {
        "action": "rate",
        "progress_a": 70,
        "progress_b": 20,
        "choice": "A",
        "reason": "A did",
        "valid": True,
    }
    for field, bad in [
        ("progress_a", 101),
        ("progress_a", True),
        ("progress_b", "20"),
        ("choice", "C"),
        ("reason", "   "),
        ("reason", "x" * 5001),
        ("valid", "yes"),
    ]:
        status, reply = answer(screen, {**good, field: bad})
        assert (status, reply["error"]["field"]) == (400, field)
    assert answer(screen, good)[0] == 200
    worker.join(10)
    assert decided == {"start": True, "progress_a": 70, "preference": ("A", "A did", True)}


def test_a_busy_port_is_one_clear_sentence(screen):
    from evaluator_client.screen import ScreenError

    with pytest.raises(ScreenError, match=f"cannot listen on 127.0.0.1:{screen.port}.*--ui-port"):
        OperatorScreen(port=screen.port)
    with pytest.raises(ScreenError, match="cannot listen on 127.0.0.1:70000"):
        OperatorScreen(port=70000)


def _state(screen) -> dict:
    response, data = request(screen, "GET", f"/{screen.token}/state")
    assert response.status == 200
    return json.loads(data)


def _wait_for_phase(screen, phase: str) -> None:
    import time

    deadline = time.monotonic() + 30
    while _state(screen)["phase"] != phase:
        assert time.monotonic() < deadline, f"the screen never reached {phase}"
        time.sleep(0.05)


def test_abort_on_the_screen_aborts_the_session_with_the_fault_named(network):
    """The real ``arena-eval run`` with its screen, answered over HTTP: Abort at the scene names the robot."""
    import subprocess
    import sys
    import time
    from pathlib import Path
    from urllib.parse import urlsplit

    from arena.models import EvaluationSession

    network.configure()
    command = [str(Path(sys.executable).with_name("arena-eval")), "--home", str(network.home), "run",
               "--robot", "replica", "--judge", "human", "--quiet", "--max-steps", "10"]  # fmt: skip
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("operator screen: http://127.0.0.1:"), line
        url = urlsplit(line.split()[2])

        class Remote:  # what `request` needs of a screen
            port = url.port
            token = url.path.strip("/")

        deadline = time.monotonic() + 60
        while _state(Remote)["phase"] != "scene":
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.05)
        status, reply = answer(Remote, {"action": "abort", "reason": "", "fault": "robot"})
        assert (status, reply["error"]["field"]) == (400, "reason")
        assert answer(Remote, {"action": "abort", "reason": "the gripper jammed", "fault": "robot"})[0] == 200
        while _state(Remote)["phase"] != "reveal":
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.05)
        state = _state(Remote)
        assert state["outcome"] == "aborted" and state["reveal"] is None  # an aborted session stays blind
        assert answer(Remote, {"action": "next"})[0] == 200
        assert process.wait(timeout=60) == 1  # its only session aborted
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)
    session = EvaluationSession.objects.get()
    assert (session.state, session.abort_fault, session.abort_reason) == (
        "aborted",
        "robot",
        "the gripper jammed",
    )
