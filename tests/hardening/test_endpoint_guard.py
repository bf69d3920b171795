"""Policy endpoints cannot turn the arena against its own network (SSRF), and a check never reads a peer's reply
out to the owner.

With ``ARENA_ENDPOINT_ALLOW=public`` (the production default), registrations and edits that name a metadata
service, a private or loopback address in any spelling are refused before a single packet is sent: loopback
stand-ins that count connections see none. Connect-time checks hold against DNS rebinding (the resolver is the
external part, so the test answers for it at the ``getaddrinfo`` boundary). Checks of a stand-in that answers
HTTP report only a classified reason, redirects are never followed, and an endpoint registered by another
organization needs proof of control (a nonce in its metadata).
"""

from __future__ import annotations

import socket
import threading

import numpy as np
import pytest

from arena.models import Policy, PolicyCheck
from arena.tasks import policy_check_one
from policy_server import netguard
from policy_server.base import BasePolicy
from policy_server.check import CHECK_MESSAGES
from policy_server.client import PolicyClient, PolicyUnavailable
from policy_server.relay import serve_relay_in_thread
from policy_server.server import serve_in_thread
from tests.api.actors import DROID_CONFIG, register_policy, register_robot, request_session
from tests.hardening.standins import SECRET_BODY, ipv6_loopback_available, stand_in

PUBLIC_ADDRESS = "93.184.215.14"  # a globally routable address the tests never connect to


class DroidPolicy(BasePolicy):
    """Constant 10 x 8 joint-velocity chunks; ``extra`` is added to the metadata (an owner's nonce, say)."""

    def __init__(self) -> None:
        self.extra: dict[str, object] = {}

    def infer(self, obs):
        return {"actions": np.zeros((10, 8), dtype=np.float32)}

    @property
    def metadata(self):
        return {**DROID_CONFIG, **self.extra}


@pytest.fixture
def public_only(settings):
    """The production default: only public addresses."""
    settings.ARENA_ENDPOINT_ALLOW = "public"


def _register(owner, slug: str, url: str):
    return owner.post("/api/v1/policies/", {"slug": slug, "name": slug, "endpoint_url": url})


def test_ssrf_registrations_and_edits_are_refused_without_any_traffic(
    public_only, owner, django_capture_on_commit_callbacks
):
    with stand_in() as v4, stand_in(host="::1" if ipv6_loopback_available() else "127.0.0.1") as v6:
        port = v4.port
        urls = [
            "ws://169.254.169.254/latest/meta-data/iam/security-credentials/",
            "ws://metadata.google.internal/computeMetadata/v1/",
            "ws://[fd00:ec2::254]/latest/meta-data/",
            f"ws://2130706433:{port}",
            f"ws://0x7f.0.0.1:{port}",
            f"ws://0177.0.0.1:{port}",
            f"ws://localhost:{port}",
            f"ws://127.0.0.1:{port}",
            f"ws://[::1]:{v6.port}",
            f"ws://[::ffff:127.0.0.1]:{port}",
            f"ws://[::ffff:7f00:1]:{port}",
            "ws://10.0.0.5:8000",
            "ws://192.168.1.20:8000",
            "ws://100.64.0.9:8000",
            "ws://0.0.0.0:8000",
            "ws://[fe80::1]:8000",
        ]
        with django_capture_on_commit_callbacks(execute=True):
            for k, url in enumerate(urls):
                response = _register(owner, f"ssrf-{k}", url)
                body = response.json()
                assert response.status_code == 403, (url, body)
                assert (body["error"]["code"], body["error"]["field"]) == (
                    "endpoint_not_allowed",
                    "endpoint_url",
                )
            register_policy(owner, "honest", endpoint_url="ws://policy.acme.example:8000")
            for url in urls[:8]:
                edit = owner.patch("/api/v1/policies/honest/", {"endpoint_url": url})
                assert edit.status_code == 403 and edit.json()["error"]["code"] == "endpoint_not_allowed"
        assert not Policy.objects.filter(slug__startswith="ssrf-").exists()
        assert Policy.objects.get(slug="honest").endpoint_url == "ws://policy.acme.example:8000"
        assert (v4.connections, v6.connections) == (0, 0)


