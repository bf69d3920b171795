"""Whose fault a failed session is: a lost relay is the infrastructure's, never a policy's; a link that drops
once is reconnected and the session goes on."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from websockets.frames import CloseCode

from arena.models import Episode, EvaluationSession, Policy, Preference
from evaluator_client.link import policy_at_fault
from policy_server.base import BasePolicy
from policy_server.baselines import make_baseline
from policy_server.check import DRY_RUN_PROMPT
from policy_server.client import (
    BadAction,
    PolicyError,
    PolicyProtocolError,
    PolicyTimeout,
    PolicyUnauthorized,
    PolicyUnavailable,
)
from policy_server.server import serve_in_thread
from tests.client.proxy import FlakyLink

RUN = ("run", "--robot", "replica", "--judge", "auto", "--max-steps", "40", "--quiet", "--seed", "3")


@pytest.mark.parametrize(
    ("error", "policy_fault"),
    [
        (PolicyUnavailable("lost", reason="closed", close_code=CloseCode.GOING_AWAY), False),
        (PolicyUnavailable("lost", reason="closed", close_code=CloseCode.ABNORMAL_CLOSURE), False),
        (PolicyUnavailable("session closed", reason="closed", close_code=CloseCode.POLICY_VIOLATION), False),
        (PolicyUnavailable("no arena", reason="closed", close_code=CloseCode.TRY_AGAIN_LATER), False),
        (PolicyUnavailable("refused", reason="refused"), False),
        (PolicyUnavailable("HTTP 503", reason="not_websocket", status=503), False),
        (PolicyUnauthorized("expired token", status=401), False),
        (PolicyUnavailable("policy unavailable", reason="closed", close_code=CloseCode.BAD_GATEWAY), True),
        (PolicyError("policy error (code infer)"), True),
        (PolicyTimeout("no reply within 30 s"), True),
        (PolicyProtocolError("undecodable reply"), True),
        (BadAction("'actions' holds NaN"), True),
    ],
    ids=lambda value: value if isinstance(value, bool) else str(value),
)
def test_only_the_policys_own_failures_are_its_fault(error, policy_fault):
    assert policy_at_fault(error) is policy_fault


class Trips(BasePolicy):
    """The expert, which calls ``trip`` (in another thread) during its 3rd inference of a session."""

    def __init__(self, trip: Callable[[], None]) -> None:
        self.inner = make_baseline("expert")
        self.trip = trip
        self.calls = 0

    @property
    def metadata(self):
        return self.inner.metadata

    def reset(self, reset_info=None):
        self.inner.reset(reset_info)

    def infer(self, obs):
        if obs["prompt"] != DRY_RUN_PROMPT:
            self.calls += 1
            if self.calls == 3:
                tripping = threading.Thread(target=self.trip)
                tripping.start()
                tripping.join(30)
        return self.inner.infer(obs)


def _pool_of(network, trips: Trips):
    """Serve the tripping policy; with the expert baseline out of the pool, every session has it in a slot."""
    network.servers["expert"].stop()
    Policy.objects.filter(slug="expert").update(status="failing")
    return serve_in_thread(trips)


def test_relay_killed_mid_episode_is_an_infrastructure_fault(network):
    trips = Trips(network.relay.stop)
    with _pool_of(network, trips) as handle:
        network.register("tripping", handle.url)
        network.configure()
        assert network.eval(*RUN) == 1  # its only session aborted
    session = EvaluationSession.objects.get()
    assert session.state == "aborted"
    assert session.abort_fault == EvaluationSession.Fault.INFRASTRUCTURE
    assert "lost the relay" in session.abort_reason and "reconnect failed" in session.abort_reason
    assert session.policy_a.recheck_due_at is None and session.policy_b.recheck_due_at is None
    assert Preference.objects.count() == 0


def test_a_link_that_drops_once_is_reconnected_and_the_session_completes(network, settings, capsys):
    relay = FlakyLink("127.0.0.1", network.relay.port)
    settings.ARENA_RELAY_URL = relay.url.replace("http://", "ws://")

    def drop_once() -> None:
        relay.cut()  # every open connection goes without a closing handshake (1006)
        relay.restore()

    trips = Trips(drop_once)
    try:
        with _pool_of(network, trips) as handle:
            network.register("tripping", handle.url)
            network.configure()
            assert network.eval(*RUN) == 0
    finally:
        relay.close()
    session = EvaluationSession.objects.get()
    assert session.state == "submitted", session.abort_reason
    assert Episode.objects.filter(session=session).count() == 2
    assert "reconnected to the relay 1x" in capsys.readouterr().out
    assert trips.calls > 3  # the lost request was sent again on the new connection
