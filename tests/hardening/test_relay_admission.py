"""A relay token is good for its session only while the session is open, for one connection per slot.

Through the public interfaces only: the lab's HTTP API (live arena), the relay's websocket handshake, and the
relay's closing of an open connection. Each refusal happens at the handshake (HTTP 403/409/503), and an open
connection is closed (1008) within the relay's poll period (0.3 s here; waited for with generous timeouts).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from urllib.parse import urlsplit

import numpy as np
import pytest
from django.utils import timezone
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from arena.models import EvaluationSession
from arena.ports import free_port
from policy_server import wire
from policy_server.base import BasePolicy
from policy_server.check import dummy_observation, requirements_from_metadata
from policy_server.relay import serve_relay_in_thread
from policy_server.server import serve_in_thread
from tests.api.actors import (
    DROID_REQS,
    EPISODE,
    Actor,
    activate,
    make_actor,
    register_policy,
    register_robot,
    request_session,
)
from tests.client.proxy import FlakyLink

WAIT_S = 30.0
SESSION_CLOSED = 1008


class ZeroPolicy(BasePolicy):
    def infer(self, obs):
        return {"actions": np.zeros((10, 8), dtype=np.float32)}

    @property
    def metadata(self):
        return {k: v for k, v in DROID_REQS.items() if k != "action_horizon"}


@pytest.fixture
def live_pool(arena_relay, settings) -> Iterator[Actor]:
    """Two active policies served on loopback, a lab (Berkeley) with a robot; yields the lab."""
    settings.ARENA_MAX_OPEN_SESSIONS_PER_LAB = 10
    owner = make_actor("owner", owner="olivia", organization="Acme Robotics")
    with serve_in_thread(ZeroPolicy()) as first, serve_in_thread(ZeroPolicy()) as second:
        for slug, server in (("zero-one", first), ("zero-two", second)):
            register_policy(owner, slug, endpoint_url=server.url)
            activate(slug)
        lab = make_actor("lab", lab="Berkeley Lab", organization="Berkeley")
        register_robot(lab)
        yield lab


def open_session(lab: Actor) -> dict:
    response = request_session(lab)
    assert response.status_code == 201, response.json()
    return response.json()


def attach(url: str) -> ClientConnection:
    """An evaluator's connection, past the metadata frame."""
    ws = connect(url, open_timeout=WAIT_S, close_timeout=2)
    assert isinstance(ws.recv(timeout=WAIT_S), bytes)
    return ws


def refused_status(url: str) -> int:
    with pytest.raises(InvalidStatus) as refused:
        connect(url, open_timeout=WAIT_S).close()
    return refused.value.response.status_code


def closed_by_relay(ws: ClientConnection) -> int:
    """Wait until the relay closes ``ws`` (no frame is expected meanwhile); its closing code."""
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=WAIT_S)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


def report_both(lab: Actor, session_id: str) -> None:
    for slot in "AB":
        response = lab.post(f"/api/v1/sessions/{session_id}/episodes/", {**EPISODE, "slot": slot})
        assert response.status_code == 201, response.json()


def make_actor_from_key(key: str) -> Actor:
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    return Actor(name="second-key", client=client, key=key)


def test_tokens_die_with_the_preference(live_pool):
    lab = live_pool
    session = open_session(lab)
    urls = {slot: session["slots"][slot]["relay_url"] for slot in "AB"}
    running = attach(urls["A"])
    report_both(lab, session["id"])
    done = lab.post(f"/api/v1/sessions/{session['id']}/preference/", {"choice": "A", "reason": "steadier"})
    assert done.status_code == 201
    assert closed_by_relay(running) == SESSION_CLOSED
    assert refused_status(urls["A"]) == 403
    assert refused_status(urls["B"]) == 403


def test_tokens_die_with_an_abort(live_pool):
    lab = live_pool
    session = open_session(lab)
    urls = {slot: session["slots"][slot]["relay_url"] for slot in "AB"}
    running = attach(urls["B"])
    aborted = lab.post(f"/api/v1/sessions/{session['id']}/abort/", {"reason": "e-stop", "fault": "robot"})
    assert aborted.status_code == 200
    assert closed_by_relay(running) == SESSION_CLOSED
    assert refused_status(urls["A"]) == 403
    assert refused_status(urls["B"]) == 403


def test_tokens_die_when_the_lease_runs_out(live_pool):
    lab = live_pool
    session = open_session(lab)
    url = session["slots"]["A"]["relay_url"]
    running = attach(url)
    EvaluationSession.objects.filter(pk=session["id"]).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert closed_by_relay(running) == SESSION_CLOSED
    assert refused_status(url) == 403


def test_tokens_die_with_the_lab_key_they_were_minted_for(live_pool):
    lab = live_pool
    created = lab.post("/api/v1/keys/", {"name": "robot-pc"})
    assert created.status_code == 201, created.json()
    second = make_actor_from_key(created.json()["key"])
    session = open_session(lab)
    via_second = second.get(f"/api/v1/sessions/{session['id']}/").json()["slots"]["A"]["relay_url"]
    running = attach(via_second)
    revoked = lab.post(f"/api/v1/keys/{created.json()['prefix']}/revoke/")
    assert revoked.status_code == 200, revoked.json()
    assert closed_by_relay(running) == SESSION_CLOSED
    assert refused_status(via_second) == 403
    # The session itself is still open: a token minted for the lab's other (active) key still works.
    with attach(session["slots"]["A"]["relay_url"]):
        pass


