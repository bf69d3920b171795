"""Named actors for API tests: a policy owner (Olivia, Acme Robotics) with three active policies, two
evaluator labs (Berkeley, Stanford), Acme's own lab (which may not evaluate Acme's policies), and an outsider
(Oscar, an owner with nothing of his own). Each actor is an API client carrying its own key."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from arena.models import Policy
from tests.api.actors import Actor, activate, make_actor, register_policy, register_robot


@pytest.fixture
def owner(db) -> Actor:
    return make_actor("owner", owner="olivia", organization="Acme Robotics")


@pytest.fixture
def outsider(db) -> Actor:
    return make_actor("outsider", owner="oscar", organization="Outsider Inc")


@pytest.fixture
def lab1(db) -> Actor:
    return make_actor("lab1", lab="Berkeley Lab", organization="Berkeley")


@pytest.fixture
def lab2(db) -> Actor:
    return make_actor("lab2", lab="Stanford Lab", organization="Stanford")


@pytest.fixture
def acme_lab(db, owner) -> Actor:
    return make_actor("acme_lab", lab="Acme Lab", organization="Acme Robotics")


@pytest.fixture
def anonymous() -> Actor:
    return Actor(name="anonymous", client=APIClient(), key="")


@pytest.fixture
def pool(owner) -> list[Policy]:
    """Three active Acme policies that run on a DROID robot with joint velocities."""
    for slug, port in (("pi0-fast-droid", 8101), ("diffusion-droid", 8102), ("octo-droid", 8103)):
        register_policy(owner, slug, endpoint_url=f"ws://policy-host.acme.example:{port}")
        activate(slug)
    return list(Policy.objects.order_by("slug"))


@pytest.fixture
def robot1(lab1) -> dict:
    return register_robot(lab1)
