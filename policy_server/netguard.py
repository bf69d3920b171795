"""Which network addresses the arena may connect to, and connecting only to an address that was checked.

A policy endpoint is a URL an untrusted owner types in; the health checker and the relay connect to it from
inside the arena's network. Without a guard that is server-side request forgery: the cloud metadata service
(credentials), the admin login, the object store and every internal port are one registration away. This
module parses a ``ws://``/``wss://`` endpoint, resolves its host once, classifies every address it resolves
to, and hands back a socket connected to a checked address, so that the websocket handshake never resolves
the name a second time (DNS rebinding: a name that answers a public address to the check and a private one
to the connect gains nothing). The Host header and the TLS server name stay the URL's host, because the
socket is given to websockets' ``connect(uri, sock=...)``. A preexisting socket also makes websockets refuse
any redirect (it cannot reuse it), so a redirect can never lead to an unchecked address.

Address classes (:func:`address_class`): ``public`` (globally routable), ``private`` (RFC 1918, 100.64/10
carrier-grade NAT, fc00::/7 unique local), ``loopback`` (127/8, ::1, ``localhost`` names), ``link-local``
(169.254/16, fe80::/10), ``metadata`` (cloud instance-metadata addresses and names), ``multicast`` and
``reserved`` (unspecified, broadcast, documentation, benchmark, 240/4 and every other non-global range).
IPv6 forms that embed an IPv4 address (IPv4-mapped ``::ffff:a.b.c.d``, IPv4-compatible ``::a.b.c.d``, 6to4
``2002::/16``, NAT64 ``64:ff9b::/96``) are classified by the embedded IPv4 address. Numeric spellings that
``inet_aton`` accepts (``2130706433``, ``0x7f.1``, ``0177.0.0.1``) are resolved by ``getaddrinfo`` like any
name, and the resolved address is what is classified.

An *allow* spec names the classes that may be connected to besides ``public``, which is always allowed:
``"public"`` (the default), ``"private"``, ``"loopback"`` or a comma list (``"private,loopback"``).
``link-local``, ``metadata``, ``multicast`` and ``reserved`` can never be allowed: no policy server is
reachable at a link-local address across a network, and that is exactly where the credential services of
AWS, GCP, Azure and others live; a self-hosted deployment needs private or loopback ranges, never those.

Written by hand because the libraries that exist for this guard ``requests``/``urllib3`` sessions (advocate)
or run as an HTTP proxy (smokescreen); neither fits a websocket connect. Only the standard library is used.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import os
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Union
from urllib.parse import urlsplit

# Union, not `|`: this module runs on Python 3.8 (the evaluator client imports it).
IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

ALLOWABLE_CLASSES = frozenset({"public", "private", "loopback"})
ALL_CLASSES = ALLOWABLE_CLASSES | {"link-local", "metadata", "multicast", "reserved"}
DEFAULT_ALLOW = "public"
ALLOW_ENV = "ARENA_ENDPOINT_ALLOW"
"""Environment variable the relay reads its allow spec from (the Django setting of the same name is the
server's)."""

METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, Oracle, DigitalOcean, OpenStack instance metadata
        "169.254.170.2",  # AWS ECS task credentials
        "169.254.170.23",  # AWS EKS pod identity
        "fd00:ec2::254",  # AWS instance metadata over IPv6
        "fd00:ec2::23",  # AWS EKS pod identity over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure WireServer (a public address, hence listed by address)
    )
)
METADATA_NAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.tencentyun.com",
        "metadata.platformequinix.com",
    }
)
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
# Special-use suffixes that never name a public host (RFC 6761, RFC 8375, ICANN's .internal).
PRIVATE_SUFFIXES = (".internal", ".local", ".localdomain", ".home.arpa", ".lan", ".intranet", ".corp")
PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)
NAT64_NETWORKS = tuple(ipaddress.ip_network(n) for n in ("64:ff9b::/96", "64:ff9b:1::/48"))
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
HOST_NAME_RE = re.compile(r"^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*$")


