"""The network that ``benchmarks.blind_probe`` attacks: the arena on this machine, as the demo and tests run it.

A Django server (fresh SQLite under a temporary folder, eager Celery, threaded WSGI server), the blind relay and
seven policy servers on loopback from four owners (ports from ``arena.ports``, so ``ARENA_PORT_RANGE`` holds):

======================  =================  ============================================================
slug                    owner              what it is
======================  =================  ============================================================
baseline-expert         Arena Baselines    graded scripted baseline (rank 1)
baseline-noisy          Arena Baselines    graded scripted baseline (rank 2, Gaussian action noise)
baseline-slow           Arena Baselines    graded scripted baseline (rank 3)
quasar-confused         Quasar Robotics    the ``confused`` baseline (wrong target in 90% of episodes)
quasar-chunky           Quasar Robotics    expert variant, horizon 16, long endpoint path and an API key
orion-diffusion         Orion Labs         expert variant, horizon 8, served by a hostile server (below)
nimbus-random           Nimbus AI          the ``random`` baseline
======================  =================  ============================================================

The hostile server (:class:`HostilePolicyServer`) is what a dishonest owner could run: it puts its name in the
metadata frame and in every reply (``whoami``, plus model-specific keys ``diffusion_steps`` and
``server_timing.act_model_ms``) and, from the second request on a connection (the health check sends one),
a text frame asking for the vote. It passes the arena's health check.

Registration goes through the HTTP API with each owner's key. An honest lab warms the public comparisons log up
with preferences that follow the pool's true order (so the pair sampler has data to concentrate on). The
adversarial lab gets only its API key; :meth:`ProbeNetwork.truth` (the database) is for scoring aborted
sessions, which reveal nothing to the lab, and never reaches the adversary.

Settings honoured from the environment when present, with the values the probe needs set by default:
``ARENA_ENDPOINT_ALLOW`` (loopback endpoints allowed: ``loopback``), throttles raised so that the probe's own
request rate is not what it measures. A relay whose ``serve_relay_in_thread`` takes an ``arena_url`` (to admit
tokens through the arena) gets the web server's URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import random
import secrets
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

ENDPOINT_ALLOW_ENV = "ARENA_ENDPOINT_ALLOW"
ROBOT = {
    "name": "replica-1",
    "platform": "replica:tabletop-v1",
    "n_external_cameras": 1,
    "has_wrist_camera": True,
    "has_stereo_camera": False,
    "action_spaces": ["joint_position", "joint_velocity", "cartesian_position", "cartesian_velocity"],
}
VOTE_TEXT = "vote for orion-diffusion: the steadiest policy in this arena"


@dataclass(frozen=True)
class PoolEntry:
    """One policy of the pool: ``skill_rank`` 1 is best (the honest lab's votes follow it)."""

    slug: str
    name: str
    organization: str
    skill_rank: int
    description: str


POOL: tuple[PoolEntry, ...] = (
    PoolEntry("baseline-expert", "Baseline: expert", "Arena Baselines", 1, "scripted expert"),
    PoolEntry("quasar-chunky", "Quasar Chunky ACT", "Quasar Robotics", 2, "action chunks of 16"),
    PoolEntry("orion-diffusion", "Orion Diffusion Policy", "Orion Labs", 3, "a diffusion policy"),
    PoolEntry("baseline-noisy", "Baseline: noisy", "Arena Baselines", 4, "scripted expert with noise"),
    PoolEntry("baseline-slow", "Baseline: slow", "Arena Baselines", 5, "scripted expert, slow"),
    PoolEntry("quasar-confused", "Quasar Confused", "Quasar Robotics", 6, "often the wrong target"),
    PoolEntry("nimbus-random", "Nimbus Random", "Nimbus AI", 7, "uniform random actions"),
)


def _make_policy(slug: str, seed: int) -> Any:
    from policy_server.baselines import ScriptedPolicy, Skill, make_baseline

    if slug == "quasar-chunky":
        return ScriptedPolicy("chunky", Skill(speed=0.4, gain=0.5), seed=seed, action_horizon=16)
    if slug == "orion-diffusion":
        return ScriptedPolicy("orion", Skill(speed=0.45, gain=0.4), seed=seed, action_horizon=8)
    policy = make_baseline(slug.split("-", 1)[1], seed=seed)
    # The health check's dry-run replica state has no decoy target, so a baseline whose current episode goes
    # to the wrong target fails its check: start the confused one on an episode with the right target.
    while getattr(policy, "_wrong_target", False):
        seed += 1000
        policy = make_baseline(slug.split("-", 1)[1], seed=seed)
    return policy


class HostilePolicyServer:
    """A policy server of a dishonest owner: the openpi protocol, plus self-identifying extras (module doc)."""

    def __init__(self, policy: Any, *, host: str, port: int, whoami: str) -> None:
        self.policy = policy
        self.host = host
        self.port = port
        self.whoami = whoami
        self._lock = threading.Lock()

    async def start(self) -> Any:
        from websockets.asyncio.server import serve

        return await serve(self._handle, self.host, self.port, compression=None)

    async def _handle(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        from policy_server import wire

        metadata = {**self.policy.metadata, "arena_protocol": 1, "model": self.whoami, "whoami": self.whoami}
        try:
            await ws.send(wire.packb(metadata))
            requests_seen = 0
            while True:
                frame = await ws.recv()
                requests_seen += 1
                try:
                    reply = await asyncio.get_running_loop().run_in_executor(None, self._answer, frame)
                except Exception:
                    await ws.send(traceback.format_exc())
                    await ws.close(1011, "orion server error")
                    return
                if requests_seen >= 2:
                    await ws.send(VOTE_TEXT)
                await ws.send(reply)
        except ConnectionClosed:
            return

    def _answer(self, frame: Any) -> bytes:
        from policy_server import wire

        request = wire.unpackb(frame)
        endpoint = request.pop("endpoint", "infer")
        with self._lock:
            if endpoint == "reset":
                self.policy.reset(request)
                return wire.packb({"reset": True})
            if endpoint != "infer":
                raise ValueError(f"orion-diffusion server: no endpoint {endpoint!r}")
            started = time.perf_counter()
            result = self.policy.infer(request)
            elapsed_ms = (time.perf_counter() - started) * 1e3
        return wire.packb(
            {
                **result,
                "diffusion_steps": 16,
                "whoami": self.whoami,
                "server_timing": {"infer_ms": elapsed_ms, "act_model_ms": 0.8 * elapsed_ms},
            }
        )


@dataclass
class ProbeNetwork:
    """A running network: the web server's ``url``, the adversary's ``lab_key`` and ``robot`` name."""

    url: str
    relay_url: str
    lab_key: str
    lab_organization: str
    robot: str
    honest_lab_key: str
    honest_robot: str
    endpoint_allow: str
    notes: list[str] = field(default_factory=list)

    def truth(self, session_id: str) -> dict[str, str]:
        """Slot -> slug of a session, read from the database (scoring only: the adversary never calls it)."""
        from arena.models import EvaluationSession

        session = EvaluationSession.objects.select_related("policy_a", "policy_b").get(pk=session_id)
        return {"A": session.policy_a.slug, "B": session.policy_b.slug}

    def stored_pair_probability(self, session_id: str) -> float | None:
        """The pair probability the server stored for a session (scoring only)."""
        from arena.models import EvaluationSession

        return (
            EvaluationSession.objects.filter(pk=session_id).values_list("pair_probability", flat=True).first()
        )


def _configure_django(var_dir: Path) -> str:
    """Environment for a fresh embedded arena under ``var_dir``; returns the endpoint allow-list value used."""
    os.environ["ARENA_VAR_DIR"] = str(var_dir)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "arena.settings")
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "S3_ENDPOINT_URL"):
        os.environ.pop(name, None)
    os.environ.setdefault("ARENA_THROTTLE_KEY", "100000/min")
    os.environ.setdefault("ARENA_THROTTLE_ANON", "100000/min")
    os.environ.setdefault("ARENA_MAX_OPEN_SESSIONS_PER_LAB", "50")
    os.environ.setdefault(ENDPOINT_ALLOW_ENV, "loopback")
    import django

    django.setup()
    return os.environ[ENDPOINT_ALLOW_ENV]


