"""Smoke tests of the two operator entry points: a short `manage.py demo` (what `make demo` runs) and
`python -m arena.serve --check` (what `make serve` runs: gunicorn, Celery worker and beat, relay, SeaweedFS,
Postgres)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from arena.ports import free_ports
from tests.conftest import need_service, service_reachable

ROOT = Path(__file__).resolve().parent.parent
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"


def clean_env(tmp_path: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_URL", "CELERY_", "S3_", "REDIS_URL", "ARENA_", "DJANGO_SETTINGS"))
    }
    env["ARENA_VAR_DIR"] = str(tmp_path / "var")
    return env


def test_short_demo_prints_the_leaderboard(tmp_path):
    result = subprocess.run(
        [sys.executable, "manage.py", "demo", "--sessions", "4", "--max-steps", "80", "--port", "0"],
        cwd=ROOT,
        env=clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "5/5 running 4 sessions" in out
    assert "sessions: {'submitted': 4" in out
    assert "Leaderboard (snapshot" in out and "True order: expert > noisy > slow > confused > random" in out
    assert "/leaderboard/" in out
    assert "Release v1 of snapshot" in out and ": 4 sessions" in out and "/sessions/" in out


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_serve_starts_every_part_and_stops_cleanly(tmp_path, broker):
    need_service("PostgreSQL", service_reachable("postgres://127.0.0.1:5432"), "PostgreSQL on 127.0.0.1:5432")
    need_service("Redis", service_reachable("redis://127.0.0.1:6379"), "Redis on 127.0.0.1:6379")
    env = clean_env(tmp_path)
    env["DATABASE_URL"] = "postgres://postgres@127.0.0.1:5432/arena_serve_check"
    if broker == "rabbitmq":
        need_service("RabbitMQ", service_reachable(AMQP_URL), "RabbitMQ on 127.0.0.1:5672")
        env["CELERY_BROKER_URL"] = AMQP_URL
        env["REDIS_URL"] = "redis://127.0.0.1:6379/0"
    ports = [str(port) for port in free_ports(3)]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "arena.serve",
            "--check",
            "--port",
            ports[0],
            "--relay-port",
            ports[1],
            "--s3-port",
            ports[2],
            "--web-workers",
            "1",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    for part in ("[web   ]", "[worker]", "[beat  ]", "[relay ]", "SeaweedFS S3 at", "ready:", "stopped"):
        assert part in out, part
    assert (tmp_path / "var" / "serve" / "arena.log").read_text().count("ready:") == 1
    assert ("transport:   amqp://" in out) == (broker == "rabbitmq")
