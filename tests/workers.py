"""Helpers for tests that need a real Celery worker process, and for waiting on a condition."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.db import connection

from arena.celery import app as celery_app

ROOT = Path(__file__).resolve().parents[1]


def database_url() -> str:
    """The URL of the test database this process uses, for worker processes to share it."""
    s = connection.settings_dict
    if "sqlite" in s["ENGINE"]:
        return f"sqlite:///{s['NAME']}"
    user = s.get("USER") or "postgres"
    return f"postgres://{user}@{s.get('HOST') or '127.0.0.1'}:{s.get('PORT') or 5432}/{s['NAME']}"


@contextmanager
def celery_worker(broker_url: str) -> Iterator[subprocess.Popen]:
    """A real Celery worker process on the test database, consuming a queue of its own; while it runs, tasks
    sent from this process go to that queue over ``broker_url`` (not eagerly)."""
    queue = f"arena-test-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "CELERY_BROKER_URL": broker_url, "DATABASE_URL": database_url()}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "arena",
            "worker",
            "-P",
            "solo",
            "-Q",
            queue,
            "--without-mingle",
            "--without-gossip",
            "--without-heartbeat",
            "-l",
            "WARNING",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    saved = {k: celery_app.conf[k] for k in ("task_always_eager", "broker_url", "task_default_queue")}
    celery_app.conf.update(task_always_eager=False, broker_url=broker_url, task_default_queue=queue)
    celery_app._after_fork()  # forget pooled broker connections made under the previous setting
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        _delete_queue(queue)  # a RabbitMQ queue outlives its consumer: leave no test queue behind
        celery_app.conf.update(saved)
        celery_app._after_fork()


def _delete_queue(queue: str) -> None:
    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1)
            conn.default_channel.queue_delete(queue)
    except Exception:  # the broker is gone (a test stopped it on purpose): nothing to clean
        pass


def wait_for(
    condition: Callable[[], bool], *, timeout: float, what: str, proc: subprocess.Popen | None = None
) -> None:
    """Poll ``condition()`` every 0.1 s until true; fail after ``timeout`` seconds (or if ``proc`` died)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the process died while waiting for {what}:\n{proc.stdout.read().decode()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)