class EndpointNotAllowed(ValueError):
    """The endpoint is malformed, or its host is (or resolves to) an address class that is not allowed.

    ``reason`` is one of ``"malformed"``, ``"unresolvable"`` or an address class (``"loopback"``,
    ``"metadata"``, ...); the message names the class, never anything a peer sent.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Endpoint:
    """A parsed ``ws://``/``wss://`` endpoint. ``host`` is lower-case without brackets or trailing dot."""

    url: str
    secure: bool
    host: str
    port: int
    path: str

    @property
    def identity(self) -> str:
        """``host:port/path`` with the scheme, query and a trailing slash left out: two URLs with the same
        identity reach the same policy server (used to tell whether an endpoint is already registered)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}{self.path.rstrip('/')}"

    @property
    def server(self) -> str:
        """``host:port``: the server the endpoint reaches, whatever the path (policy servers, ours and openpi's,
        answer on every path, so ``/x`` appended to another owner's endpoint reaches the same policy)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_allow(spec: str | Iterable[str] | None) -> frozenset[str]:
    """The address classes an allow spec permits (``public`` always among them).

    ``spec`` is a comma list (``"private,loopback"``) or an iterable of class names; None or "" means
    ``public`` only. Raises ValueError for a class that does not exist or can never be allowed.
    """
    names = spec.split(",") if isinstance(spec, str) else list(spec or [])
    classes = {name.strip().lower() for name in names if name.strip()} | {"public"}
    unknown = classes - ALLOWABLE_CLASSES
    if unknown:
        raise ValueError(
            f"{ALLOW_ENV}: {', '.join(sorted(unknown))} cannot be allowed; "
            f"choose among {', '.join(sorted(ALLOWABLE_CLASSES))}"
        )
    return frozenset(classes)


def allow_from_env() -> frozenset[str]:
    """The allow spec in ``$ARENA_ENDPOINT_ALLOW`` (public only when unset): the default of every component
    that connects to policy endpoints outside the Django server (the relay, the checker's library calls)."""
    return parse_allow(os.environ.get(ALLOW_ENV))


def parse_endpoint(url: str) -> Endpoint:
    """Split a ``ws://``/``wss://`` URL; raises :class:`EndpointNotAllowed` (``malformed``) if it is not one.

    Refused: other schemes, user info (``ws://good.example@10.0.0.1``), IPv6 zone ids, host names with
    characters outside letters, digits, ``-``, ``_`` and dots, and ports outside 1-65535.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise EndpointNotAllowed("the endpoint is not a valid URL", reason="malformed") from exc
    if parts.scheme not in ("ws", "wss"):
        raise EndpointNotAllowed("the endpoint must be a ws:// or wss:// URL", reason="malformed")
    if "@" in parts.netloc:
        raise EndpointNotAllowed("the endpoint must not carry a user name or password", reason="malformed")
    host = (parts.hostname or "").rstrip(".")
    if not host or "%" in host:
        raise EndpointNotAllowed("the endpoint has no usable host", reason="malformed")
    if ":" in host:
        try:
            host = str(ipaddress.IPv6Address(host))
        except ValueError as exc:
            raise EndpointNotAllowed("the endpoint's IPv6 address is malformed", reason="malformed") from exc
    elif not HOST_NAME_RE.fullmatch(host):
        raise EndpointNotAllowed("the endpoint's host name is malformed", reason="malformed")
    if port == 0:
        raise EndpointNotAllowed("the endpoint's port must be 1-65535", reason="malformed")
    secure = parts.scheme == "wss"
    return Endpoint(
        url=url, secure=secure, host=host, port=port or (443 if secure else 80), path=parts.path or "/"
    )


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if any(address in network for network in NAT64_NETWORKS) or (
        address in IPV4_COMPATIBLE and int(address) > 1
    ):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_class(address: IPAddress) -> str:
    """The class of one address (see the module docstring); embedded IPv4 addresses are unwrapped first."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return address_class(embedded)
    if address in METADATA_ADDRESSES:
        return "metadata"
    if address.is_multicast:
        return "multicast"
    if address.is_unspecified:
        return "reserved"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if any(address in network for network in PRIVATE_NETWORKS if network.version == address.version):
        return "private"
    if address.is_global:
        return "public"
    return "reserved"


def name_class(host: str) -> str | None:
    """The class a host *name* implies before any resolution (``metadata``, ``loopback``, ``private``), or
    None for an ordinary name or an address literal."""
    if host in METADATA_NAMES:
        return "metadata"
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return "loopback"
    if host.endswith(PRIVATE_SUFFIXES):
        return "private"
    return None


CLASS_PHRASES = {
    "private": "a private-network address",
    "loopback": "a loopback address",
    "link-local": "a link-local address",
    "metadata": "a cloud metadata address",
    "multicast": "a multicast address",
    "reserved": "a reserved or unspecified address",
}


def refusal_sentence(cls: str) -> str:
    """A fixed sentence for owners saying why an address class is refused (no peer text in it)."""
    return f"the endpoint is (or resolves to) {CLASS_PHRASES.get(cls, 'an address')}, which this arena does not connect to"


def _refusal(cls: str) -> EndpointNotAllowed:
    return EndpointNotAllowed(refusal_sentence(cls), reason=cls)


def _check_classes(classes: Iterable[str], allow: frozenset[str]) -> None:
    for cls in classes:
        if cls not in allow:
            raise _refusal(cls)


def check_address(address: IPAddress, allow: frozenset[str]) -> None:
    """Raise :class:`EndpointNotAllowed` unless ``address``'s class is in ``allow``."""
    _check_classes([address_class(address)], allow)


def _addresses(infos: list[tuple]) -> list[tuple[socket.AddressFamily, IPAddress, tuple]]:
    found = []
    for family, _type, _proto, _name, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        found.append((family, ipaddress.ip_address(str(sockaddr[0]).partition("%")[0]), sockaddr))
    return found


def _checked(endpoint: Endpoint, infos: list[tuple], allow: frozenset[str]) -> list[tuple]:
    """Every resolved address must be allowed (a name that answers one allowed and one forbidden address is
    refused as a whole); returns ``(family, sockaddr)`` pairs in resolver order."""
    resolved = _addresses(infos)
    if not resolved:
        raise EndpointNotAllowed("the endpoint's host does not resolve", reason="unresolvable")
    _check_classes([address_class(address) for _family, address, _sockaddr in resolved], allow)
    return [(family, sockaddr) for family, _address, sockaddr in resolved]


RESOLVE_TIMEOUT_S = 5.0
"""Default bound on one name resolution at registration (seconds): a hostile name server cannot hold a
request longer."""
# The C resolver takes no per-call timeout, so lookups run on a few threads and callers stop waiting.
_resolver_pool = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="netguard-dns")


