"""What relay admission costs, and how fast a closed session's connections die.

    python -m benchmarks.relay_admission [--quick]

The embedded arena (SQLite in a temporary ``ARENA_VAR_DIR``, Django's threaded WSGI server on loopback), two
policy servers that do no work, and two relays in this process: one standalone (token checks only) and one
admitted by the arena (``--arena-url``, polling every 1.5 s as deployed). Measured:

- the handshake (connect and metadata frame), standalone vs admitted: admission adds one arena call;
- an ``infer`` round trip with a small observation, standalone vs admitted: no per-frame cost is expected;
- one batched ``status/`` call for K open connections (the relay's poll), K = 1, 50, 500;
- the delay from the preference's HTTP answer to the relay closing the open connection (bounded by the poll
  period plus one status call).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from policy_server.check import dummy_observation, requirements_from_metadata

POLL_S = 1.5
SECRET = "benchmark-only relay secret, not for deployment"
OBS = {
    **dummy_observation(requirements_from_metadata({})),  # the full DROID observation the relay lets through
    "prompt": "wipe the table",
}


def _percentiles(samples_ms: list[float]) -> str:
    p50, p99 = np.percentile(samples_ms, [50, 99])
    return f"{p50:9.2f} {p99:9.2f} {len(samples_ms):6d}"


@contextlib.contextmanager
def _arena() -> Iterator[str]:
    """Django set up on a fresh SQLite database; yields the base URL of a live threaded WSGI server."""
    os.environ["ARENA_VAR_DIR"] = tempfile.mkdtemp(prefix="arena-bench-admission-")
    os.environ["ARENA_RELAY_SECRET"] = SECRET
    os.environ["ARENA_MAX_OPEN_SESSIONS_PER_LAB"] = "1000"
    os.environ["ARENA_CHECK_ON_REGISTER"] = "0"
    # Admitting 500 connections one by one takes longer than the default 10 s lease on SQLite.
    os.environ["ARENA_RELAY_ATTACHMENT_LEASE_SECONDS"] = "600"
    os.environ["ARENA_ENDPOINT_ALLOW"] = "loopback"  # the benchmark's policy server listens on loopback
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "arena.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
    from django.core.wsgi import get_wsgi_application

    from arena.ports import free_port

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    call_command("migrate", interactive=False, verbosity=0)
    web = ThreadedWSGIServer(("127.0.0.1", free_port()), Quiet)
    web.set_app(get_wsgi_application())
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{web.server_address[1]}"
    finally:
        web.shutdown()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer samples (a smoke run)")
    args = parser.parse_args(argv)
    handshakes, calls, closes = (10, 50, 3) if args.quick else (100, 500, 10)

    with _arena() as url:
        from django.conf import settings
        from django.contrib.auth import get_user_model
        from websockets.exceptions import ConnectionClosed
        from websockets.sync.client import connect

        from arena.models import Organization, Policy
        from arena.selectors.sessions import session_for_evaluator
        from arena.services.accounts import api_key_issue, lab_get_or_create, robot_register
        from arena.services.policies import policy_check_record
        from arena.services.sessions import episode_report, pair_assign, preference_submit
        from benchmarks.protocol import ZeroPolicy
        from policy_server.client import PolicyClient
        from policy_server.relay import serve_relay_in_thread
        from policy_server.relay_admission import ArenaLink
        from policy_server.relay_token import open_token
        from policy_server.server import serve_in_thread

        with contextlib.ExitStack() as stack:
            servers = [stack.enter_context(serve_in_thread(ZeroPolicy())) for _ in range(2)]
            standalone = stack.enter_context(serve_relay_in_thread(SECRET))
            admitted = stack.enter_context(serve_relay_in_thread(SECRET, arena_url=url, poll_interval=POLL_S))
            organization = Organization.objects.create(name="Bench Org", slug="bench-org")
            owner = get_user_model().objects.create(username="bench-owner")
            organization.members.add(owner)
            requirements = {"action_space": "joint_velocity", "action_dim": 8, "action_horizon": 10}
            for n, server in enumerate(servers):
                policy = Policy.objects.create(
                    slug=f"zero-{n}",
                    name=f"Zero {n}",
                    organization=organization,
                    owner=owner,
                    endpoint_url=server.url,
                )
                policy_check_record(policy=policy, ok=True, latency_ms=1.0, requirements=requirements)
            lab = lab_get_or_create(name="Bench Lab")
            key = api_key_issue(lab=lab).api_key
            robot = robot_register(
                lab=lab,
                name="franka-1",
                platform="droid",
                n_external_cameras=1,
                has_wrist_camera=True,
                has_stereo_camera=False,
                action_spaces=["joint_velocity"],
            )

            def new_session() -> dict[str, Any]:
                session = pair_assign(lab=lab, robot=robot, task="wipe the table")
                return session_for_evaluator(session, minted_for=key)

            def token_path(session: dict[str, Any], slot: str = "A") -> str:
                return session["slots"][slot]["relay_url"].rsplit("/", 1)[1]

            rows: list[tuple[str, str]] = []
            for label, relay in (("standalone", standalone), ("admitted", admitted)):
                # A fresh slot per handshake, so that none waits for the previous connection's release.
                paths = [token_path(new_session(), slot) for _ in range(handshakes // 2 + 1) for slot in "AB"]
                samples = []
                for path in paths[:handshakes]:
                    started = time.perf_counter()
                    with connect(f"{relay.url}/{path}", open_timeout=30) as ws:
                        ws.recv(timeout=30)
                        samples.append((time.perf_counter() - started) * 1e3)
                rows.append((f"handshake + metadata, {label} relay", _percentiles(samples)))
            for label, relay in (("standalone", standalone), ("admitted", admitted)):
                with PolicyClient(f"{relay.url}/{token_path(new_session())}") as client:
                    for _ in range(20):
                        client.infer(OBS)
                    client.latencies_ms.clear()
                    for _ in range(calls):
                        client.infer(OBS)
                    rows.append((f"infer round trip, {label} relay", _percentiles(client.latencies_ms)))

            link = ArenaLink(url, SECRET)
            stack.callback(link.close)
            samples = []
            for _ in range(20 if args.quick else 50):
                started = time.perf_counter()
                link._post("release/", {"connections": []})
                samples.append((time.perf_counter() - started) * 1e3)
            rows.append(("reference: an empty release/ call (HTTP + Django only)", _percentiles(samples)))
            for k in (1, 50, 500):
                claims = {}
                while len(claims) < k:
                    session = new_session()
                    for slot in "AB":
                        if len(claims) < k:
                            opened = open_token(token_path(session, slot), key=SECRET)
                            connection = os.urandom(16).hex()
                            link.admit(opened, connection)
                            claims[connection] = opened
                samples = []
                for _ in range(20 if args.quick else 50):
                    started = time.perf_counter()
                    closed = link.status(claims)
                    samples.append((time.perf_counter() - started) * 1e3)
                assert not closed
                rows.append((f"status call, {k} open connections", _percentiles(samples)))
                link.release(claims)

            delays = []
            for _ in range(closes):
                session = new_session()
                ws = connect(f"{admitted.url}/{token_path(session)}", open_timeout=30)
                ws.recv(timeout=30)
                for slot in "AB":
                    episode_report(
                        lab=lab,
                        session_id=session["id"],
                        slot=slot,
                        progress=50,
                        success=False,
                        steps=10,
                        duration_s=1.0,
                    )
                preference_submit(lab=lab, session_id=session["id"], choice="A", reason="bench")
                voted = time.perf_counter()
                with contextlib.suppress(ConnectionClosed):
                    ws.recv(timeout=30)
                delays.append((time.perf_counter() - voted) * 1e3)
            rows.append((f"preference -> open connection closed (poll {POLL_S} s)", _percentiles(delays)))

    print(f"{'':55s} {'p50 ms':>9s} {'p99 ms':>9s} {'n':>6s}")
    for label, numbers in rows:
        print(f"{label:55s} {numbers}")
    print(f"(arena: Django threaded WSGI server on SQLite; relay secret and DB in {settings.VAR_DIR})")


if __name__ == "__main__":
    main()