def test_names_that_resolve_to_forbidden_addresses_are_refused_without_any_traffic(
    public_only, owner, monkeypatch
):
    """An innocent-looking name of the owner's own DNS that answers a metadata, private or loopback address (or
    a mix with a public one) is refused at registration: only the resolver is asked."""
    real_getaddrinfo = socket.getaddrinfo
    with stand_in() as target:
        answers = {
            "creds.owner.test": ["169.254.169.254"],
            "intranet.owner.test": ["10.0.0.5"],
            "mixed.owner.test": [PUBLIC_ADDRESS, "127.0.0.1"],
            "loop.owner.test": ["127.0.0.1"],
            "mapped.owner.test": ["::ffff:127.0.0.1"],
        }

        def resolver(host, port, *args, **kwargs):
            if host not in answers:
                return real_getaddrinfo(host, port, *args, **kwargs)
            return [
                (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, int(port)))
                for a in answers[host]
            ]

        monkeypatch.setattr(socket, "getaddrinfo", resolver)
        for k, host in enumerate(answers):
            response = _register(owner, f"named-{k}", f"ws://{host}:{target.port}/")
            assert response.status_code == 403, (host, response.json())
            assert response.json()["error"]["code"] == "endpoint_not_allowed"
        assert not Policy.objects.filter(slug__startswith="named-").exists()
        assert target.connections == 0


def test_a_name_rebound_to_loopback_after_registration_is_not_relayed(
    public_only, settings, owner, lab1, monkeypatch
):
    """The relay checks the address at its own connect: a name that answered a public address at registration
    and answers loopback when a lab's session opens reaches nothing."""
    real_getaddrinfo = socket.getaddrinfo
    answer = [PUBLIC_ADDRESS]

    def resolver(host, port, *args, **kwargs):
        if not host.endswith(".rebind.test"):
            return real_getaddrinfo(host, port, *args, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answer[0], int(port)))]

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    with (
        stand_in() as target,
        serve_relay_in_thread(settings.ARENA_RELAY_SECRET, endpoint_allow="public") as relay,
    ):
        settings.ARENA_RELAY_URL = relay.url.rstrip("/")
        for slug in ("rebound-a", "rebound-b"):
            register_policy(owner, slug, endpoint_url=f"ws://{slug}.rebind.test:{target.port}")
            Policy.objects.filter(slug=slug).update(status=Policy.Status.ACTIVE)
        answer[0] = "127.0.0.1"
        register_robot(lab1)
        session = request_session(lab1)
        assert session.status_code == 201, session.json()
        for slot in ("A", "B"):
            with pytest.raises(PolicyUnavailable):
                PolicyClient(session.json()["slots"][slot]["relay_url"], retries=0, connect_timeout=10)
        assert target.connections == 0


def test_a_stored_loopback_endpoint_is_neither_checked_nor_relayed(settings, owner, lab1):
    """An endpoint stored while loopback was allowed: once the setting is public, neither the checker nor
    the relay opens a connection to it."""
    with (
        stand_in() as target,
        serve_relay_in_thread(settings.ARENA_RELAY_SECRET, endpoint_allow="public") as relay,
    ):
        settings.ARENA_RELAY_URL = relay.url.rstrip("/")
        url = f"ws://127.0.0.1:{target.port}"
        for slug in ("stored-a", "stored-b"):
            register_policy(owner, slug, endpoint_url=url)
            Policy.objects.filter(slug=slug).update(status=Policy.Status.ACTIVE)
        settings.ARENA_ENDPOINT_ALLOW = "public"
        assert policy_check_one(Policy.objects.get(slug="stored-a").pk) is False
        check = PolicyCheck.objects.get(policy__slug="stored-a")
        assert check.error_code == "address_not_allowed" and "loopback" in check.message
        register_robot(lab1)
        session = request_session(lab1)
        assert session.status_code == 201, session.json()
        with pytest.raises(PolicyUnavailable):
            PolicyClient(session.json()["slots"]["A"]["relay_url"], retries=0, connect_timeout=10)
        assert target.connections == 0