def _resolve(host: str, port: int, timeout: float) -> list[tuple]:
    """``getaddrinfo`` for a TCP connection, given up after ``timeout`` seconds (raises socket.gaierror)."""
    lookup = _resolver_pool.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        return lookup.result(timeout=timeout)
    except concurrent.futures.TimeoutError as exc:
        lookup.cancel()
        raise socket.gaierror(socket.EAI_AGAIN, f"no answer from the resolver within {timeout} s") from exc


def check_endpoint(
    url: str, *, allow: frozenset[str], resolve: bool = True, timeout: float | None = None
) -> Endpoint:
    """Validate ``url`` without sending anything to its host; returns the parsed endpoint.

    The host name's own class (``localhost``, ``metadata.google.internal``, ``*.internal``) is checked
    first, then, if ``resolve``, every address it resolves to now. A name that does not resolve (yet) passes
    here (as does one whose resolution takes over ``timeout`` seconds, default :data:`RESOLVE_TIMEOUT_S`):
    DNS may not be set up at registration
    time, and every connect checks again (:func:`open_socket`). Raises :class:`EndpointNotAllowed`.
    """
    endpoint = parse_endpoint(url)
    implied = name_class(endpoint.host)
    if implied is not None:
        _check_classes([implied], allow)
    if resolve:
        try:
            infos = _resolve(endpoint.host, endpoint.port, RESOLVE_TIMEOUT_S if timeout is None else timeout)
        except (socket.gaierror, UnicodeError):
            return endpoint
        _checked(endpoint, infos, allow)
    return endpoint


