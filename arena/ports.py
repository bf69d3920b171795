"""Free TCP ports on 127.0.0.1 that outgoing connections cannot take first.

``bind(("127.0.0.1", 0))`` hands out a port from the kernel's ephemeral range, the same range every outgoing
connection draws its local port from. Between picking such a port and the server binding it, a client socket
(a Redis connection, SeaweedFS's own gRPC traffic) can take it, and the server fails with "Address already in
use". Ports below the ephemeral range are never assigned to outgoing connections, so a port picked there stays
free until someone binds it on purpose.

A picked port is only reserved by convention: when one program starts several servers, it must pick all their
ports at once (:func:`free_ports`) or tell later picks which ports are already promised (``avoid``), or two of
its servers may be handed the same port before either binds it.

``ARENA_PORT_RANGE=LOW-HIGH`` narrows the picks to that range (inclusive), so that several checkouts running their
suites side by side on one machine never draw the same port.
"""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Collection
from pathlib import Path

HOST = "127.0.0.1"
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST = 10_000
ATTEMPTS = 200
RANGE_ENV = "ARENA_PORT_RANGE"


def ephemeral_range() -> tuple[int, int]:
    try:
        low, high = EPHEMERAL_RANGE_FILE.read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port(host: str = HOST, *, avoid: Collection[int] = ()) -> int:
    """A port on ``host`` that was free just now, lies outside the ephemeral range and is not in ``avoid``."""
    candidates = port_candidates()
    for _ in range(ATTEMPTS):
        port = random.choice(candidates)
        if port in avoid:
            continue
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    raise OSError(
        f"no free port found on {host} in {candidates.start}-{candidates.stop - 1} after {ATTEMPTS} attempts"
    )


def port_candidates() -> range:
    """The ports :func:`free_port` picks from: ``ARENA_PORT_RANGE`` if set, else those below the ephemeral range."""
    low, _ = ephemeral_range()
    return _configured_range() or (range(LOWEST, low) if low - LOWEST >= 1000 else range(1024, low))


def _configured_range() -> range | None:
    text = os.environ.get(RANGE_ENV, "").strip()
    if not text:
        return None
    try:
        first, last = (int(part) for part in text.split("-"))
    except ValueError as exc:
        raise ValueError(f"{RANGE_ENV} must look like 12000-12999, got {text!r}") from exc
    if not 1024 <= first <= last <= 65535:
        raise ValueError(f"{RANGE_ENV} must lie within 1024-65535, got {text!r}")
    return range(first, last + 1)


def free_ports(count: int, host: str = HOST, *, avoid: Collection[int] = ()) -> list[int]:
    """``count`` distinct free ports (see :func:`free_port`), none of them in ``avoid``."""
    taken = set(avoid)
    ports = []
    for _ in range(count):
        port = free_port(host, avoid=taken)
        taken.add(port)
        ports.append(port)
    return ports


def port_in_use(port: int, host: str = HOST) -> bool:
    """Whether a server could not listen on ``host:port`` now (someone listens there). Binds as servers do,
    with ``SO_REUSEADDR``, so connections lingering in TIME_WAIT do not count."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False
