"""The production shape, as a real gunicorn serves it (the flags of ``arena.serve``), with ``ARENA_HTTPS=1``
behind a TLS-terminating proxy: HTTPS redirect, HSTS, CSP, Secure cookies, no ``testserver`` host, the vendored
API docs assets and the admin's static files (collected and compressed, as ``make serve`` does), and an access
log that never holds an API key, even one sent in the query string."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from arena.ports import free_port
from arena.serve import GUNICORN_LOG_FLAGS

ROOT = Path(__file__).resolve().parents[2]
HTTPS = {"X-Forwarded-Proto": "https"}


def production_env(tmp_path: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        # DJANGO_ALLOW_ASYNC_UNSAFE: the browser tests' session fixture sets it in this process; a deployment
        # never has it (the deploy check refuses it).
        if not k.startswith(
            (
                "DATABASE_URL",
                "CELERY_",
                "S3_",
                "REDIS_URL",
                "ARENA_",
                "DJANGO_SETTINGS",
                "DJANGO_ALLOW_ASYNC_UNSAFE",
            )
        )
    }
    env.update(
        ARENA_VAR_DIR=str(tmp_path / "var"),
        ARENA_SECRET_KEY=secrets.token_urlsafe(50),
        ARENA_HTTPS="1",
        ARENA_TRUST_X_FORWARDED_PROTO="1",
        ARENA_HSTS_PRELOAD="1",
        ARENA_LOG_LEVEL="DEBUG",
        ARENA_LOG_FORMAT="json",
    )
    return env


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


@dataclass
class Served:
    url: str
    key: str
    log: Path
    env: dict[str, str]


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[Served]:
    """One production-shaped deployment (migrated, static files collected, gunicorn) for this module's tests:
    each reads only what its own requests caused (its request id, its access lines, its counters' increase)."""
    tmp_path = tmp_path_factory.mktemp("production")
    env = production_env(tmp_path)
    assert manage(env, "migrate", "--noinput").returncode == 0
    # As `make serve` does: collect the static files, then serve only those.
    assert manage(env, "collectstatic", "--noinput", "-v0").returncode == 0
    env["ARENA_STATIC_FINDERS"] = "0"
    # As `make serve` does: every process adds its counters to one folder that /metrics reads.
    (tmp_path / "metrics").mkdir()
    env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "metrics")
    issued = manage(env, "issue_key", "--lab", "Log Lab", "--organization", "Log Org")
    assert issued.returncode == 0, issued.stderr
    port = free_port()
    log = tmp_path / "gunicorn.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "arena.wsgi",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "1",
                *GUNICORN_LOG_FLAGS,
                "--error-logfile",
                "-",
            ],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                requests.get(f"{url}/api/v1/leaderboard/", headers=HTTPS, timeout=30)
                break
            except requests.RequestException:  # not listening yet, or the worker still booting
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.3)
        yield Served(url=url, key=issued.stdout.strip(), log=log, env=env)
    finally:
        process.terminate()
        process.wait(timeout=60)


