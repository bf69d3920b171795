"""Loopback stand-ins for the servers an SSRF would reach: a TCP listener that counts every connection it
accepts and answers each with a canned HTTP response (a metadata service, an admin page, a redirect)."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from arena.ports import free_port

SECRET_BODY = "stand-in-secret: AKIAEXAMPLESECRET instance-role credentials"
"""What the stand-in metadata service serves: a check message must never contain it."""


@dataclass
class StandIn:
    """A running stand-in: ``port``, and ``connections``, how many TCP connections it accepted so far."""

    port: int
    server: socketserver.ThreadingTCPServer

    @property
    def connections(self) -> int:
        return self.server.connections  # type: ignore[attr-defined]


def _response(status: str, body: str, headers: dict[str, str]) -> bytes:
    head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body.encode())}", "Connection: close"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n" + body).encode()


@contextlib.contextmanager
def stand_in(
    *,
    status: str = "200 OK",
    body: str = SECRET_BODY,
    headers: dict[str, str] | None = None,
    host: str = "127.0.0.1",
) -> Iterator[StandIn]:
    """Serve one canned HTTP response per connection on ``host`` (a port from the project's picker)."""
    reply = _response(status, body, headers or {})

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            with self.server.lock:  # type: ignore[attr-defined]
                self.server.connections += 1  # type: ignore[attr-defined]
            self.request.settimeout(5)
            received = b""
            with contextlib.suppress(OSError):
                while b"\r\n\r\n" not in received and len(received) < 65536:
                    chunk = self.request.recv(4096)
                    if not chunk:
                        break
                    received += chunk
                self.request.sendall(reply)

    family = socket.AF_INET6 if ":" in host else socket.AF_INET

    class Server(socketserver.ThreadingTCPServer):
        address_family = family
        allow_reuse_address = True
        daemon_threads = True

    port = free_port("127.0.0.1")
    server = Server((host, port), Handler)
    server.connections = 0  # type: ignore[attr-defined]
    server.lock = threading.Lock()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield StandIn(port=port, server=server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False
