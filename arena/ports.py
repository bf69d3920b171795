"""Free TCP ports on 127.0.0.1 that outgoing connections cannot take first.

``bind(("127.0.0.1", 0))`` hands out a port from the kernel's ephemeral range, the same range every outgoing
connection draws its local port from. Between picking such a port and the server binding it, a client socket
(a Redis connection, SeaweedFS's own gRPC traffic) can take it, and the server fails with "Address already in
use". Ports below the ephemeral range are never assigned to outgoing connections, so a port picked there stays
free until someone binds it on purpose.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

HOST = "127.0.0.1"
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST = 10_000
ATTEMPTS = 200


def ephemeral_range() -> tuple[int, int]:
    try:
        low, high = EPHEMERAL_RANGE_FILE.read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port(host: str = HOST) -> int:
    """A port on ``host`` that was free just now and lies outside the ephemeral range."""
    low, _ = ephemeral_range()
    candidates = range(LOWEST, low) if low - LOWEST >= 1000 else range(1024, low)
    for _ in range(ATTEMPTS):
        port = random.choice(candidates)
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    with (
        socket.socket() as sock
    ):  # a machine with almost every low port in use: fall back to the kernel's pick
        sock.bind((host, 0))
        return sock.getsockname()[1]