def test_dns_rebinding_between_registration_and_connect_does_not_pass(
    public_only, settings, owner, monkeypatch
):
    """The name answers a public address at registration, then a loopback one: the check refuses to connect
    (and sends nothing); within one connect the name is resolved once, so a second answer cannot redirect it."""
    real_getaddrinfo = socket.getaddrinfo
    answers: list[str] = [PUBLIC_ADDRESS]

    def resolver(host, port, *args, **kwargs):
        if host != "policy.rebind.test":
            return real_getaddrinfo(host, port, *args, **kwargs)
        address = answers.pop(0) if len(answers) > 1 else answers[0]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port)))]

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    with stand_in() as target:
        register_policy(owner, "rebinder", endpoint_url=f"ws://policy.rebind.test:{target.port}")
        answers[:] = ["127.0.0.1"]
        assert policy_check_one(Policy.objects.get(slug="rebinder").pk) is False
        assert Policy.objects.get(slug="rebinder").last_check_error.startswith("address_not_allowed")
        assert target.connections == 0

    # Loopback allowed (a self-hosted arena): the first answer is the real server, every later one the
    # metadata address. The check passes because it connects to the address it checked.
    settings.ARENA_ENDPOINT_ALLOW = "loopback"
    with serve_in_thread(DroidPolicy()) as server:
        answers[:] = ["127.0.0.1", "169.254.169.254"]
        Policy.objects.filter(slug="rebinder").update(endpoint_url=f"ws://policy.rebind.test:{server.port}")
        assert policy_check_one(Policy.objects.get(slug="rebinder").pk) is True


def test_a_resolver_that_never_answers_holds_neither_registration_nor_check(settings, owner, monkeypatch):
    """A hostile name server (here: a resolver that never returns) cannot pin a web request or a check."""
    real_getaddrinfo = socket.getaddrinfo
    stuck = threading.Event()

    def resolver(host, port, *args, **kwargs):
        if host == "policy.tarpit.test":
            stuck.wait(timeout=600)  # longer than the suite's per-test timeout: a hang fails the test
            raise socket.gaierror(socket.EAI_AGAIN, "gave up")
        return real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    monkeypatch.setattr(netguard, "RESOLVE_TIMEOUT_S", 0.5)
    settings.ARENA_CHECK_TIMEOUT_SECONDS = 1
    try:
        register_policy(owner, "tarpit", endpoint_url="ws://policy.tarpit.test:8000")
        assert policy_check_one(Policy.objects.get(slug="tarpit").pk) is False
        assert Policy.objects.get(slug="tarpit").last_check_error.startswith("unreachable")
    finally:
        stuck.set()


@pytest.mark.parametrize("status", ["200 OK", "404 Not Found", "500 Internal Server Error"])
def test_a_check_never_echoes_the_body_of_an_http_reply(owner, status):
    with stand_in(status=status) as metadata_service:
        register_policy(owner, "echo-probe", endpoint_url=f"ws://127.0.0.1:{metadata_service.port}/latest")
        assert policy_check_one(Policy.objects.get(slug="echo-probe").pk) is False
    assert metadata_service.connections == 1
    policy = Policy.objects.get(slug="echo-probe")
    checks = owner.get("/api/v1/policies/echo-probe/checks/").json()
    seen = " ".join([policy.last_check_error, *(c["message"] for c in checks)])
    assert SECRET_BODY not in seen and "stand-in-secret" not in seen and "AKIA" not in seen
    assert checks[0]["error_code"] == "not_websocket"
    assert checks[0]["message"] == CHECK_MESSAGES["not_websocket"].format(answer=f"HTTP {status[0]}xx")


