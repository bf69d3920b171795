"""A live arena for client tests: the Django server (pytest-django's live_server), the blind relay it admits, baseline
policy servers on loopback, an owner who registered them and a lab with a configured client home."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from evaluator_client.cli import main as arena_eval
from policy_server.baselines import make_baseline
from policy_server.server import serve_in_thread
from tests.api.actors import make_actor


@dataclass
class Network:
    url: str
    lab_key: str
    owner_key: str
    home: Path
    servers: dict = field(default_factory=dict)

    def register(self, slug: str, server_url: str) -> None:
        response = requests.post(
            f"{self.url}/api/v1/policies/",
            json={"slug": slug, "name": slug.title(), "endpoint_url": server_url, "license": "MIT"},
            headers={"Authorization": f"Api-Key {self.owner_key}"},
            timeout=30,
        )
        assert response.status_code == 201, response.text
        assert response.json()["status"] == "active", response.json()

    def eval(self, *args: str, server: str | None = None) -> int:
        return arena_eval(["--home", str(self.home), *args])

    def configure(self, server_url: str | None = None) -> None:
        code = self.eval(
            "configure",
            "--server",
            server_url or self.url,
            "--key",
            self.lab_key,
            "--robot",
            "replica-1",
            "--platform",
            "replica:tabletop-v1",
            "--action-space",
            "cartesian_velocity",
        )
        assert code == 0


@pytest.fixture
def network(live_server, arena_relay, settings, tmp_path, transactional_db):
    settings.ARENA_PUBLIC_URL = live_server.url
    settings.VIDEO_DIR = tmp_path / "videos"
    with ExitStack() as stack:
        owner = make_actor("owner", owner="olivia", organization="Baselines Inc")
        lab = make_actor("lab", lab="Berkeley Lab", organization="Berkeley")
        net = Network(url=live_server.url, lab_key=lab.key, owner_key=owner.key, home=tmp_path / "client")
        for name in ("expert", "random"):
            handle = stack.enter_context(serve_in_thread(make_baseline(name)))
            net.servers[name] = handle
            net.register(name, handle.url)
        yield net
