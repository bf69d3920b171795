"""Dial-out policies with the arena: owner keys checked, health-checked, assigned and evaluated end to end
through two relay processes, and back after a relay restarts.

Relay 1 is a separate process (``python -m policy_server.relay``); relay 2 is the one the arena hands to labs
(``ARENA_RELAY_URL``, the ``arena_relay`` fixture). The policy servers bind nothing: they only connect out, one
to each relay, so that a session's slot served by relay 2 reaches a policy attached to relay 1 (forwarded) and
the other slot a policy attached to relay 2 itself.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import connect

from arena.models import EvaluationSession, Policy, PolicyCheck, PolicyDialout, PolicyIncident
from arena.ports import free_port
from arena.tasks import policy_check_one
from policy_server import dialout, wire
from policy_server.base import BasePolicy
from policy_server.check import dummy_observation, requirements_from_metadata
from policy_server.client import PolicyClient
from policy_server.server import dial_out_in_thread
from tests.api.actors import (
    DROID_REQS,
    Actor,
    activate,
    make_actor,
    open_session,
    register_policy,
    register_robot,
)
from tests.dialout_helpers import hostile_dialer

WAIT_S = 60.0
FAST = dialout.Backoff(base=0.05, cap=0.5)
METADATA = {k: v for k, v in DROID_REQS.items() if k != "action_horizon"}
OBS = {**dummy_observation(requirements_from_metadata(METADATA)), "prompt": "put the marker in the cup"}


class CountingPolicy(BasePolicy):
    def __init__(self) -> None:
        self.calls = 0

    def infer(self, obs):
        self.calls += 1
        return {"actions": np.zeros((10, 8), dtype=np.float32)}

    @property
    def metadata(self):
        return METADATA


class RelayProcess:
    """``python -m policy_server.relay`` on a fixed port, admitted by the live arena; restartable."""

    def __init__(self, arena_url: str, secret: str) -> None:
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}"
        self._arena_url = arena_url
        self._env = {**os.environ, "ARENA_RELAY_SECRET": secret}
        self._process: subprocess.Popen | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "policy_server.relay", "--host", "127.0.0.1", "--port", str(self.port)]
            + ["--arena-url", self._arena_url, "--poll-interval", "0.3"],
            env=self._env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2).close()
                return
            except OSError:
                assert self._process.poll() is None, "the relay process exited"
                assert time.monotonic() < deadline, "the relay process did not come up"
                time.sleep(0.1)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(30)


@pytest.fixture
def relays(arena_relay, live_server, settings) -> Iterator[tuple[RelayProcess, str]]:
    """(relay 1: a separate process, relay 2's URL: the relay the arena hands to labs)."""
    first = RelayProcess(live_server.url, settings.ARENA_RELAY_SECRET)
    first.start()
    try:
        yield first, arena_relay.url
    finally:
        first.stop()


@pytest.fixture
def owner() -> Actor:
    return make_actor("owner", owner="olivia", organization="Acme Robotics")


@contextlib.contextmanager
def dialled(policy: BasePolicy, relay_url: str, *, key: str, slug: str) -> Iterator:
    with dial_out_in_thread(policy, relay_url, key=key, slug=slug, backoff=FAST) as handle:
        assert handle.wait_attached(1, timeout=WAIT_S), handle.refused
        yield handle


def register_dialout(owner: Actor, slug: str) -> Policy:
    register_policy(owner, slug, endpoint_url=dialout.endpoint_for(slug))
    return Policy.objects.get(slug=slug)


def wait_located(slug: str, relay_url: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not PolicyDialout.objects.filter(policy__slug=slug, relay_url=relay_url).exists():
        assert time.monotonic() < deadline, f"{slug} never attached to {relay_url}"
        time.sleep(0.05)


def test_dialout_policies_are_checked_assigned_and_evaluated_through_two_relays(relays, owner):
    first, second_url = relays
    far, near = register_dialout(owner, "far-away"), register_dialout(owner, "near-by")
    assert not policy_check_one(far.pk)  # nothing connected yet
    assert PolicyCheck.objects.filter(policy=far).latest("at").error_code == "not_connected"
    far_policy, near_policy = CountingPolicy(), CountingPolicy()
    with (
        dialled(far_policy, first.url, key=owner.key, slug="far-away"),
        dialled(near_policy, second_url, key=owner.key, slug="near-by"),
    ):
        wait_located("far-away", first.url)
        wait_located("near-by", second_url)
        # The arena's health check reaches each through the relay holding its link.
        assert policy_check_one(far.pk) and policy_check_one(near.pk)
        assert {p.status for p in Policy.objects.filter(pk__in=[far.pk, near.pk])} == {Policy.Status.ACTIVE}
        assert far_policy.calls == 1 and near_policy.calls == 1  # the check's dry run

        lab = make_actor("lab", lab="Berkeley Lab", organization="Berkeley")
        register_robot(lab)
        session = open_session(lab)
        for slot in "AB":
            url = session["slots"][slot]["relay_url"]
            assert url.startswith(second_url + "/")  # every slot is served by relay 2
            with PolicyClient(url, action_dim=8, request_timeout=WAIT_S) as client:
                assert client.infer(OBS)["actions"].shape == (10, 8)
        # One session slot each: the far policy's went relay 2 -> relay 1 -> its link.
        assert far_policy.calls == 2 and near_policy.calls == 2
        for slot, progress in (("A", 70), ("B", 30)):
            episode = {"slot": slot, "progress": progress, "success": False, "steps": 1, "duration_s": 1.0}
            assert lab.post(f"/api/v1/sessions/{session['id']}/episodes/", episode).status_code == 201
        done = lab.post(
            f"/api/v1/sessions/{session['id']}/preference/", {"choice": "A", "reason": "steadier"}
        )
        assert done.status_code == 201, done.json()


def test_a_dialout_policy_comes_back_after_its_relay_restarts(relays, owner):
    first, _ = relays
    policy = register_dialout(owner, "phoenix")
    with dialled(CountingPolicy(), first.url, key=owner.key, slug="phoenix") as handle:
        wait_located("phoenix", first.url)
        assert policy_check_one(policy.pk)
        first.stop()
        first.start()  # the same address, a new process that knows nothing of the old link
        assert handle.wait_attached(2, timeout=WAIT_S), "the policy did not reconnect"
        deadline = time.monotonic() + WAIT_S
        while not policy_check_one(policy.pk):
            assert time.monotonic() < deadline, "the reconnected policy never passed a check"
            time.sleep(0.2)


def test_the_newest_link_wins_and_the_older_server_stops(relays, owner):
    first, second_url = relays
    policy = register_dialout(owner, "mover")
    with dialled(CountingPolicy(), first.url, key=owner.key, slug="mover") as old:
        wait_located("mover", first.url)
        with dialled(CountingPolicy(), second_url, key=owner.key, slug="mover") as new:
            wait_located("mover", second_url)
            assert policy_check_one(policy.pk)
            deadline = time.monotonic() + WAIT_S
            while old.refused is None:  # relay 1 closes the replaced link at its next renewal
                assert time.monotonic() < deadline, "the old relay never closed the superseded link"
                time.sleep(0.05)
            assert "another server now serves" in old.refused
            assert new.refused is None and new.attachments == 1
            assert PolicyDialout.objects.get(policy=policy).relay_url == second_url


def listening_sockets(pid: int) -> list[str]:
    """The TCP sockets process ``pid`` listens on (from /proc: its socket inodes in LISTEN state)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    listening = []
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: TCP_LISTEN
                    listening.append(fields[1])
    return listening


def test_the_cli_dials_out_through_the_relay_the_arena_names(relays, owner, live_server):
    """``arena-policy serve --connect ARENA_URL``: the relay comes from the arena, the process binds nothing, and
    the arena's check passes through that relay."""
    _, second_url = relays
    policy = register_dialout(owner, "cli-out")
    server = subprocess.Popen(
        [sys.executable, "-m", "policy_server", "serve", "benchmarks.protocol:ZeroPolicy"]
        + ["--connect", live_server.url, "--key", owner.key, "--policy", "cli-out"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_located("cli-out", second_url)  # ARENA_RELAY_URL: relay 2
        assert listening_sockets(server.pid) == []
        assert policy_check_one(policy.pk)
    finally:
        server.terminate()
        server.wait(30)
    assert server.returncode == 0  # SIGTERM: a clean stop


def test_a_wrong_key_is_refused(relays, owner):
    first, _ = relays
    register_dialout(owner, "guarded")
    register_policy(owner, "direct-one", endpoint_url="ws://10.9.8.7:9001/direct")
    rival = make_actor("rival", owner="rex", organization="Rival Robotics")
    lab = make_actor("lab", lab="Berkeley Lab", organization="Berkeley")
    for key, slug in (
        (rival.key, "guarded"),  # another organization's owner
        (lab.key, "guarded"),  # a lab key
        (owner.key[:-2] + "xx", "guarded"),  # a wrong secret
        (owner.key, "direct-one"),  # the owner's, but the policy is not dial-out
        (owner.key, "no-such-policy"),
    ):
        with dial_out_in_thread(CountingPolicy(), first.url, key=key, slug=slug, backoff=FAST) as handle:
            assert not handle.wait_attached(1, timeout=WAIT_S)
            assert handle.refused is not None and "HTTP 403" in handle.refused, (key, slug)
    assert not PolicyDialout.objects.exists()


def test_the_cli_names_the_refusal_in_one_line(relays, owner):
    first, _ = relays
    register_dialout(owner, "guarded")
    done = subprocess.run(
        [sys.executable, "-m", "policy_server", "serve", "--baseline", "expert"]
        + ["--connect", first.url, "--key", "pa_000000000000_wrong", "--policy", "guarded"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("arena-policy: the relay refused policy 'guarded' with HTTP 403")
    assert "Traceback" not in done.stderr


def test_a_forwarded_oversize_frame_gets_the_direct_treatment(relays, owner):
    """A hostile policy attached to relay 1, a lab on relay 2: the lab gets the fixed error text and close 1011,
    the owner an incident, exactly as for a direct endpoint that sends an oversize frame."""
    first, second_url = relays
    register_dialout(owner, "hoser")
    register_dialout(owner, "near-by")
    activate("hoser", METADATA)  # it could never pass a real check
    activate("near-by", METADATA)
    frame = bytes(wire.REPLY_LIMITS.max_frame_bytes + 1)
    with (
        hostile_dialer(
            first.url, "hoser", lambda ch, _: [dialout.encode(dialout.DATA_BINARY, ch, frame)], key=owner.key
        ),
        dialled(CountingPolicy(), second_url, key=owner.key, slug="near-by"),
    ):
        wait_located("hoser", first.url)
        lab = make_actor("lab", lab="Berkeley Lab", organization="Berkeley")
        register_robot(lab)
        session = open_session(lab)
        stored = EvaluationSession.objects.get(pk=session["id"])
        slot = "A" if stored.policy_a.slug == "hoser" else "B"
        with connect(session["slots"][slot]["relay_url"], open_timeout=WAIT_S) as ws:
            assert ws.recv(timeout=WAIT_S) == "policy error (code bad_metadata)"
            with pytest.raises(ConnectionClosedError) as closed:
                ws.recv(timeout=WAIT_S)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
        deadline = time.monotonic() + WAIT_S
        while not PolicyIncident.objects.filter(policy__slug="hoser").exists():
            assert time.monotonic() < deadline, "no incident reached the owner"
            time.sleep(0.05)
        assert PolicyIncident.objects.get(policy__slug="hoser").kind == "bad_metadata"


@pytest.mark.django_db
def test_a_dialout_endpoint_names_its_own_slug(owner):
    response = owner.post(
        "/api/v1/policies/",
        {"slug": "mine", "name": "Mine", "endpoint_url": "dialout://someone-else", "license": "MIT"},
    )
    assert response.status_code == 403 and response.json()["error"]["code"] == "dialout_slug_mismatch"
    register_dialout(owner, "mine-too")
    changed = owner.patch("/api/v1/policies/mine-too/", {"endpoint_url": "dialout://other-one"})
    assert changed.status_code == 403, changed.json()


@pytest.mark.django_db
def test_a_new_version_of_a_dialout_policy_is_attached_under_its_own_slug(owner):
    register_dialout(owner, "versioned")
    changed = owner.patch("/api/v1/policies/versioned/", {"version_label": "step-20000"})
    assert changed.status_code == 200, changed.json()
    new = changed.json()
    assert new["slug"] == "versioned-v2" and new["previous_version"] == "versioned"
    assert Policy.objects.get(slug="versioned-v2").endpoint_url == dialout.endpoint_for("versioned-v2")
    assert Policy.objects.get(slug="versioned").status == Policy.Status.RETIRED
