"""Property-based fuzzing of the whole API against its OpenAPI schema, in-process (schemathesis over WSGI).

Every operation gets positive (schema-valid) and negative (schema-invalid) generated requests, sent with a
real owner key, a real lab key or none, with path parameters that often name objects that exist (``world``).
Every response must pass every schemathesis check: no 5xx, a documented status code and content type, a body
that matches the documented schema, valid data accepted, invalid data rejected, auth enforced where declared.
The run is derandomized (reproducible) and sends well over 1,000 requests.
"""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
import schemathesis
from django.conf import settings as django_settings
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.failures import FailureGroup

from arena.api.base import idempotency_key_valid
from arena.auth import ApiKeyThrottle
from arena.wsgi import application

EXAMPLES_PER_MODE = 30
MIN_REQUESTS = 1000
# Operations only one role may call; everything else is tried with both keys and anonymously.
LAB_ONLY = ("/robots/", "/sessions/", "/videos/{video_id}/finish/")
OWNER_ONLY = ("/retire/", "/checks/")


def _roles(path: str, method: str) -> list[str]:
    if (
        any(part in path for part in OWNER_ONLY)
        or (path.endswith("/policies/") and method == "POST")
        or (path.endswith("{slug}/") and method == "PATCH")
    ):
        return ["owner", "owner", "owner", "lab", "anonymous"]
    if any(part in path for part in LAB_ONLY):
        return ["lab", "lab", "lab", "owner", "anonymous"]
    return ["lab", "owner", "anonymous"]


def _existing(world, name: str) -> list[str]:
    return {
        "session_id": list(world.sessions.values()),
        "video_id": list(world.videos.values()),
        "slug": world.slugs,
        "prefix": world.key_prefixes,
    }.get(name, [])


def _digest(label: str, found: list[str]) -> str:
    """Per operation: each distinct kind of failure, how often, and its first occurrence in full."""
    first: dict[str, str] = {}
    kinds: Counter[str] = Counter()
    for text in found:
        for line in text.splitlines():
            if line.startswith("- "):
                kinds[line] += 1
                first.setdefault(line, text)
    lines = [f"{label}: {len(found)} failing requests"]
    for kind, n in kinds.items():
        lines += [f"  {n} x {kind}", first[kind][:2000]]
    return "\n".join(lines)


@pytest.fixture
def wsgi_in_test_transaction():
    """Like Django's test client: the raw WSGI handler must not close the connection holding the test's
    transaction at the end of each request."""
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    yield application
    for signal in (request_started, request_finished):
        signal.connect(close_old_connections)


@pytest.mark.django_db
def test_every_operation_conforms_to_the_schema(world, wsgi_in_test_transaction, monkeypatch):
    monkeypatch.setattr(ApiKeyThrottle, "THROTTLE_RATES", {"api_key": "100000/min", "anon": "100000/min"})
    monkeypatch.setattr(django_settings, "ARENA_THROTTLE_FAILED_AUTH", "100000/min")  # it sends many bad keys
    schema = schemathesis.openapi.from_wsgi("/api/schema/", wsgi_in_test_transaction)
    keys = {"owner": world.owner.key, "lab": world.lab.key}
    sent: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    serial = itertools.count()
    failures: dict[str, list[str]] = {}

    def fuzz(operation, mode: GenerationMode) -> None:
        """Send EXAMPLES_PER_MODE generated requests to ``operation``; record every failed check."""
        label = operation.label
        roles = _roles(operation.path, operation.method.upper())

        @given(case=operation.as_strategy(generation_mode=mode), data=st.data())
        @settings(
            max_examples=EXAMPLES_PER_MODE,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def check(case, data) -> None:
            for name in list(case.path_parameters or {}):
                existing = _existing(world, name)
                if existing and data.draw(st.booleans(), label="use an existing object"):
                    case.path_parameters[name] = data.draw(st.sampled_from(existing))
            # Credentials and idempotency keys go into the case itself, so that schemathesis re-derives
            # which parts of the request are valid before it judges the response.
            headers = case.headers if case.headers is not None else {}
            role = data.draw(st.sampled_from(roles), label="role")
            headers.pop("Authorization", None)
            if role in keys:
                headers["Authorization"] = f"Api-Key {keys[role]}"
            if idempotency_key_valid(headers.get("Idempotency-Key", "")):
                headers["Idempotency-Key"] = f"fuzz-{next(serial)}"  # a reused key is answered 422
            case.headers = headers
            response = case.call()
            sent[label] += 1
            statuses[response.status_code] += 1
            given_auth = {"Authorization": headers["Authorization"]} if "Authorization" in headers else None
            try:
                # Passed again so that the checks know these credentials were given, not generated.
                case.validate_response(response, headers=given_auth)
            except FailureGroup as exc:
                failures.setdefault(label, []).append(f"[{mode.value}, {role}] {exc}")

        try:
            check()
        except Unsatisfiable:
            # Nothing in the operation can be made invalid (no parameters, no body).
            assert mode == GenerationMode.NEGATIVE, label

    for result in schema.get_all_operations():
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz(result.ok(), mode)

    total = sum(sent.values())
    print(
        f"\nschemathesis {schemathesis.__version__}: {total} requests over {len(sent)} operations; "
        f"statuses {dict(sorted(statuses.items()))}"
    )
    assert not failures, "\n".join(_digest(label, found) for label, found in failures.items())
    assert total >= MIN_REQUESTS, sent