def resolved_addresses(
    endpoints: Iterable[Endpoint], *, timeout: float | None = None
) -> dict[Endpoint, frozenset[str]]:
    """The addresses (IP strings) each endpoint's host resolves to now, looked up in parallel; an endpoint whose
    name does not resolve within ``timeout`` seconds in all (default :data:`RESOLVE_TIMEOUT_S`) maps to an
    empty set. Only the resolver is asked: nothing is sent to the addresses."""
    deadline = RESOLVE_TIMEOUT_S if timeout is None else timeout
    lookups = {
        endpoint: _resolver_pool.submit(
            socket.getaddrinfo, endpoint.host, endpoint.port, type=socket.SOCK_STREAM
        )
        for endpoint in set(endpoints)
    }
    done, _pending = concurrent.futures.wait(lookups.values(), timeout=deadline)
    found = {}
    for endpoint, lookup in lookups.items():
        addresses: frozenset[str] = frozenset()
        if lookup in done and lookup.exception() is None:
            addresses = frozenset(str(address) for _family, address, _sockaddr in _addresses(lookup.result()))
        else:
            lookup.cancel()
        found[endpoint] = addresses
    return found


def _resolution_failed() -> EndpointNotAllowed:
    return EndpointNotAllowed("the endpoint's host does not resolve", reason="unresolvable")


def open_socket(url: str, *, allow: frozenset[str], timeout: float) -> socket.socket:
    """Resolve ``url``'s host once, check every address, and return a blocking TCP socket connected to the
    first checked address that answers within ``timeout`` seconds (the resolution and each address).

    Pass the socket to ``websockets.sync.client.connect(url, sock=...)``. Raises
    :class:`EndpointNotAllowed` (refused or unresolvable), or OSError / TimeoutError from the connect.
    """
    endpoint = check_endpoint(url, allow=allow, resolve=False)
    try:
        infos = _resolve(endpoint.host, endpoint.port, timeout)
    except (socket.gaierror, UnicodeError) as exc:
        raise _resolution_failed() from exc
    last_error: OSError | None = None
    for family, sockaddr in _checked(endpoint, infos, allow):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(sockaddr)
        except OSError as exc:
            sock.close()
            last_error = exc
            continue
        sock.settimeout(None)  # websockets bounds the handshake itself; a socket timeout would cut idle reads
        return sock
    assert last_error is not None
    raise last_error


async def open_socket_async(url: str, *, allow: frozenset[str], timeout: float) -> socket.socket:
    """:func:`open_socket` on the running event loop (non-blocking resolution and connect).

    Pass the socket to ``websockets.asyncio.client.connect(url, sock=...)``.
    """
    endpoint = check_endpoint(url, allow=allow, resolve=False)
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_STREAM), timeout
        )
    except (socket.gaierror, UnicodeError, asyncio.TimeoutError) as exc:  # not TimeoutError before 3.11
        raise _resolution_failed() from exc
    last_error: OSError | None = None
    for family, sockaddr in _checked(endpoint, infos, allow):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, sockaddr), timeout)
        except (OSError, asyncio.TimeoutError) as exc:  # before 3.11, asyncio's timeout is no OSError
            sock.close()
            last_error = exc if isinstance(exc, OSError) else TimeoutError(f"no answer within {timeout} s")
            continue
        return sock
    assert last_error is not None
    raise last_error
