"""Dial-out serving through a standalone relay: a policy that binds nothing and only connects out.

The policy server's side is the real one (``dial_out_in_thread``: ``PolicyServer`` on a link); a hostile owner
is a raw websocket speaking the link protocol. Sessions go through the relay's public handshake (a token naming
``dialout://<slug>``), exactly as labs connect. The arena's part (keys, several relays, the health check) is in
``tests/hardening/test_dialout_arena.py``.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from arena_test_policies import EchoPolicy
from websockets.exceptions import ConnectionClosed, ConnectionClosedError
from websockets.sync.client import connect

from arena.ports import free_port
from policy_server import dialout, wire
from policy_server.base import BasePolicy
from policy_server.client import PolicyClient, PolicyUnavailable
from policy_server.relay import serve_relay_in_thread
from policy_server.relay_token import mint_token
from policy_server.server import dial_out_in_thread
from tests.dialout_helpers import hostile_dialer
from tests.policy_server.test_hostile_frames import BOMBS, OBS, SECRET, Bounded, HeldPolicy

FAST = dialout.Backoff(base=0.05, cap=0.5)


def token_url(relay_url: str, slug: str) -> str:
    token = mint_token(
        endpoint=dialout.endpoint_for(slug),
        session_id=f"s-{uuid.uuid4().hex[:12]}",
        slot="A",
        key=SECRET,
        ttl_s=300,
    )
    return f"{relay_url}/{token}"


@contextlib.contextmanager
def dialled(policy: BasePolicy, relay_url: str, slug: str) -> Iterator:
    with dial_out_in_thread(policy, relay_url, key="pa_owner_key", slug=slug, backoff=FAST) as handle:
        assert handle.wait_attached(1, timeout=30), handle.refused
        yield handle


def test_a_dialled_in_policy_is_served_without_binding_a_port() -> None:
    policy = EchoPolicy()
    with serve_relay_in_thread(SECRET) as relay, dialled(policy, relay.url, "echo-out"):
        with PolicyClient(token_url(relay.url, "echo-out"), action_dim=8, request_timeout=60) as client:
            assert client.infer(OBS)["actions"].shape == (10, 8)
            client.reset()
            assert client.infer(OBS)["actions"].shape == (10, 8)
    assert len(policy.seen_keys) == 2


def test_concurrent_sessions_share_one_link() -> None:
    """One session blocked mid-inference does not stall another one on the same link (its own channel)."""

    class Gate(HeldPolicy):
        def infer(self, obs: dict) -> dict:  # type: ignore[override]
            if obs.get("prompt") == "hold":
                return super().infer(obs)
            return EchoPolicy.infer(self, obs)

    policy = Gate()
    with serve_relay_in_thread(SECRET) as relay, dialled(policy, relay.url, "gate-out"):
        held = PolicyClient(token_url(relay.url, "gate-out"), action_dim=8, request_timeout=120)
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(held.infer, {**OBS, "prompt": "hold"})
            assert policy.entered.wait(60)
            # The policy serialises inference (one lock per policy), so the second session reaches the
            # policy only after the first: what must not block is everything before, the handshake and the
            # metadata on another channel.
            with connect(token_url(relay.url, "gate-out"), open_timeout=60) as other:
                assert isinstance(other.recv(timeout=60), bytes)
            policy.release.set()
            assert pending.result(120)["actions"].shape == (10, 8)
        held.close()


def test_an_unattached_dialout_policy_is_unavailable() -> None:
    with serve_relay_in_thread(SECRET) as relay:
        with pytest.raises(PolicyUnavailable):
            PolicyClient(token_url(relay.url, "nobody-here"), connect_timeout=30).connect()


def test_the_policy_reconnects_after_the_relay_restarts() -> None:
    port = free_port()
    policy = EchoPolicy()
    with dial_out_in_thread(
        policy, f"ws://127.0.0.1:{port}", key="k", slug="phoenix", backoff=FAST
    ) as handle:
        with serve_relay_in_thread(SECRET, port=port) as relay:
            assert handle.wait_attached(1, timeout=30)
            with PolicyClient(token_url(relay.url, "phoenix"), action_dim=8, request_timeout=60) as client:
                assert client.infer(OBS)["actions"].shape == (10, 8)
        with serve_relay_in_thread(SECRET, port=port) as relay:  # a new relay process on the same address
            assert handle.wait_attached(2, timeout=60), "the policy did not come back"
            with PolicyClient(token_url(relay.url, "phoenix"), action_dim=8, request_timeout=60) as client:
                assert client.infer(OBS)["actions"].shape == (10, 8)


def test_backoff_grows_with_jitter_and_resets() -> None:
    import random

    backoff = dialout.Backoff(base=1.0, cap=8.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(6)]
    for n, delay in enumerate(delays):
        ceiling = min(8.0, 2.0**n)
        assert ceiling / 2 <= delay <= ceiling
    assert len(set(delays)) == len(delays)
    backoff.reset()
    assert 0.5 <= backoff.next_delay() <= 1.0


# --- Hostile dialled-in policies get what hostile direct ones get -----------------------------------------


def _data(channel: int, payload: bytes) -> bytes:
    return dialout.encode(dialout.DATA_BINARY, channel, payload)


@pytest.fixture
def relay_with_honest_dialout_session() -> Iterator[tuple[str, list]]:
    """A relay, and an honest dial-out session mid-request on another policy's link."""
    reported: list = []
    held = HeldPolicy()
    with (
        serve_relay_in_thread(SECRET, on_policy_error=lambda c, k, d: reported.append(k)) as relay,
        dialled(held, relay.url, "honest-out"),
        ThreadPoolExecutor(1) as pool,
    ):
        honest = PolicyClient(token_url(relay.url, "honest-out"), action_dim=8, request_timeout=120)
        pending = pool.submit(honest.infer, OBS)
        assert held.entered.wait(60)
        yield relay.url, reported
        held.release.set()
        assert pending.result(120)["actions"].shape == (10, 8)  # served through it all
        honest.close()