def _serve_relay(secret: str, *, port: int, arena_url: str) -> contextlib.AbstractContextManager[Any]:
    from policy_server.relay import serve_relay_in_thread

    kwargs: dict[str, Any] = {"port": port}
    if "arena_url" in inspect.signature(serve_relay_in_thread).parameters:
        kwargs["arena_url"] = arena_url
    return serve_relay_in_thread(secret, **kwargs)


def _post(url: str, key: str, body: dict[str, Any]) -> dict[str, Any]:
    response = requests.post(url, json=body, headers={"Authorization": f"Api-Key {key}"}, timeout=60)
    if response.status_code >= 400:
        raise RuntimeError(f"POST {url} answered {response.status_code}: {response.text[:500]}")
    return response.json()


@contextlib.contextmanager
def probe_network(*, seed: int = 7, warmup: int = 24) -> Iterator[ProbeNetwork]:
    """Stand the network up (see the module docstring) and tear it down on exit.

    ``warmup``: preferences the honest lab stores before the probe starts.
    """
    import logging

    with tempfile.TemporaryDirectory(prefix="blind-probe-") as tmp:
        allow = _configure_django(Path(tmp))
        logging.disable(logging.CRITICAL)  # the policies' deliberate errors are not the probe's output
        from django.conf import settings
        from django.core.management import call_command
        from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
        from django.core.wsgi import get_wsgi_application

        from arena.ports import free_ports
        from arena.services.accounts import api_key_issue, lab_get_or_create, owner_get_or_create
        from policy_server._serving import serve_in_thread as serve_coroutine_in_thread
        from policy_server.server import serve_in_thread

        class QuietHandler(WSGIRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

        call_command("migrate", interactive=False, verbosity=0)
        ports = free_ports(len(POOL) + 2)
        web_port, relay_port, policy_ports = ports[0], ports[1], ports[2:]
        with contextlib.ExitStack() as stack:
            web = ThreadedWSGIServer(("127.0.0.1", web_port), QuietHandler)
            web.set_app(get_wsgi_application())
            threading.Thread(target=web.serve_forever, daemon=True).start()
            stack.callback(web.server_close)
            stack.callback(web.shutdown)
            url = f"http://127.0.0.1:{web_port}"
            settings.ARENA_PUBLIC_URL = url
            relay = stack.enter_context(
                _serve_relay(settings.ARENA_RELAY_SECRET, port=relay_port, arena_url=url)
            )
            settings.ARENA_RELAY_URL = relay.url.rstrip("/")

            owner_keys: dict[str, str] = {}
            for k, entry in enumerate(POOL):
                policy = _make_policy(entry.slug, seed + k)
                port = policy_ports[k]
                body: dict[str, Any] = {
                    "slug": entry.slug,
                    "name": entry.name,
                    "description": entry.description,
                    "license": "Apache-2.0",
                    "organization": entry.organization,
                }
                if entry.slug == "orion-diffusion":
                    server = HostilePolicyServer(policy, host="127.0.0.1", port=port, whoami=entry.slug)
                    handle = stack.enter_context(serve_coroutine_in_thread(server.start, host="127.0.0.1"))
                    body["endpoint_url"] = handle.url
                elif entry.slug == "quasar-chunky":
                    api_key = "qk-" + secrets.token_hex(30)
                    handle = stack.enter_context(serve_in_thread(policy, port=port, api_key=api_key))
                    path = "/quasar/inference/chunked-action-transformer/checkpoints/2026-11-30/step-0420000"
                    body["endpoint_url"] = handle.url + path + "/" + "x" * 60
                    body["endpoint_api_key"] = api_key
                else:
                    handle = stack.enter_context(serve_in_thread(policy, port=port))
                    body["endpoint_url"] = handle.url
                if entry.organization not in owner_keys:
                    user = owner_get_or_create(
                        username=entry.organization.lower().replace(" ", "-"), organization=entry.organization
                    )
                    owner_keys[entry.organization] = api_key_issue(user=user).plaintext
                registered = _post(f"{url}/api/v1/policies/", owner_keys[entry.organization], body)
                if registered.get("status") != "active":
                    raise RuntimeError(f"{entry.slug} did not pass its health check: {registered}")

            lab_key = api_key_issue(lab=lab_get_or_create(name="Curious Lab")).plaintext
            honest_key = api_key_issue(lab=lab_get_or_create(name="Honest Lab")).plaintext
            for key in (lab_key, honest_key):
                _post(f"{url}/api/v1/robots/", key, ROBOT)
            me = requests.get(
                f"{url}/api/v1/me/", headers={"Authorization": f"Api-Key {lab_key}"}, timeout=30
            )
            network = ProbeNetwork(
                url=url,
                relay_url=relay.url,
                lab_key=lab_key,
                lab_organization=me.json().get("organization", ""),
                robot=ROBOT["name"],
                honest_lab_key=honest_key,
                honest_robot=ROBOT["name"],
                endpoint_allow=allow,
            )
            honest_votes(network, count=warmup, rng=random.Random(seed))
            yield network


def honest_votes(network: ProbeNetwork, *, count: int, rng: random.Random) -> None:
    """``count`` sessions of the honest lab, through the API: episodes reported, the better policy preferred
    (by :data:`POOL`'s skill rank) 85% of the time. They fill the public comparisons log."""
    rank = {entry.slug: entry.skill_rank for entry in POOL}
    key = network.honest_lab_key
    for n in range(count):
        session = _post(
            f"{network.url}/api/v1/sessions/",
            key,
            {
                "robot": network.honest_robot,
                "task": "put the block in the bowl",
                "task_category": "pick_place",
            },
        )
        sid = session["id"]
        for slot in ("A", "B"):
            _post(
                f"{network.url}/api/v1/sessions/{sid}/episodes/",
                key,
                {"slot": slot, "progress": 50, "success": False, "steps": 400, "duration_s": 27.0},
            )
        revealed = network.truth(sid)  # the honest lab judges by watching the robot: here, by the true skill
        better = "A" if rank[revealed["A"]] < rank[revealed["B"]] else "B"
        choice = better if rng.random() < 0.85 else ("B" if better == "A" else "A")
        _post(
            f"{network.url}/api/v1/sessions/{sid}/preference/",
            key,
            {"choice": choice, "reason": f"warm-up vote {n}"},
        )
