"""The endpoint guard: how addresses are classified, what an allow spec may open, and the relay connecting
only to a checked address (one resolution per connect, no redirects followed)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest
from arena_test_policies import EchoPolicy

from policy_server import netguard
from policy_server.check import dummy_observation, requirements_from_metadata
from policy_server.client import PolicyClient, PolicyUnavailable
from policy_server.relay import serve_relay_in_thread
from policy_server.relay_token import mint_token
from policy_server.server import serve_in_thread as serve_policy_in_thread
from tests.hardening.standins import stand_in

SECRET = "relay secret for the endpoint guard tests"


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("8.8.8.8", "public"),
        ("2606:4700::1111", "public"),
        ("::ffff:8.8.8.8", "public"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.0.1", "private"),
        ("100.64.0.9", "private"),
        ("fd12:3456::1", "private"),
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::127.0.0.1", "loopback"),
        ("2002:7f00:1::", "loopback"),
        ("64:ff9b::7f00:1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("169.254.169.254", "metadata"),
        ("::ffff:169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("100.100.100.200", "metadata"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "reserved"),
        ("::", "reserved"),
        ("255.255.255.255", "reserved"),
        ("240.0.0.1", "reserved"),
        ("192.0.2.1", "reserved"),
        ("198.18.0.1", "reserved"),
    ],
)
def test_address_classes(address: str, expected: str) -> None:
    assert netguard.address_class(ipaddress.ip_address(address)) == expected


@pytest.mark.parametrize(
    "url",
    ["ws://2130706433:9", "ws://0x7f.1:9", "ws://0177.0.0.1:9", "ws://127.1:9", "ws://LOCALHOST.:9"],
)
def test_numeric_spellings_and_names_of_loopback_are_judged_by_what_they_resolve_to(url: str) -> None:
    with pytest.raises(netguard.EndpointNotAllowed) as refused:
        netguard.check_endpoint(url, allow=netguard.parse_allow("public"))
    assert refused.value.reason == "loopback"
    assert netguard.check_endpoint(url, allow=netguard.parse_allow("loopback")).port == 9


def test_allow_specs() -> None:
    assert netguard.parse_allow(None) == {"public"}
    assert netguard.parse_allow("private, loopback") == {"public", "private", "loopback"}
    for never in ("link-local", "metadata", "multicast", "reserved", "everything"):
        with pytest.raises(ValueError, match="cannot be allowed"):
            netguard.parse_allow(f"private,{never}")
    with pytest.raises(netguard.EndpointNotAllowed) as refused:
        netguard.check_endpoint("ws://169.254.169.254/", allow=netguard.parse_allow("private,loopback"))
    assert refused.value.reason == "metadata"


@pytest.mark.parametrize(
    "url", ["http://host:1", "ws://good.example@10.0.0.1:1", "ws://[fe80::1%25eth0]:1", "ws://bad_host!:1"]
)
def test_malformed_endpoints(url: str) -> None:
    with pytest.raises(netguard.EndpointNotAllowed) as refused:
        netguard.parse_endpoint(url)
    assert refused.value.reason == "malformed"


def test_identity_ignores_scheme_default_port_spelling_and_trailing_slash() -> None:
    same = {
        netguard.parse_endpoint(url).identity
        for url in ("ws://GPU.Lab.example:80/", "ws://gpu.lab.example", "wss://gpu.lab.example:80?x=1")
    }
    assert same == {"gpu.lab.example:80"}
    assert netguard.parse_endpoint("ws://[::FFFF:7f00:1]:9/p/").identity == "[::ffff:7f00:1]:9/p"


def test_a_client_with_a_guard_refuses_before_connecting() -> None:
    with stand_in() as target:
        with pytest.raises(PolicyUnavailable) as refused:
            PolicyClient(
                f"ws://127.0.0.1:{target.port}", endpoint_allow=netguard.parse_allow("public"), retries=0
            )
        assert refused.value.reason == "address_not_allowed"
        assert target.connections == 0


def test_the_relay_connects_to_the_address_it_checked(monkeypatch) -> None:
    """The name answers loopback once, then the metadata address: the relay (loopback allowed) resolves once
    per connect and reaches the real server."""
    real_getaddrinfo = socket.getaddrinfo
    answers = ["127.0.0.1", "169.254.169.254"]

    def resolver(host, port, *args, **kwargs):
        if host != "policy.rebind.test":
            return real_getaddrinfo(host, port, *args, **kwargs)
        address = answers.pop(0) if len(answers) > 1 else answers[0]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port)))]

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    with (
        serve_policy_in_thread(EchoPolicy()) as policy,
        serve_relay_in_thread(SECRET, endpoint_allow="loopback", upstream_timeout=3.0) as relay,
    ):
        token = mint_token(
            endpoint=f"ws://policy.rebind.test:{policy.port}",
            session_id="s-1",
            slot="A",
            key=SECRET,
            ttl_s=300,
        )
        with PolicyClient(f"{relay.url.rstrip('/')}/{token}", retries=0) as client:
            obs = dummy_observation(requirements_from_metadata({}))
            assert client.infer(obs)["actions"].shape[0] >= 1
    assert answers == ["169.254.169.254"]


def test_the_relay_refuses_a_loopback_endpoint_and_never_follows_a_redirect() -> None:
    with stand_in() as target:
        location = f"ws://127.0.0.1:{target.port}/"
        with (
            stand_in(status="302 Found", body="", headers={"Location": location}) as redirector,
            serve_relay_in_thread(SECRET, endpoint_allow="loopback", upstream_timeout=3.0) as open_relay,
            serve_relay_in_thread(SECRET, endpoint_allow="public", upstream_timeout=3.0) as public_relay,
        ):
            redirect = mint_token(
                endpoint=f"ws://127.0.0.1:{redirector.port}",
                session_id="s-2",
                slot="B",
                key=SECRET,
                ttl_s=300,
            )
            with pytest.raises(PolicyUnavailable):
                PolicyClient(f"{open_relay.url.rstrip('/')}/{redirect}", retries=0, connect_timeout=10)
            assert redirector.connections == 1
            direct = mint_token(endpoint=location, session_id="s-3", slot="A", key=SECRET, ttl_s=300)
            with pytest.raises(PolicyUnavailable):
                PolicyClient(f"{public_relay.url.rstrip('/')}/{direct}", retries=0, connect_timeout=10)
        assert target.connections == 0


def test_an_address_that_does_not_answer_in_time_gives_way_to_the_next_one(monkeypatch) -> None:
    """A name with two addresses, the first of which never completes the TCP handshake (a listener whose
    backlog is full drops the SYN): both connects time out on the first and connect to the second. (On Python
    3.8-3.10 asyncio's timeout is not an OSError: it used to escape and end the connect.)"""
    from arena.ports import free_ports

    stuck_port, open_port = free_ports(2)
    stuck = socket.socket()
    stuck.bind(("127.0.0.1", stuck_port))
    stuck.listen(0)
    fillers = []
    for _ in range(4):  # never accepted: they fill the backlog
        filler = socket.socket()
        filler.setblocking(False)
        try:
            filler.connect(("127.0.0.1", stuck_port))
        except BlockingIOError:
            pass
        fillers.append(filler)
    listening = socket.socket()
    listening.bind(("127.0.0.1", open_port))
    listening.listen()
    real_getaddrinfo = socket.getaddrinfo

    def resolver(host, port, *args, **kwargs):
        if host != "two.addresses.test":
            return real_getaddrinfo(host, port, *args, **kwargs)
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", stuck_port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", open_port)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    allow = netguard.parse_allow("loopback")
    url = "ws://two.addresses.test:9"
    try:
        with netguard.open_socket(url, allow=allow, timeout=2.0) as sock:
            assert sock.getpeername()[1] == open_port
        # in a thread of its own: another test of this process (the browser's Playwright) may hold a running
        # event loop in this one
        with ThreadPoolExecutor(1) as pool:
            connected = pool.submit(
                asyncio.run, netguard.open_socket_async(url, allow=allow, timeout=2.0)
            ).result(timeout=120)
        with connected:
            assert connected.getpeername()[1] == open_port
    finally:
        for sock in (stuck, listening, *fillers):
            sock.close()
