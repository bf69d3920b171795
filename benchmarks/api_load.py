"""``python -m benchmarks.api_load``: N simulated labs against gunicorn and Postgres on this machine.

Builds a fresh database ``arena_load`` (migrated), registers P active policies and N labs with one robot each,
starts gunicorn (several workers, persistent DB connections, Redis cache and broker on DB 15, raised
open-session cap and throttles), then each lab loops ``request a pair -> report slot A -> report slot B ->
submit the preference`` for the given duration, twice: back to back (saturation: the server's throughput and
its queueing latency), then paced (each lab waits ~``--think`` seconds before each call). Prints
per-endpoint throughput and latency percentiles for both, and whether pair assignment meets its target,
p99 < 100 ms with 50 concurrent labs, in the paced phase (the exit status says so too).

Policy health is PRE-SEEDED: each policy gets one stored passing check (``policy_check_record``); no policy
server runs and nothing is probed (assignment reads stored health only). A warm-up phase stores preferences
and one ranking snapshot, so that the pair sampler works from real comparison counts. Refits requested by the
measured preferences are queued in Redis (no worker consumes them), as with a busy worker in production.

    python -m benchmarks.api_load [--labs 50] [--policies 60] [--duration 30] [--workers 4] [--quick]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import requests

from arena.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
LOAD_DB = "postgres://postgres@127.0.0.1:5432/arena_load"
REDIS_DB = "redis://127.0.0.1:6379/15"
ASSIGN = "POST /sessions/ (pair assignment)"
ENDPOINTS = (ASSIGN, "POST /sessions/{id}/episodes/", "POST /sessions/{id}/preference/")
TARGET_P99_MS = 100.0
TARGET_LABS = 50
REQUIREMENTS = {
    "image_resolution": [224, 224],
    "n_external_cameras": 1,
    "needs_wrist_camera": True,
    "needs_stereo_camera": False,
    "action_space": "joint_velocity",
    "action_dim": 8,
    "action_horizon": 10,
}
ROBOT = {
    "name": "franka-1",
    "platform": "droid",
    "n_external_cameras": 2,
    "has_wrist_camera": True,
    "has_stereo_camera": False,
    "action_spaces": ["joint_velocity", "joint_position"],
}


@dataclass
class Samples:
    """Latencies in milliseconds per endpoint, and the failed calls (status code or exception name)."""

    latency_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, endpoint: str, ms: float, error: str | None) -> None:
        with self.lock:
            self.latency_ms[endpoint].append(ms)
            if error:
                self.errors[endpoint].append(error)


def seed(*, n_policies: int, n_labs: int) -> list[str]:
    """Create the owner, ``n_policies`` active policies and ``n_labs`` labs with a robot; return lab keys."""
    from arena.models import Policy, Robot
    from arena.services.accounts import api_key_issue, lab_get_or_create, owner_get_or_create
    from arena.services.policies import policy_check_record

    owners = [owner_get_or_create(username=f"owner-{k}", organization=f"Policy Org {k}") for k in range(5)]
    for k in range(n_policies):
        owner = owners[k % len(owners)]
        policy = Policy.objects.create(
            slug=f"policy-{k:03d}",
            name=f"Policy {k}",
            organization=owner.organizations.get(),
            owner=owner,
            endpoint_url=f"ws://policy-{k}.example:8000",
        )
        policy_check_record(policy=policy, ok=True, latency_ms=10.0, requirements=REQUIREMENTS)
    keys = []
    for k in range(n_labs):
        lab = lab_get_or_create(name=f"Load Lab {k}", organization=f"Load Org {k}")
        Robot.objects.create(lab=lab, **ROBOT)
        keys.append(api_key_issue(lab=lab, name="load").plaintext)
    return keys


def start_gunicorn(*, port: int, workers: int, threads: int, env: dict[str, str]) -> subprocess.Popen:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "arena.wsgi:application",
            "-b",
            f"127.0.0.1:{port}",
            "-w",
            str(workers),
            "-k",
            "gthread",
            "--threads",
            str(threads),
            "--backlog",
            "2048",
            # Longer than a lab's pause, so a kept-alive connection is not closed under a request being sent.
            "--keep-alive",
            "10",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/api/v1/leaderboard/", timeout=2).status_code == 200:
                return proc
        except requests.RequestException:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("gunicorn did not answer within 30 s")


def lab_loop(
    base: str, key: str, until: float, samples: Samples | None, lab_index: int, think_s: float
) -> int:
    """Run sessions until ``until`` (monotonic time), waiting about ``think_s`` seconds before each call;
    returns how many were completed."""
    pace = random.Random(lab_index)
    http = requests.Session()
    http.headers["Authorization"] = f"Api-Key {key}"
    done = 0

    def call(endpoint: str, path: str, body: dict, expect: int) -> dict | None:
        if think_s:
            time.sleep(think_s * pace.uniform(0.5, 1.5))
        start = time.perf_counter()
        error = None
        try:
            response = http.post(base + path, json=body, timeout=30)
            if response.status_code != expect:
                error = f"{response.status_code} {response.text[:80]}"
        except requests.RequestException as exc:
            error = type(exc).__name__
            response = None
        if samples is not None:
            samples.add(endpoint, (time.perf_counter() - start) * 1000, error)
        return None if error else response.json()

    while time.monotonic() < until:
        session = call(ASSIGN, "/sessions/", {"robot": "franka-1", "task": f"task of lab {lab_index}"}, 201)
        if session is None:
            time.sleep(0.05)
            continue
        sid = session["id"]
        for slot, progress in (("A", 60 + lab_index % 30), ("B", 40)):
            call(
                ENDPOINTS[1],
                f"/sessions/{sid}/episodes/",
                {"slot": slot, "progress": progress, "success": False, "steps": 300, "duration_s": 20.0},
                201,
            )
        if call(
            ENDPOINTS[2], f"/sessions/{sid}/preference/", {"choice": "AB"[done % 2], "reason": "load"}, 201
        ):
            done += 1
    return done


def run_labs(
    base: str, keys: list[str], seconds: float, samples: Samples | None, think_s: float = 0.0
) -> tuple[int, float]:
    until = time.monotonic() + seconds
    counts = [0] * len(keys)

    def run(k: int) -> None:
        counts[k] = lab_loop(base, keys[k], until, samples, k, think_s)

    started = time.perf_counter()
    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(keys))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts), time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def report(title: str, samples: Samples, elapsed: float, sessions: int, n_labs: int) -> bool:
    print(f"\n{title}")
    print(
        f"{'endpoint':<34} {'requests':>8} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'errors':>7}"
    )
    for endpoint in ENDPOINTS:
        values = samples.latency_ms.get(endpoint, [])
        if not values:
            continue
        print(
            f"{endpoint:<34} {len(values):>8} {len(values) / elapsed:>7.1f} "
            f"{statistics.median(values):>8.1f} "
            f"{percentile(values, 99):>8.1f} {max(values):>8.1f} {len(samples.errors.get(endpoint, [])):>7}"
        )
    total = sum(len(v) for v in samples.latency_ms.values())
    print(f"{'all':<34} {total:>8} {total / elapsed:>7.1f}")
    print(f"{sessions} sessions completed in {elapsed:.1f} s ({sessions / elapsed:.1f}/s) by {n_labs} labs")
    for endpoint, errors in samples.errors.items():
        print(f"  {endpoint}: {len(errors)} errors, e.g. {errors[0]}")
    p99 = percentile(samples.latency_ms[ASSIGN], 99) if samples.latency_ms.get(ASSIGN) else float("inf")
    met = p99 < TARGET_P99_MS
    scale = (
        "" if n_labs == TARGET_LABS else f" (measured with {n_labs} labs, the target is for {TARGET_LABS})"
    )
    print(
        f"pair assignment p99 {p99:.1f} ms < {TARGET_P99_MS:.0f} ms with {n_labs} concurrent labs: "
        f"{'MET' if met else 'MISSED'}{scale}"
    )
    return met


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--labs", type=int, default=TARGET_LABS, help="concurrent simulated labs")
    parser.add_argument("--policies", type=int, default=60, help="active policies in the pool")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of measured load")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of unmeasured load first")
    parser.add_argument(
        "--think",
        type=float,
        default=2.0,
        help="paced phase: mean seconds a lab waits before each call (real labs: minutes)",
    )
    parser.add_argument("--workers", type=int, default=4, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker")
    parser.add_argument("--database-url", default=os.environ.get("ARENA_LOAD_DATABASE_URL", LOAD_DB))
    parser.add_argument("--redis-url", default=REDIS_DB, help="cache and broker (a database of its own)")
    parser.add_argument("--quick", action="store_true", help="10 s of load after 3 s of warm-up")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.warmup = 10.0, 3.0

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "arena.settings",
        "DATABASE_URL": args.database_url,
        "ARENA_DB_CONN_MAX_AGE": "600",
        "REDIS_URL": args.redis_url,
        "CELERY_BROKER_URL": args.redis_url,
        "ARENA_MAX_OPEN_SESSIONS_PER_LAB": "1000",
        "ARENA_THROTTLE_KEY": "1000000/min",
        "ARENA_THROTTLE_ANON": "1000000/min",
        "ARENA_CHECK_ON_REGISTER": "0",
        "ARENA_LOG_LEVEL": "WARNING",
        "OPENBLAS_NUM_THREADS": "1",
    }
    os.environ.update(env)
    from arena.serve import drop_postgres_database, ensure_postgres_database

    drop_postgres_database(args.database_url)
    ensure_postgres_database(args.database_url)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, check=True, env=env
    )
    import django

    django.setup()
    import redis

    from arena.services.ranking import ranking_snapshot_create

    redis.Redis.from_url(args.redis_url).flushdb()
    keys = seed(n_policies=args.policies, n_labs=args.labs)
    print(
        f"{args.policies} active policies (health PRE-SEEDED: one stored passing check each, no policy "
        f"servers), {args.labs} labs; gunicorn {args.workers} workers x {args.threads} threads; "
        f"Postgres {args.database_url.rsplit('/', 1)[-1]}; {os.cpu_count()} cores"
    )
    port = free_port()
    server = start_gunicorn(port=port, workers=args.workers, threads=args.threads, env=env)
    base = f"http://127.0.0.1:{port}/api/v1"
    try:
        warm, _ = run_labs(base, keys, args.warmup, None)
        snapshot = ranking_snapshot_create()
        print(
            f"warm-up: {warm} sessions; ranking snapshot v{snapshot.version} over {snapshot.n_comparisons} "
            f"comparisons feeds the pair sampler"
        )
        saturated = Samples()
        sessions, elapsed = run_labs(base, keys, args.duration, saturated)
        report(
            f"SATURATION: {args.labs} labs calling back to back (no think time)",
            saturated,
            elapsed,
            sessions,
            args.labs,
        )
        paced = Samples()
        sessions, elapsed = run_labs(base, keys, args.duration, paced, think_s=args.think)
        met = report(
            f"PACED: {args.labs} labs, ~{args.think:g} s before each call",
            paced,
            elapsed,
            sessions,
            args.labs,
        )
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        redis.Redis.from_url(args.redis_url).flushdb()
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