def test_deploy_checks_pass_with_https(tmp_path):
    result = manage(production_env(tmp_path), "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr


def test_https_shape_headers_and_cookies(served):
    plain = requests.get(f"{served.url}/leaderboard/", allow_redirects=False, timeout=30)
    assert plain.status_code == 301 and plain.headers["Location"].startswith("https://")

    page = requests.get(f"{served.url}/accounts/login/", headers=HTTPS, timeout=30)
    assert page.status_code == 200
    assert "max-age=" in page.headers["Strict-Transport-Security"]
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    cookie = page.headers["Set-Cookie"]
    assert "csrftoken=" in cookie and "Secure" in cookie and "SameSite=Lax" in cookie

    spoofed = requests.get(f"{served.url}/leaderboard/", headers={**HTTPS, "Host": "testserver"}, timeout=30)
    assert spoofed.status_code == 400


def test_api_docs_assets_are_served_by_the_arena(served):
    docs = requests.get(f"{served.url}/api/docs/", headers=HTTPS, timeout=30)
    assert docs.status_code == 200
    assert "cdn." not in docs.text and "/static/drf_spectacular_sidecar/" in docs.text
    bundle = requests.get(
        f"{served.url}/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js",
        headers=HTTPS,
        timeout=30,
    )
    assert bundle.status_code == 200 and len(bundle.content) > 100_000


def test_admin_static_files_are_served_collected_and_compressed(served):
    css = requests.get(
        f"{served.url}/static/admin/css/base.css",
        headers={**HTTPS, "Accept-Encoding": "gzip"},
        timeout=30,
    )
    assert css.status_code == 200 and css.headers["Content-Type"].startswith("text/css")
    assert css.headers.get("Content-Encoding") == "gzip" and "body" in css.text
    login = requests.get(f"{served.url}/admin/login/", headers=HTTPS, timeout=30)
    assert login.status_code == 200 and "/static/admin/css/base.css" in login.text


def test_the_apps_log_lines_are_json_and_carry_the_request_id(served):
    missing = requests.get(
        f"{served.url}/no-such-page/", headers={**HTTPS, "X-Request-ID": "prod-trace-000001"}, timeout=30
    )
    assert missing.status_code == 404 and missing.headers["X-Request-ID"] == "prod-trace-000001"
    assert "Page not found" in missing.text  # the styled page, DEBUG off
    deadline = time.monotonic() + 60
    while "prod-trace-000001" not in (text := served.log.read_text()):
        assert time.monotonic() < deadline, text
        time.sleep(0.2)
    # gunicorn's own lines (its start-up and access lines) keep gunicorn's format; the app's are JSON.
    app_lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert app_lines and all({"ts", "level", "logger", "msg"} <= set(line) for line in app_lines)
    traced = [line for line in app_lines if line.get("request_id") == "prod-trace-000001"]
    assert traced and traced[0]["logger"] == "django.request" and "/no-such-page/" in traced[0]["msg"]


def _scrape(served: Served) -> dict[str, float]:
    """The samples of the web worker's /metrics, by their line's name and labels."""
    scraped = requests.get(f"{served.url}/metrics", headers=HTTPS, timeout=30)
    assert scraped.status_code == 200
    samples = {}
    for line in scraped.text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_metrics_add_up_the_counters_of_every_process(served):
    checks = 'arena_policy_checks_total{outcome="fail",trigger="arena"}'
    pages = 'arena_http_requests_total{method="GET",status="200",view="web-leaderboard"}'
    before = _scrape(served)
    # Another process of the deployment (as the Celery worker is) records a check outcome...
    other = manage(
        served.env,
        "shell",
        "-c",
        "from arena import metrics; metrics.CHECKS.labels(outcome='fail', trigger='arena').inc(2)",
    )
    assert other.returncode == 0, other.stderr
    for _ in range(3):
        assert requests.get(f"{served.url}/leaderboard/", headers=HTTPS, timeout=30).status_code == 200
    # ...and a scrape of the web worker reports it beside its own request counts.
    after = _scrape(served)
    assert after[checks] - before.get(checks, 0.0) == 2.0
    assert after[pages] - before.get(pages, 0.0) == 3.0
    health = requests.get(f"{served.url}/healthz", headers=HTTPS, timeout=30)
    assert health.status_code == 200 and health.json()["checks"]["broker"]["detail"] == "eager"


def test_keys_never_reach_the_access_log(served):
    secret = served.key.split("_", 2)[2]
    header = {**HTTPS, "Authorization": f"Api-Key {served.key}"}
    assert requests.get(f"{served.url}/api/v1/me/", headers=header, timeout=30).status_code == 200
    in_query = requests.get(f"{served.url}/api/v1/me/?api_key={served.key}", headers=HTTPS, timeout=30)
    assert in_query.status_code == 400 and in_query.json()["error"]["code"] == "key_in_url"
    encoded = served.key.replace("_", "%5F")
    assert (
        requests.get(f"{served.url}/leaderboard/?k={encoded}", headers=HTTPS, timeout=30).status_code == 400
    )
    wrong = {**HTTPS, "Authorization": f"Api-Key {served.key[:-4]}abcd"}
    assert requests.get(f"{served.url}/api/v1/me/", headers=wrong, timeout=30).status_code == 401

    # gunicorn writes an access line after its response: wait until the last request's line is there.
    deadline = time.monotonic() + 60
    while '"GET /api/v1/me/ HTTP/1.1" 401' not in (text := served.log.read_text()):
        assert time.monotonic() < deadline, text
        time.sleep(0.2)
    assert '"GET /api/v1/me/ HTTP/1.1" 400' in text and '"GET /api/v1/me/ HTTP/1.1" 200' in text
    for fragment in (served.key, secret, secret[:16], encoded):
        assert fragment not in text
