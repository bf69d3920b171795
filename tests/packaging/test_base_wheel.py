"""The base install, as a lab or a policy owner gets it: ``python -m build`` makes the sdist and, from it, the
wheel; a fresh virtual environment installs the wheel without extras (from the package index); the commands work
and none of the server's packages came along.

Slow (a venv and a resolver run; pip's cache makes reruns quicker), hence one test with generous timeouts.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from arena.ports import free_port
from tests.packaging.wheel import DISTRIBUTION, build_wheel, fresh_venv, ok, run

NOT_IN_BASE = (
    "django",
    "celery",
    "psycopg",
    "gunicorn",
    "seaweedfs",
    "scipy",
    "boto3",
    "cryptography",
    "pyarrow",
)
NEEDS_AN_EXTRA = {  # module: the extra its error message must name
    "evaluator_client.video": "lab",
    "evaluator_client.trajectory": "lab",
    "evaluator_client.runner": "lab",
    "evaluator_client.replica": "sim",
}
SERVER_MODULES = (
    "policy_server.relay",
    "policy_server.relay_admission",
    "policy_server.relay_dialout",
    "policy_server.relay_token",
)
# The newest releases a Python 3.8 laptop gets (numpy 1.24, websockets 13: 14 dropped 3.8); tested on 3.11.
PYTHON38_RELEASES = ("numpy==1.24.4", "websockets==13.1")

# Run inside the fresh venv: import every module of the two packages a base install must run, then report
# which of the arena's (or its server's) modules got imported, and what each extra-needing module says.
PROBE = """
import importlib, json, pkgutil, sys
import evaluator_client, policy_server
needs_extra, server_only = json.loads(sys.argv[1]), json.loads(sys.argv[2])
skip = set(needs_extra) | set(server_only)
imported = []
def walk(path, prefix):
    for info in pkgutil.iter_modules(path, prefix):
        if info.name in skip or info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        imported.append(info.name)
        if info.ispkg:
            walk(module.__path__, info.name + ".")
for package in (policy_server, evaluator_client):
    walk(package.__path__, package.__name__ + ".")
extras = {}
for name in needs_extra:
    try:
        importlib.import_module(name)
        extras[name] = "imported"
    except Exception as exc:
        extras[name] = f"{type(exc).__name__}: {exc}"
roots = sorted({name.split(".")[0] for name in sys.modules})
print(json.dumps({"imported": imported, "roots": roots, "extras": extras}))
"""


# The lab's side of a slot: the client as the runner opens it (no address guard: it talks to the relay).
CLIENT = """
import json, sys
from policy_server.check import dummy_observation, requirements_from_metadata
from policy_server.client import PolicyClient
with PolicyClient(sys.argv[1], connect_timeout=20, request_timeout=60) as client:
    obs = dummy_observation(requirements_from_metadata(client.metadata))
    actions = client.infer(obs)["actions"]
print(json.dumps({"dialect": client.dialect, "shape": list(actions.shape)}))
"""


def serve_and_check(scripts: Path, cwd: Path) -> dict:
    """``arena-policy serve --baseline expert`` checked by ``arena-policy check`` (the health check's JSON), then
    asked for one chunk by a lab's client (its answer under ``"lab"``)."""
    port = free_port()
    server = subprocess.Popen(
        [
            str(scripts / "arena-policy"),
            "serve",
            "--baseline",
            "expert",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(60):
            check = run(
                [str(scripts / "arena-policy"), "check", f"ws://127.0.0.1:{port}", "--allow", "loopback"],
                timeout=120,
                cwd=cwd,
            )
            result = json.loads(check.stdout) if check.stdout.strip().startswith("{") else {}
            if result and result.get("error") not in ("refused", "unreachable"):
                lab = ok(
                    run(
                        [str(scripts / "python"), "-c", CLIENT, f"ws://127.0.0.1:{port}"],
                        timeout=300,
                        cwd=cwd,
                    )
                )
                return {**result, "lab": json.loads(lab.strip().splitlines()[-1])}
            assert server.poll() is None, server.communicate(timeout=30)[1][-3000:]
            time.sleep(0.5)
        raise AssertionError(f"the policy server never answered: {check.stdout} {check.stderr}")
    finally:
        server.terminate()
        server.wait(timeout=60)


@pytest.mark.packaging
@pytest.mark.timeout(1800)
def test_the_base_wheel_installs_the_client_and_the_policy_server_only(tmp_path):
    wheel = build_wheel(tmp_path / "dist")
    scripts = fresh_venv(tmp_path / "venv", str(wheel))
    python = scripts / "python"

    # Outside the checkout, so only the installed wheel can be imported.
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    assert "usage: arena-eval" in ok(run([str(scripts / "arena-eval"), "--help"], timeout=120, cwd=outside))
    assert "usage: arena-policy" in ok(
        run([str(scripts / "arena-policy"), "--help"], timeout=120, cwd=outside)
    )
    relay = run([str(scripts / "arena-relay"), "--help"], timeout=120, cwd=outside)
    assert relay.returncode == 2 and f"pip install '{DISTRIBUTION}[server]'" in relay.stderr, relay.stderr
    assert "Traceback" not in relay.stderr

    frozen = ok(run([str(python), "-m", "pip", "freeze"], timeout=120)).lower()
    names = {line.split("==")[0].split(" @ ")[0].strip() for line in frozen.splitlines()}
    assert DISTRIBUTION in names, frozen
    assert not [n for n in names if n.startswith(NOT_IN_BASE)], frozen

    probe = ok(
        run(
            [str(python), "-c", PROBE, json.dumps(NEEDS_AN_EXTRA), json.dumps(SERVER_MODULES)],
            timeout=300,
            cwd=outside,
        )
    )
    report = json.loads(probe.strip().splitlines()[-1])
    assert "evaluator_client.cli" in report["imported"] and "policy_server.server" in report["imported"]
    assert "policy_server.client" in report["imported"] and "evaluator_client.spool" in report["imported"]
    arena_side = {"arena", "ranking", "benchmarks", "django", "rest_framework", "celery", "scipy", "boto3"}
    assert not arena_side & set(report["roots"]), report["roots"]
    for module, extra in NEEDS_AN_EXTRA.items():
        message = report["extras"][module]
        assert (
            message.startswith("MissingExtraError") and f"pip install '{DISTRIBUTION}[{extra}]'" in message
        ), (
            module,
            message,
        )

    # A policy served and health-checked through the installed commands, then again with the releases a
    # Python 3.8 laptop resolves to.
    checked = serve_and_check(scripts, outside)
    assert checked["ok"] is True and checked["lab"] == {"dialect": "arena", "shape": [10, 8]}, checked
    ok(run([str(python), "-m", "pip", "install", "--quiet", *PYTHON38_RELEASES], timeout=900))
    frozen = ok(run([str(python), "-m", "pip", "freeze"], timeout=120)).lower()
    assert all(pin in frozen for pin in PYTHON38_RELEASES), frozen
    checked = serve_and_check(scripts, outside)
    assert checked["ok"] is True and checked["lab"] == {"dialect": "arena", "shape": [10, 8]}, checked