def test_one_connection_per_slot_at_a_time(live_pool):
    lab = live_pool
    session = open_session(lab)
    url = session["slots"]["A"]["relay_url"]
    first = attach(url)
    assert refused_status(url) == 409
    # The other slot is not affected.
    with attach(session["slots"]["B"]["relay_url"]):
        pass
    first.close()
    deadline = time.monotonic() + WAIT_S
    while True:  # the relay releases the slot once it has seen the close
        try:
            attach(url).close()
            break
        except InvalidStatus as busy:
            assert busy.response.status_code == 409
            assert time.monotonic() < deadline, "the slot was never released"
            time.sleep(0.1)


def test_one_connection_per_slot_across_relays(live_pool, live_server, settings):
    lab = live_pool
    session = open_session(lab)
    url = session["slots"]["B"]["relay_url"]
    token = url.rsplit("/", 1)[1]
    with serve_relay_in_thread(settings.ARENA_RELAY_SECRET, arena_url=live_server.url) as other_relay:
        with attach(url):
            assert refused_status(f"{other_relay.url}/{token}") == 409
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                attach(f"{other_relay.url}/{token}").close()
                break
            except InvalidStatus as busy:
                assert busy.response.status_code == 409
                assert time.monotonic() < deadline, "the slot was never released"
                time.sleep(0.1)


def test_unreachable_arena_refuses_every_handshake(live_pool, settings):
    lab = live_pool
    url = open_session(lab)["slots"]["A"]["relay_url"]
    token = url.rsplit("/", 1)[1]
    nowhere = f"http://127.0.0.1:{free_port()}"
    with serve_relay_in_thread(settings.ARENA_RELAY_SECRET, arena_url=nowhere) as blind_relay:
        assert refused_status(f"{blind_relay.url}/{token}") == 503


def test_relay_cli_refuses_to_start_without_an_arena():
    env = {"ARENA_RELAY_SECRET": "a relay secret that is long enough", "PATH": "/usr/bin:/bin"}
    started = subprocess.run(
        [sys.executable, "-m", "policy_server.relay", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode != 0
    assert "ARENA_INTERNAL_URL" in started.stderr and "--arena-url" in started.stderr


def test_a_relay_that_loses_the_arena_closes_its_connections(live_pool, live_server, settings):
    """Past the attachment lease without a status answer the arena may give the slot to another relay, so this
    relay can no longer vouch for its connections: it closes them (1013) and refuses handshakes (503)."""
    settings.ARENA_RELAY_ATTACHMENT_LEASE_SECONDS = 2
    lab = live_pool
    token = open_session(lab)["slots"]["A"]["relay_url"].rsplit("/", 1)[1]
    target = urlsplit(live_server.url)
    link = FlakyLink(target.hostname, target.port)
    try:
        with serve_relay_in_thread(
            settings.ARENA_RELAY_SECRET, arena_url=link.url, poll_interval=0.3
        ) as relay:
            running = attach(f"{relay.url}/{token}")
            link.cut()
            assert closed_by_relay(running) == 1013
            assert refused_status(f"{relay.url}/{token}") == 503
    finally:
        link.close()


def test_concurrent_handshakes_on_one_token_admit_one(live_pool):
    """Eight connections racing on one slot's token: the arena's attachment admits exactly one."""
    lab = live_pool
    url = open_session(lab)["slots"]["A"]["relay_url"]
    racers = 8
    start = threading.Barrier(racers)

    def race(_: int) -> ClientConnection | int:
        start.wait(WAIT_S)
        try:
            return attach(url)
        except InvalidStatus as refused:
            return refused.response.status_code

    with ThreadPoolExecutor(racers) as pool:
        outcomes = list(pool.map(race, range(racers)))
    admitted = [o for o in outcomes if isinstance(o, ClientConnection)]
    refused = sorted(o for o in outcomes if isinstance(o, int))
    try:
        assert len(admitted) == 1, outcomes
        assert refused == [409] * (racers - 1), refused
    finally:
        for ws in admitted:
            ws.close()


class RaisingPolicy(ZeroPolicy):
    def infer(self, obs):
        raise RuntimeError(f"CUDA out of memory in /home/olivia/zero-raiser/model.py ({obs['prompt']})")


def test_a_policy_that_raises_tells_its_owner_and_not_the_lab(arena_relay, settings):
    """Through the deployed relay: the lab gets the fixed error text and close 1011, the policy's owner reads
    the traceback on the policy's incidents (and nobody else does)."""
    owner = make_actor("owner", owner="olivia", organization="Acme Robotics")
    with serve_in_thread(RaisingPolicy()) as raising:
        for slug in ("zero-raiser", "zero-raiser-twin"):
            register_policy(owner, slug, endpoint_url=f"{raising.url}/{slug}")
            activate(slug)
        lab = make_actor("lab", lab="Berkeley Lab", organization="Berkeley")
        register_robot(lab)
        session = open_session(lab)
        obs = {**dummy_observation(requirements_from_metadata({})), "prompt": "open the drawer"}
        ws = attach(session["slots"]["A"]["relay_url"])
        ws.send(wire.packb(obs))
        assert ws.recv(timeout=WAIT_S) == "policy error (code policy_error)"
        assert closed_by_relay(ws) == 1011
    slug = EvaluationSession.objects.get(pk=session["id"]).policy_a.slug
    path = f"/api/v1/policies/{slug}/incidents/"
    deadline = time.monotonic() + WAIT_S
    while not owner.get(path).json():
        assert time.monotonic() < deadline, "the owner never heard of the error"
        time.sleep(0.1)
    (incident,) = owner.get(path).json()
    assert incident["kind"] == "policy_error"
    assert "Traceback" in incident["detail"] and "/home/olivia/zero-raiser/model.py" in incident["detail"]
    assert lab.get(path).status_code == 403
    assert "/home/olivia" not in lab.get(f"/api/v1/sessions/{session['id']}/").content.decode()
