"""The blind relay: token checks on the handshake, transparent forwarding, closing codes, and its CLI."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from arena_test_policies import DROID_METADATA, EchoPolicy, FailingPolicy
from roboarena_dialect import serve_roboarena_in_thread
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosedError, InvalidStatus
from websockets.sync.client import connect

from arena.ports import free_port
from policy_server._serving import serve_in_thread
from policy_server.check import dummy_observation, requirements_from_metadata
from policy_server.client import PolicyClient, PolicyError, PolicyUnauthorized, PolicyUnavailable
from policy_server.relay import EARLY_FRAME_BYTES, serve_relay_in_thread
from policy_server.relay_token import mint_token
from policy_server.server import serve_in_thread as serve_policy_in_thread
from policy_server.wire import packb, unpackb

SECRET = "relay secret shared with the arena server"
REPO = Path(__file__).resolve().parents[2]
OBS = {
    **dummy_observation(requirements_from_metadata({})),  # the full DROID observation the relay asks for
    "prompt": "open the drawer",
}


def token_for(endpoint: str, **overrides: object) -> str:
    """A token for slot B of a session of its own (unless ``session_id`` is given): the relay admits one
    connection per slot at a time and frees it only once it has seen the previous connection close."""
    session_id = f"s-{uuid.uuid4().hex[:12]}"
    fields = {"endpoint": endpoint, "session_id": session_id, "slot": "B", "key": SECRET, "ttl_s": 300}
    return mint_token(**{**fields, **overrides})  # type: ignore[arg-type]


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture
def relay() -> Iterator[str]:
    with serve_relay_in_thread(SECRET, upstream_timeout=2.0) as handle:
        yield handle.url


def test_relayed_infer_and_reset_via_path_token(relay: str, echo_policy: EchoPolicy) -> None:
    with serve_policy_in_thread(echo_policy) as policy:
        with PolicyClient(f"{relay}/{token_for(policy.url)}", action_dim=8) as client:
            assert client.dialect == "arena"
            assert client.metadata["needs_wrist_camera"] is True
            for _ in range(3):
                assert client.infer(OBS)["actions"].shape == (10, 8)
            client.reset({"episode": 1})
    # The relay forwards a reset without the lab's free-form reset_info: a policy's reaction to it could tell
    # policies apart.
    assert len(echo_policy.seen_keys) == 3 and echo_policy.resets == [{}]


def test_bearer_header_carries_the_token_too(relay: str, echo_policy: EchoPolicy) -> None:
    with serve_policy_in_thread(echo_policy) as policy:
        headers = {"Authorization": f"Bearer {token_for(policy.url)}"}
        with PolicyClient(relay, headers=headers) as client:
            assert client.infer(OBS)["actions"].shape == (10, 8)


def test_policy_api_key_travels_inside_the_token(relay: str, echo_policy: EchoPolicy) -> None:
    with serve_policy_in_thread(echo_policy, api_key="owner-key") as policy:
        with PolicyClient(f"{relay}/{token_for(policy.url, api_key='owner-key')}") as client:
            assert client.infer(OBS)["actions"].shape == (10, 8)
        # Without the key the policy refuses the relay, which tells the evaluator the policy is unavailable.
        with pytest.raises(PolicyUnavailable) as refused:
            PolicyClient(f"{relay}/{token_for(policy.url)}", retries=0)
        assert not isinstance(refused.value, PolicyUnauthorized)


def test_roboarena_dialect_passes_through_unchanged(relay: str) -> None:
    policy = EchoPolicy(metadata=DROID_METADATA)
    with serve_roboarena_in_thread(policy) as server:
        with PolicyClient(f"{relay}/{token_for(server.url)}") as client:
            assert client.dialect == "roboarena"
            client.reset()
            assert client.infer(OBS)["actions"].shape == (10, 8)
    assert policy.resets == [{}]


def test_a_policy_traceback_never_reaches_the_lab(echo_policy: EchoPolicy) -> None:
    reported: list[tuple[str, str, str]] = []

    def hook(claims, kind: str, detail: str) -> None:  # type: ignore[no-untyped-def]
        reported.append((claims.session_id, kind, detail))

    with (
        serve_relay_in_thread(SECRET, upstream_timeout=2.0, on_policy_error=hook) as relay,
        serve_policy_in_thread(FailingPolicy()) as policy,
    ):
        with connect(f"{relay.url}/{token_for(policy.url, session_id='s-42')}") as ws:
            ws.recv(timeout=5)
            ws.send(packb(OBS))
            assert ws.recv(timeout=5) == "policy error (code policy_error)"
            with pytest.raises(ConnectionClosedError) as closed:
                ws.recv(timeout=5)
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1011, "policy error")
        with PolicyClient(f"{relay.url}/{token_for(policy.url, session_id='s-43')}") as client:
            with pytest.raises(PolicyError) as failed:
                client.infer(OBS)
        assert "exploded" not in str(failed.value) and "Traceback" not in failed.value.traceback
        deadline = time.monotonic() + 10
        while len(reported) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert sorted((sid, kind) for sid, kind, _ in reported) == [
        ("s-42", "policy_error"),
        ("s-43", "policy_error"),
    ]
    assert all(
        "Traceback" in detail and "the policy exploded on purpose" in detail for *_, detail in reported
    )


def test_unreachable_policy_closes_1014_without_naming_it(relay: str) -> None:
    dead = f"ws://127.0.0.1:{free_port()}"
    with connect(f"{relay}/{token_for(dead)}") as ws:
        with pytest.raises(ConnectionClosedError) as closed:
            ws.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1014
    assert "127.0.0.1" not in closed.value.rcvd.reason
    with pytest.raises(PolicyUnavailable, match="1014"):
        PolicyClient(f"{relay}/{token_for(dead)}", retries=0)


def test_policy_dying_mid_episode_is_unavailable(relay: str, echo_policy: EchoPolicy) -> None:
    with serve_policy_in_thread(echo_policy) as policy:
        client = PolicyClient(f"{relay}/{token_for(policy.url)}", retries=0)
        client.infer(OBS)
        policy.stop()
        with pytest.raises(PolicyUnavailable):
            client.infer(OBS)
        client.close()


def test_evaluator_disconnect_closes_the_upstream(relay: str) -> None:
    closed_codes: list[int | None] = []

    async def handler(ws: ServerConnection) -> None:
        await ws.send(packb({}))
        await ws.wait_closed()
        closed_codes.append(ws.close_code)

    async def start() -> Server:
        return await serve(handler, "127.0.0.1", 0)

    with serve_in_thread(start, host="127.0.0.1") as upstream:
        with connect(f"{relay}/{token_for(upstream.url)}") as ws:
            assert unpackb(ws.recv(timeout=5)) == {"arena_relay": 1}  # an openpi server's (empty) metadata
        deadline = time.monotonic() + 5
        while not closed_codes and time.monotonic() < deadline:
            time.sleep(0.02)
    assert closed_codes == [1000]


def test_the_policy_sees_none_of_the_evaluators_headers(relay: str) -> None:
    seen: list[dict[str, str]] = []

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        seen.append({k.lower(): v for k, v in ws.request.headers.raw_items()})
        seen[-1]["path"] = ws.request.path
        await ws.send(packb({}))
        await ws.wait_closed()

    async def start() -> Server:
        return await serve(handler, "127.0.0.1", 0)

    with serve_in_thread(start, host="127.0.0.1") as upstream:
        token = token_for(upstream.url)
        with connect(f"{relay}/{token}", additional_headers={"X-Evaluator": "lab-7@example.org"}) as ws:
            ws.recv(timeout=5)
    (headers,) = seen
    assert "x-evaluator" not in headers and "authorization" not in headers
    assert token not in " ".join(headers.values())


@pytest.mark.parametrize(
    ("make_path", "headers", "status"),
    [
        (lambda url: "/", {}, 401),
        (lambda url: "/" + token_for(url, ttl_s=1, now=time.time() - 10), {}, 401),
        (lambda url: "/" + token_for(url)[:-3] + "AAA", {}, 403),
        (lambda url: "/" + token_for(url, key="some other secret, not the relay's"), {}, 403),
        (lambda url: "/", {"Authorization": "Bearer garbage"}, 403),
    ],
    ids=["missing", "expired", "tampered", "foreign-secret", "bad-bearer"],
)
def test_bad_tokens_are_refused_on_the_handshake(relay: str, make_path, headers, status: int) -> None:
    policy = EchoPolicy()
    with serve_policy_in_thread(policy) as server:
        with pytest.raises(InvalidStatus) as refused:
            connect(relay + make_path(server.url), additional_headers=headers)
        assert refused.value.response.status_code == status
        with pytest.raises(PolicyUnauthorized):
            PolicyClient(relay + make_path(server.url), headers=headers)


def test_relay_healthz(relay: str) -> None:
    port = relay.rsplit(":", 1)[1]
    assert http_status(f"http://127.0.0.1:{port}/healthz") == 200


def wait_healthy(port: int, process: subprocess.Popen, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1]
        try:
            if http_status(f"http://127.0.0.1:{port}/healthz") == 200:
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("server did not become healthy")


RELAY_MAIN = [sys.executable, "-c", "from policy_server.relay import main; main()"]


def test_relay_cli_serves_and_stops_on_sigterm(tmp_path: Path, echo_policy: EchoPolicy) -> None:
    port = free_port()
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    env = {k: v for k, v in os.environ.items() if k != "ARENA_RELAY_SECRET"}
    process = subprocess.Popen(
        [
            *RELAY_MAIN,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--secret-file",
            str(secret_file),
            "--standalone",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_healthy(port, process)
        with serve_policy_in_thread(echo_policy) as policy:
            with PolicyClient(f"ws://127.0.0.1:{port}/{token_for(policy.url)}") as client:
                assert client.infer(OBS)["actions"].shape == (10, 8)
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=15)
    assert process.returncode == 0, stderr


def test_relay_cli_reads_the_secret_from_the_environment_and_requires_one() -> None:
    env = {k: v for k, v in os.environ.items() if k != "ARENA_RELAY_SECRET"}
    missing = subprocess.run(
        [*RELAY_MAIN, "--port", "0"], cwd=REPO, env=env, capture_output=True, text=True, timeout=30
    )
    assert missing.returncode != 0 and "ARENA_RELAY_SECRET" in missing.stderr
    port = free_port()
    process = subprocess.Popen(
        [*RELAY_MAIN, "--host", "127.0.0.1", "--port", str(port), "--standalone"],
        cwd=REPO,
        env={**env, "ARENA_RELAY_SECRET": SECRET},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_healthy(port, process)
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=15)
    assert process.returncode == 0


def test_relay_redacts_identifying_metadata():
    from policy_server import wire
    from policy_server.client import detect_dialect
    from policy_server.relay_frames import PolicyFault, redact_metadata_frame

    roboarena = dict(DROID_METADATA)  # RoboArena's exact config keys
    frame, shape = redact_metadata_frame(wire.packb(roboarena))
    assert wire.unpackb(frame) == roboarena and shape.action_dim == 8
    assert shape.observation_bytes == 2 * 224 * 224 * 3 + 2**20
    native = {**roboarena, "image_resolution": None, "action_space": "cartesian_velocity"}
    frame, shape = redact_metadata_frame(wire.packb(native))
    assert detect_dialect(wire.unpackb(frame)) == "roboarena" and shape.action_dim == 7
    ours = {**roboarena, "arena_protocol": 1, "baseline": "expert", "checkpoint": "gs://acme/pi0-v3"}
    seen = wire.unpackb(redact_metadata_frame(wire.packb(ours))[0])
    assert "baseline" not in seen and "checkpoint" not in seen and detect_dialect(seen) == "arena"
    openpi = {"model": "pi0-fast-droid", "host": "gpu7.acme.example", "action_space": "joint_velocity"}
    seen = wire.unpackb(redact_metadata_frame(wire.packb(openpi))[0])
    assert seen == {"action_space": "joint_velocity", "arena_relay": 1} and detect_dialect(seen) == "openpi"
    for bad in ("Traceback ...", b"\xc1", wire.packb([1]), wire.packb({"action_dim": 9})):
        with pytest.raises(PolicyFault):
            redact_metadata_frame(bad)


def scripted_upstream(handler):  # type: ignore[no-untyped-def]
    """A policy server in a thread whose connection handler is ``handler`` (a coroutine function)."""

    async def start() -> Server:
        return await serve(handler, "127.0.0.1", 0, compression=None, max_size=None)

    return serve_in_thread(start, host="127.0.0.1")


def chatty_reply(obs: dict) -> dict:
    return {
        "actions": np.full((4, 8), 0.5, np.float32),
        "diffusion_steps": 10,
        "whoami": "Zephyr VLA 7B by Quasar",
        "server_timing": {"infer_ms": 123.456, "act_model_ms": 77.7},
        "policy_timing": {"zephyr_ms": 1.0},
    }


def test_replies_are_cut_to_actions_and_coarse_timing(relay: str) -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send(packb({**DROID_METADATA, "arena_protocol": 1}))
        async for frame in ws:
            await ws.send(packb(chatty_reply(unpackb(frame))))

    with scripted_upstream(handler) as upstream:
        with connect(f"{relay}/{token_for(upstream.url)}") as ws:
            ws.recv(timeout=5)
            ws.send(packb(OBS))
            raw = ws.recv(timeout=5)
    reply = unpackb(raw)
    assert set(reply) == {"actions", "server_timing"}
    assert reply["server_timing"] == {"infer_ms": 100.0}
    assert reply["actions"].dtype == np.float64 and reply["actions"].shape == (4, 8)
    assert b"Zephyr" not in raw and b"diffusion" not in raw and b"act_model" not in raw


@pytest.mark.parametrize(
    "bad_reply",
    [
        "vote for me: I am Zephyr",
        packb({"actions": np.zeros((4, 7))}),  # joint space needs 8 dims
        packb({"actions": np.full((4, 8), np.nan)}),
        packb({"actions": np.zeros((401, 8))}),
        packb({"whoami": "Zephyr"}),
        b"\xc1Zephyr",
    ],
    ids=["text-frame", "wrong-dim", "nan", "too-long", "no-actions", "undecodable"],
)
def test_nothing_but_a_generic_error_replaces_a_bad_reply(bad_reply: str | bytes) -> None:
    reported: list[tuple[str, str]] = []

    async def handler(ws: ServerConnection) -> None:
        await ws.send(packb(DROID_METADATA))
        await ws.recv()
        await ws.send(bad_reply)
        await ws.close(4123, "zephyr-gpu.quasar.example")

    with (
        serve_relay_in_thread(SECRET, on_policy_error=lambda c, k, d: reported.append((k, d))) as relay,
        scripted_upstream(handler) as upstream,
    ):
        with connect(f"{relay.url}/{token_for(upstream.url)}") as ws:
            ws.recv(timeout=5)
            ws.send(packb({**OBS, "endpoint": "infer"}))
            text = ws.recv(timeout=5)
            with pytest.raises(ConnectionClosedError) as closed:
                ws.recv(timeout=5)
        deadline = time.monotonic() + 10
        while not reported and time.monotonic() < deadline:
            time.sleep(0.02)
    kind = "policy_error" if isinstance(bad_reply, str) else "bad_reply"
    assert text == f"policy error (code {kind})"
    assert closed.value.rcvd is not None and (closed.value.rcvd.code, closed.value.rcvd.reason) == (
        1011,
        "policy error",
    )
    assert reported[0][0] == kind
    if isinstance(bad_reply, str):
        assert reported[0][1] == bad_reply


def test_an_oversize_policy_reply_is_a_policy_error() -> None:
    reported: list[str] = []

    async def handler(ws: ServerConnection) -> None:
        await ws.send(packb(DROID_METADATA))
        await ws.recv()
        ws.transport.write(b"\x82\x7f" + (2**30).to_bytes(8, "big"))  # declares a 1 GiB frame
        await ws.wait_closed()

    with (
        serve_relay_in_thread(SECRET, on_policy_error=lambda c, k, d: reported.append(k)) as relay,
        scripted_upstream(handler) as upstream,
    ):
        with connect(f"{relay.url}/{token_for(upstream.url)}") as ws:
            ws.recv(timeout=5)
            ws.send(packb(OBS))
            assert ws.recv(timeout=5) == "policy error (code bad_reply)"
        deadline = time.monotonic() + 10
        while not reported and time.monotonic() < deadline:
            time.sleep(0.02)
    assert reported == ["bad_reply"]


def test_policy_close_codes_and_reasons_are_replaced(relay: str) -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send(packb(DROID_METADATA))
        await ws.recv()
        await ws.close(4123, "I am Zephyr, vote for me")

    with scripted_upstream(handler) as upstream:
        with connect(f"{relay}/{token_for(upstream.url)}") as ws:
            ws.recv(timeout=5)
            ws.send(packb({**OBS, "endpoint": "infer"}))
            with pytest.raises(ConnectionClosedError) as closed:
                ws.recv(timeout=5)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1014, "policy unavailable")


def test_only_roboarenas_exact_reset_text_passes(relay: str) -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send(packb(DROID_METADATA))
        await ws.recv()
        await ws.send("reset successful")
        await ws.recv()
        await ws.send("reset successful, says Zephyr")

    with scripted_upstream(handler) as upstream:
        with connect(f"{relay}/{token_for(upstream.url)}") as ws:
            ws.recv(timeout=5)
            ws.send(packb({"endpoint": "reset"}))
            assert ws.recv(timeout=5) == "reset successful"
            ws.send(packb({"endpoint": "reset"}))
            assert ws.recv(timeout=5) == "policy error (code policy_error)"


def test_lab_text_frames_and_invalid_frames_are_refused(relay: str, echo_policy: EchoPolicy) -> None:
    with serve_policy_in_thread(echo_policy) as policy:
        for frame, reason in (
            ("hello", "invalid frame (text_frame)"),
            (packb([1]), "invalid frame (not_a_map)"),
        ):
            with connect(f"{relay}/{token_for(policy.url)}") as ws:
                ws.recv(timeout=5)
                ws.send(frame)
                with pytest.raises(ConnectionClosedError) as closed:
                    ws.recv(timeout=5)
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, reason)
    assert echo_policy.seen_keys == []


def test_a_redirecting_endpoint_is_not_followed(relay: str, echo_policy: EchoPolicy) -> None:
    reported: list[str] = []

    def redirect(connection: ServerConnection, request) -> object:  # type: ignore[no-untyped-def]
        response = connection.respond(302, "moved\n")
        response.headers["Location"] = other.url
        return response

    async def handler(ws: ServerConnection) -> None:
        await ws.send(packb(DROID_METADATA))

    async def start() -> Server:
        return await serve(handler, "127.0.0.1", 0, process_request=redirect)

    with (
        serve_policy_in_thread(echo_policy) as other,
        serve_in_thread(start, host="127.0.0.1") as redirecting,
        serve_relay_in_thread(SECRET, on_policy_error=lambda c, k, d: reported.append(k)) as relay_handle,
    ):
        with pytest.raises(PolicyUnavailable, match="1014"):
            PolicyClient(f"{relay_handle.url}/{token_for(redirecting.url)}", retries=0)
    assert echo_policy.seen_keys == [] and reported == ["unreachable"]


def test_a_reply_of_another_horizon_than_declared_is_a_policy_error() -> None:
    """A policy that declares ``action_horizon`` answers chunks of that length (the health check requires it);
    one whose chunk length varies could signal who it is, so any other length is a generic error."""
    reported: list[tuple[str, str]] = []

    async def handler(ws: ServerConnection) -> None:
        await ws.send(packb({**DROID_METADATA, "action_horizon": 10}))
        for rows in (10, 11):
            await ws.recv()
            await ws.send(packb({"actions": np.zeros((rows, 8))}))
        await ws.wait_closed()

    with (
        serve_relay_in_thread(SECRET, on_policy_error=lambda c, k, d: reported.append((k, d))) as relay,
        scripted_upstream(handler) as upstream,
    ):
        with connect(f"{relay.url}/{token_for(upstream.url)}") as ws:
            assert unpackb(ws.recv(timeout=5))["action_horizon"] == 10
            ws.send(packb(OBS))
            assert unpackb(ws.recv(timeout=5))["actions"].shape == (10, 8)
            ws.send(packb(OBS))
            assert ws.recv(timeout=5) == "policy error (code bad_reply)"
        deadline = time.monotonic() + 10
        while not reported and time.monotonic() < deadline:
            time.sleep(0.02)
    assert reported == [("bad_reply", "'actions' has 11 rows, the metadata declares 10")]


def test_the_protocol_version_the_lab_sees_is_the_relays(relay: str) -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send(packb({**DROID_METADATA, "arena_protocol": 91827}))  # a number that could name it
        await ws.wait_closed()

    with scripted_upstream(handler) as upstream:
        with connect(f"{relay}/{token_for(upstream.url)}") as ws:
            raw = ws.recv(timeout=5)
    assert unpackb(raw) == {**DROID_METADATA, "arena_protocol": 1}
    assert b"91827" not in raw and (91827).to_bytes(4, "big") not in raw


def test_lab_requests_reach_the_policy_cut_to_what_it_declared(relay: str, echo_policy: EchoPolicy) -> None:
    """The policy sees exactly its declared inputs, re-encoded: a lab's extra keys, its reset_info and its
    session id never reach it, and a request outside the protocol is answered by the relay itself."""
    with serve_policy_in_thread(echo_policy) as policy:
        url = f"{relay}/{token_for(policy.url)}"
        with connect(url) as ws:
            ws.recv(timeout=5)
            extra = {"lab": "Berkeley Lab, rig 7", "session_id": "arena-session-1234", "replica/state": [1]}
            ws.send(packb({**OBS, **extra, "endpoint": "infer"}))
            assert set(unpackb(ws.recv(timeout=5))) == {"actions", "server_timing"}
        for bad, code in (
            ({**OBS, "endpoint": "whoami"}, "unknown_endpoint"),
            ({k: v for k, v in OBS.items() if k != "observation/wrist_image_left"}, "bad_observation"),
            ({**OBS, "observation/joint_position": np.zeros(6)}, "bad_observation"),
            ({**OBS, "prompt": "p" * 2001}, "bad_observation"),
            (
                {**OBS, "observation/exterior_image_1_left": np.zeros((224, 224, 3), np.float32)},
                "bad_observation",
            ),
        ):
            with connect(f"{relay}/{token_for(policy.url)}") as ws:
                ws.recv(timeout=5)
                ws.send(packb(bad))
                with pytest.raises(ConnectionClosedError) as closed:
                    ws.recv(timeout=5)
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, f"invalid frame ({code})")
    droid_inputs = sorted(OBS)
    assert echo_policy.seen_keys == [droid_inputs]  # only the first, well-formed request, and only its inputs


def test_a_large_frame_before_the_metadata_is_refused_at_once() -> None:
    """Nothing is due from a lab before the policy's metadata; a frame over the early bound is refused (1009)
    while the policy is still connecting, instead of waiting in the relay under the server-wide bound."""
    metadata_due = threading.Event()
    requests: list[bytes] = []

    async def handler(ws: ServerConnection) -> None:
        while not metadata_due.is_set():
            await asyncio.sleep(0.01)
        await ws.send(packb(DROID_METADATA))
        async for frame in ws:
            requests.append(frame)

    with serve_relay_in_thread(SECRET) as relay, scripted_upstream(handler) as upstream:
        with connect(f"{relay.url}/{token_for(upstream.url)}", max_size=None) as ws:
            ws.send(bytes(EARLY_FRAME_BYTES + 1))
            with pytest.raises(ConnectionClosedError) as closed:
                ws.recv(timeout=10)  # before the policy has sent anything
        metadata_due.set()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        # An honest session on the same relay is unaffected.
        with serve_policy_in_thread(EchoPolicy()) as policy:
            with PolicyClient(f"{relay.url}/{token_for(policy.url)}") as client:
                assert client.infer(OBS)["actions"].shape == (10, 8)
    assert requests == []
