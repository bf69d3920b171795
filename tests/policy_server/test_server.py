"""The policy server speaks the openpi protocol over real sockets (raw websockets clients here)."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
from arena_test_policies import EchoPolicy, FailingPolicy, FixedActionsPolicy
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus
from websockets.sync.client import connect

from policy_server.server import PROTOCOL_KEY, serve_in_thread
from policy_server.wire import packb, unpackb

STATE = {
    "observation/joint_position": np.arange(7, dtype=np.float64),
    "observation/gripper_position": np.array([0.5]),
    "prompt": "wave",
}


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_port_zero_picks_distinct_free_ports(echo_policy: EchoPolicy) -> None:
    with serve_in_thread(echo_policy) as first, serve_in_thread(echo_policy) as second:
        assert first.port > 0 and second.port > 0 and first.port != second.port
        assert first.url == f"ws://127.0.0.1:{first.port}"


def test_metadata_frame_then_lockstep_infer(echo_policy: EchoPolicy) -> None:
    with serve_in_thread(echo_policy) as server, connect(server.url, compression=None) as ws:
        metadata = unpackb(ws.recv(timeout=5))
        assert metadata == {**echo_policy.metadata, PROTOCOL_KEY: 1}
        for step in range(3):
            ws.send(packb({**STATE, "step": step}))
            reply = unpackb(ws.recv(timeout=5))
            np.testing.assert_array_equal(reply["actions"], np.tile([0, 1, 2, 3, 4, 5, 6, 0.5], (10, 1)))
            assert reply["server_timing"]["infer_ms"] >= 0.0
    # No endpoint key reaches the policy, whether the request named one or not.
    assert echo_policy.seen_keys[0] == sorted([*STATE, "step"])


def test_endpoint_infer_is_stripped_and_reset_is_confirmed(echo_policy: EchoPolicy) -> None:
    with serve_in_thread(echo_policy) as server, connect(server.url, compression=None) as ws:
        ws.recv(timeout=5)
        ws.send(packb({**STATE, "endpoint": "infer"}))
        assert unpackb(ws.recv(timeout=5))["actions"].shape == (10, 8)
        ws.send(packb({"endpoint": "reset", "episode": 3}))
        assert unpackb(ws.recv(timeout=5)) == {"reset": True}
    assert "endpoint" not in echo_policy.seen_keys[0]
    assert echo_policy.resets == [{"episode": 3}]


def test_policy_exception_sends_traceback_text_then_closes_1011() -> None:
    with serve_in_thread(FailingPolicy()) as server, connect(server.url) as ws:
        ws.recv(timeout=5)
        ws.send(packb(STATE))
        text = ws.recv(timeout=5)
        assert isinstance(text, str)
        assert "Traceback" in text and "the policy exploded on purpose" in text
        with pytest.raises(ConnectionClosedError) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (packb({"endpoint": "teleport"}), "unknown endpoint 'teleport'"),
        (packb([1, 2, 3]), "a request is a msgpack map"),
        ("hello", "text frame"),
        (b"\xc1", "malformed frame"),
    ],
)
def test_bad_requests_are_reported_like_policy_errors(frame: bytes | str, message: str) -> None:
    with serve_in_thread(EchoPolicy()) as server, connect(server.url) as ws:
        ws.recv(timeout=5)
        ws.send(frame)
        text = ws.recv(timeout=5)
        assert isinstance(text, str) and message in text
        with pytest.raises(ConnectionClosedError):
            ws.recv(timeout=5)


def test_healthz_answers_plain_http(echo_policy: EchoPolicy) -> None:
    with serve_in_thread(echo_policy, api_key="sesame") as server:
        assert http_status(f"http://127.0.0.1:{server.port}/healthz") == 200


@pytest.mark.parametrize(
    ("path", "headers", "accepted"),
    [
        ("", {"Authorization": "Api-Key sesame"}, True),
        ("/?api_key=sesame", {}, True),
        ("", {}, False),
        ("", {"Authorization": "Api-Key wrong"}, False),
        ("", {"Authorization": "Bearer sesame"}, False),
        ("/?api_key=wrong", {}, False),
    ],
)
def test_api_key_is_required_on_the_handshake(path: str, headers: dict[str, str], accepted: bool) -> None:
    with serve_in_thread(EchoPolicy(), api_key="sesame") as server:
        if accepted:
            with connect(server.url + path, additional_headers=headers) as ws:
                assert PROTOCOL_KEY in unpackb(ws.recv(timeout=5))
        else:
            with pytest.raises(InvalidStatus) as refused:
                connect(server.url + path, additional_headers=headers)
            assert refused.value.response.status_code == 401


def test_clients_are_served_at_once_but_inference_is_serialised() -> None:
    policy = EchoPolicy(delay_s=0.05)
    errors: list[BaseException] = []

    def client(url: str) -> None:
        try:
            with connect(url) as ws:
                ws.recv(timeout=5)
                for _ in range(3):
                    ws.send(packb(STATE))
                    assert unpackb(ws.recv(timeout=10))["actions"].shape == (10, 8)
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    with serve_in_thread(policy) as server:
        threads = [threading.Thread(target=client, args=(server.url,)) for _ in range(4)]
        for thread in threads:
            thread.start()
        # While inference is busy, the event loop still answers health checks.
        assert http_status(f"http://127.0.0.1:{server.port}/healthz") == 200
        for thread in threads:
            thread.join(30)
    assert not errors
    assert len(policy.seen_keys) == 12
    assert policy.max_active == 1


def test_stop_closes_open_connections_with_going_away(echo_policy: EchoPolicy) -> None:
    with serve_in_thread(echo_policy) as server:
        ws = connect(server.url)
        ws.recv(timeout=5)
        server.stop()
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        with pytest.raises(OSError):
            connect(server.url, open_timeout=2)


def test_binding_a_taken_port_raises_in_the_caller(echo_policy: EchoPolicy) -> None:
    with serve_in_thread(echo_policy) as server:
        with pytest.raises(OSError):
            with serve_in_thread(echo_policy, port=server.port):
                pass


def test_an_unencodable_reply_is_the_policys_error_not_a_bad_request() -> None:
    with (
        serve_in_thread(FixedActionsPolicy(np.zeros((2, 8), np.complex64))) as server,
        connect(server.url) as ws,
    ):
        ws.recv(timeout=5)
        ws.send(packb(STATE))
        text = ws.recv(timeout=5)
        assert isinstance(text, str) and "Traceback" in text and "refused on the wire" in text
        with pytest.raises(ConnectionClosedError) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
