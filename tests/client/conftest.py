"""A live arena for client tests: the Django server (pytest-django's live_server), the blind relay, an owner and
a lab with a client home (``arena``); with the expert and random baselines served on loopback and registered
(``network``); and a policy served by the PyPI openpi-server (``openpi_droid_server``)."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from arena.ports import free_port
from evaluator_client.cli import main as arena_eval
from policy_server.baselines import make_baseline
from policy_server.peer_venv import PeerVenvError, ensure_peer_venv, package_index_reachable
from policy_server.relay import serve_relay_in_thread
from policy_server.server import serve_in_thread
from tests.api.actors import make_actor


@dataclass
class Network:
    url: str
    lab_key: str
    owner_key: str
    home: Path
    servers: dict = field(default_factory=dict)
    relay: Any = None  # the relay's handle (``.url``, ``.port``, ``.stop()``)

    def register(self, slug: str, server_url: str, *, active: bool = True) -> dict:
        """Register a policy through the API as the owner; its health check runs on registration. With
        ``active`` (default) the policy must have passed it. Returns the policy as the API shows it."""
        response = requests.post(
            f"{self.url}/api/v1/policies/",
            json={"slug": slug, "name": slug.title(), "endpoint_url": server_url, "license": "MIT"},
            headers={"Authorization": f"Api-Key {self.owner_key}"},
            timeout=30,
        )
        assert response.status_code == 201, response.text
        if active:
            assert response.json()["status"] == "active", response.json()
        return response.json()

    def lab_get(self, path: str) -> dict:
        response = requests.get(
            f"{self.url}/api/v1{path}", headers={"Authorization": f"Api-Key {self.lab_key}"}, timeout=30
        )
        assert response.status_code == 200, response.text
        return response.json()

    def eval(self, *args: str, server: str | None = None) -> int:
        return arena_eval(["--home", str(self.home), *args])

    def configure(self, server_url: str | None = None, *extra: str) -> None:
        """Configure the lab's client for a replica robot (the tabletop-v1 scene and every action space the
        replica runs, unless ``extra`` options say otherwise)."""
        code = self.eval(
            "configure",
            "--server",
            server_url or self.url,
            "--key",
            self.lab_key,
            "--robot",
            "replica-1",
            *extra,
        )
        assert code == 0


@contextmanager
def live_arena(live_server, settings, tmp_path: Path) -> Iterator[Network]:
    """The server, the relay, an owner and a lab: no policies registered yet."""
    settings.ARENA_PUBLIC_URL = live_server.url
    settings.VIDEO_DIR = tmp_path / "videos"
    with serve_relay_in_thread(
        settings.ARENA_RELAY_SECRET, arena_url=live_server.url, poll_interval=0.3
    ) as relay:
        settings.ARENA_RELAY_URL = relay.url.rstrip("/")
        owner = make_actor("owner", owner="olivia", organization="Baselines Inc")
        lab = make_actor("lab", lab="Berkeley Lab", organization="Berkeley")
        yield Network(
            url=live_server.url, lab_key=lab.key, owner_key=owner.key, home=tmp_path / "client", relay=relay
        )


@pytest.fixture
def arena(live_server, settings, tmp_path, transactional_db):
    """:func:`live_arena` as a fixture."""
    with live_arena(live_server, settings, tmp_path) as net:
        yield net


@pytest.fixture
def network(live_server, settings, tmp_path, transactional_db):
    """:func:`live_arena` with the expert and random baselines served and registered."""
    with live_arena(live_server, settings, tmp_path) as net, ExitStack() as stack:
        for name in ("expert", "random"):
            handle = stack.enter_context(serve_in_thread(make_baseline(name)))
            net.servers[name] = handle
            net.register(name, handle.url)
        yield net


OPENPI_SERVER_ECHO = Path(__file__).resolve().parents[1] / "policy_server" / "openpi_server_echo.py"


@pytest.fixture
def openpi_droid_server() -> Iterator[str]:
    """A policy served by the PyPI ``openpi-server`` (openpi's reference server) in its own process, with the
    empty metadata of openpi's DROID checkpoints and their (10, 8) chunks; yields its ws:// URL. Skipped only
    when PyPI is unreachable outside CI (the peer environment is built on first use)."""
    try:
        python = ensure_peer_venv("openpi-server")
    except PeerVenvError as exc:
        if os.environ.get("CI") or package_index_reachable():
            pytest.fail(f"building the openpi-server peer environment failed: {exc}")
        pytest.skip("PyPI is unreachable, so the openpi-server peer environment cannot be built")
    port = free_port()
    command = [str(python), str(OPENPI_SERVER_ECHO), "--port", str(port), "--metadata-json", json.dumps({})]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:  # the handshake: its /healthz answers once it listens
            assert process.poll() is None, process.communicate()[1]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                assert time.monotonic() < deadline, "openpi-server did not start"
                time.sleep(0.1)
        yield f"ws://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.communicate(timeout=10)