def _wait_reported(reported: list, count: int = 1) -> None:
    deadline = time.monotonic() + 30  # the hook runs after the lab's connection is closed
    while len(reported) < count and time.monotonic() < deadline:
        time.sleep(0.02)


@pytest.mark.parametrize("name", list(BOMBS))
def test_relay_refuses_dialled_in_policy_bombs(name: str, relay_with_honest_dialout_session) -> None:
    relay_url, reported = relay_with_honest_dialout_session
    frame, _ = BOMBS[name]
    with hostile_dialer(relay_url, "bomber", lambda ch, _: [_data(ch, frame)]), Bounded() as bounds:
        with connect(token_url(relay_url, "bomber")) as ws:
            assert ws.recv(timeout=60) == "policy error (code bad_metadata)"
            with pytest.raises(ConnectionClosedError) as closed:
                ws.recv(timeout=60)
    bounds.check()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    _wait_reported(reported)
    assert reported == ["bad_metadata"]


def test_a_dialled_in_policys_text_and_close_reason_never_reach_the_lab(
    relay_with_honest_dialout_session,
) -> None:
    relay_url, reported = relay_with_honest_dialout_session
    metadata = wire.packb({"arena_protocol": 1})
    secret_text = "Traceback: /home/owner/secret-checkpoint.ckpt"

    def answer(channel: int, kind: int) -> list[bytes]:
        if kind == dialout.OPEN:
            return [_data(channel, metadata)]
        return [
            dialout.encode(dialout.DATA_TEXT, channel, secret_text.encode()),
            dialout.encode(dialout.CLOSE, channel, (1011).to_bytes(2, "big") + b"owner's reason"),
        ]

    with hostile_dialer(relay_url, "leaky", answer):
        with connect(token_url(relay_url, "leaky")) as ws:
            ws.recv(timeout=60)  # the redacted metadata
            ws.send(wire.packb(OBS))
            texts = []
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    texts.append(ws.recv(timeout=60))
    assert texts[:1] == ["policy error (code policy_error)"]
    assert all("secret" not in str(t) for t in texts)
    assert closed.value.rcvd is not None and "owner" not in closed.value.rcvd.reason
    _wait_reported(reported)
    assert reported == ["policy_error"]


def test_an_oversize_frame_from_a_dialled_in_policy_is_refused_unread(
    relay_with_honest_dialout_session,
) -> None:
    relay_url, reported = relay_with_honest_dialout_session
    too_big = bytes(wire.REPLY_LIMITS.max_frame_bytes + 1)
    with hostile_dialer(relay_url, "hoser", lambda ch, _: [_data(ch, too_big)]), Bounded() as bounds:
        with connect(token_url(relay_url, "hoser")) as ws:
            assert ws.recv(timeout=60) == "policy error (code bad_metadata)"
            with pytest.raises(ConnectionClosedError):
                ws.recv(timeout=60)
    assert bounds.peak < 2 * wire.REPLY_LIMITS.max_frame_bytes + (32 << 20)
    _wait_reported(reported)
    assert reported == ["bad_metadata"]


def test_a_policy_that_overruns_its_channel_queue_loses_that_session_only(
    relay_with_honest_dialout_session,
) -> None:
    relay_url, _ = relay_with_honest_dialout_session
    reply = wire.packb({"actions": np.zeros((10, 8), np.float32)})
    flood = lambda ch, _: [_data(ch, wire.packb({"arena_protocol": 1}))] + [_data(ch, reply)] * 8  # noqa: E731
    with hostile_dialer(relay_url, "flooder", flood):
        with connect(token_url(relay_url, "flooder")) as ws:
            with pytest.raises(ConnectionClosed):
                for _ in range(20):
                    ws.recv(timeout=60)
                    ws.send(wire.packb(OBS))


def test_link_messages_are_checked() -> None:
    with pytest.raises(dialout.LinkProtocolError):
        dialout.decode(b"\x01\x00")
    with pytest.raises(dialout.LinkProtocolError):
        dialout.decode("text")
    with pytest.raises(dialout.LinkProtocolError):
        dialout.decode(b"\x09\x00\x00\x00\x01")
    assert dialout.decode(dialout.encode(dialout.DATA_TEXT, 7, b"hi")) == (dialout.DATA_TEXT, 7, b"hi")
    assert dialout.slug_of("dialout://my-policy") == "my-policy"
    assert dialout.slug_of("dialout://../x") is None
    assert dialout.slug_of("ws://host:1") is None