def test_error_text_does_not_tell_closed_ports_apart(owner):
    """Two closed ports give the same fixed sentence (the error text used to carry the exception's text)."""
    with stand_in() as first, stand_in() as second:
        closed = [first.port, second.port]
    messages = set()
    for k, port in enumerate(closed):
        register_policy(owner, f"closed-{k}", endpoint_url=f"ws://127.0.0.1:{port}")
        policy_check_one(Policy.objects.get(slug=f"closed-{k}").pk)
        messages.add(PolicyCheck.objects.get(policy__slug=f"closed-{k}").message)
    assert messages == {CHECK_MESSAGES["refused"]}


def test_the_checker_does_not_follow_a_redirect(owner):
    with stand_in() as target:
        location = f"ws://127.0.0.1:{target.port}/"
        with stand_in(status="302 Found", body="", headers={"Location": location}) as redirector:
            register_policy(owner, "redirector", endpoint_url=f"ws://127.0.0.1:{redirector.port}")
            assert policy_check_one(Policy.objects.get(slug="redirector").pk) is False
            assert redirector.connections == 1
        assert target.connections == 0
    check = PolicyCheck.objects.get(policy__slug="redirector")
    assert check.error_code == "redirect_refused" and location not in check.message


def test_another_organizations_endpoint_needs_proof_of_control(owner, outsider):
    policy = DroidPolicy()
    with serve_in_thread(policy) as server:
        register_policy(owner, "acme-original", endpoint_url=server.url)
        assert policy_check_one(Policy.objects.get(slug="acme-original").pk) is True
        claim = _register(outsider, "copycat", f"{server.url}/")
        assert claim.status_code == 409, claim.json()
        error = claim.json()["error"]
        assert (error["code"], error["field"]) == ("endpoint_taken", "endpoint_url")
        nonce = error["message"].split('arena_nonce = "', 1)[1].split('"', 1)[0]
        assert len(nonce) == 32
        assert not Policy.objects.filter(slug="copycat").exists()
        # The same organization may register its own endpoint twice without proof.
        register_policy(owner, "acme-second", endpoint_url=server.url)
        # Another organization's nonce does not prove anything.
        policy.extra = {"arena_nonce": "0" * 32}
        assert _register(outsider, "copycat", server.url).status_code == 409
        # An edit onto the endpoint needs the proof too.
        register_policy(outsider, "outsider-own", endpoint_url="ws://outsider.example:9000")
        edit = outsider.patch(
            "/api/v1/policies/outsider-own/", {"endpoint_url": server.url, "version_label": "v1"}
        )
        assert edit.status_code == 409 and edit.json()["error"]["code"] == "endpoint_taken"
    # The server's operator restarts it serving the outsider's nonce (``arena-policy serve --arena-nonce``):
    # control is proven, and the organizations that could not prove it lose the endpoint.
    with serve_in_thread(DroidPolicy(), port=server.port, arena_nonce=nonce) as proving:
        proven = _register(outsider, "copycat", proving.url)
        assert proven.status_code == 201, proven.json()
        assert proven.json()["endpoint_proven_at"]
        assert policy_check_one(Policy.objects.get(slug="copycat").pk) is True
        assert Policy.objects.get(slug="copycat").status == "active"
        assert policy_check_one(Policy.objects.get(slug="acme-original").pk) is False
        original = Policy.objects.get(slug="acme-original")
        assert original.status == "pending" and original.last_check_error.startswith("endpoint_claimed")
        # Acme learns its own nonce by sending its endpoint again; it cannot prove control of this server.
        again = owner.patch("/api/v1/policies/acme-original/", {"endpoint_url": proving.url})
        assert again.status_code == 409 and again.json()["error"]["code"] == "endpoint_taken"
        assert nonce not in again.json()["error"]["message"]


def test_another_spelling_of_a_registered_server_needs_proof_too(owner, outsider, monkeypatch):
    """A policy server answers on every path, and a machine has many names: another path on the same host and
    port, the host's IP address, ``localhost`` for 127.0.0.1 or a name of the outsider's own that resolves to
    the same address all reach Acme's server, so each needs the proof that the exact URL needs. Once the
    outsider proves control through one of them, Acme's unproven policy on the other spelling is claimed."""
    real_getaddrinfo = socket.getaddrinfo

    def resolver(host, port, *args, **kwargs):
        if host == "acme-alias.outsider.test":  # the outsider's own DNS name, pointed at Acme's machine
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", int(port)))]
        return real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    with serve_in_thread(DroidPolicy()) as server:
        register_policy(owner, "acme-original", endpoint_url=f"ws://localhost:{server.port}/policy")
        assert policy_check_one(Policy.objects.get(slug="acme-original").pk) is True
        spellings = [
            f"ws://localhost:{server.port}/another/path",
            f"ws://localhost:{server.port}",
            f"ws://127.0.0.1:{server.port}/policy",
            f"ws://acme-alias.outsider.test:{server.port}/",
        ]
        nonces = set()
        for k, url in enumerate(spellings):
            claim = _register(outsider, f"alias-{k}", url)
            assert claim.status_code == 409, (url, claim.json())
            error = claim.json()["error"]
            assert error["code"] == "endpoint_taken"
            nonces.add(error["message"].split('arena_nonce = "', 1)[1].split('"', 1)[0])
        assert not Policy.objects.filter(slug__startswith="alias-").exists()
        # Another port on the same machine is another server.
        register_policy(outsider, "outsider-elsewhere", endpoint_url=f"ws://127.0.0.1:{server.port + 1}")
    nonce = _register(outsider, "alias-3", spellings[3]).json()["error"]["message"]
    nonce = nonce.split('arena_nonce = "', 1)[1].split('"', 1)[0]
    assert nonce in nonces
    with serve_in_thread(DroidPolicy(), port=server.port, arena_nonce=nonce):
        proven = _register(outsider, "alias-3", spellings[3])
        assert proven.status_code == 201, proven.json()
        original = Policy.objects.get(slug="acme-original")
        assert original.status == "pending"
        assert policy_check_one(original.pk) is False
        assert Policy.objects.get(slug="acme-original").last_check_error.startswith("endpoint_claimed")
        assert policy_check_one(Policy.objects.get(slug="alias-3").pk) is True


def test_a_server_serving_its_owners_nonce_fails_the_checks_of_anyone_elses_alias(
    owner, outsider, monkeypatch
):
    """The owner serves the nonce its policy view shows. A name of the outsider's that pointed elsewhere at
    registration and at the owner's machine since reaches the owner's server: its checks fail (endpoint_claimed)
    and it never becomes active, while the owner's own checks pass."""
    real_getaddrinfo = socket.getaddrinfo
    answer = ["127.0.0.2"]

    def resolver(host, port, *args, **kwargs):
        if host != "later-alias.outsider.test":
            return real_getaddrinfo(host, port, *args, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answer[0], int(port)))]

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    with serve_in_thread(DroidPolicy()) as plain:
        register_policy(owner, "acme-served", endpoint_url=f"ws://localhost:{plain.port}")
    nonce = owner.get("/api/v1/policies/acme-served/").json()["endpoint_nonce"]
    assert len(nonce) == 32
    with serve_in_thread(DroidPolicy(), port=plain.port, arena_nonce=nonce):
        assert policy_check_one(Policy.objects.get(slug="acme-served").pk) is True
        register_policy(outsider, "later-alias", endpoint_url=f"ws://later-alias.outsider.test:{plain.port}")
        answer[0] = "127.0.0.1"
        assert policy_check_one(Policy.objects.get(slug="later-alias").pk) is False
        alias = Policy.objects.get(slug="later-alias")
        assert alias.status == "pending" and alias.last_check_error.startswith("endpoint_claimed")
        assert policy_check_one(Policy.objects.get(slug="acme-served").pk) is True
    assert outsider.get("/api/v1/policies/acme-served/").json().get("endpoint_nonce") is None


class RecordingPolicy(DroidPolicy):
    """A :class:`DroidPolicy` that counts the observations it was sent."""

    def __init__(self) -> None:
        super().__init__()
        self.observations = 0

    def infer(self, obs):
        self.observations += 1
        return super().infer(obs)


RELAY_WAIT_S = 30.0


def _owner_hears_of(actor, slug: str, kind: str) -> bool:
    """Whether ``actor`` (the policy's owner) reads an incident of ``kind`` for ``slug`` within
    ``RELAY_WAIT_S`` (the relay reports in the background)."""
    import time

    path = f"/api/v1/policies/{slug}/incidents/"
    deadline = time.monotonic() + RELAY_WAIT_S
    while kind not in [incident["kind"] for incident in actor.get(path).json()]:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_the_relay_refuses_a_proven_endpoint_served_by_a_server_without_its_nonce(arena_relay, settings):
    """Outsider proves control of a server its policy shares with Acme; at session time another server answers
    there (the endpoint's name now points at Acme's machine, which serves Acme's nonce, or at one serving none).
    The relay compares the metadata's ``arena_nonce`` with what the arena expects for the slot's policy: the lab
    gets the generic error and nothing of that server (no metadata, and its observation never reaches it), the
    outsider's incident names the reason. With the outsider's own server back, the slot is relayed as usual,
    without the nonce."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    from arena.models import EvaluationSession
    from policy_server import wire
    from policy_server.check import dummy_observation, requirements_from_metadata
    from tests.api.actors import activate, make_actor, register_robot, request_session

    settings.ARENA_MAX_OPEN_SESSIONS_PER_LAB = 10
    acme = make_actor("owner", owner="olivia", organization="Acme Robotics")
    outsider = make_actor("outsider", owner="oscar", organization="Outsider Inc")
    lab = make_actor("lab", lab="Berkeley Lab", organization="Berkeley")
    register_robot(lab)
    obs = dummy_observation(requirements_from_metadata(DROID_CONFIG))
    with serve_in_thread(DroidPolicy()) as other, serve_in_thread(DroidPolicy()) as shared:
        register_policy(acme, "acme-other", endpoint_url=other.url)
        activate("acme-other")
        register_policy(acme, "acme-original", endpoint_url=shared.url)
        claim = _register(outsider, "copycat", shared.url)
        assert claim.status_code == 409
        nonce = claim.json()["error"]["message"].split('arena_nonce = "', 1)[1].split('"', 1)[0]
        port = shared.port
    with serve_in_thread(DroidPolicy(), port=port, arena_nonce=nonce) as proving:
        assert _register(outsider, "copycat", proving.url).status_code == 201
        assert policy_check_one(Policy.objects.get(slug="copycat").pk) is True
    assert Policy.objects.get(slug="copycat").endpoint_proven_at is not None
    acme_nonce = acme.get("/api/v1/policies/acme-original/").json()["endpoint_nonce"]

    def copycat_slot() -> tuple[str, str]:
        response = request_session(lab)
        assert response.status_code == 201, response.json()
        session = response.json()
        row = EvaluationSession.objects.get(pk=session["id"])
        slot = "A" if row.policy_a.slug == "copycat" else "B"
        assert row.policy_in(slot).slug == "copycat"
        return session["id"], session["slots"][slot]["relay_url"]

    for served, reason in ((acme_nonce, "endpoint_claimed"), (None, "nonce_mismatch")):
        impostor = RecordingPolicy()
        with serve_in_thread(impostor, port=port, arena_nonce=served):
            session_id, url = copycat_slot()
            with connect(url, open_timeout=RELAY_WAIT_S, close_timeout=2) as ws:
                first = ws.recv(timeout=RELAY_WAIT_S)
                assert first == "policy error (code bad_metadata)", first
                with pytest.raises(ConnectionClosed) as closed:
                    ws.send(wire.packb(obs))
                    ws.recv(timeout=RELAY_WAIT_S)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
        assert impostor.observations == 0
        assert _owner_hears_of(outsider, "copycat", reason)
        assert lab.get("/api/v1/policies/copycat/incidents/").status_code == 403
        text = lab.get(f"/api/v1/sessions/{session_id}/").content.decode()
        assert reason not in text and (served or nonce) not in text
        lab.post(f"/api/v1/sessions/{session_id}/abort/", {"reason": "policy error", "fault": "robot"})

    honest = RecordingPolicy()
    with serve_in_thread(honest, port=port, arena_nonce=nonce):
        _, url = copycat_slot()
        with connect(url, open_timeout=RELAY_WAIT_S, close_timeout=2) as ws:
            metadata = wire.unpackb(ws.recv(timeout=RELAY_WAIT_S))
            assert "arena_nonce" not in metadata
            ws.send(wire.packb(obs))
            reply = wire.unpackb(ws.recv(timeout=RELAY_WAIT_S))
            assert reply["actions"].shape == (10, 8)
    assert honest.observations == 1
    # The arena's own checks agree with the relay: a proven endpoint answered without its nonce fails them.
    with serve_in_thread(DroidPolicy(), port=port):
        assert policy_check_one(Policy.objects.get(slug="copycat").pk) is False
    assert Policy.objects.get(slug="copycat").last_check_error.startswith("nonce_mismatch")
    with serve_in_thread(DroidPolicy(), port=port, arena_nonce=nonce):
        assert policy_check_one(Policy.objects.get(slug="copycat").pk) is True


def test_the_relay_refuses_a_name_that_points_at_another_owners_server_only_during_sessions(
    arena_relay, settings, monkeypatch
):
    """DNS timing: the outsider's name resolves to its own server (127.0.0.2) while the arena checks it and to
    Acme's (127.0.0.1, same port, serving Acme's nonce from the start) while sessions run. The outsider's policy
    never needed proof (no other registration matched), so its checks pass; the relay sees Acme's nonce in the
    metadata and refuses the slot: Acme's server receives no observation, the lab sees the generic error, the
    outsider's incident says ``endpoint_claimed``."""
    from websockets.sync.client import connect

    from arena.models import EvaluationSession
    from tests.api.actors import make_actor, register_robot, request_session

    real_getaddrinfo = socket.getaddrinfo
    answer = ["127.0.0.2"]

    def resolver(host, port, *args, **kwargs):
        if host != "timed.outsider.test":
            return real_getaddrinfo(host, port, *args, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answer[0], int(port)))]

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    acme = make_actor("owner", owner="olivia", organization="Acme Robotics")
    outsider = make_actor("outsider", owner="oscar", organization="Outsider Inc")
    lab = make_actor("lab", lab="Berkeley Lab", organization="Berkeley")
    register_robot(lab)
    victim = RecordingPolicy()
    with serve_in_thread(victim) as acme_server:
        register_policy(acme, "acme-served", endpoint_url=f"ws://localhost:{acme_server.port}")
        victim.extra = {"arena_nonce": acme.get("/api/v1/policies/acme-served/").json()["endpoint_nonce"]}
        assert policy_check_one(Policy.objects.get(slug="acme-served").pk) is True
        with serve_in_thread(DroidPolicy(), host="127.0.0.2", port=acme_server.port):
            register_policy(outsider, "timed", endpoint_url=f"ws://timed.outsider.test:{acme_server.port}")
            assert policy_check_one(Policy.objects.get(slug="timed").pk) is True
        assert Policy.objects.get(slug="timed").endpoint_proven_at is None
        answer[0] = "127.0.0.1"  # sessions run: the name now points at Acme's server
        victim.observations = 0  # (its own check sent some)
        response = request_session(lab)
        assert response.status_code == 201, response.json()
        row = EvaluationSession.objects.get(pk=response.json()["id"])
        slot = "A" if row.policy_a.slug == "timed" else "B"
        assert row.policy_in(slot).slug == "timed"
        with connect(response.json()["slots"][slot]["relay_url"], open_timeout=RELAY_WAIT_S) as ws:
            assert ws.recv(timeout=RELAY_WAIT_S) == "policy error (code bad_metadata)"
        assert victim.observations == 0
    assert _owner_hears_of(outsider, "timed", "endpoint_claimed")
